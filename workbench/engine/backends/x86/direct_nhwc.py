"""A direct channels-last convolution for inputs of few channels (the RGB stem).

With C = 3 the windows + GEMM path gathers (pixels, kh*kw*3) windows and runs a GEMM
whose inner dimension is 27 (MobileNetV2's 3x3 stem) or 147 (ResNet's 7x7): most of its
time is the gather and MKL's packing of a thin matrix. Here each group of 4 output pixels
keeps 32 output channels in 8 vector registers (`_vec16`) over all its taps: per input
value one broadcast and two multiply-adds per pixel, the weight of a tap read once for
the 4 pixels. Measured on one thread of the 2-vCPU AVX-512 VM: MobileNetV2's stem
(224x224x3 -> 112x112x32, 3x3 stride 2) 0.48-0.50 ms against 1.0-1.2 ms for windows +
GEMM on two threads.

Pixels whose windows cross the image's left or right edge, and a row's last pixels
short of a group of 4, go one at a time with their taps checked. Output channels are
padded to a multiple of 32 in the packed weight and bias; a partial vector is stored
lane by lane. The bias is added in the registers; a residual and the activation follow
on each output row as soon as it is done, while it is in L1 (`_epilogue_tile`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import prange

from . import _native
from ._numba import CONTRACT, njit
from ._vec16 import fma, lane, load, splat, store
from .ops_fused_conv import _epilogue_tile

FEW_CHANNELS = 4  # inputs of at most this many channels are offered the direct kernel
BLOCK = 32  # output channels per pass over the taps: two vectors


def pack_weight(w: np.ndarray) -> tuple[np.ndarray, int]:
    """W [M, C, kh, kw] as (kh, kw, C, Mp) flat, Mp = M rounded up to BLOCK (zeros)."""
    m, c, kh, kw = w.shape
    mp = -(-m // BLOCK) * BLOCK
    wp = np.zeros((kh, kw, c, mp), np.float32)
    wp[..., :m] = np.transpose(w, (2, 3, 1, 0))
    return wp.reshape(-1), mp


def pad_bias(b: np.ndarray | None, m: int, mp: int) -> np.ndarray:
    bp = np.zeros(mp, np.float32)
    if b is not None:
        bp[:m] = b
    return bp


@njit(fastmath=CONTRACT)
def _put(y, at, left, acc):  # pragma: no cover - compiled
    """acc's lanes into y[at:at + min(16, left)]."""
    if left >= 16:
        store(y, at, acc)
    else:
        for t in range(left):
            y[at + t] = lane(acc, t)


@njit(fastmath=CONTRACT)
def _put2(y, at, left, acc0, acc1):  # pragma: no cover - compiled
    """One pixel's two vectors (32 channels from `at`, `left` of them real) into y."""
    _put(y, at, left, acc0)
    _put(y, at + 16, left - 16, acc1)


# fmt: off
@njit(fastmath=CONTRACT)
def _direct_hwc(x, wp, bp, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, m, r0, r1, y,
                z, zero, act, p0, p1, finish):  # pragma: no cover - compiled
    """y (rows r0..r1-1 of (oh, ow, m), flat) = act(conv(x (h, wd, c) flat) + bias + z),
    with the weight packed by `pack_weight` and the bias by `pad_bias`; the residual and
    activation (when `finish`) on each row as soon as it is done, while in L1."""
    mp = bp.size
    for i in range(r0, r1):
        a0 = 0  # the tap rows inside the image
        while a0 < kh and i * sh - pt + a0 * dh < 0:
            a0 += 1
        a1 = kh
        while a1 > a0 and i * sh - pt + (a1 - 1) * dh >= h:
            a1 -= 1
        for v in range(0, mp, 32):
            j = 0
            while j < ow:
                j0 = j * sw - pl
                d = (i * ow + j) * m + v
                left = m - v
                if j + 4 <= ow and j0 >= 0 and (j + 3) * sw - pl + (kw - 1) * dw < wd:
                    b0 = load(bp, v)
                    b1 = load(bp, v + 16)
                    s00, s01, s10, s11, s20, s21, s30, s31 = b0, b1, b0, b1, b0, b1, b0, b1
                    step = sw * c
                    for a in range(a0, a1):
                        row = (i * sh - pt + a * dh) * wd
                        for e in range(kw):
                            src = (row + j0 + e * dw) * c
                            wb = (a * kw + e) * c * mp + v
                            for k in range(c):
                                w0 = load(wp, wb + k * mp)
                                w1 = load(wp, wb + k * mp + 16)
                                q = src + k
                                x0 = splat(x[q])
                                x1 = splat(x[q + step])
                                x2 = splat(x[q + 2 * step])
                                x3 = splat(x[q + 3 * step])
                                s00 = fma(x0, w0, s00)
                                s01 = fma(x0, w1, s01)
                                s10 = fma(x1, w0, s10)
                                s11 = fma(x1, w1, s11)
                                s20 = fma(x2, w0, s20)
                                s21 = fma(x2, w1, s21)
                                s30 = fma(x3, w0, s30)
                                s31 = fma(x3, w1, s31)
                    _put2(y, d, left, s00, s01)
                    _put2(y, d + m, left, s10, s11)
                    _put2(y, d + 2 * m, left, s20, s21)
                    _put2(y, d + 3 * m, left, s30, s31)
                    j += 4
                else:  # an edge pixel: its taps checked
                    s0 = load(bp, v)
                    s1 = load(bp, v + 16)
                    for a in range(a0, a1):
                        row = (i * sh - pt + a * dh) * wd
                        for e in range(kw):
                            jj = j0 + e * dw
                            if jj < 0 or jj >= wd:
                                continue
                            src = (row + jj) * c
                            wb = (a * kw + e) * c * mp + v
                            for k in range(c):
                                xv = splat(x[src + k])
                                s0 = fma(xv, load(wp, wb + k * mp), s0)
                                s1 = fma(xv, load(wp, wb + k * mp + 16), s1)
                    _put2(y, d, left, s0, s1)
                    j += 1
        if finish:
            _epilogue_tile(y, zero, z, m, i * ow, (i + 1) * ow, 0, m, act, p0, p1)


@njit(parallel=True, fastmath=CONTRACT)
def _direct(x, wp, bp, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, m, bounds, y,
            z, zero, act, p0, p1, finish):  # pragma: no cover - compiled
    for t in prange(bounds.size - 1):
        _direct_hwc(x, wp, bp, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, m, bounds[t],
                    bounds[t + 1], y, z, zero, act, p0, p1, finish)
# fmt: on


def direct_call(args: tuple, rows: int, tail: tuple) -> Callable[[], object]:
    """`_direct_hwc(*args[:16], lo, hi, *args[16:], *tail)` over the output rows split over
    the threads (`_native.rows_call`). args: x, wp, bp, h, wd, c, kh, kw, sh, sw, dh, dw,
    pt, pl, ow, m, y; tail: z, zero, act, p0, p1, finish."""
    return _native.rows_call(_direct_hwc, _direct, args[:16], (*args[16:], *tail), rows, 1)


__all__ = ["FEW_CHANNELS", "direct_call", "pack_weight", "pad_bias"]
