"""The ARM backend's tests. Those that need the aarch64 worker skip, saying why, when it
cannot start here (an x86 host without `workbench arm setup`)."""

from __future__ import annotations

import pytest

from workbench.remote import setup
from workbench.remote.client import native_host


def worker_ready() -> tuple[bool, str]:
    if native_host():
        return True, ""
    ready, why = setup.status()
    return ready, f"the emulated arm worker is not available: {why}"


@pytest.fixture
def arm_worker() -> None:
    """Skips the test, naming the command to run, when the worker cannot start here."""
    ready, why = worker_ready()
    if not ready:
        pytest.skip(why)


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    # profiles and comparisons land in a store of the test's own
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
