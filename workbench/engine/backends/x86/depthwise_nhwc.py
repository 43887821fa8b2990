"""Depthwise convolution computed channels-last: the ``depthwise_nhwc`` Conv algorithm.

The NCHW depthwise kernel (`ops_conv._depthwise`) vectorizes along an image row, which is
fast on MobileNet's large early planes but not on its late ones: a 7x7 plane gives a
vector loop nothing to do, and the per-channel set-up dominates (960 channels of 7x7
took ~7x onnxruntime's time). Channels-last, one output pixel is a run of C contiguous
values and each tap one vector multiply-add per 8 channels, whatever the plane's size. So this
algorithm transposes each image to (H, W, C), convolves there, and transposes back one
channel range per thread, running the fused epilogue (`post`) on each range while it is
still in cache. The transposes cost a pass over the input and the output each, which the
larger planes do not win back: `ops_conv` makes this the default up to `SMALL_PLANE`
input pixels (where selection seldom measures: those convolutions are mostly under
`autotune.MIN_FLOPS`) and lets selection measure it against the NCHW kernel above.

Weights are packed as (kh*kw, C): tap t of every channel is one contiguous row.

An undilated 3x3 window (all of MobileNetV2's) has a kernel of its own (`_depthwise_3x3`):
16 channels of a pixel in one vector register (`_vec16`) over the nine taps, stored once,
and at stride 1 four neighbouring pixels at a time with the nine weight vectors held in
registers (the plain loops above read and wrote y once per tap). Its first form (one
pixel at a time) measured alone, 2 threads, ms: 32x112x112 0.164 against 0.194 before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _parallel
from ._numba import CONTRACT, njit, scratch, u64
from ._vec16 import clamp, fma, load, splat, store

# Input pixels per plane up to which channels-last is the default. Measured here on
# MobileNetV2's shapes (one node, 2 threads, ms NCHW -> channels-last): 960x7x7 0.64 ->
# 0.22, 576x14x14 stride 2 0.59 -> 0.24, 576x14x14 0.61 -> 0.42, 384x14x14 0.41 -> 0.30;
# but 192x28x28 0.26 -> 0.40 and 144x56x56 0.84 -> 1.59, where the two transposes
# (~0.7 ns a value each way) cost more than the vector loop gains.
SMALL_PLANE = 14 * 14

# rows of the strided side of a transpose per tile: the cache lines of 64 rows stay in L1
# while the tile's contiguous side is written (an 8x8-tile version measured no faster)
_TILE = 64


@njit
def _chw_to_hwc(src, c, p, c0, c1, dst):  # pragma: no cover - compiled
    """dst[q, k] = src[k, q] for channels c0..c1-1 (src (c, p), dst (p, c), both flat)."""
    for t0 in range(c0, c1, _TILE):
        t1 = min(t0 + _TILE, c1)
        for q in range(p):
            for k in range(t0, t1):
                dst[u64(q * c + k)] = src[u64(k * p + q)]


@njit
def _hwc_to_chw(src, p, c, c0, c1, dst):  # pragma: no cover - compiled
    """dst[k, q] = src[q, k] for channels c0..c1-1 (src (p, c), dst (c, p), both flat)."""
    for t0 in range(0, p, _TILE):
        t1 = min(t0 + _TILE, p)
        for k in range(c0, c1):
            for q in range(t0, t1):
                dst[u64(k * p + q)] = src[u64(q * c + k)]


@njit(fastmath=CONTRACT, inline="always")
def _taps3(x, w, o, t, c, k, acc):  # pragma: no cover - compiled
    """acc + the three taps of one window row, from x[o:] and weight rows t.. (each c
    apart), channels k..k+15."""
    acc = fma(load(x, u64(o + k)), load(w, u64(t + k)), acc)
    acc = fma(load(x, u64(o + c + k)), load(w, u64(t + c + k)), acc)
    return fma(load(x, u64(o + 2 * c + k)), load(w, u64(t + 2 * c + k)), acc)


@njit(fastmath=CONTRACT, inline="always")
def _row4(x, o, c, w0, w1, w2, a0, a1, a2, a3):  # pragma: no cover - compiled
    """One window row of 4 neighbouring stride-1 pixels: 6 vectors of x from x[o:] (each
    c apart) against the row's 3 weight vectors, into the 4 accumulators."""
    x0, x1, x2 = load(x, u64(o)), load(x, u64(o + c)), load(x, u64(o + 2 * c))
    x3, x4, x5 = load(x, u64(o + 3 * c)), load(x, u64(o + 4 * c)), load(x, u64(o + 5 * c))
    a0 = fma(x2, w2, fma(x1, w1, fma(x0, w0, a0)))
    a1 = fma(x3, w2, fma(x2, w1, fma(x1, w0, a1)))
    a2 = fma(x4, w2, fma(x3, w1, fma(x2, w0, a2)))
    a3 = fma(x5, w2, fma(x4, w1, fma(x3, w0, a3)))
    return a0, a1, a2, a3


@njit(fastmath=CONTRACT)
def _fours_3x3(x, w, b, y, wd, c, top, pl, j0, j1, yo, lo, hi):  # pragma: no cover
    """Output pixels j0..j1-1 (j1 - j0 a multiple of 4, their windows inside the image)
    of one row (from y[yo:]) of a stride-1 3x3 depthwise conv, C a multiple of 16:
    4 pixels at a time, 16 channels a pass with the nine weight vectors in registers (x
    read 6 vectors a window row for the 4, not 12); clamped to lo..hi as stored."""
    rs = wd * c
    for k in range(0, c, 16):
        w0, w1, w2 = load(w, u64(k)), load(w, u64(c + k)), load(w, u64(2 * c + k))
        w3, w4, w5 = load(w, u64(3 * c + k)), load(w, u64(4 * c + k)), load(w, u64(5 * c + k))
        w6, w7, w8 = load(w, u64(6 * c + k)), load(w, u64(7 * c + k)), load(w, u64(8 * c + k))
        bk = load(b, u64(k))
        for j in range(j0, j1, 4):
            o = (top * wd + j - pl) * c + k
            a0, a1, a2, a3 = _row4(x, o, c, w0, w1, w2, bk, bk, bk, bk)
            a0, a1, a2, a3 = _row4(x, o + rs, c, w3, w4, w5, a0, a1, a2, a3)
            a0, a1, a2, a3 = _row4(x, o + 2 * rs, c, w6, w7, w8, a0, a1, a2, a3)
            d = yo + j * c + k
            store(y, u64(d), clamp(a0, lo, hi))
            store(y, u64(d + c), clamp(a1, lo, hi))
            store(y, u64(d + 2 * c), clamp(a2, lo, hi))
            store(y, u64(d + 3 * c), clamp(a3, lo, hi))


@njit(fastmath=CONTRACT)
def _depthwise_3x3(x, w, b, h, wd, c, sh, sw, pt, pl, ow, r0, r1, y, lo, hi):  # pragma: no cover
    """`_depthwise_hwc` for an undilated 3x3 window: each output pixel's channels 16 at a
    time in one vector register (`_vec16`) over its nine taps, then clamped and stored
    once (at stride 1, 4 pixels at a time: `_fours_3x3`); taps in the padding skipped one
    by one. C a multiple of 16 (other counts take the loops of `_depthwise_hwc`)."""
    rs = wd * c  # one input row
    lo, hi = splat(lo), splat(hi)
    for i in range(r0, r1):
        top = i * sh - pt
        rows_in = top >= 0 and top + 2 < h
        f0, f1 = 0, 0  # the pixels `_fours_3x3` does
        if rows_in and sw == 1:
            f0 = min(max(pl, 0), ow)
            f1 = f0 + (max(min(ow, wd - 2 + pl), f0) - f0) // 4 * 4
            _fours_3x3(x, w, b, y, wd, c, top, pl, f0, f1, i * ow * c, lo, hi)
        for j in range(ow):
            left = j * sw - pl
            yo = (i * ow + j) * c
            if f0 <= j < f1:
                pass
            elif rows_in and left >= 0 and left + 2 < wd:  # the window inside the image
                o = (top * wd + left) * c
                for k in range(0, c, 16):
                    acc = _taps3(x, w, o, 0, c, k, load(b, u64(k)))
                    acc = _taps3(x, w, o + rs, 3 * c, c, k, acc)
                    acc = _taps3(x, w, o + 2 * rs, 6 * c, c, k, acc)
                    store(y, u64(yo + k), clamp(acc, lo, hi))
            else:
                for k in range(0, c, 16):
                    acc = load(b, u64(k))
                    for a in range(3):
                        ii = top + a
                        if ii < 0 or ii >= h:
                            continue
                        for e in range(3):
                            jj = left + e
                            if jj >= 0 and jj < wd:
                                xo, wo = (ii * wd + jj) * c + k, (a * 3 + e) * c + k
                                acc = fma(load(x, u64(xo)), load(w, u64(wo)), acc)
                    store(y, u64(yo + k), clamp(acc, lo, hi))


@njit(fastmath=CONTRACT)
def _depthwise_hwc(
    x, w, b, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, r0, r1, y, wr, br, run, lo, hi
):  # pragma: no cover - compiled
    """Output rows r0..r1-1 of a depthwise conv of one channels-last image: y[i, j, :] =
    b + sum over taps (a, e) of w[a*kw + e, :] * x[i*sh - pt + a*dh, j*sw - pl + e*dw, :]
    (x (h, wd, c), w (kh*kw, c), y (oh, ow, c), all flat; taps in the padding skipped),
    clamped to lo..hi (Clip's order; -inf..inf changes nothing): a Relu or Clip after the
    conv done as each value is stored, not in a pass of its own over y (which took a third
    of MobileNetV2's 32x112x112, 0.036 of 0.109 ms on 2 threads).

    With `run` > 1 (few channels, stride 1), runs of `run` interior pixels are computed
    at once: a tap is then one loop over run*c contiguous values of x and y, by `wr`
    (kh*kw, run*c: each tap's weights repeated run times) from `br` (the bias, likewise);
    a loop of 32 channels per pixel spent more on its set-up than on its work (MobileNetV2's
    32x112x112: 0.88 ms on one thread, NCHW 0.52)."""
    if kh == 3 and kw == 3 and dh == 1 and dw == 1 and c % 16 == 0:
        _depthwise_3x3(x, w, b, h, wd, c, sh, sw, pt, pl, ow, r0, r1, y, lo, hi)
        return
    clamped = lo > -np.inf or hi < np.inf
    rs, cs = dh * wd * c, dw * c  # one tap down, one tap right
    n = run * c
    for i in range(r0, r1):
        top = i * sh - pt
        rows_in = top >= 0 and top + (kh - 1) * dh < h
        j0, j1 = 0, 0  # output columns whose windows lie inside the image (stride 1)
        if run > 1 and sw == 1 and rows_in:
            j0 = min(max(pl, 0), ow)
            j1 = max(min(wd - (kw - 1) * dw + pl, ow), j0)
        j = 0
        while j < ow:
            yo = (i * ow + j) * c
            left = j * sw - pl
            if j >= j0 and j + run <= j1:  # a run of interior pixels, tap by tap
                for u in range(n):
                    y[u64(yo + u)] = br[u64(u)]
                for a in range(kh):
                    for e in range(kw):
                        xo = ((top + a * dh) * wd + left + e * dw) * c
                        t = (a * kw + e) * n
                        for u in range(n):
                            y[u64(yo + u)] += x[u64(xo + u)] * wr[u64(t + u)]
                j += run
                continue
            if kh == 3 and kw == 3 and rows_in and left >= 0 and left + 2 * dw < wd:
                # an interior 3x3 window: the bias, then one pass per row of three taps.
                # One pass of nine reads 19 arrays at once, past LLVM's limit on the
                # runtime alias checks it vectorizes under (measured 1.3x slower).
                for k in range(c):
                    y[u64(yo + k)] = b[k]
                for a in range(3):
                    o = (top * wd + left) * c + a * rs
                    t = 3 * a * c
                    for k in range(c):
                        y[u64(yo + k)] += (
                            x[u64(o + k)] * w[u64(t + k)]
                            + x[u64(o + cs + k)] * w[u64(t + c + k)]
                            + x[u64(o + 2 * cs + k)] * w[u64(t + 2 * c + k)]
                        )  # fmt: skip
                j += 1
                continue
            for k in range(c):
                y[u64(yo + k)] = b[k]
            for a in range(kh):
                ii = top + a * dh
                if ii < 0 or ii >= h:
                    continue
                for e in range(kw):
                    jj = left + e * dw
                    if jj < 0 or jj >= wd:
                        continue
                    xo = (ii * wd + jj) * c
                    wo = (a * kw + e) * c
                    for k in range(c):
                        y[u64(yo + k)] += x[u64(xo + k)] * w[u64(wo + k)]
            j += 1
        if clamped:  # the row just written, still in cache
            for u in range(i * ow * c, (i + 1) * ow * c):
                v = y[u64(u)]
                v = lo if v < lo else v
                y[u64(u)] = hi if v > hi else v


# runs of interior pixels go in one loop of about this many values (run = RUN_VALUES // C
# pixels), for fewer than RUN_BELOW channels: one thread, ms per pixel -> by runs, 32x112x112
# 0.96 -> 0.58, 144x56x56 0.64 -> 0.62, 192x28x28 0.18 -> 0.20 (nine passes over the run
# against the interior 3x3 window's three)
RUN_VALUES, RUN_BELOW = 512, 128


def runs(wt: np.ndarray, bias: np.ndarray, sw: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(wr, br, run) for `_depthwise_hwc`: weights (taps, C) and bias repeated `run` times
    per tap, run = RUN_VALUES // C pixels (1, and nothing repeated, for stride > 1 or
    RUN_BELOW channels or more)."""
    c = bias.size
    run = max(1, RUN_VALUES // max(1, c)) if sw == 1 and c < RUN_BELOW else 1
    if run == 1:
        return wt.reshape(-1)[:0], bias[:0], 1
    wr = np.ascontiguousarray(np.tile(wt.reshape(-1, c), (1, run))).reshape(-1)
    return wr, np.tile(bias, run), run


NO_CLAMP = (np.float32(-np.inf), np.float32(np.inf))  # (lo, hi) of no activation


def clamp_of(act: int, p0: float, p1: float) -> tuple[np.float32, np.float32] | None:
    """(lo, hi) that `_depthwise_hwc` clamps to for an epilogue activation code (see
    ops_fused_conv.ACTIVATIONS: 0 none, 1 Relu, 3 Clip(p0, p1)); None for the others."""
    if act == 0:
        return NO_CLAMP
    if act == 1:
        return np.float32(0.0), NO_CLAMP[1]
    if act == 3:
        return np.float32(p0), np.float32(p1)
    return None


def pack_weight(w: np.ndarray) -> np.ndarray:
    """(C, 1, kh, kw) -> (kh*kw, C) float32, contiguous."""
    c = w.shape[0]
    return np.ascontiguousarray(np.asarray(w, np.float32).reshape(c, -1).T)


def conv(
    g: Any, x4: np.ndarray, wt: np.ndarray, bias: np.ndarray, y: np.ndarray, post: Any = None
) -> None:
    """y (N, C, OH, OW) = the depthwise conv of x4 (N, C, H, W) by wt (kh*kw, C) plus bias,
    channels-last inside; `post(y, n, c0, c1, 0, OH*OW)` on each block of channels as soon
    as it is back in NCHW (g: ops_conv._ConvGeom with one channel per group)."""
    c, hw, p = g.c, g.h * g.w, g.oh * g.ow
    work = scratch(((hw + p) * c,), "depthwise channels-last buffers")
    xt, yt, wf = work[: hw * c], work[hw * c :], wt.reshape(-1)
    repeated = _runs_cached(wt, bias, g.sw)
    row_grain = max(1, (1 << 16) // max(1, g.kh * g.kw * g.ow * c))
    for n in range(g.n):
        xf, yf = x4[n].reshape(-1), y[n].reshape(-1)

        def to_hwc(lo: int, hi: int, xf: np.ndarray = xf) -> None:
            _chw_to_hwc(xf, c, hw, lo, hi, xt)

        def rows(lo: int, hi: int) -> None:
            _depthwise_hwc(
                xt, wf, bias, g.h, g.w, c, g.kh, g.kw,
                g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.ow, lo, hi, yt, *repeated, *NO_CLAMP,
            )  # fmt: skip

        def to_chw(lo: int, hi: int, yf: np.ndarray = yf, n: int = n) -> None:
            _hwc_to_chw(yt, p, c, lo, hi, yf)
            if post is not None:  # the fused epilogue on these channels, still in cache
                post(y, n, lo, hi, 0, p)

        _parallel.for_ranges(to_hwc, c, _grain(hw), align=16)
        _parallel.for_ranges(rows, g.oh, row_grain)
        _parallel.for_ranges(to_chw, c, _grain(p), align=16)


_RUNS: dict[tuple, tuple] = {}  # (weight, stride, bias values) -> runs(): ~11 us to make


def _runs_cached(wt: np.ndarray, bias: np.ndarray, sw: int) -> tuple:
    """`runs` for a conv called again and again: its weight array stays the same object,
    its bias (made per call by the caller) the same values."""
    if sw != 1 or bias.size >= RUN_BELOW:
        return runs(wt, bias, sw)  # (nothing repeated: cheap)
    key = (id(wt), wt.ctypes.data, sw, bias.tobytes())
    got = _RUNS.get(key)
    if got is None:
        if len(_RUNS) >= 64:
            _RUNS.clear()
        got = _RUNS[key] = (*runs(wt, bias, sw), wt)  # (wt kept: its id stays its own)
    return got[:3]


@njit
def _few_to_hwc(src, c, p, q0, q1, dst):  # pragma: no cover - compiled
    """dst[q, k] = src[k, q] for pixels q0..q1-1 of an image of few channels (an RGB
    input): with the channel count a constant (1-4), each pixel's values are written
    unrolled and LLVM vectorizes along the pixels; a loop of c values per pixel does not.
    (MobileNetV2's 3x224x224 input, one thread: 61 us against 330 with c a variable.)"""
    if c == 3:
        for q in range(q0, q1):
            dst[u64(q * 3)] = src[u64(q)]
            dst[u64(q * 3 + 1)] = src[u64(p + q)]
            dst[u64(q * 3 + 2)] = src[u64(2 * p + q)]
    elif c == 1:
        for q in range(q0, q1):
            dst[u64(q)] = src[u64(q)]
    elif c == 4:
        for q in range(q0, q1):
            dst[u64(q * 4)] = src[u64(q)]
            dst[u64(q * 4 + 1)] = src[u64(p + q)]
            dst[u64(q * 4 + 2)] = src[u64(2 * p + q)]
            dst[u64(q * 4 + 3)] = src[u64(3 * p + q)]
    else:
        for q in range(q0, q1):
            for k in range(c):
                dst[u64(q * c + k)] = src[u64(k * p + q)]


FEW_CHANNELS = 4  # up to here the pixels, not the channels, are split over the threads


def to_channels_last(x: np.ndarray, y: np.ndarray) -> None:
    """y (N, H, W, C) = x (N, C, H, W) transposed, both float32 and contiguous: the tiled
    loop above with the channels split over the threads (numpy's strided copy took
    1.5 ns a value on MobileNetV2's 32x112x112, this ~0.7 on one thread); an image of
    `FEW_CHANNELS` or fewer by `_few_to_hwc`, its pixels split over the threads."""
    n, c = x.shape[:2]
    p = x.size // max(1, n * c)
    xf, yf = x.reshape(n, -1), y.reshape(n, -1)
    for i in range(n):
        if c <= FEW_CHANNELS:
            _parallel.for_ranges(
                lambda lo, hi, i=i: _few_to_hwc(xf[i], c, p, lo, hi, yf[i]), p, 1 << 15
            )
            continue
        _parallel.for_ranges(
            lambda lo, hi, i=i: _chw_to_hwc(xf[i], c, p, lo, hi, yf[i]), c, _grain(p), align=16
        )


def to_channels_first(x: np.ndarray, y: np.ndarray) -> None:
    """y (N, C, H, W) = x (N, H, W, C) transposed, both float32 and contiguous."""
    n, c = x.shape[0], x.shape[-1]
    p = x.size // max(1, n * c)
    xf, yf = x.reshape(n, -1), y.reshape(n, -1)
    for i in range(n):
        _parallel.for_ranges(
            lambda lo, hi, i=i: _hwc_to_chw(xf[i], p, c, lo, hi, yf[i]), c, _grain(p), align=16
        )


def _grain(pixels: int) -> int:
    """Channels per thread's part of a transpose: ~64k values (a handoff costs ~20 us)."""
    return max(1, (1 << 16) // max(1, pixels))
