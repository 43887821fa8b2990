"""x86 Conv and ConvTranspose: fp32, 1-D and 2-D through numba packing plus BLAS GEMM.

Conv picks one algorithm per node from its static attributes and weight shape and
records it as `run.algorithm`:

- ``gemm_1x1``: 1x1 kernel, stride 1, no padding; the input already is the GEMM operand.
- ``depthwise``: one input channel per group; a direct numba loop over phase planes of
  the padded image (GEMM would be K=k*k; see `_depthwise`).
- ``depthwise_nhwc``: the same with one output channel per input channel on planes of at
  most 14x14: computed channels-last, where small planes still fill vectors
  (depthwise_nhwc.py).
- ``im2col_gemm``: numba packs the windows into columns, one GEMM per image.
- ``grouped_im2col_gemm``: the same columns, one GEMM per group (a stacked matmul).
- ``generic``: 3-D and higher, or non-float32 tensors at run time: numpy windows.

That is the heuristic default. With a constant weight, `autotune.select` measures the
alternatives on each input shape (at compile time when shape inference knows it, else on
the first call) and keeps the fastest, its weight packed its way: ``im2col_gemm_t`` and
``gemm_1x1_t`` (BLAS computes the transposed product), ``im2col_gemm_mkl`` and
``gemm_1x1_mkl`` (the same GEMMs by MKL, when installed: see _mkl.py), ``winograd_f2`` /
``winograd_f4`` (winograd.py; 3x3 stride 1), ``depthwise`` / ``depthwise_nhwc`` and
``grouped_im2col_gemm`` for depthwise; ``generic`` only when forced by name.
`run.algorithm` and `run.candidates` then say what it chose.

Every algorithm splits its work over the kernels' threads (_parallel.py): im2col by input
channels, the GEMM by output positions (or by output channels when there are few),
depthwise by channels (channels-last: by output rows, its transposes by channels),
Winograd phase by phase.

ConvTranspose is a GEMM (weights^T x input) followed by a numba col2im scatter-add
(``gemm_col2im``). 1-D tensors run as 2-D ones of height 1. The float32 paths write into
the arena's buffer when the executor passes `out=` (see backends/base.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...memory_guard import check_size
from ..base import deliver, dest
from ..common import conv_out_size, conv_pads
from . import _mkl, _parallel, autotune, depthwise_nhwc, winograd
from ._numba import (
    CONTRACT,
    all_f32,
    const_input,
    declines_dtype,
    f32c,
    njit,
    scratch,
    static_shape,
    u64,
    valid_range,
)
from ._table import kernels
from .ops_gemm import grain

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext


# -- numba kernels ----------------------------------------------------------------------------
@njit
def _im2col(x, nc, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, col):
    """Columns of one image: col[(c, i, j), (p, q)] = x[c, p*sh - pt + i*dh, q*sw - pl + j*dw]
    (x the image's nc x h x w values, col, both flat).

    Strided: each input row is first copied into a zero-padded line, from which every tap
    reads without bounds; with stride 2 two neighbouring taps are filled in one loop
    (line[2q + j], line[2q + j + 1]), a pair LLVM loads as one interleaved vector where
    a loop per tap reading every other value stayed scalar."""
    ncol = oh * ow
    if sw > 1:
        span = (ow - 1) * sw + (kw - 1) * dw + 1
        line = np.zeros(span, np.float32)
        tlo, thi = valid_range(-pl, 1, w, span)
        for c in range(nc):
            for i in range(kh):
                for p in range(oh):
                    ih = p * sh - pt + i * dh
                    base = (c * kh + i) * kw * ncol + p * ow
                    if ih < 0 or ih >= h:
                        for j in range(kw):
                            for q in range(ow):
                                col[u64(base + j * ncol + q)] = 0.0
                        continue
                    src = (c * h + ih) * w - pl
                    for t in range(tlo, thi):
                        line[u64(t)] = x[u64(src + t)]
                    j = 0
                    while j < kw:
                        d0 = base + j * ncol
                        if sw == 2 and dw == 1 and j + 1 < kw:
                            d1 = d0 + ncol
                            for q in range(ow):
                                col[u64(d0 + q)] = line[u64(2 * q + j)]
                                col[u64(d1 + q)] = line[u64(2 * q + j + 1)]
                            j += 2
                            continue
                        for q in range(ow):
                            col[u64(d0 + q)] = line[u64(q * sw + j * dw)]
                        j += 1
        return
    for c in range(nc):
        for i in range(kh):
            for j in range(kw):
                row = ((c * kh + i) * kw + j) * ncol
                off = j * dw - pl
                lo, hi = valid_range(off, sw, w, ow)
                for p in range(oh):
                    ih = p * sh - pt + i * dh
                    dst = row + p * ow
                    if ih < 0 or ih >= h:
                        for q in range(ow):
                            col[u64(dst + q)] = 0.0
                        continue
                    for q in range(lo):
                        col[u64(dst + q)] = 0.0
                    src = (c * h + ih) * w + off
                    for q in range(lo, hi):
                        col[u64(dst + q)] = x[u64(src + q)]
                    for q in range(hi, ow):
                        col[u64(dst + q)] = 0.0


# contract: each tap a fused multiply-add (the order of the sum unchanged, one rounding
# less per tap); 10-17% faster on MobileNetV2's stride-1 planes
@njit(fastmath=CONTRACT)
def _depthwise(x, w, b, m0, m1, mult, h, wd, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y):
    """Direct convolution of output channels m0..m1-1 of one image, where output channel m
    reads input channel m // mult only (x (C, H, W), w (M, kh, kw), y (M, OH, OW), flat).

    Each input channel is first split into sh x sw phase planes of the zero-padded image
    (plane (a, c) holds the pixels at rows = a, columns = c modulo the strides), so every
    tap reads one plane at a constant offset from the output position: the tap loops then
    run over a whole plane of outputs (oh rows of ws, the last ws - ow columns computed
    and dropped) as one long contiguous loop LLVM vectorizes, instead of rows of a few
    pixels, with no bounds checks. Any stride and dilation."""
    hs = oh + ((kh - 1) * dh) // sh  # plane rows and columns that the taps reach
    ws = ow + ((kw - 1) * dw) // sw
    size = hs * ws + ws  # (+ ws: the dropped columns of the last row read past the end)
    planes = np.zeros(sh * sw * size, np.float32)
    acc = np.empty(oh * ws, np.float32)
    offs = np.empty(kh * kw, np.int64)  # each tap's plane and offset in `planes`
    n_out = oh * ws
    # one zero-padded input row: its columns t = q * sw + c go to column q of phase c.
    # With stride 2 the two phases are read in one loop (x[2q], x[2q + 1]): LLVM
    # vectorizes that pair as one interleaved load, where a loop per phase reading every
    # other value stayed scalar (MobileNetV2's 96x112x112 stride-2 layer: 1.36 ms).
    line = np.zeros(ws * sw, np.float32)
    lo, hi = valid_range(-pl, 1, wd, ws * sw)
    for m in range(m0, m1):
        xb = (m // mult) * h * wd
        for a in range(sh):
            for r in range(hs):
                ih = r * sh + a - pt
                if ih < 0 or ih >= h:
                    for c in range(sw):
                        dst = (a * sw + c) * size + r * ws
                        for q in range(ws):
                            planes[u64(dst + q)] = 0.0
                    continue
                if sw == 1:  # (a contiguous copy: vectorized)
                    dst = a * size + r * ws
                    src = xb + ih * wd - pl
                    for q in range(lo):
                        planes[u64(dst + q)] = 0.0
                    for q in range(lo, hi):
                        planes[u64(dst + q)] = x[u64(src + q)]
                    for q in range(hi, ws):
                        planes[u64(dst + q)] = 0.0
                    continue
                src = xb + ih * wd - pl
                for t in range(lo, hi):
                    line[u64(t)] = x[u64(src + t)]
                if sw == 2:
                    d0 = (a * 2) * size + r * ws
                    d1 = d0 + size
                    for q in range(ws):
                        planes[u64(d0 + q)] = line[u64(2 * q)]
                        planes[u64(d1 + q)] = line[u64(2 * q + 1)]
                else:
                    for c in range(sw):
                        dst = (a * sw + c) * size + r * ws
                        for q in range(ws):
                            planes[u64(dst + q)] = line[u64(q * sw + c)]
        bv = b[m]
        for t in range(kh * kw):
            i, j = t // kw, t % kw
            ri, cj = i * dh, j * dw
            offs[t] = ((ri % sh) * sw + cj % sw) * size + (ri // sh) * ws + cj // sw
        wb = m * kh * kw
        if kh * kw == 9:  # 3x3: all taps in one pass, the sum kept in registers
            o0, o1, o2, o3, o4, o5, o6, o7, o8 = (
                offs[0],
                offs[1],
                offs[2],
                offs[3],
                offs[4],
                offs[5],
                offs[6],
                offs[7],
                offs[8],
            )
            w0, w1, w2, w3, w4, w5, w6, w7, w8 = (
                w[wb], w[wb + 1], w[wb + 2], w[wb + 3], w[wb + 4],
                w[wb + 5], w[wb + 6], w[wb + 7], w[wb + 8],
            )  # fmt: skip
            for k in range(n_out):
                acc[u64(k)] = (
                    bv + w0 * planes[u64(o0 + k)] + w1 * planes[u64(o1 + k)]
                    + w2 * planes[u64(o2 + k)] + w3 * planes[u64(o3 + k)]
                    + w4 * planes[u64(o4 + k)] + w5 * planes[u64(o5 + k)]
                    + w6 * planes[u64(o6 + k)] + w7 * planes[u64(o7 + k)]
                    + w8 * planes[u64(o8 + k)]
                )  # fmt: skip
        else:
            for k in range(n_out):
                acc[u64(k)] = bv
            for t in range(kh * kw):
                wv, off = w[wb + t], offs[t]
                for k in range(n_out):
                    acc[u64(k)] += wv * planes[u64(off + k)]
        yb = m * oh * ow
        for p in range(oh):
            for q in range(ow):
                y[u64(yb + p * ow + q)] = acc[u64(p * ws + q)]


@njit
def _col2im(col, nm, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y):
    """Scatter-add col[(m, i, j), (r, q)] into y[m, r*sh - pt + i*dh, q*sw - pl + j*dw]
    (col (M*kh*kw, h*w) and y (M, OH, OW), both flat)."""
    for m in range(nm):
        for i in range(kh):
            for j in range(kw):
                row = ((m * kh + i) * kw + j) * h * w
                off = j * dw - pl
                lo, hi = valid_range(off, sw, ow, w)
                for r in range(h):
                    o = r * sh - pt + i * dh
                    if o < 0 or o >= oh:
                        continue
                    dst = (m * oh + o) * ow + off
                    src = row + r * w
                    for q in range(lo, hi):
                        y[u64(dst + q * sw)] += col[u64(src + q)]


# -- attribute helpers --------------------------------------------------------------------------
def _ints(value: Any, n: int, default: int) -> list[int]:
    return [int(v) for v in value] if value else [default] * n


def _choose(kernel: Sequence[int], strides: Sequence[int], pads_zero: bool, group: int, cg: int):
    """The Conv algorithm for a weight of `kernel` x `cg` input channels per group."""
    if len(kernel) > 2:
        return "generic"
    if cg == 1 and group > 1:
        return "depthwise"
    if all(k == 1 for k in kernel) and all(s == 1 for s in strides) and pads_zero:
        return "gemm_1x1"
    return "im2col_gemm" if group == 1 else "grouped_im2col_gemm"


class _ConvGeom:
    """One input/weight shape pair of a Conv, normalized to 2-D (height 1 for 1-D)."""

    __slots__ = (
        "algorithm",
        "c",
        "cg",
        "dh",
        "dilations",
        "dw",
        "group",
        "h",
        "kernel",
        "kh",
        "kw",
        "m",
        "n",
        "nsp",
        "oh",
        "out",
        "ow",
        "pads",
        "pl",
        "pt",
        "sh",
        "strides",
        "sw",
        "w",
    )

    def __init__(self, xs: tuple[int, ...], ws: tuple[int, ...], attrs: dict, group: int):
        if len(xs) < 3:
            raise ValueError(f"Conv input must have rank >= 3 (N, C, ...), got shape {list(xs)}")
        nsp = len(xs) - 2
        if len(ws) != len(xs):
            raise ValueError(f"Conv weight rank {len(ws)} != input rank {len(xs)}")
        kernel = list(attrs.get("kernel_shape") or ws[2:])
        if len(kernel) != nsp or tuple(kernel) != tuple(ws[2:]):
            raise ValueError(f"Conv kernel_shape {kernel} does not match weight shape {list(ws)}")
        n, c = xs[0], xs[1]
        m, cg = ws[0], ws[1]
        if cg * group != c:
            raise ValueError(
                f"Conv input has {c} channels but weight {list(ws)} with group={group} "
                f"expects {cg * group}"
            )
        if m % group:
            raise ValueError(f"Conv output channels {m} not divisible by group {group}")
        strides = _ints(attrs.get("strides"), nsp, 1)
        dil = _ints(attrs.get("dilations"), nsp, 1)
        pads = conv_pads(
            xs[2:], kernel, strides, dil, attrs.get("pads"), attrs.get("auto_pad", "NOTSET")
        )
        out = [
            conv_out_size(xs[2 + i], kernel[i], strides[i], dil[i], pads[i], pads[i + nsp])
            for i in range(nsp)
        ]
        if any(o < 1 for o in out):
            raise ValueError(
                f"Conv output would be empty: input {list(xs)}, kernel {kernel}, pads {pads}"
            )
        self.n, self.c, self.m, self.cg, self.group, self.nsp = n, c, m, cg, group, nsp
        self.kernel, self.strides, self.dilations = kernel, strides, dil
        self.pads, self.out = pads, out
        self.algorithm = _choose(kernel, strides, not any(pads), group, cg)
        small = math.prod(xs[2:]) <= depthwise_nhwc.SMALL_PLANE
        if self.algorithm == "depthwise" and m == c and nsp <= 2 and small:
            self.algorithm = "depthwise_nhwc"  # (one channel per group: channels-last)
        if nsp <= 2:
            pad2 = [0] * (2 - nsp)
            one = [1] * (2 - nsp)
            self.h, self.w = ([1] * (2 - nsp) + list(xs[2:]))[-2:]
            self.kh, self.kw = (one + kernel)[-2:]
            self.sh, self.sw = (one + strides)[-2:]
            self.dh, self.dw = (one + dil)[-2:]
            self.pt, self.pl = (pad2 + pads[:nsp])[-2:]
            self.oh, self.ow = (one + out)[-2:]


def _geom_cache(make: Callable[[tuple, tuple], Any]) -> Callable[[tuple, tuple], Any]:
    cache: dict[tuple, Any] = {}

    def get(xs: tuple, ws: tuple) -> Any:
        key = (xs, ws)
        g = cache.get(key)
        if g is None:
            g = make(xs, ws)
            if len(cache) < 64:  # a model sees few shapes; don't grow without bound
                cache[key] = g
        return g

    return get


# -- generic numpy paths (N-d, any float dtype) ------------------------------------------------
def _windows(xp: np.ndarray, kernel, strides, dil) -> np.ndarray:
    """Strided view (N, C, *out, *k) of the padded input `xp`."""
    nsp = len(kernel)
    span = [(kernel[i] - 1) * dil[i] + 1 for i in range(nsp)]
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + nsp)))
    sl = (slice(None), slice(None))
    sl += tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dil)
    return win[sl]


def _conv_generic(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: _ConvGeom):
    nsp = g.nsp
    pads = g.pads
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nsp]) for i in range(nsp)])
    win = _windows(xp, g.kernel, g.strides, g.dilations)
    dt = np.result_type(x, w)
    mg = g.m // g.group
    check_size((g.n, g.m, *g.out), dt, "Conv output")
    y = np.empty((g.n, g.m, *g.out), dtype=dt)
    red = [1, *range(2 + nsp, 2 + 2 * nsp)]  # channel and kernel axes of the windows
    for k in range(g.group):
        wk = w[k * mg : (k + 1) * mg]
        part = np.tensordot(
            win[:, k * g.cg : (k + 1) * g.cg], wk, axes=(red, [1, *range(2, 2 + nsp)])
        )
        y[:, k * mg : (k + 1) * mg] = np.moveaxis(part, -1, 1)  # (N, *out, Mg) -> (N, Mg, *out)
    if b is not None:
        y += b.reshape((1, g.m) + (1,) * nsp)
    return y.astype(x.dtype, copy=False)


# -- Conv -------------------------------------------------------------------------------------
def _conv_f32(
    g: _ConvGeom,
    x: np.ndarray,
    wg: np.ndarray,
    b: np.ndarray | None,
    out: np.ndarray | None = None,
    alg: str | None = None,
    post: ImagePost | None = None,
) -> np.ndarray:
    """float32 Conv of geometry `g` by algorithm `alg` (default: g's heuristic one) with the
    weight packed as (G, Mg, Cg*kh*kw), written into `out` (contiguous float32 of the
    output's size) when given. The `_t` algorithms have BLAS compute the transposed
    product (y^T = col^T W^T), which packs the operands the other way round.

    `post(y, n, c0, c1, q0, q1)` is called on blocks of y (channels c0..c1-1, output
    positions q0..q1-1 of image n) that together cover it once each, each as soon as it
    is final (a fused epilogue, see ops_fused_conv.py); b must then be None."""
    shape = (g.n, g.m, g.oh, g.ow)
    if out is None:
        check_size(shape, np.float32, "Conv output")
        y = np.empty(shape, np.float32)
    else:
        y = out.reshape(shape)
    x4 = np.ascontiguousarray(x).reshape(g.n, g.c, g.h, g.w)
    alg = alg or g.algorithm
    if alg == "depthwise_nhwc":
        bias = f32c(b) if b is not None else np.zeros(g.m, np.float32)
        wt = wg if wg.ndim == 2 else depthwise_nhwc.pack_weight(wg)
        depthwise_nhwc.conv(g, x4, wt, bias, y, post)
        return y
    if alg == "depthwise":
        bias = f32c(b) if b is not None else np.zeros(g.m, np.float32)
        wf, mult = wg.reshape(-1), g.m // g.c
        for n in range(g.n):
            xf, yf = x4[n].reshape(-1), y[n].reshape(-1)

            def part(lo: int, hi: int, xf=xf, yf=yf, n=n) -> None:
                _depthwise(
                    xf, wf, bias, lo, hi, mult, g.h, g.w, g.kh, g.kw,
                    g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.oh, g.ow, yf,
                )  # fmt: skip
                if post is not None:
                    post(y, n, lo, hi, 0, g.oh * g.ow)

            per = g.kh * g.kw * g.oh * g.ow  # multiply-adds per channel
            _parallel.for_ranges(part, g.m, max(1, (1 << 17) // max(1, per)))
        return y
    p = g.oh * g.ow
    if b is not None and post is None and g.group == 1:
        # the bias added to each block right after its GEMM, while it is in cache, rather
        # than in a pass of its own over the whole output at the end
        from .ops_fused_conv import _EMPTY, ImageEpilogue

        post, b = ImageEpilogue(f32c(b), _EMPTY, (0, np.float32(0), np.float32(0))), None

    def image_post(n: int) -> Post | None:
        return None if post is None else (lambda c0, c1, q0, q1: post(y, n, c0, c1, q0, q1))

    product = _mkl.sgemm if alg.endswith("_mkl") else _blas
    if alg == "gemm_1x1_mkl" and g.group == 1:
        for n in range(g.n):
            mkl_conv_gemm(wg[0], x4[n].reshape(g.c, p), y[n].reshape(g.m, p), post, n, y)
    elif alg in ("gemm_1x1_t", "gemm_1x1") and g.group == 1:
        for n in range(g.n):
            y2 = y[n].reshape(g.m, p)
            xn = x4[n].reshape(g.c, p)
            conv_gemm(wg[0], xn, y2, alg.endswith("_t"), image_post(n), product)
    elif alg == "gemm_1x1":
        xg = x4.reshape(g.n, g.group, g.cg, p)
        np.matmul(wg, xg, out=y.reshape(g.n, g.group, g.m // g.group, p))
        whole(post, g, y)
    else:
        kk = g.cg * g.kh * g.kw
        col = scratch((g.c * g.kh * g.kw, p), "Conv im2col buffer")
        for n in range(g.n):
            im2col(x4[n], g, col)
            if alg == "im2col_gemm_mkl" and g.group == 1:
                mkl_conv_gemm(wg[0], col, y[n].reshape(g.m, p), post, n, y)
            elif g.group == 1:
                y2 = y[n].reshape(g.m, p)
                conv_gemm(wg[0], col, y2, alg == "im2col_gemm_t", image_post(n), product)
            else:
                out = y[n].reshape(g.group, g.m // g.group, p)
                np.matmul(wg, col.reshape(g.group, kk, p), out=out)
                if post is not None:
                    post(y, n, 0, g.m, 0, p)
    if b is not None:
        y += b.reshape(1, g.m, 1, 1)
    return y


def im2col(x3: np.ndarray, g: _ConvGeom, col: np.ndarray) -> None:
    """col (C*kh*kw, OH*OW) = the windows of one image x3 (C, H, W), channels split over
    the threads."""
    rows = g.kh * g.kw

    def part(lo: int, hi: int) -> None:
        _im2col(
            x3[lo:hi].reshape(-1), hi - lo, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw,
            g.pt, g.pl, g.oh, g.ow, col[lo * rows : hi * rows].reshape(-1),
        )  # fmt: skip

    _parallel.for_ranges(part, g.c, max(1, (1 << 15) // (rows * g.oh * g.ow)))


def _blas(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b, out=out)


def conv_gemm(
    w2: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    transposed: bool,
    post: Post | None = None,
    product: Callable[[np.ndarray, np.ndarray, np.ndarray], None] = _blas,
) -> None:
    """y2 (M, P) = w2 (M, K) @ x2 (K, P), split over the threads by output positions when
    there are many (each thread reads its part of x2, all of w2), else by output channels.
    `transposed`: BLAS computes y2^T = x2^T w2^T (it packs the operands the other way).
    `post(c0, c1, q0, q1)` runs on each part's block of y2 right after its GEMM: one part
    per thread. (Smaller parts, sized so that each block's output stays in L2 for the
    epilogue, measured 3-5% slower on whole models, MKL or OpenBLAS: each GEMM call ran
    less efficiently on fewer columns, and each call and epilogue paid its dispatch.)
    `product(a, b, out)`: numpy's matmul (OpenBLAS), or MKL's `_mkl.sgemm`."""
    m, k = w2.shape
    p = x2.shape[1]
    if p >= 256:

        def part(lo: int, hi: int) -> None:
            if transposed:
                product(x2[:, lo:hi].T, w2.T, y2[:, lo:hi].T)
            else:
                product(w2, x2[:, lo:hi], y2[:, lo:hi])
            if post is not None:
                post(0, m, lo, hi)

        _parallel.for_ranges(part, p, grain(2.0 * m * k), align=16)
    else:

        def part(lo: int, hi: int) -> None:
            if transposed:
                product(x2.T, w2[lo:hi].T, y2[lo:hi].T)
            else:
                product(w2[lo:hi], x2, y2[lo:hi])
            if post is not None:
                post(lo, hi, 0, p)

        _parallel.for_ranges(part, m, grain(2.0 * k * p))


def mkl_conv_gemm(
    w2: np.ndarray, x2: np.ndarray, y2: np.ndarray, post: ImagePost | None, n: int, y: np.ndarray
) -> None:
    """`conv_gemm` by MKL for image n of y, its parts on numba's threads when they can run
    there (see _native.py), else on the pool."""
    from . import _native  # (imports the epilogue kernels, which import this module)

    (m, k), p = w2.shape, x2.shape[1]
    if p >= 256:
        by_cols, parts = True, _parallel.split(p, grain(2.0 * m * k), align=16)
    else:
        by_cols, parts = False, _parallel.split(m, grain(2.0 * k * p))
    if not _native.conv_gemm(w2, x2, y2, by_cols, parts, post, n):
        image_post = None if post is None else (lambda c0, c1, q0, q1: post(y, n, c0, c1, q0, q1))
        conv_gemm(w2, x2, y2, False, image_post, _mkl.sgemm)


Post = Callable[[int, int, int, int], None]  # (c0, c1, q0, q1): a block of one image
# (y, n, c0, c1, q0, q1): a block of image n of the output y
ImagePost = Callable[[np.ndarray, int, int, int, int, int], None]


def whole(post: ImagePost | None, g: _ConvGeom, y: np.ndarray) -> None:
    """`post` on every image of y whole: for the algorithms that finish all at once."""
    if post is not None:
        for n in range(g.n):
            post(y, n, 0, g.m, 0, g.oh * g.ow)


def _pack_conv_weight(w: np.ndarray, group: int) -> np.ndarray:
    """(M, Cg, *k) -> (G, Mg, Cg*k): each group's GEMM operand (flat, the depthwise taps)."""
    m = w.shape[0]
    return f32c(w).reshape(group, m // group, -1)


def _candidates(g: _ConvGeom) -> list[str]:
    """The algorithms that compute a float32 2-D Conv of geometry `g`, heuristic one first."""
    names = [g.algorithm]
    if g.algorithm == "depthwise_nhwc":
        names += ["depthwise", "grouped_im2col_gemm"]
    elif g.algorithm == "depthwise":
        if g.m == g.c:  # one output channel per input channel: channels-last applies
            names.append("depthwise_nhwc")
        names.append("grouped_im2col_gemm")
    elif g.algorithm == "gemm_1x1" and g.group == 1:
        names.append("gemm_1x1_t")
        if _mkl.available():
            names.append("gemm_1x1_mkl")
    elif g.algorithm == "im2col_gemm":
        names.append("im2col_gemm_t")
        if _mkl.available():
            names.append("im2col_gemm_mkl")
        if winograd.applies(g.kernel, g.strides, g.dilations, g.group):
            names += ["winograd_f2", "winograd_f4"]
    return names


def _builder(g: _ConvGeom, alg: str, w: np.ndarray, group: int) -> Callable[[], Callable]:
    """`build() -> fn(x, b, y)`: algorithm `alg` with the weight packed its way (at build)."""

    def build() -> Callable:
        if alg.startswith("winograd_f"):
            m = int(alg[-1])
            u = winograd.pack_weight(w, m)
            zeros = np.zeros(g.m, np.float32)

            def fn(x, b, y, post=None):
                bias = zeros if b is None else b
                xx = np.ascontiguousarray(x).reshape(g.n, g.c, g.h, g.w)
                return winograd.conv(xx, u, bias, m, (g.pt, g.pl), y, post)

            fn.held = fn.streamed = lambda: u.nbytes  # the transformed weights (autotune.py)
            return fn
        if alg == "generic":

            def generic(x, b, y, post=None):
                deliver(y, _conv_generic(x, w, b, g))
                whole(post, g, y)
                return y

            return generic
        if alg == "depthwise_nhwc":
            wg = depthwise_nhwc.pack_weight(w)  # (taps, C): a tap of every channel a row
        else:
            wg = _pack_conv_weight(w, group)

        def packed(x, b, y, post=None):
            return _conv_f32(g, x, wg, b, y, alg, post)

        own = 0 if np.shares_memory(wg, w) else wg.nbytes
        packed.held = lambda: own
        return packed

    return build


def _select(g: _ConvGeom, w: np.ndarray, bias: np.ndarray | None, attrs: dict, group: int):
    """(algorithm, fn(x, b, y), Choice) for geometry `g`: measured, cached or forced."""
    names = _candidates(g)
    if autotune.forced("Conv") == "generic" and g.nsp <= 2:
        names.append("generic")  # the numpy definition, only when asked for by name
    builders = {name: _builder(g, name, w, group) for name in names}
    shape = (g.n, g.m, g.oh, g.ow)
    xs = (g.n, g.c, *([g.h, g.w] if g.nsp == 2 else [g.w]))
    flops = 2.0 * g.n * g.m * g.cg * g.kh * g.kw * g.oh * g.ow

    def make_args():
        rng = np.random.default_rng(0)
        x = rng.standard_normal(xs, dtype=np.float32)
        return x, bias, np.empty(shape, np.float32)

    attrs_key = {k: attrs.get(k) for k in ("dilations", "group", "pads", "strides", "auto_pad")}
    key = autotune.cache_key("Conv", [list(xs), list(w.shape)], attrs_key)
    return autotune.select("Conv", key, builders, g.algorithm, make_args, flops)


@kernels.register("Conv", since=1)
def conv(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node) or declines_dtype(node, 1):
        return None
    attrs = dict(node.attrs)
    group = int(attrs.get("group", 1))
    w_const = const_input(node, 1)
    b_const = const_input(node, 2)
    ws = static_shape(node, 1)
    w32 = None
    w_ok = w_const is not None and w_const.dtype == np.float32 and w_const.ndim in (3, 4)
    if w_ok and group > 0 and w_const.shape[0] % group == 0:  # else the call says what's wrong
        w32 = f32c(w_const)
    bias = f32c(b_const) if b_const is not None and b_const.dtype == np.float32 else None

    geom = _geom_cache(lambda xs, ws_: _ConvGeom(xs, ws_, attrs, group))
    # per input shape: the selected algorithm's function, its weight packed its way
    chosen: dict[tuple, Callable] = {}

    def tuned(g: _ConvGeom, xs: tuple) -> Callable:
        fn = chosen.get(xs)
        if fn is None:
            _, fn, choice = _select(g, w32, bias, attrs, group)
            if len(chosen) < 8:  # a model sees few shapes; packed weights are not small
                chosen[xs] = fn
            autotune.announce(run, choice)
        return fn

    def run(x, w, b=None, out=None, post=None):
        g = geom(x.shape, w.shape)
        o = dest(out)
        if g.algorithm == "generic" or not all_f32(x, w, b):
            y = deliver(o, _conv_generic(x, w, b, g))
            whole(post, g, y)
            return (y,)
        if b is not None and b.shape != (g.m,):
            raise ValueError(f"Conv bias shape {list(b.shape)} != [{g.m}]")
        bb = bias if bias is not None else b
        if w32 is not None and w.shape == w32.shape:
            fn = tuned(g, x.shape)
            shape = (g.n, g.m, g.oh, g.ow)
            if o is None:
                check_size(shape, np.float32, "Conv output")
            y = np.empty(shape, np.float32) if o is None else o.reshape(shape)
            fn(x, bb, y, post)
            return (o if o is not None else y.reshape(g.n, g.m, *g.out),)
        y = _conv_f32(g, x, _pack_conv_weight(w, group), bb, o, post=post)
        return (o if o is not None else y.reshape(g.n, g.m, *g.out),)

    # `post=` (see _conv_f32): the fused kernel's epilogue, run on each block in cache
    run.writes_out, run.takes_post = True, True
    run.listeners = []
    run.candidates = {}

    # The heuristic algorithm depends only on static facts; say which one when known.
    kernel = attrs.get("kernel_shape") or (ws[2:] if ws else None)
    run.algorithm = "auto"
    if kernel is not None and ws is not None:
        nsp = len(kernel)
        strides = _ints(attrs.get("strides"), nsp, 1)
        auto_pad = attrs.get("auto_pad", "NOTSET")
        # only read for 1x1 stride-1 kernels, where SAME_* and VALID both mean no padding
        pads_zero = auto_pad != "NOTSET" or not any(attrs.get("pads") or [0])
        run.algorithm = _choose(kernel, strides, pads_zero, group, ws[1])
    # With the input shape known now, select now: measuring is compile-time work.
    xs = static_shape(node, 0)
    if xs is not None and w32 is not None and (node.inputs[0].dtype in (None, np.float32)):
        try:
            g = geom(xs, w32.shape)
        except ValueError:
            g = None  # a bad shape: the call raises it with the node's name
        if g is not None and g.algorithm != "generic":
            tuned(g, xs)
    return run


# -- ConvTranspose ----------------------------------------------------------------------------
class _ConvTGeom:
    """Shapes of one ConvTranspose call, normalized to 2-D."""

    __slots__ = ("c", "cg", "dil", "group", "kernel", "m", "mg", "n", "nsp", "out", "pads")
    __slots__ += ("h", "w", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl", "oh", "ow")
    __slots__ += ("strides",)

    def __init__(self, xs: tuple[int, ...], ws: tuple[int, ...], attrs: dict, group: int):
        if len(xs) < 3 or len(ws) != len(xs):
            raise ValueError(
                f"ConvTranspose input {list(xs)} and weight {list(ws)} must have equal rank >= 3"
            )
        nsp = len(xs) - 2
        n, c = xs[0], xs[1]
        if ws[0] != c or c % group:
            raise ValueError(
                f"ConvTranspose input has {c} channels; weight {list(ws)} with group={group} "
                f"expects {ws[0]} (a multiple of group)"
            )
        kernel = list(attrs.get("kernel_shape") or ws[2:])
        if tuple(kernel) != tuple(ws[2:]):
            raise ValueError(f"ConvTranspose kernel_shape {kernel} != weight {list(ws)}")
        strides = _ints(attrs.get("strides"), nsp, 1)
        dil = _ints(attrs.get("dilations"), nsp, 1)
        opad = _ints(attrs.get("output_padding"), nsp, 0)
        auto_pad = attrs.get("auto_pad", "NOTSET")
        out_attr = attrs.get("output_shape")
        ins = xs[2:]
        full = [
            strides[i] * (ins[i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1 for i in range(nsp)
        ]
        if out_attr or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            # The spec's rule: pads follow from the requested output size; SAME_UPPER puts
            # the odd pad at the end, everything else at the beginning.
            out = (
                [int(v) for v in out_attr][-nsp:]
                if out_attr
                # SAME pads never go negative: a kernel shorter than the stride gives the
                # natural size (as reference, onnx shape inference and onnxruntime do)
                else [min(ins[i] * strides[i], full[i]) for i in range(nsp)]
            )
            total = [full[i] - out[i] for i in range(nsp)]
            if auto_pad == "SAME_UPPER":
                pads = [t // 2 for t in total] + [t - t // 2 for t in total]
            else:
                pads = [t - t // 2 for t in total] + [t // 2 for t in total]
        else:
            pads = [0] * (2 * nsp)
            if auto_pad != "VALID" and attrs.get("pads"):
                pads = [int(p) for p in attrs["pads"]]
            out = [full[i] - pads[i] - pads[i + nsp] for i in range(nsp)]
        if any(o < 1 for o in out):
            raise ValueError(f"ConvTranspose output would be empty: {out} (input {list(xs)})")
        self.n, self.c, self.group, self.cg, self.nsp = n, c, group, c // group, nsp
        self.mg = ws[1]
        self.m = ws[1] * group
        self.kernel, self.strides, self.dil, self.pads, self.out = kernel, strides, dil, pads, out
        if nsp <= 2:
            one, zero = [1] * (2 - nsp), [0] * (2 - nsp)
            self.h, self.w = (one + list(ins))[-2:]
            self.kh, self.kw = (one + kernel)[-2:]
            self.sh, self.sw = (one + strides)[-2:]
            self.dh, self.dw = (one + dil)[-2:]
            self.pt, self.pl = (zero + pads[:nsp])[-2:]
            self.oh, self.ow = (one + out)[-2:]


def _convt_generic(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: _ConvTGeom):
    """N-d ConvTranspose in numpy: one strided add per kernel offset, then crop/pad."""
    nsp = g.nsp
    dt = np.result_type(x, w)
    ins = x.shape[2:]
    span = [g.strides[i] * (ins[i] - 1) + 1 for i in range(nsp)]  # one kernel tap's reach
    reach = [span[i] + (g.kernel[i] - 1) * g.dil[i] for i in range(nsp)]
    # room for the output however its pads crop or extend the full result
    lo = [min(0, g.pads[i]) for i in range(nsp)]
    size = [max(reach[i], g.pads[i] + g.out[i]) - lo[i] for i in range(nsp)]
    check_size((g.n, g.m, *size), dt, "ConvTranspose output")
    acc = np.zeros((g.n, g.m, *size), dtype=dt)
    xg = x.reshape(g.n, g.group, g.cg, *ins)
    wg = w.reshape(g.group, g.cg, g.mg, *g.kernel)
    for kidx in np.ndindex(*g.kernel):
        # (N, G, Cg, *in) x (G, Cg, Mg) -> (N, G, Mg, *in)
        wk = wg[(slice(None), slice(None), slice(None), *kidx)]
        part = np.einsum("ngc...,gcm->ngm...", xg, wk)
        start = [kidx[i] * g.dil[i] - lo[i] for i in range(nsp)]
        sl = tuple(slice(start[i], start[i] + span[i], g.strides[i]) for i in range(nsp))
        acc[(slice(None), slice(None), *sl)] += part.reshape(g.n, g.m, *ins)
    crop = tuple(slice(g.pads[i] - lo[i], g.pads[i] - lo[i] + g.out[i]) for i in range(nsp))
    y = acc[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.reshape((1, g.m) + (1,) * nsp)
    return np.ascontiguousarray(y).astype(x.dtype, copy=False)


def _pack_convt_weight(w: np.ndarray, group: int) -> np.ndarray:
    """(C, Mg, *k) -> (G, Mg*k, Cg): each group's transposed GEMM operand."""
    w = f32c(w)
    c = w.shape[0]
    return np.ascontiguousarray(w.reshape(group, c // group, -1).transpose(0, 2, 1))


def _convt_f32(
    g: _ConvTGeom,
    x: np.ndarray,
    wt: np.ndarray,
    b: np.ndarray | None,
    out: np.ndarray | None = None,
):
    shape = (g.n, g.m, g.oh, g.ow)
    if out is None:
        check_size(shape, np.float32, "ConvTranspose output")
        y = np.empty(shape, np.float32)
    else:
        y = out.reshape(shape)
    x4 = np.ascontiguousarray(x).reshape(g.n, g.c, g.h * g.w)
    mk = g.mg * g.kh * g.kw
    p = g.h * g.w
    col = scratch((g.group * mk, p), "ConvTranspose column buffer")
    for n in range(g.n):
        if g.group == 1:
            np.matmul(wt[0], x4[n], out=col)
        else:
            np.matmul(wt, x4[n].reshape(g.group, g.cg, p), out=col.reshape(g.group, mk, p))
        yn = y[n]
        if b is not None:
            yn[...] = b.reshape(g.m, 1, 1)
        else:
            yn.fill(0.0)
        _col2im(
            col.reshape(-1), g.m, g.h, g.w, g.kh, g.kw,
            g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.oh, g.ow, yn.reshape(-1),
        )  # fmt: skip
    return y


@kernels.register("ConvTranspose", since=1)
def conv_transpose(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node) or declines_dtype(node, 1):
        return None
    attrs = dict(node.attrs)
    group = int(attrs.get("group", 1))
    w_const = const_input(node, 1)
    b_const = const_input(node, 2)
    packed = None
    w_ok = w_const is not None and w_const.dtype == np.float32 and w_const.ndim in (3, 4)
    if w_ok and group > 0 and w_const.shape[0] % group == 0:
        packed = _pack_convt_weight(w_const, group)
    bias = f32c(b_const) if b_const is not None and b_const.dtype == np.float32 else None
    geom = _geom_cache(lambda xs, ws: _ConvTGeom(xs, ws, attrs, group))

    def run(x, w, b=None, out=None):
        g = geom(x.shape, w.shape)
        o = dest(out)
        if b is not None and b.shape != (g.m,):
            raise ValueError(f"ConvTranspose bias shape {list(b.shape)} != [{g.m}]")
        if g.nsp > 2 or not all_f32(x, w, b):
            return (deliver(o, _convt_generic(x, w, b, g)),)
        wt = packed if packed is not None else _pack_convt_weight(w, group)
        y = _convt_f32(g, x, wt, bias if bias is not None else b, o)
        return (o if o is not None else y.reshape(g.n, g.m, *g.out),)

    run.writes_out = True

    ws = static_shape(node, 1)
    run.algorithm = "gemm_col2im" if ws is None or len(ws) <= 4 else "generic"
    return run
