"""One row times a weight: y (1, N) = x (1, K) @ B (K, N), as a classifier's last Gemm.

A product of one row reads each weight once and does two flops per value read, so it
runs at the speed memory streams the weight in, and in a model the weight is cold (the
other layers' weights went through the caches since its last run). BLAS's single-row
path streams it on one thread: 9.6-9.7 GB/s here, MobileNetV2's 1280x1000 classifier
0.54 ms and ResNet-50's 2048x1000 0.85 ms with the caches flushed before each call,
against onnxruntime's 0.29 and 0.41 in its models. Here the output columns are split
over numba's threads, each streaming its rows of B^T (N, K), C-ordered: four output
values at a time, each a sum of 16-lane vectors (`_vec16`) over K, so each x vector
loaded serves four rows of the weight. Measured the same way: 0.24 and 0.41 ms
(20-21 GB/s); on one thread 0.54 and 0.84, so the second thread is where the gain is.

B^T is the initializer itself for a Gemm with transB (a Linear layer's weight, (N, K)):
there this is the default for one row (`ops_gemm._TunedProduct.select`), measured or not.
Another B needs a transposed copy, which the candidate holds: there selection measures it
against the others (above `autotune.MIN_FLOPS`), weighing the copy's memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import prange

from . import _native
from ._numba import CONTRACT, njit, u64
from ._vec16 import LANES, fma, lane, load, splat
from .ops_fused_conv import _epilogue_tile

# output columns per part at least: a part's share of B^T is GRAIN rows of K values
GRAIN = 64


@njit(fastmath=CONTRACT)
def _sum_lanes(v):  # pragma: no cover - compiled
    s = np.float32(0.0)
    for i in range(LANES):
        s += lane(v, i)
    return s


@njit(fastmath=CONTRACT)
def _dot_tail(x, wt, k, k0, j):  # pragma: no cover - compiled
    """sum x[i] * wt[j, i] over i = k0..k-1 (the last K % 16 values; wt flat (N, K))."""
    s = np.float32(0.0)
    for i in range(k0, k):
        s += x[u64(i)] * wt[u64(j * k + i)]
    return s


# fmt: off
@njit(fastmath=CONTRACT)
def _gemv_part(x, wt, k, y, lo, hi, b, z, act, p0, p1, epi):  # pragma: no cover - compiled
    """y[j] = x . wt[j] for output columns j = lo..hi-1 (x: K values, wt flat (N, K), y: N
    values), then the epilogue on them."""
    k16 = k - k % LANES
    j = lo
    while j + 4 <= hi:
        a0 = a1 = a2 = a3 = splat(np.float32(0.0))
        r0, r1, r2, r3 = j * k, (j + 1) * k, (j + 2) * k, (j + 3) * k
        for i in range(0, k16, LANES):
            xv = load(x, u64(i))
            a0 = fma(load(wt, u64(r0 + i)), xv, a0)
            a1 = fma(load(wt, u64(r1 + i)), xv, a1)
            a2 = fma(load(wt, u64(r2 + i)), xv, a2)
            a3 = fma(load(wt, u64(r3 + i)), xv, a3)
        y[u64(j)] = _sum_lanes(a0) + _dot_tail(x, wt, k, k16, j)
        y[u64(j + 1)] = _sum_lanes(a1) + _dot_tail(x, wt, k, k16, j + 1)
        y[u64(j + 2)] = _sum_lanes(a2) + _dot_tail(x, wt, k, k16, j + 2)
        y[u64(j + 3)] = _sum_lanes(a3) + _dot_tail(x, wt, k, k16, j + 3)
        j += 4
    for jj in range(j, hi):
        a = splat(np.float32(0.0))
        for i in range(0, k16, LANES):
            a = fma(load(wt, u64(jj * k + i)), load(x, u64(i)), a)
        y[u64(jj)] = _sum_lanes(a) + _dot_tail(x, wt, k, k16, jj)
    if epi:
        _epilogue_tile(y, b, z, y.size, 0, 1, lo, hi, act, p0, p1)


@njit(parallel=True, fastmath=CONTRACT)
def _gemv(x, wt, k, y, bounds, b, z, act, p0, p1, epi):  # pragma: no cover - compiled
    for t in prange(bounds.size - 1):
        _gemv_part(x, wt, k, y, bounds[t], bounds[t + 1], b, z, act, p0, p1, epi)
# fmt: on


def gemv_call(
    wt: np.ndarray, x2: np.ndarray, o2: np.ndarray, post: object
) -> Callable[[], object] | None:
    """o2 (1, N) = x2 (1, K) @ wt.T and `post` (an `Epilogue` or None) on it, as a call of
    no arguments (its parts worked out now); None where this path does not apply: more
    than one row, operands not C-ordered float32, or a `post` that is Python code."""
    epi = _native._epilogue(post)
    if epi is None or x2.shape[0] != 1 or x2.dtype != np.float32 or o2.dtype != np.float32:
        return None
    if not (x2.flags.c_contiguous and o2.flags.c_contiguous and wt.flags.c_contiguous):
        return None
    n, k = wt.shape
    head = (x2.reshape(-1), wt.reshape(-1), k, o2.reshape(-1))
    return _native.rows_call(_gemv_part, _gemv, head, epi, n, GRAIN)


__all__ = ["GRAIN", "gemv_call"]
