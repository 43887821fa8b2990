"""One thread setting for every pool the kernels use: the x86 kernels' own pool
(backends/x86/_parallel.py), numba and OpenMP agree on it, and BLAS runs one thread per
call because the kernels split their GEMMs over the pool themselves (see there why).

    from workbench import _threads
    _threads.apply()          # WORKBENCH_THREADS, else all usable CPUs, else 1 when busy
    _threads.apply(2)         # exactly 2, whatever the load
    _threads.info()           # {"threads": 1, "source": "busy", "loadavg": 3.1, ...}

Why the busy fallback: a BLAS with two spinning worker threads on a machine whose cores
are already taken by other processes does not slow down by 2x but by 30x (each of its
barrier waits spins until the other thread is scheduled again). One thread degrades
gracefully. "Busy" is the 1-minute load average, minus the threads this process runs
itself, at or above the usable CPU count.

BLAS is set through threadpoolctl where installed, else through OpenBLAS's own
`*_set_num_threads` symbol found in the library numpy loaded (read from /proc/self/maps).
`OMP_NUM_THREADS` and friends are only read by the libraries when they load, so `apply`
also sets them for child processes and for libraries not loaded yet.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path
from typing import Any

# NUMBA_NUM_THREADS is left alone: numba reads it once as the most threads it will ever use
_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_state: dict[str, Any] = {"threads": None, "source": "unset", "loadavg": None}


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy(threads_here: int = 0) -> bool:
    """Whether other processes already keep every usable CPU busy (1-minute load average,
    less `threads_here` of our own, at or above the CPU count)."""
    load = loadavg()
    return load is not None and load - threads_here >= usable_cpus()


def _openblas_functions(names: tuple[str, ...]) -> list[Any]:
    """From each OpenBLAS library loaded in this process (read from /proc/self/maps), the
    first of `names` it exports."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = sorted({ln.split()[-1] for ln in maps.splitlines() if "openblas" in ln.lower()})
    out = []
    for path in paths:
        if not path.startswith("/"):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        fn = next((getattr(lib, n) for n in names if hasattr(lib, n)), None)
        if fn is not None:
            out.append(fn)
    return out


def _openblas_setters() -> list[Any]:
    """`set_num_threads` functions of the OpenBLAS libraries loaded in this process."""
    return _openblas_functions(
        (
            "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        )
    )


def _openblas_getters() -> list[Any]:
    return _openblas_functions(("scipy_openblas_get_num_threads64_", "openblas_get_num_threads"))


def blas_threads() -> int | None:
    """The thread count of numpy's BLAS now, where it can be read."""
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return int(pools[0]["num_threads"])
    import numpy  # noqa: F401  (loads BLAS, so /proc/self/maps lists it)

    for get in _openblas_getters():
        with contextlib.suppress(Exception):
            return int(get())
    return None


def _set_blas(n: int) -> bool:
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_limits

        threadpool_limits(n, user_api="blas")
        return True
    import numpy  # noqa: F401

    ok = False
    for fn in _openblas_setters():
        with contextlib.suppress(Exception):
            fn.argtypes = [ctypes.c_int]
            fn(n)
            ok = True
    return ok


# numba's thread team runs the compiled parallel parts of the x86 kernels (backends/x86/
# _native.py). Its layer must allow calls from several Python threads at once (TBB or
# OpenMP, not numba's workqueue), and GNU OpenMP's threads spin this many turns (~1 ms
# here) after a parallel region before they sleep: enough to bridge the gap to the next
# kernel, short enough not to tax whatever runs after the model. Measured on MobileNetV2
# (2 threads, ms): 1000 turns 22.1-25.6, 10000 18.9-20.2, 50000 18.6-18.8, libgomp's
# default 300000 18.3-20.0. Both are set before the layer starts (the first parallel
# call, or set_num_threads below), and only where the user has not set them.
GOMP_SPINCOUNT = "20000"


def _set_numba(n: int) -> None:
    with contextlib.suppress(Exception):
        import numba

        if "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "threadsafe"
        os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def choose(threads: int | None = None) -> tuple[int, str]:
    """(threads, why): `threads` when given, else WORKBENCH_THREADS, else 1 when the machine
    is busy, else every usable CPU."""
    if threads is not None:
        return max(1, int(threads)), "argument"
    env = os.environ.get("WORKBENCH_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "WORKBENCH_THREADS"
    if busy():
        return 1, "busy"
    return usable_cpus(), "cpus"


def apply(threads: int | None = None) -> int:
    """Set the kernels' pool, numba and the OMP environment to one thread count (BLAS to
    one thread per call: the pool splits its work); returns the count."""
    n, why = choose(threads)
    for var in _VARS:
        os.environ[var] = str(n)
    _set_blas(1)
    _set_numba(n)
    _state.update(threads=n, source=why, loadavg=loadavg())
    return n


def current() -> int:
    """The thread count set by the last `apply` (applying the default first if none)."""
    if _state["threads"] is None:
        apply()
    return int(_state["threads"])


def info() -> dict[str, Any]:
    """What `apply` chose and why, for a profile's meta: threads (the kernels' pool),
    source ("argument", "WORKBENCH_THREADS", "busy": fell back to one thread, "cpus"), the
    load average it saw, the usable CPUs, and what BLAS reports now (1: one per call)."""
    return {**_state, "usable_cpus": usable_cpus(), "blas_threads": blas_threads()}


__all__ = ["apply", "blas_threads", "busy", "choose", "current", "info", "loadavg"]
