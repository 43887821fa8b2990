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
