"""`workbench arm setup`: builds once into the cache, then checks and returns at once."""

from __future__ import annotations

import pytest

from workbench.cli import main
from workbench.remote import setup
from workbench.remote.client import native_host


@pytest.fixture
def needs_qemu():
    if native_host():
        pytest.skip("aarch64 host: the worker runs natively, there is nothing to set up")
    if setup.qemu_path() is None:
        pytest.skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static)")


def test_setup_is_idempotent_and_cached(needs_qemu, capsys):
    first = setup.setup(log=lambda *a: None)  # cold in a fresh cache: builds what is missing
    assert setup.status() == (True, "")
    assert (setup.sysroot() / setup.PYTHON).exists()
    second = setup.setup(log=lambda *a: None)
    assert second["built"] == [] and second["download_bytes"] == 0
    assert second["seconds"] < 10, second
    assert second["versions"] == first["versions"] == setup.pinned()
    assert setup.numba_cache().name == "numba-aarch64"  # apart from the host's numba cache
    assert main(["arm", "status"]) == 0
    assert "arm: emulated" in capsys.readouterr().out
