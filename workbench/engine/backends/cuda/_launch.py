"""Launching numba.cuda kernels: lazy import, kernel compilation from source, device arrays.

numba.cuda is imported on first use (never when the package is imported), so listing
backends costs nothing and `NUMBA_ENABLE_CUDASIM` may be set any time before the first
kernel is built. Kernels are written as Python source and compiled here once per distinct
text (`jit_source`): the elementwise, reduction and GEMM families generate one kernel per
op/epilogue from templates, the way the x86 FusedElementwise kernel does for numba.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

THREADS = 256  # threads per block of the 1-D kernels: a multiple of the 32-lane warp


@functools.cache
def cuda() -> Any:
    from numba import cuda as _cuda

    return _cuda


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def is_device(x: Any) -> bool:
    """A numba device array (real or simulated); host arrays are numpy."""
    return x is not None and not isinstance(x, np.ndarray) and hasattr(x, "copy_to_host")


def host_c(x: Any) -> np.ndarray:
    """`x` as a C-contiguous numpy array of its own shape (np.ascontiguousarray makes a
    0-d array 1-d)."""
    x = np.asarray(x)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def upload(x: Any) -> Any:
    return x if is_device(x) or x is None else cuda().to_device(host_c(x))


def download(x: Any) -> Any:
    return x.copy_to_host() if is_device(x) else x


def empty(shape: Sequence[int], dtype: Any) -> Any:
    return cuda().device_array(tuple(int(d) for d in shape), dtype=np.dtype(dtype))


def result(out: Sequence[Any] | None, shape: Sequence[int], dtype: Any, i: int = 0) -> Any:
    """Output `i` of a destination-passing kernel: the view of the memory planner's device
    arena the executor passes in `out` (exactly this shape and dtype), else a fresh array."""
    if out is not None and out[i] is not None:
        return out[i]
    return empty(shape, dtype)


def writes_out(run: Any, inplace: Sequence[int] = ()) -> Any:
    """Mark `run` as accepting `out=` (see backends/base.py); `inplace`: the inputs whose
    memory output 0 may be (each thread reads its elements before writing the same ones)."""
    run.writes_out, run.inplace = True, tuple(inplace)
    return run


def flat(x: Any) -> Any:
    """A 1-D view of a C-contiguous device array (kernels index flat, with strides)."""
    return x.reshape(x.size) if x.ndim != 1 else x


def contiguous(x: Any) -> Any:
    """`x` as a C-contiguous device array (views from Transpose/Slice are made contiguous
    by their own kernels, so this is a check, not a copy)."""
    if x.ndim and not x.is_c_contiguous():
        raise ValueError(f"expected a C-contiguous device array, got strides {x.strides}")
    return x


def strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Element strides of a C-contiguous array of `shape`."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= int(d)
    return tuple(reversed(out))


def broadcast_strides(shape: Sequence[int], to: Sequence[int]) -> tuple[int, ...]:
    """Element strides reading a C-contiguous `shape` broadcast to `to` (0 where broadcast)."""
    shape = (1,) * (len(to) - len(shape)) + tuple(shape)
    return tuple(0 if n == 1 and t != 1 else s for n, s, t in zip(shape, strides(shape), to))


def grid(n: int, threads: int = THREADS) -> tuple[int, int]:
    return max(1, math.ceil(n / threads)), threads


_SOURCES: dict[str, Any] = {}


def jit_source(source: str, name: str = "kernel", **globals_: Any) -> Any:
    """Compile the function `name` defined by `source` with cuda.jit (once per text).

    The source sees `cuda`, `math`, `float32`, `float64`, `int64` and `globals_`; it is
    kept in `kernel.source` so a failing kernel can be read.
    """
    key = source
    if key in _SOURCES:
        return _SOURCES[key]
    import numba

    ns: dict[str, Any] = {
        "cuda": cuda(),
        "math": math,
        "float32": numba.float32,
        "float64": numba.float64,
        "int64": numba.int64,
        **globals_,
    }
    exec(compile(source, f"<cuda kernel {len(_SOURCES)}>", "exec"), ns)
    kernel = cuda().jit(ns[name])
    kernel.source = source  # type: ignore[attr-defined]
    _SOURCES[key] = kernel
    return kernel


def device_fn(fn: Any) -> Any:
    """A Python function as a cuda device function (inlined by the kernels that call it)."""
    return cuda().jit(device=True)(fn)


def f32_scalar(x: float) -> np.float32:
    return np.float32(x)
