"""The cuda group: the cuda backend's kernels against `reference`, in numba's CUDA simulator.

numba reads NUMBA_ENABLE_CUDASIM when it is first imported, so this group runs in its own
pytest process: `NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda`. Without the variable
it runs only where a real GPU is present, and skips (saying why) everywhere else.
"""

from __future__ import annotations

import os

import pytest


def _why_not() -> str:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return ""
    try:
        from numba import cuda

        if cuda.is_available():
            return ""
    except Exception as e:  # numba.cuda absent or broken: say so
        return f"numba.cuda does not import: {e}"
    return "no GPU here; run with NUMBA_ENABLE_CUDASIM=1 for the simulator"


def pytest_collection_modifyitems(config, items):
    why = _why_not()
    if not why:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here) and "without_device" not in item.name:
            item.add_marker(pytest.mark.skip(reason=why))
