"""A direct channels-last 1x1 convolution for few output channels (MobileNetV2's projections).

A 1x1 conv channels-last is the GEMM (pixels, C) x (C, M). With M of 16-32 (the
bottleneck projections: 144 -> 24 at 56x56, 192 -> 32 at 28x28) BLAS runs at a third of
its speed on square products: its kernels block the output's columns by more than M,
and MKL's packed path measured 49-61 GFLOP/s on these shapes. Here each group of 8
pixels keeps 32 output channels in 16 vector registers (`_vec16`) over all of C: per
input channel two weight loads, eight broadcasts and sixteen multiply-adds, the weight
(C x 32, a few KiB) staying in L1 for every pixel. The bias is added in the registers;
a residual and the activation follow on each group while it is in L1
(`_epilogue_tile`). Pixels short of a group of 8 at a part's end go one at a time.
Output channels are padded to a multiple of 32 in the packed weight and bias; a partial
vector is stored lane by lane.

The register block is written out, as direct_nhwc.py's is: a shared inline helper
carrying the 8 accumulators as a tuple measured ~5% slower here (144 -> 24 at 56x56,
0.202-0.211 against 0.216-0.226 ms, three alternations), so the two kernels keep their
own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import prange

from . import _native
from ._numba import CONTRACT, njit, u64
from ._vec16 import fma, load, splat
from .direct_nhwc import BLOCK, _put2, pad_bias
from .ops_fused_conv import _epilogue_tile

MAX_OUTPUTS = 160  # offered for at most this many output channels (see ops_conv_nhwc.py)


def pack_weight(w: np.ndarray) -> tuple[np.ndarray, int]:
    """W [M, C, 1, 1] as (C, Mp) flat, Mp = M rounded up to BLOCK (zeros)."""
    m, c = w.shape[:2]
    mp = -(-m // BLOCK) * BLOCK
    wp = np.zeros((c, mp), np.float32)
    wp[:, :m] = w.reshape(m, c).T
    return wp.reshape(-1), mp


# fmt: off
@njit(fastmath=CONTRACT)
def _rows(x, wp, bp, c, m, r0, r1, y, z, zero, act, p0, p1, finish):  # pragma: no cover
    """y (pixels r0..r1-1 of (pixels, m), flat) = act(x (pixels, c) flat @ W + bias + z),
    W packed by `pack_weight`, the bias by `pad_bias`."""
    mp = bp.size
    i = r0
    while i < r1:
        n = 8 if i + 8 <= r1 else 1
        for v in range(0, mp, 32):
            left = m - v
            d = i * m + v
            if n == 8:
                b0 = load(bp, v)
                b1 = load(bp, v + 16)
                s00, s01, s10, s11, s20, s21, s30, s31 = b0, b1, b0, b1, b0, b1, b0, b1
                s40, s41, s50, s51, s60, s61, s70, s71 = b0, b1, b0, b1, b0, b1, b0, b1
                q = i * c
                for k in range(c):
                    w0 = load(wp, k * mp + v)
                    w1 = load(wp, k * mp + v + 16)
                    x0 = splat(x[u64(q + k)])
                    x1 = splat(x[u64(q + c + k)])
                    x2 = splat(x[u64(q + 2 * c + k)])
                    x3 = splat(x[u64(q + 3 * c + k)])
                    s00 = fma(x0, w0, s00)
                    s01 = fma(x0, w1, s01)
                    s10 = fma(x1, w0, s10)
                    s11 = fma(x1, w1, s11)
                    s20 = fma(x2, w0, s20)
                    s21 = fma(x2, w1, s21)
                    s30 = fma(x3, w0, s30)
                    s31 = fma(x3, w1, s31)
                    x4 = splat(x[u64(q + 4 * c + k)])
                    x5 = splat(x[u64(q + 5 * c + k)])
                    x6 = splat(x[u64(q + 6 * c + k)])
                    x7 = splat(x[u64(q + 7 * c + k)])
                    s40 = fma(x4, w0, s40)
                    s41 = fma(x4, w1, s41)
                    s50 = fma(x5, w0, s50)
                    s51 = fma(x5, w1, s51)
                    s60 = fma(x6, w0, s60)
                    s61 = fma(x6, w1, s61)
                    s70 = fma(x7, w0, s70)
                    s71 = fma(x7, w1, s71)
                _put2(y, d, left, s00, s01)
                _put2(y, d + m, left, s10, s11)
                _put2(y, d + 2 * m, left, s20, s21)
                _put2(y, d + 3 * m, left, s30, s31)
                _put2(y, d + 4 * m, left, s40, s41)
                _put2(y, d + 5 * m, left, s50, s51)
                _put2(y, d + 6 * m, left, s60, s61)
                _put2(y, d + 7 * m, left, s70, s71)
            else:
                s0 = load(bp, v)
                s1 = load(bp, v + 16)
                for k in range(c):
                    xv = splat(x[u64(i * c + k)])
                    s0 = fma(xv, load(wp, k * mp + v), s0)
                    s1 = fma(xv, load(wp, k * mp + v + 16), s1)
                _put2(y, d, left, s0, s1)
        if finish:
            _epilogue_tile(y, zero, z, m, i, i + n, 0, m, act, p0, p1)
        i += n


@njit(parallel=True, fastmath=CONTRACT)
def _parts(x, wp, bp, c, m, bounds, y, z, zero, act, p0, p1, finish):  # pragma: no cover
    for t in prange(bounds.size - 1):
        _rows(x, wp, bp, c, m, bounds[t], bounds[t + 1], y, z, zero, act, p0, p1, finish)
# fmt: on


def call(args: tuple, pixels: int, tail: tuple) -> Callable[[], object]:
    """`_rows(*args[:5], lo, hi, *args[5:], *tail)` over the pixels split over the threads
    (`_native.rows_call`). args: x, wp, bp, c, m, y; tail: z, zero, act, p0, p1, finish."""
    c, m = args[3], args[4]
    return _native.rows_call(_rows, _parts, args[:5], (*args[5:], *tail), pixels, grain(c, m))


def grain(c: int, m: int) -> int:
    """Pixels in a part at least: ~0.5 MFLOP of c -> m channels."""
    return max(8, (1 << 18) // max(1, c * m))


__all__ = ["MAX_OUTPUTS", "call", "grain", "pack_weight", "pad_bias"]
