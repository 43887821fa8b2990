"""Shared settings and helpers of the x86 compute kernels: the one `njit` they all use,
the float32 checks their factories make, and a scratch buffer reused between calls.

Numba compiles each function lazily on first call and caches the machine code on disk
(NUMBA_CACHE_DIR is set by `workbench` before numba is imported), so only the first
process on a machine pays the compile time.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import threading
from typing import TYPE_CHECKING

_WIDE = ",-prefer-256-bit"  # the end of the features `_wide_vectors` sets


def _wide_vectors() -> str:
    """Have LLVM use AVX-512's full 512-bit vectors in our kernels: on AVX-512 CPUs of the
    Skylake line it is tuned to prefer 256-bit ones (a clock-speed concern of 2017), so
    numba's code used ymm registers only. Measured on this 2-vCPU Cascade Lake, one thread,
    median of 8 alternating processes, ms 256 -> 512: the channels-last depthwise 32x112x112
    0.87 -> 0.72, 96x112x112 stride 2 0.75 -> 0.52, 384x14x14 0.113 -> 0.085, a 196x384
    bias+Clip epilogue 0.024 -> 0.016; MobileNetV2 on two threads 16.8 -> 15.3 (median of 5
    alternating runs). MKL's kernels use 512-bit vectors anyway.

    Done by NUMBA_CPU_FEATURES (the host's features and -prefer-256-bit) before numba
    compiles anything: an environment variable, so that numba's re-reading of its settings
    keeps it (the emulated arm worker drops it, see remote/client.py). Left alone when the
    user set NUMBA_CPU_FEATURES or NUMBA_CPU_NAME, off x86-64, without AVX-512, or with
    WORKBENCH_VECTOR_BITS=256. Returns what was set ('' for nothing): also what a workbench
    process this one descends from set (the benchmark's memory processes, remote workers),
    for their code is the same and autotune's cache keys must be too (a child that said ''
    missed its parent's choices and measured GPT-2's logits again: 150 MiB packed twice)."""
    env = os.environ
    inherited = env.get("NUMBA_CPU_FEATURES", "")
    if inherited.endswith(_WIDE):
        return inherited
    if "NUMBA_CPU_FEATURES" in env or "NUMBA_CPU_NAME" in env:
        return ""
    if env.get("WORKBENCH_VECTOR_BITS", "").strip() == "256":
        return ""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ""
    import llvmlite.binding as ll

    try:
        features = ll.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot tell: numba's defaults
        return ""
    if not features.get("avx512f"):
        return ""
    value = env["NUMBA_CPU_FEATURES"] = features.flatten() + _WIDE
    if "numba" in sys.modules:  # imported already (not compiled, we hope): its settings too
        sys.modules["numba"].config.CPU_FEATURES = value
    return value


VECTOR_FEATURES = _wide_vectors()

import numba  # noqa: E402  (after the features are set)
import numpy as np  # noqa: E402

from ...memory_guard import check_size  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ...ir import Node

# error_model="numpy": a 0/0 in a window made only of padding gives NaN as in numpy, and
# integer divisions skip the zero checks. fastmath stays off so sums keep their order.
njit = functools.partial(numba.njit, cache=True, fastmath=False, nogil=True, error_model="numpy")

# The one fastmath flag the arithmetic kernels take: a * b + c as one fused multiply-add
# (one rounding instead of two: never less accurate, and the order of every sum is kept).
# Without it LLVM issues a multiply and an add each time: the exact Gelu epilogue's erf
# polynomial ran 1.74x slower (1.16 -> 0.67 ms for 393k values on one thread).
CONTRACT = {"contract"}

F32 = np.dtype(np.float32)

# Index flat arrays with u64(i) in hot loops: numba wraps negative signed indices around,
# and that check per access keeps LLVM from vectorizing (5x slower im2col).
u64 = numba.uint64


# numba's disk cache does not track calls across files: the default cache folder is one
# per version of the sources (workbench/_cache.py); a NUMBA_CACHE_DIR set by hand must be
# cleared after editing this helper, or the kernels inlining it keep their old code.
@njit(inline="always")
def valid_range(off, stride, limit, count):
    """[lo, hi): the q in [0, count) with 0 <= q * stride + off < limit (window edges)."""
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    hi = 0
    if limit - off > 0:
        hi = (limit - off + stride - 1) // stride
    lo = min(lo, count)
    hi = max(min(hi, count), lo)
    return lo, hi


def input_dtype(node: Node, index: int = 0) -> np.dtype | None:
    """The dtype shape inference gave input `index`, or None when unknown or absent."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    return node.inputs[index].dtype


def declines_dtype(node: Node, index: int = 0) -> bool:
    """True when input `index` is known not to be float32: the x86 kernels are fp32 ones."""
    dt = input_dtype(node, index)
    return dt is not None and dt != F32


def const_input(node: Node, index: int) -> np.ndarray | None:
    """The constant (initializer) data of input `index`, or None."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    return node.inputs[index].const


def has_input(node: Node, index: int) -> bool:
    return index < len(node.inputs) and node.inputs[index] is not None


def wants_output(node: Node, index: int) -> bool:
    """Whether output `index` exists and is named (so somebody may read it)."""
    return index < len(node.outputs) and bool(node.outputs[index].name)


def static_shape(node: Node, index: int) -> tuple[int, ...] | None:
    """The fully known shape of input `index` (constants included), else None."""
    c = const_input(node, index)
    if c is not None:
        return tuple(c.shape)
    if not has_input(node, index):
        return None
    shape = node.inputs[index].shape
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return tuple(shape)


def all_f32(*arrays: np.ndarray | None) -> bool:
    """Whether every given array is float32 (None entries are skipped)."""
    return all(a is None or a.dtype == F32 for a in arrays)


def f32c(a: np.ndarray) -> np.ndarray:
    """`a` as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=np.float32)


_local = threading.local()
_SCRATCH_KEEP = 16 << 20  # elements (64 MiB): larger work arrays are not kept


def scratch(shape: Sequence[int], what: str, slot: int = 0) -> np.ndarray:
    """A float32 work array of `shape`, reused by every kernel running on this thread.

    Kernels run one at a time per thread and never return it, so one buffer (as large as
    the largest request so far) serves all of them; a fresh np.empty of a few MB per call
    costs page faults that show in small convolutions. A kernel needing two work arrays
    at once takes the second from `slot=1`.
    """
    n = 1
    for d in shape:
        n *= int(d)
    if n > _SCRATCH_KEEP:
        # too big to keep around between calls: a one-off buffer
        check_size(shape, np.float32, what)
        return np.empty(shape, np.float32)
    name = f"buf{slot}"
    buf = getattr(_local, name, None)
    if buf is None or buf.size < n:
        buf = np.empty(n, np.float32)
        setattr(_local, name, buf)
    return buf[:n].reshape(shape)
