"""Attention's heads in one compiled call on numba's threads: per head, MKL's GEMM for the
scores Q K^T, the softmax row by row while the scores are in cache, MKL's GEMM for P V
written straight into the head's columns of the output.

Why: the heads as strided views through numpy's batched matmul (`ops_fused_transformer`)
run OpenBLAS per head on the Python pool, all heads' scores written before any softmax:
bert_6l's attention (12 heads of 32, 128 tokens) took 0.31 ms alone and 0.36-0.48 in the
model, where onnxruntime's MatMul, Softmax, MatMul and Transposes took ~0.29. Here each
thread keeps one head's scores (64 KiB) in L2 from the first GEMM to the second.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import prange

from . import _mkl, _native, _parallel
from ._mkl import _NO_TRANS, _ROW_MAJOR, _TRANS
from ._numba import CONTRACT, njit, scratch, u64
from .ops_fused_transformer import _softmax_rows


# fmt: off
@njit(fastmath=CONTRACT)
def _heads(fp, q, k, v, y, qs, ks, vs, ys, heads, sq, sk, d, dv, mask, strides, has_mask,
           scale, causal, s, p0, p1):  # pragma: no cover - compiled
    """Heads p0..p1-1 of the batch's heads (flat: item * heads + head) with `s` (sq, sk)
    for their scores. q, k, v, y: [b, rows, heads * dim] with unit stride along the last
    axis; qs, ks, vs, ys their (item, row) strides in elements."""
    for p in range(p0, p1):
        bi, h = p // heads, p % heads
        qa = q.ctypes.data + u64((bi * qs[0] + h * d) * 4)
        ka = k.ctypes.data + u64((bi * ks[0] + h * d) * 4)
        va = v.ctypes.data + u64((bi * vs[0] + h * dv) * 4)
        ya = y.ctypes.data + u64((bi * ys[0] + h * dv) * 4)
        fp(_ROW_MAJOR, _NO_TRANS, _TRANS, sq, sk, d, 1.0, qa, qs[1], ka, ks[1], 0.0,
           s.ctypes.data, sk)
        m0 = bi * strides[0] + h * strides[1]
        _softmax_rows(s, 1, sq, mask[m0:], strides, has_mask, scale, causal, sk - sq)
        fp(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, sq, dv, sk, 1.0, s.ctypes.data, sk, va, vs[1],
           0.0, ya, ys[1])


@njit(parallel=True, fastmath=CONTRACT)
def _attention(fp, q, k, v, y, qs, ks, vs, ys, heads, sq, sk, d, dv, mask, strides, has_mask,
               scale, causal, scores, bounds):  # pragma: no cover - compiled
    for t in prange(bounds.size - 1):
        _heads(fp, q, k, v, y, qs, ks, vs, ys, heads, sq, sk, d, dv, mask, strides, has_mask,
               scale, causal, scores[t], bounds[t], bounds[t + 1])
# fmt: on


def _rows_strides(a: np.ndarray) -> np.ndarray | None:
    """(item, row) strides of a 3-D float32 array in elements; None unless its last axis
    has unit stride and its rows do not overlap (what MKL's leading dimension needs)."""
    if a.dtype != np.float32 or a.ndim != 3 or a.shape[2] == 0 or a.strides[2] != 4:
        return None
    s0, s1 = a.strides[0], a.strides[1]
    if s0 % 4 or s1 % 4 or s1 < 4 * a.shape[2] or s0 < 0:
        return None
    return np.array([s0 // 4, s1 // 4], np.int64)


def heads_call(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    y: np.ndarray,
    heads: int,
    softmax: tuple,
    grain: int,
) -> Callable[[], object] | None:
    """y [b, sq, heads * dv] = softmax(Q K^T * scale + mask) V per head, as a call of no
    arguments; `softmax`: (mask flat, its (b, h, i) strides, has_mask, scale, causal) as
    `_softmax_rows` takes them. None where this path does not run here (no MKL or numba
    threads, or operands MKL cannot read as they are)."""
    if not (_native.available() and _mkl.available()):
        return None
    strides = [_rows_strides(a) for a in (q, k, v, y)]
    if any(s is None for s in strides):
        return None
    b, sq, hidden = q.shape
    sk, d, dv = k.shape[1], hidden // heads, v.shape[2] // heads
    if min(sq, sk, d, dv) == 0:
        return None
    bounds = _native._bounds(_parallel.split(b * heads, grain))
    mask, mstrides, has_mask, scale, causal = softmax

    def call() -> None:
        scores = scratch((bounds.size - 1, sq, sk), "attention scores")
        _attention(_native._sgemm(), q, k, v, y, *strides, heads, sq, sk, d, dv, mask, mstrides,
                   has_mask, scale, causal, scores, bounds)  # fmt: skip

    return call


__all__ = ["heads_call"]
