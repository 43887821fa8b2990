"""The x86 kernels' own threads: each kernel splits its work into parts (row ranges of a
GEMM, channel ranges of a transform, heads of an attention) and runs one part per thread.

Why not leave threading to OpenBLAS: its pool only covers the GEMM, its worker threads
spin for a while after each call (and then collide with the numba loops that follow, or
with another engine measured next), and on the mid-size products of these models (128 x
384 x 1536) a single-threaded GEMM per half ran 1.7x faster than OpenBLAS's own two
threads (0.84 vs 1.45 ms measured here). So `workbench._threads` sets BLAS to one thread
when this pool runs, and the thread count of `_threads` is the pool's size: the calling
thread plus `threads - 1` daemon workers. numba's kernels release the GIL (nogil=True) and
so does BLAS, so the parts run truly in parallel.

    parallel(fn, parts)           # fn(0) here, fn(1..parts-1) on the workers; waits
    for_ranges(fn, total, grain)  # fn(lo, hi) over a split of range(total)

Kernels whose parts are compiled code only (MKL's GEMM with its fused epilogue, the
channels-last depthwise conv) run them on numba's threads instead, with no GIL between
parts (_native.py); this pool does the rest, and all of it where numba has no threads.

A part that raises re-raises in the caller (the first error, after every part ended).
Calls from inside a part run their parts one after the other on that thread: the pool
has no nested parallelism. A handoff costs ~10-20 us, so kernels split only work of
more than `grain` units (each kernel picks a grain worth ~50 us or more).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

from .... import _threads

_local = threading.local()
_lock = threading.Lock()
_busy = threading.Lock()  # held by the one caller whose parts are on the workers now
_workers: list[_Worker] = []


class _Worker:
    """One daemon thread taking (fn, index) jobs from its own queue, answering each with
    None or the exception raised."""

    def __init__(self, n: int) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"workbench-x86-{n}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        _local.inside = True
        while True:
            fn, index = self.jobs.get()
            try:
                fn(index)
            except BaseException as exc:  # handed to the caller, re-raised there
                self.done.put(exc)
            else:
                self.done.put(None)


def threads() -> int:
    """How many parts a kernel may run at once here: the pool's size, or 1 inside a part."""
    if getattr(_local, "inside", False):
        return 1
    return _threads.current()


def _pool(n: int) -> list[_Worker]:
    with _lock:
        while len(_workers) < n:
            _workers.append(_Worker(len(_workers) + 1))
        return _workers[:n]


def parallel(fn: Callable[[int], object], parts: int) -> None:
    """fn(i) for i in range(parts), at most `threads()` at once: fn(0) on this thread, the
    others on the pool's workers (extra parts wrap around). Returns when all ended."""
    n = min(parts, threads())
    # a second Python thread running kernels while the workers are taken runs serially
    if n <= 1 or not _busy.acquire(blocking=False):
        for i in range(parts):
            fn(i)
        return
    try:
        _run(fn, parts, n)
    finally:
        _busy.release()


def _run(fn: Callable[[int], object], parts: int, n: int) -> None:
    workers = _pool(n - 1)

    def strided(i: int) -> None:  # worker i also takes parts i + n, i + 2n, ...
        for j in range(i, parts, n):
            fn(j)

    for k, w in enumerate(workers, start=1):
        w.jobs.put((strided, k))
    _local.inside = True
    error: BaseException | None = None
    try:
        strided(0)
    except BaseException as exc:  # wait for the workers before raising
        error = exc
    finally:
        _local.inside = False
    for w in workers:
        res = w.done.get()
        if error is None and res is not None:
            error = res
    if error is not None:
        raise error


def ranges(total: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """`parts` contiguous [lo, hi) ranges covering range(total), as equal as `align` (each
    boundary a multiple of it) allows; fewer when there is too little to split."""
    units = -(-total // align)
    parts = max(1, min(parts, units))
    out, lo = [], 0
    for i in range(parts):
        hi = min(total, (units * (i + 1) // parts) * align)
        if hi > lo:
            out.append((lo, hi))
        lo = hi
    return out


_always = [False]


@contextlib.contextmanager
def always_split() -> Iterator[None]:
    """Within the block, work is split whatever its size (`grain` is ignored): tests run
    every kernel's split path on small, odd shapes."""
    old, _always[0] = _always[0], True
    try:
        yield
    finally:
        _always[0] = old


def binding_token() -> tuple[int, bool]:
    """What a kernel call bound once (backends/base.py) took from here: its parts follow the
    thread count and `always_split`."""
    return threads(), _always[0]


def split(total: int, grain: int, align: int = 1) -> list[tuple[int, int]]:
    """Ranges of range(total) for the pool: one per thread, none smaller than `grain`."""
    if _always[0]:
        grain = 1
    return ranges(total, min(threads(), max(1, total // max(1, grain))), align)


def for_ranges(fn: Callable[[int, int], object], total: int, grain: int, align: int = 1) -> None:
    """fn(lo, hi) for the ranges of `split(total, grain, align)`, in parallel."""
    if total <= 0:
        return
    if total < 2 * max(1, grain) and not _always[0]:  # one part: no split to compute
        fn(0, total)
        return
    parts = split(total, grain, align)
    if len(parts) == 1:
        fn(*parts[0])
        return
    parallel(lambda i: fn(*parts[i]), len(parts))


__all__ = ["always_split", "binding_token", "for_ranges", "parallel", "ranges", "split", "threads"]
