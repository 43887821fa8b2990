"""The backend group: the same cases on every backend; an absent one is skipped with its reason."""

from __future__ import annotations

import pytest

import workbench as wb

_INFOS = {b.name: b for b in wb.backends()}
DEVICE_BACKENDS = [name for name in _INFOS if name != "reference"]


@pytest.fixture(params=DEVICE_BACKENDS)
def backend(request) -> str:
    info = _INFOS[request.param]
    if not info.available:
        pytest.skip(f"{info.name} backend unavailable here: {info.reason}")
    return info.name
