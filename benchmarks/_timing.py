"""What the benchmarks share: timing a callable run by run (scripts in this folder import
it by name: `python benchmarks/X.py` puts the folder on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(fn: Callable[[], object], n: int) -> list[float]:
    """Seconds of each of `n` calls of `fn`."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def quiet(window_s: float = 0.01, busy: float = 0.1, limit_s: float = 1.0) -> float:
    """Wait until no thread of this process is spinning: a `window_s` sleep in which the
    process used under `busy` of one core (at most `limit_s` in all); the seconds waited.

    Why: engines' worker threads spin-wait after a run before they block. onnxruntime's
    did for ~40 ms here after MobileNetV2 (37 ms of CPU over 5 ms sleeps; ours ~1.6 ms,
    GOMP_SPINCOUNT), taking one of the two cores from whichever engine ran next: our runs
    right after its block took 24, 7.9, 5.1, 4.4 ms by position against 4.1 alone, and
    dropping the first run of a block did not cover it."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        c0, w0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        if time.process_time() - c0 < busy * (time.perf_counter() - w0):
            break
    return time.perf_counter() - start
