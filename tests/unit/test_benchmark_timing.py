"""benchmarks/_timing.py: the wait for other threads to stop spinning between blocks."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _timing import quiet, timed


def test_quiet_returns_at_once_when_nothing_spins():
    assert quiet() < 0.2


def test_quiet_waits_while_another_thread_spins():
    """A thread busy for 0.3 s (as an engine's worker spinning after its run): the wait
    lasts until it stops, not past the limit."""
    stop = time.perf_counter() + 0.3

    def spin():
        while time.perf_counter() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:
        waited = quiet(limit_s=2.0)
    finally:
        t.join()
    assert 0.2 < waited < 1.5
    stop = time.perf_counter() + 5.0
    t = threading.Thread(target=spin)
    t.start()
    try:
        assert quiet(limit_s=0.2) < 0.5  # (never past its limit)
    finally:
        stop = 0.0
        t.join()


def test_timed_gives_one_time_per_call():
    calls = []
    times = timed(lambda: calls.append(1), 3)
    assert len(times) == 3 == len(calls) and all(t >= 0 for t in times)
