"""x86 pooling: MaxPool (with its optional Indices output), AveragePool, GlobalAveragePool
and GlobalMaxPool.

1-D and 2-D windows run in numba loops (``window_loop``; 1-D as height 1; MaxPool's planes
split over the threads unless Indices are asked for); 3-D pools and
non-float32 average pools use numpy strided windows (``generic``); a 3-D MaxPool asked
for its Indices is declined (the reference backend runs it). The global pools are numpy
reductions (``reduce``). Output sizes follow the ONNX/PyTorch rule for ceil_mode: the
last window must start inside the input or its begin padding. Each writes into the
arena's buffer when the executor passes `out=` (see backends/base.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numba import prange

from ..base import deliver, dest
from ..common import conv_pads
from . import _parallel
from ._numba import declines_dtype, njit, u64, valid_range, wants_output
from ._table import kernels
from ._vec16 import load, nanmax, splat, store

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext

_SAME = ("SAME_UPPER", "SAME_LOWER")


# -- numba kernels ----------------------------------------------------------------------------
@njit
def _tap_ranges(n_out, stride, pad, dil, k, size):
    """Per output position: the first and past-the-last kernel tap inside [0, size), and
    the window start; computed once per call instead of per output."""
    lo = np.empty(n_out, np.int64)
    hi = np.empty(n_out, np.int64)
    start = np.empty(n_out, np.int64)
    for o in range(n_out):
        start[o] = o * stride - pad
        lo[o], hi[o] = valid_range(start[o], dil, size, k)
    return lo, hi, start


@njit(inline="always")
def _max(v, cur):  # pragma: no cover - compiled
    return v if v > cur else cur


@njit(inline="always")
def _nanmax(v, cur):  # pragma: no cover - compiled
    """The larger, or NaN if v is NaN (a NaN in cur stays: nothing compares above it)."""
    return v if (v > cur) | (v != v) else cur


@njit
def _maxpool2d(
    x, nc, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, low, y, idx, want_idx, cm, floats
):  # pragma: no cover - compiled
    """Max over each window of x (NC, H, W) into y (NC, OH, OW), all flat; with want_idx,
    the flat argmax (over the whole tensor, plane column-major when cm) into idx. With
    `floats`, each plane is first scanned for NaN: in a plane that holds one, a NaN is its
    window's max, as in the reference; that test costs the loops half their speed, so
    only such planes pay it (the scan, a vectorized count in cache, ~a tenth).

    Taps outer, output positions inner: the inner loop has no window-edge tests and no
    data-dependent branch (a mispredicted one per tap costs more than the comparison).
    """
    ilo, ihi, hs = _tap_ranges(oh, sh, pt, dh, kh, h)
    qlo = np.empty(kw, np.int64)
    qhi = np.empty(kw, np.int64)
    for j in range(kw):
        qlo[j], qhi[j] = valid_range(j * dw - pl, sw, w, ow)
    empty = np.ones(ow, np.bool_)
    for j in range(kw):
        for q in range(qlo[j], qhi[j]):
            empty[q] = False
    empty_cols = empty.any()
    # strided, without indices: each input row through a line padded with `low`, from
    # which every tap reads without bounds; with stride 2 two neighbouring taps in one
    # loop (line[2q + j], line[2q + j + 1]), which LLVM loads as one interleaved vector
    # where a loop per tap reading every other value stayed scalar
    lined = sw > 1 and not want_idx
    span = (ow - 1) * sw + (kw - 1) * dw + 1
    line = np.full(span if lined else 0, low, x.dtype)
    tlo, thi = valid_range(-pl, 1, w, span)
    for c in range(nc):
        xb = c * h * w
        nans = False
        if floats:
            count = 0
            for t in range(h * w):
                v = x[u64(xb + t)]
                count += np.int64(v != v)
            nans = count > 0
        for p in range(oh):
            yb = (c * oh + p) * ow
            for q in range(ow):
                y[u64(yb + q)] = low
                if want_idx:
                    idx[u64(yb + q)] = -1
            for i in range(ilo[p], ihi[p]):
                rb = (hs[p] + i * dh) * w
                if lined:
                    for t in range(tlo, thi):
                        line[u64(t)] = x[u64(xb + rb - pl + t)]
                    j = 0
                    while j < kw:
                        pair = sw == 2 and dw == 1 and j + 1 < kw
                        if pair and nans:
                            for q in range(ow):
                                cur = _nanmax(line[u64(2 * q + j)], y[u64(yb + q)])
                                y[u64(yb + q)] = _nanmax(line[u64(2 * q + j + 1)], cur)
                        elif pair:
                            for q in range(ow):
                                cur = _max(line[u64(2 * q + j)], y[u64(yb + q)])
                                y[u64(yb + q)] = _max(line[u64(2 * q + j + 1)], cur)
                        elif nans:
                            for q in range(ow):
                                v = line[u64(q * sw + j * dw)]
                                y[u64(yb + q)] = _nanmax(v, y[u64(yb + q)])
                        else:
                            for q in range(ow):
                                v = line[u64(q * sw + j * dw)]
                                y[u64(yb + q)] = _max(v, y[u64(yb + q)])
                        j += 2 if pair else 1
                    continue
                for j in range(kw):
                    off = rb + j * dw - pl
                    if want_idx:
                        for q in range(qlo[j], qhi[j]):
                            v = x[u64(xb + off + q * sw)]
                            cur = y[u64(yb + q)]  # (a NaN wins, the first one)
                            gt = v > cur or idx[u64(yb + q)] < 0 or (nans and v != v and cur == cur)
                            idx[u64(yb + q)] = off + q * sw if gt else idx[u64(yb + q)]
                            y[u64(yb + q)] = v if gt else y[u64(yb + q)]
                    elif nans:
                        for q in range(qlo[j], qhi[j]):
                            v = x[u64(xb + off + q * sw)]
                            y[u64(yb + q)] = _nanmax(v, y[u64(yb + q)])
                    else:
                        for q in range(qlo[j], qhi[j]):
                            v = x[u64(xb + off + q * sw)]
                            y[u64(yb + q)] = _max(v, y[u64(yb + q)])
            if ilo[p] == ihi[p]:  # windows made of padding only: 0, as the reference
                for q in range(ow):
                    y[u64(yb + q)] = 0
            elif want_idx or empty_cols:
                for q in range(ow):
                    if empty[q]:
                        y[u64(yb + q)] = 0
                    elif want_idx:
                        at = idx[u64(yb + q)]
                        if cm:
                            at = (at % w) * h + at // w
                        idx[u64(yb + q)] = xb + at


@njit
def _avgpool2d(x, nc, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, cnt_h, cnt_w, y):
    """Mean of each window of x (NC, H, W) into y (NC, OH, OW), all flat: the sum over taps
    inside the input divided by cnt_h[p] * cnt_w[q], the taps the divisor counts. Loops
    ordered as in _maxpool2d."""
    ilo, ihi, hs = _tap_ranges(oh, sh, pt, dh, kh, h)
    qlo = np.empty(kw, np.int64)
    qhi = np.empty(kw, np.int64)
    for j in range(kw):
        qlo[j], qhi[j] = valid_range(j * dw - pl, sw, w, ow)
    for c in range(nc):
        xb = c * h * w
        for p in range(oh):
            yb = (c * oh + p) * ow
            for q in range(ow):
                y[u64(yb + q)] = 0.0
            for i in range(ilo[p], ihi[p]):
                rb = xb + (hs[p] + i * dh) * w
                for j in range(kw):
                    off = rb + j * dw - pl
                    for q in range(qlo[j], qhi[j]):
                        y[u64(yb + q)] += x[u64(off + q * sw)]
            for q in range(ow):
                y[u64(yb + q)] /= cnt_h[p] * cnt_w[q]


# -- geometry ---------------------------------------------------------------------------------
def _ints(value, n: int, default: int) -> list[int]:
    return [int(v) for v in value] if value else [default] * n


class _PoolGeom:
    """Output size and pads of one pool over spatial input `ins`."""

    __slots__ = ("dil", "kernel", "out", "pads", "strides")

    def __init__(self, ins: Sequence[int], attrs: dict, kernel: list[int]):
        nsp = len(kernel)
        if len(ins) != nsp:
            raise ValueError(
                f"pool kernel_shape {kernel} needs {nsp} spatial dims, input has {len(ins)}"
            )
        strides = _ints(attrs.get("strides"), nsp, 1)
        dil = _ints(attrs.get("dilations"), nsp, 1)
        auto_pad = attrs.get("auto_pad", "NOTSET")
        ceil_mode = bool(attrs.get("ceil_mode", 0))
        pads = conv_pads(ins, kernel, strides, dil, attrs.get("pads"), auto_pad)
        out = []
        for i in range(nsp):
            if auto_pad in _SAME:
                out.append(-(-ins[i] // strides[i]))
                continue
            span = (kernel[i] - 1) * dil[i] + 1
            room = ins[i] + pads[i] + pads[i + nsp] - span
            if ceil_mode:
                o = -(-room // strides[i]) + 1
                if (o - 1) * strides[i] >= ins[i] + pads[i]:
                    o -= 1  # the last window would start in the end padding
            else:
                o = room // strides[i] + 1
            out.append(o)
        if any(o < 1 for o in out):
            raise ValueError(f"pool output would be empty: input {list(ins)}, kernel {kernel}")
        self.kernel, self.strides, self.dil, self.pads, self.out = kernel, strides, dil, pads, out


def _geom_getter(attrs: dict, kernel: list[int]) -> Callable[[tuple], _PoolGeom]:
    cache: dict[tuple, _PoolGeom] = {}

    def get(ins: tuple) -> _PoolGeom:
        g = cache.get(ins)
        if g is None:
            g = _PoolGeom(ins, attrs, kernel)
            if len(cache) < 64:
                cache[ins] = g
        return g

    return get


def _counts(n_out: int, stride: int, pad: int, dil: int, k: int, size: int, end_pad) -> np.ndarray:
    """Per output position along one axis, the taps an average divides by: those inside
    the input, or (count_include_pad, `end_pad` given) inside input plus explicit pads."""
    pos = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :] * dil
    lo, hi = (-pad, size + end_pad) if end_pad is not None else (0, size)
    return ((pos >= lo) & (pos < hi)).sum(axis=1).astype(np.float64)


def _as_2d(g: _PoolGeom) -> tuple[int, ...]:
    """(kh, kw, sh, sw, dh, dw, pt, pl, pb, pr) with 1-D pools as height 1."""
    nsp = len(g.kernel)
    if nsp == 2:
        k, s, d, p = g.kernel, g.strides, g.dil, g.pads
        return (k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1], p[2], p[3])
    return (1, g.kernel[0], 1, g.strides[0], 1, g.dil[0], 0, g.pads[0], 0, g.pads[1])


def _padded(x: np.ndarray, g: _PoolGeom, fill) -> np.ndarray:
    """`x` padded at the beginning by the pads and at the end far enough for every window
    (ceil_mode can reach past the end pads)."""
    nsp = len(g.kernel)
    ins = x.shape[2:]
    span = [(g.kernel[i] - 1) * g.dil[i] + 1 for i in range(nsp)]
    ends = [(g.out[i] - 1) * g.strides[i] + span[i] - ins[i] - g.pads[i] for i in range(nsp)]
    widths = [(0, 0), (0, 0)] + [(g.pads[i], max(ends[i], 0)) for i in range(nsp)]
    return np.pad(x, widths, constant_values=fill)


def _windows(xp: np.ndarray, g: _PoolGeom) -> np.ndarray:
    """View (N, C, *out, *kernel) of the windows of the padded input `xp`."""
    nsp = len(g.kernel)
    span = [(g.kernel[i] - 1) * g.dil[i] + 1 for i in range(nsp)]
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + nsp)))
    sl = (slice(None), slice(None), *(slice(None, None, s) for s in g.strides))
    win = win[(*sl, *(slice(None, None, d) for d in g.dil))]
    return win[(slice(None), slice(None), *(slice(0, o) for o in g.out))]


def _max_generic(x: np.ndarray, g: _PoolGeom) -> np.ndarray:
    """N-d max pool with numpy windows (padding never wins: it is the lowest value)."""
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    nsp = len(g.kernel)
    win = _windows(_padded(x, g, low), g)
    return np.ascontiguousarray(win.max(axis=tuple(range(2 + nsp, 2 + 2 * nsp))))


def _avg_generic(x: np.ndarray, g: _PoolGeom, include_pad: bool) -> np.ndarray:
    """N-d average pool with numpy windows; counts factor into per-axis counts."""
    nsp = len(g.kernel)
    ins = x.shape[2:]
    win = _windows(_padded(x, g, 0), g)
    total = win.sum(axis=tuple(range(2 + nsp, 2 + 2 * nsp)), dtype=x.dtype)
    count = np.ones((), dtype=np.float64)
    for i in range(nsp):
        end_pad = g.pads[i + nsp] if include_pad else None
        c = _counts(g.out[i], g.strides[i], g.pads[i], g.dil[i], g.kernel[i], ins[i], end_pad)
        count = np.multiply.outer(count, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count.astype(x.dtype)).astype(x.dtype, copy=False)


# -- kernels ----------------------------------------------------------------------------------
@kernels.register("AveragePool", since=1)
def average_pool(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node):
        return None
    attrs = dict(node.attrs)
    if ctx.opset < 19:
        attrs.pop("dilations", None)  # not part of AveragePool before opset 19
    kernel = [int(k) for k in attrs.get("kernel_shape") or ()]
    if not kernel:
        return None
    include_pad = bool(attrs.get("count_include_pad", 0))
    geom = _geom_getter(attrs, kernel)
    nsp = len(kernel)

    def run(x, out=None):
        if x.ndim != nsp + 2:
            raise ValueError(f"AveragePool with {nsp}-D kernel got input of rank {x.ndim}")
        g = geom(x.shape[2:])
        o = dest(out)
        if nsp > 2 or x.dtype != np.float32:
            return (deliver(o, _avg_generic(x, g, include_pad)),)
        kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _as_2d(g)
        n, c = x.shape[:2]
        h, w = (1, *x.shape[2:])[-2:]
        oh, ow = (1, *g.out)[-2:]
        y = np.empty((n * c, oh, ow), np.float32) if o is None else o.reshape(n * c, oh, ow)
        cnt_h = _counts(oh, sh, pt, dh, kh, h, pb if include_pad else None)
        cnt_w = _counts(ow, sw, pl, dw, kw, w, pr if include_pad else None)
        x1 = np.ascontiguousarray(x).reshape(-1)
        _avgpool2d(
            x1, n * c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, cnt_h, cnt_w, y.reshape(-1)
        )
        return (y.reshape(n, c, *g.out) if o is None else o,)

    run.algorithm = "window_loop" if nsp <= 2 else "generic"
    run.writes_out = True
    return run


_NO_INDICES = np.zeros(1, np.int64)


@kernels.register("MaxPool", since=1)
def max_pool(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node):
        return None
    attrs = dict(node.attrs)
    kernel = [int(k) for k in attrs.get("kernel_shape") or ()]
    nsp = len(kernel)
    want_idx = wants_output(node, 1)
    if not kernel or (nsp > 2 and want_idx):
        return None  # N-d Indices run on the reference backend
    col_major = bool(attrs.get("storage_order", 0))
    geom = _geom_getter(attrs, kernel)

    def run(x, out=None):
        if x.ndim != nsp + 2:
            raise ValueError(f"MaxPool with {nsp}-D kernel got input of rank {x.ndim}")
        g = geom(x.shape[2:])
        o, oi = dest(out), dest(out, 1) if out is not None and len(out) > 1 else None
        if nsp > 2:
            return (deliver(o, _max_generic(x, g)),)
        kh, kw, sh, sw, dh, dw, pt, pl, _, _ = _as_2d(g)
        n, c = x.shape[:2]
        h, w = (1, *x.shape[2:])[-2:]
        oh, ow = (1, *g.out)[-2:]
        # the loop is dtype-generic: other dtypes compile their own (rare) specialization
        y = np.empty((n * c, oh, ow), x.dtype) if o is None else o.reshape(n * c, oh, ow)
        idx = _NO_INDICES
        if want_idx:
            idx = np.empty((n * c, oh, ow), np.int64) if oi is None else oi.reshape(n * c, oh, ow)
        x1 = np.ascontiguousarray(x).reshape(-1)
        low = x.dtype.type(-np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min)
        y1, i1 = y.reshape(-1), idx.reshape(-1)
        floats = x.dtype.kind == "f"
        if want_idx:  # (indices count from the whole tensor's start: one part)
            _maxpool2d(
                x1, n * c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, low,
                y1, i1, True, col_major, floats,
            )  # fmt: skip
        else:

            def part(lo: int, hi: int) -> None:
                _maxpool2d(
                    x1[lo * h * w : hi * h * w], hi - lo, h, w, kh, kw, sh, sw, dh, dw,
                    pt, pl, oh, ow, low, y1[lo * oh * ow : hi * oh * ow], i1, False, col_major,
                    floats,
                )  # fmt: skip

            # planes split over the threads: ~32k window taps a part at least
            _parallel.for_ranges(part, n * c, max(1, (1 << 15) // max(1, oh * ow * kh * kw)))
        y = y.reshape(n, c, *g.out) if o is None else o
        if want_idx:
            return (y, idx.reshape(n, c, *g.out) if oi is None else oi)
        return (y,)

    run.algorithm = "window_loop" if nsp <= 2 else "generic"
    run.writes_out = True
    return run


@njit
def _maxpool_hwc(x, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, r0, r1, low, y):
    """Max over each window of x (H, W, C) into output rows r0..r1-1 of y (OH, OW, C), both
    flat: per output pixel a run of C maxima, each tap one vector compare over C (a NaN
    in a window is its max, as in the reference). A window with no tap inside is `low`."""
    for i in range(r0, r1):
        for j in range(ow):
            d = (i * ow + j) * c
            for k in range(c):
                y[u64(d + k)] = low
            for a in range(kh):
                ii = i * sh - pt + a * dh
                if ii < 0 or ii >= h:
                    continue
                for e in range(kw):
                    jj = j * sw - pl + e * dw
                    if jj < 0 or jj >= w:
                        continue
                    src = (ii * w + jj) * c
                    for k in range(c):
                        y[u64(d + k)] = _nanmax(x[u64(src + k)], y[u64(d + k)])


@njit
def _maxpool_hwc16(x, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, r0, r1, low, y):
    """`_maxpool_hwc` for float32 and C a multiple of 16: each pixel's channels 16 at a
    time in a vector register (`_vec16`) over the window's taps, stored once (the loop
    above reads and writes y at every tap: ResNet-50's 3x3 stride-2 pool of 112x112x64,
    2 threads, took 0.19-0.30 ms in the model against onnxruntime's 0.10)."""
    lo = splat(low)
    for i in range(r0, r1):
        for j in range(ow):
            d = (i * ow + j) * c
            for k in range(0, c, 16):
                acc = lo
                for a in range(kh):
                    ii = i * sh - pt + a * dh
                    if ii < 0 or ii >= h:
                        continue
                    for e in range(kw):
                        jj = j * sw - pl + e * dw
                        if jj >= 0 and jj < w:
                            acc = nanmax(load(x, u64((ii * w + jj) * c + k)), acc)
                store(y, u64(d + k), acc)


@njit(parallel=True)
def _maxpool_parts16(x, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, bounds, low, y):
    """`_maxpool_hwc16` over output rows bounds[t]..bounds[t + 1]-1 on numba's threads."""
    for t in prange(bounds.size - 1):
        _maxpool_hwc16(
            x, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, bounds[t], bounds[t + 1], low, y
        )


@njit(parallel=True)
def _maxpool_parts(x, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, bounds, low, y):
    """`_maxpool_hwc` over output rows bounds[t]..bounds[t + 1]-1, one part a thread of
    numba's team (after a conv on them a Python pool's part waited for their spin)."""
    for t in prange(bounds.size - 1):
        _maxpool_hwc(
            x, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, bounds[t], bounds[t + 1], low, y
        )


@kernels.register("MaxPoolNHWC", domain="workbench", since=1)
def max_pool_nhwc(node: Node, ctx: CompileContext) -> Callable | None:
    """MaxPool of channels-last X [N, H, W, C] (the channels_last pass's, 2-D): output rows
    split over the threads, each pixel's C channels one vector loop."""
    if declines_dtype(node):
        return None
    kernel = [int(k) for k in node.attrs.get("kernel_shape") or ()]
    if len(kernel) != 2:
        return None
    geom = _geom_getter(dict(node.attrs), kernel)

    def run(x, out=None):
        if x.ndim != 4:
            raise ValueError(f"MaxPoolNHWC needs a 4-D [N, H, W, C] input, got {list(x.shape)}")
        n, h, w, c = x.shape
        g = geom((h, w))
        kh, kw, sh, sw, dh, dw, pt, pl, _, _ = _as_2d(g)
        oh, ow = g.out
        o = dest(out)
        y = np.empty((n, oh, ow, c), x.dtype) if o is None else o
        low = x.dtype.type(-np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min)
        xf, yf = np.ascontiguousarray(x).reshape(n, -1), y.reshape(n, -1)
        from . import _native  # (imports the conv kernels)

        grain = max(1, (1 << 15) // max(1, ow * kh * kw * c))
        vectors = x.dtype == np.float32 and c % 16 == 0
        serial, parallel = (
            (_maxpool_hwc16, _maxpool_parts16) if vectors else (_maxpool_hwc, _maxpool_parts)
        )
        for b in range(n):
            head = (xf[b], h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, ow)
            _native.rows_call(serial, parallel, head, (low, yf[b]), oh, grain)()
        return (y,)

    run.algorithm = "window_loop_nhwc"
    run.writes_out = True
    return run


@kernels.register("GlobalAveragePool", since=1)
def global_average_pool(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node):
        return None

    def run(x, out=None):
        if x.ndim < 2:
            raise ValueError(f"GlobalAveragePool needs rank >= 2, got {x.ndim}")
        axes = tuple(range(2, x.ndim))
        return (x.mean(axis=axes, keepdims=True, dtype=x.dtype, out=dest(out)),)

    run.algorithm, run.writes_out = "reduce", True
    return run


@kernels.register("GlobalMaxPool", since=1)
def global_max_pool(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node):
        return None

    def run(x, out=None):
        if x.ndim < 2:
            raise ValueError(f"GlobalMaxPool needs rank >= 2, got {x.ndim}")
        return (x.max(axis=tuple(range(2, x.ndim)), keepdims=True, out=dest(out)),)

    run.algorithm, run.writes_out = "reduce", True
    return run
