"""A direct channels-last convolution for inputs of few channels (the RGB stem).

With C = 3 the windows + GEMM path gathers (pixels, kh*kw*3) windows and runs a GEMM
whose inner dimension is 27 (MobileNetV2's 3x3 stem) or 147 (ResNet's 7x7): most of its
time is the gather and MKL's packing of a thin matrix. Here each group of 4 output pixels
keeps 64 output channels in 16 vector registers (`_vec16`) over all its taps, or 32 in 8
where the padded channel count is not a multiple of 64: per input value one broadcast
and four (two) multiply-adds per pixel, the weight of a tap read once for the 4 pixels.
A tap row of the 4 pixels' windows is kw*C contiguous values of x (no dilation), so the
innermost loop runs over all of them (21 for the 7x7 stem), not over C alone.

Measured on one thread of the 2-vCPU AVX-512 VM, alternating with the kernel before
(4 x 32 channels, a loop over C innermost, signed indices): ResNet-50's stem
(224x224x3 -> 112x112x64, 7x7 stride 2) 2.2-3.0 ms against 5.2 (45 -> 80-104 GFLOP/s);
MobileNetV2's (3x3 stride 2 -> 32) 0.34-0.45 against 0.57-0.68. In ResNet-50 on two
threads it now beats windows + MKL's GEMM: 1.7-2.7 ms against 3.1-4.5.

Why its form: indices are unsigned (`u64`), for numba wraps a signed negative index at
every load (four integer instructions per broadcast); the two widths are two compiled
row kernels (`_row_kernel`), for with both register blocks in one function LLVM spilled
the loops' values and the 32-channel one ran 2x slower; full blocks are stored with no
per-vector count.

Pixels whose windows cross the image's left or right edge, a row's last pixels short of
a group of 4, and every pixel of a dilated conv go one at a time with their taps
checked. Output channels are padded to a multiple of 32 in the packed weight and bias; a
partial vector is stored lane by lane. The bias is added in the registers; a residual and
the activation follow on each output row as soon as it is done, while it is in L1
(`_epilogue_tile`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import prange

from . import _native
from ._numba import CONTRACT, njit, u64
from ._vec16 import fma, lane, load, splat, store
from .ops_fused_conv import _epilogue_tile

FEW_CHANNELS = 4  # inputs of at most this many channels are offered the direct kernel
BLOCK = 32  # output channels are padded to a multiple of this: two vectors


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


@njit(fastmath=CONTRACT, inline="always")  # (in the group kernels, not a call per vector)
def _put(y, at, left, acc):  # pragma: no cover - compiled
    """acc's lanes into y[at:at + min(16, left)]."""
    if left >= 16:
        store(y, at, acc)
    else:
        for t in range(left):
            y[at + t] = lane(acc, t)


@njit(fastmath=CONTRACT, inline="always")
def _put2(y, at, left, acc0, acc1):  # pragma: no cover - compiled
    """One pixel's two vectors (32 channels from `at`, `left` of them real) into y."""
    _put(y, at, left, acc0)
    _put(y, at + 16, left - 16, acc1)


@njit(fastmath=CONTRACT, inline="always")
def _store2(y, at, acc0, acc1):  # pragma: no cover - compiled
    store(y, at, acc0)
    store(y, at + 16, acc1)


@njit(fastmath=CONTRACT, inline="always")
def _store4(y, at, acc0, acc1, acc2, acc3):  # pragma: no cover - compiled
    _store2(y, at, acc0, acc1)
    _store2(y, at + 32, acc2, acc3)


@njit(fastmath=CONTRACT, inline="always")
def _put4(y, at, left, acc0, acc1, acc2, acc3):  # pragma: no cover - compiled
    """One pixel's four vectors (64 channels from `at`, `left` of them real) into y."""
    _put2(y, at, left, acc0, acc1)
    _put2(y, at + 32, left - 32, acc2, acc3)


# fmt: off
@njit(fastmath=CONTRACT, inline="always")
def _four_by_64(x, wp, bp, v, src, xrow, w0_, taps, run, mp, step, y, d, m, left):
    """4 neighbouring output pixels x 64 output channels from v, in 16 registers: over
    `taps` tap rows, each `run` contiguous values of x from src (then + xrow) against the
    weight's rows from w0_, each value one broadcast and four multiply-adds per pixel."""
    b0, b1, b2, b3 = load(bp, v), load(bp, v + 16), load(bp, v + 32), load(bp, v + 48)
    s00, s01, s02, s03, s10, s11, s12, s13 = b0, b1, b2, b3, b0, b1, b2, b3
    s20, s21, s22, s23, s30, s31, s32, s33 = b0, b1, b2, b3, b0, b1, b2, b3
    st, st2, st3 = u64(step), u64(2 * step), u64(3 * step)  # (u64 + int: a signed index)
    for a in range(taps):
        at, wb = u64(src + a * xrow), u64(w0_ + (a * run) * mp + v)
        for t in range(run):
            q, o = at + u64(t), wb + u64(t * mp)
            w0, w1, w2, w3 = load(wp, o), load(wp, o + 16), load(wp, o + 32), load(wp, o + 48)
            x0, x1 = splat(x[q]), splat(x[q + st])
            x2, x3 = splat(x[q + st2]), splat(x[q + st3])
            s00, s01, s02, s03 = fma(x0, w0, s00), fma(x0, w1, s01), fma(x0, w2, s02), fma(
                x0, w3, s03)
            s10, s11, s12, s13 = fma(x1, w0, s10), fma(x1, w1, s11), fma(x1, w2, s12), fma(
                x1, w3, s13)
            s20, s21, s22, s23 = fma(x2, w0, s20), fma(x2, w1, s21), fma(x2, w2, s22), fma(
                x2, w3, s23)
            s30, s31, s32, s33 = fma(x3, w0, s30), fma(x3, w1, s31), fma(x3, w2, s32), fma(
                x3, w3, s33)
    if left >= 64:  # (all lanes real: plain stores, no count checked per vector)
        _store4(y, d, s00, s01, s02, s03)
        _store4(y, d + m, s10, s11, s12, s13)
        _store4(y, d + 2 * m, s20, s21, s22, s23)
        _store4(y, d + 3 * m, s30, s31, s32, s33)
    else:
        _put4(y, d, left, s00, s01, s02, s03)
        _put4(y, d + m, left, s10, s11, s12, s13)
        _put4(y, d + 2 * m, left, s20, s21, s22, s23)
        _put4(y, d + 3 * m, left, s30, s31, s32, s33)


@njit(fastmath=CONTRACT, inline="always")
def _four_by_32(x, wp, bp, v, src, xrow, w0_, taps, run, mp, step, y, d, m, left):
    """`_four_by_64` for 32 output channels, in 8 registers."""
    b0, b1 = load(bp, v), load(bp, v + 16)
    s00, s01, s10, s11, s20, s21, s30, s31 = b0, b1, b0, b1, b0, b1, b0, b1
    st, st2, st3 = u64(step), u64(2 * step), u64(3 * step)
    for a in range(taps):
        at, wb = u64(src + a * xrow), u64(w0_ + (a * run) * mp + v)
        for t in range(run):
            q, o = at + u64(t), wb + u64(t * mp)
            w0, w1 = load(wp, o), load(wp, o + 16)
            xv = splat(x[q])
            s00, s01 = fma(xv, w0, s00), fma(xv, w1, s01)
            xv = splat(x[q + st])
            s10, s11 = fma(xv, w0, s10), fma(xv, w1, s11)
            xv = splat(x[q + st2])
            s20, s21 = fma(xv, w0, s20), fma(xv, w1, s21)
            xv = splat(x[q + st3])
            s30, s31 = fma(xv, w0, s30), fma(xv, w1, s31)
    if left >= 32:
        _store2(y, d, s00, s01)
        _store2(y, d + m, s10, s11)
        _store2(y, d + 2 * m, s20, s21)
        _store2(y, d + 3 * m, s30, s31)
    else:
        _put2(y, d, left, s00, s01)
        _put2(y, d + m, left, s10, s11)
        _put2(y, d + 2 * m, left, s20, s21)
        _put2(y, d + 3 * m, left, s30, s31)


def _row_kernel(four: Callable, wide: int) -> Callable:
    """The row kernel for passes of `wide` output channels, `four` its group of 4 pixels.
    (One compiled function per width: with both groups in one function LLVM spilled the
    loops' values and MobileNetV2's stem ran 2x slower.)"""

    @njit(fastmath=CONTRACT)
    def rows(x, wp, bp, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, m, r0, r1, y,
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
            for v in range(0, mp, wide):
                j = 0
                while j < ow:
                    j0 = j * sw - pl
                    d = (i * ow + j) * m + v
                    # 4 pixels whose windows lie inside the row, each tap row kw*c contiguous
                    # values of x (no dilation across): one run per tap row
                    if dw == 1 and j + 4 <= ow and j0 >= 0 and (j + 3) * sw - pl + kw <= wd:
                        src = ((i * sh - pt + a0 * dh) * wd + j0) * c
                        xrow, wrow = dh * wd * c, a0 * kw * c * mp
                        four(x, wp, bp, v, src, xrow, wrow, a1 - a0, kw * c, mp, sw * c, y, d, m,
                             m - v)
                        j += 4
                        continue
                    for u in range(v, v + wide, 32):  # an edge pixel: its taps checked
                        s0 = load(bp, u)
                        s1 = load(bp, u + 16)
                        for a in range(a0, a1):
                            row = (i * sh - pt + a * dh) * wd
                            for e in range(kw):
                                jj = j0 + e * dw
                                if jj < 0 or jj >= wd:
                                    continue
                                src = u64((row + jj) * c)
                                wb = u64((a * kw + e) * c * mp + u)
                                for k in range(c):
                                    xv = splat(x[src + u64(k)])
                                    s0 = fma(xv, load(wp, wb + u64(k * mp)), s0)
                                    s1 = fma(xv, load(wp, wb + u64(k * mp + 16)), s1)
                        _put2(y, d + u - v, m - u, s0, s1)
                    j += 1
            if finish:
                _epilogue_tile(y, zero, z, m, i * ow, (i + 1) * ow, 0, m, act, p0, p1)

    return rows


_rows_64 = _row_kernel(_four_by_64, 64)
_rows_32 = _row_kernel(_four_by_32, 32)


@njit(fastmath=CONTRACT)
def _direct_hwc(x, wp, bp, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, m, r0, r1, y,
                z, zero, act, p0, p1, finish):  # pragma: no cover - compiled
    """`rows` of `_row_kernel`: 64 output channels a pass when the padded count allows."""
    if bp.size % 64 == 0:  # (a call each: a function chosen as a value is numba's experiment)
        _rows_64(x, wp, bp, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, m, r0, r1, y, z,
                 zero, act, p0, p1, finish)
    else:
        _rows_32(x, wp, bp, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, m, r0, r1, y, z,
                 zero, act, p0, p1, finish)


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
