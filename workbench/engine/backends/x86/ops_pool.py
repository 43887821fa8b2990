"""x86 pooling: MaxPool (with its optional Indices output), AveragePool, GlobalAveragePool
and GlobalMaxPool.

1-D and 2-D windows run in numba loops (``window_loop``; 1-D as height 1); 3-D and
non-float32 average pools use numpy strided windows (``generic``). The global pools are
numpy reductions (``reduce``). Output sizes follow the ONNX/PyTorch rule for ceil_mode:
the last window must start inside the input or its begin padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..common import conv_pads
from ._numba import declines_dtype, njit, wants_output
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext

_SAME = ("SAME_UPPER", "SAME_LOWER")


# -- numba kernels ----------------------------------------------------------------------------
@njit
def _maxpool2d(x, kh, kw, sh, sw, dh, dw, pt, pl, y, idx, want_idx, col_major):
    """Max over each window of x (NC, H, W) into y (NC, OH, OW); flat argmax into idx."""
    nc, h, w = x.shape
    _, oh, ow = y.shape
    for c in range(nc):
        for p in range(oh):
            hs = p * sh - pt
            for q in range(ow):
                ws = q * sw - pl
                best = x[c, 0, 0]
                at = -1
                for i in range(kh):
                    ih = hs + i * dh
                    if ih < 0 or ih >= h:
                        continue
                    for j in range(kw):
                        iw = ws + j * dw
                        if iw < 0 or iw >= w:
                            continue
                        v = x[c, ih, iw]
                        if at < 0 or v > best:
                            best = v
                            at = iw * h + ih if col_major else ih * w + iw
                if at < 0:  # a window made of padding only
                    best = 0
                y[c, p, q] = best
                if want_idx:
                    idx[c, p, q] = c * h * w + at if at >= 0 else -1


@njit
def _avgpool2d(x, kh, kw, sh, sw, dh, dw, pt, pl, r0h, r1h, r0w, r1w, y):
    """Mean of each window of x (NC, H, W): the sum over taps inside the input divided by
    the number of taps inside the counted region [r0h, r1h) x [r0w, r1w)."""
    nc, h, w = x.shape
    _, oh, ow = y.shape
    for c in range(nc):
        for p in range(oh):
            hs = p * sh - pt
            for q in range(ow):
                ws = q * sw - pl
                acc = 0.0
                cnt = 0
                for i in range(kh):
                    ih = hs + i * dh
                    if ih < r0h or ih >= r1h:
                        continue
                    for j in range(kw):
                        iw = ws + j * dw
                        if iw < r0w or iw >= r1w:
                            continue
                        cnt += 1
                        if 0 <= ih < h and 0 <= iw < w:
                            acc += x[c, ih, iw]
                y[c, p, q] = acc / cnt


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


def _as_2d(g: _PoolGeom) -> tuple[int, ...]:
    """(kh, kw, sh, sw, dh, dw, pt, pl, pb, pr) with 1-D pools as height 1."""
    nsp = len(g.kernel)
    if nsp == 2:
        k, s, d, p = g.kernel, g.strides, g.dil, g.pads
        return (k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1], p[2], p[3])
    return (1, g.kernel[0], 1, g.strides[0], 1, g.dil[0], 0, g.pads[0], 0, g.pads[1])


def _avg_generic(x: np.ndarray, g: _PoolGeom, include_pad: bool) -> np.ndarray:
    """N-d average pool with numpy windows; counts factor into per-axis counts."""
    nsp = len(g.kernel)
    ins = x.shape[2:]
    span = [(g.kernel[i] - 1) * g.dil[i] + 1 for i in range(nsp)]
    # pad the end far enough for every window (ceil_mode can reach past the pads)
    ends = [
        max((g.out[i] - 1) * g.strides[i] + span[i] - ins[i] - g.pads[i], 0) for i in range(nsp)
    ]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(g.pads[i], ends[i]) for i in range(nsp)])
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + nsp)))
    total = _windows(xp, g).sum(axis=tuple(range(2 + nsp, 2 + 2 * nsp)), dtype=x.dtype)
    count = np.ones((), dtype=np.float64)
    for i in range(nsp):
        lo = -g.pads[i] if include_pad else 0
        hi = ins[i] + g.pads[i + nsp] if include_pad else ins[i]
        pos = np.arange(g.out[i])[:, None] * g.strides[i] - g.pads[i]
        pos = pos + np.arange(g.kernel[i])[None, :] * g.dil[i]
        c = ((pos >= lo) & (pos < hi)).sum(axis=1)
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

    def run(x):
        if x.ndim != nsp + 2:
            raise ValueError(f"AveragePool with {nsp}-D kernel got input of rank {x.ndim}")
        g = geom(x.shape[2:])
        if nsp > 2 or x.dtype != np.float32:
            return (_avg_generic(x, g, include_pad),)
        kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _as_2d(g)
        n, c = x.shape[:2]
        h, w = (1, *x.shape[2:])[-2:]
        oh, ow = (1, *g.out)[-2:]
        y = np.empty((n * c, oh, ow), np.float32)
        if include_pad:
            r0h, r1h, r0w, r1w = -pt, h + pb, -pl, w + pr
        else:
            r0h, r1h, r0w, r1w = 0, h, 0, w
        x3 = np.ascontiguousarray(x).reshape(n * c, h, w)
        _avgpool2d(x3, kh, kw, sh, sw, dh, dw, pt, pl, r0h, r1h, r0w, r1w, y)
        return (y.reshape(n, c, *g.out),)

    run.algorithm = "window_loop" if nsp <= 2 else "generic"
    return run


_NO_INDICES = np.zeros((1, 1, 1), np.int64)


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

    def run(x):
        if x.ndim != nsp + 2:
            raise ValueError(f"MaxPool with {nsp}-D kernel got input of rank {x.ndim}")
        g = geom(x.shape[2:])
        if nsp > 2:
            return (_max_generic(x, g),)
        kh, kw, sh, sw, dh, dw, pt, pl, _, _ = _as_2d(g)
        n, c = x.shape[:2]
        h, w = (1, *x.shape[2:])[-2:]
        oh, ow = (1, *g.out)[-2:]
        # the loop is dtype-generic: other dtypes compile their own (rare) specialization
        y = np.empty((n * c, oh, ow), x.dtype)
        idx = np.empty((n * c, oh, ow), np.int64) if want_idx else _NO_INDICES
        x3 = np.ascontiguousarray(x).reshape(n * c, h, w)
        _maxpool2d(x3, kh, kw, sh, sw, dh, dw, pt, pl, y, idx, want_idx, col_major)
        y = y.reshape(n, c, *g.out)
        return (y, idx.reshape(n, c, *g.out)) if want_idx else (y,)

    run.algorithm = "window_loop" if nsp <= 2 else "generic"
    return run


@kernels.register("GlobalAveragePool", since=1)
def global_average_pool(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node):
        return None

    def run(x):
        if x.ndim < 2:
            raise ValueError(f"GlobalAveragePool needs rank >= 2, got {x.ndim}")
        axes = tuple(range(2, x.ndim))
        return (x.mean(axis=axes, keepdims=True, dtype=x.dtype),)

    run.algorithm = "reduce"
    return run


@kernels.register("GlobalMaxPool", since=1)
def global_max_pool(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node):
        return None

    def run(x):
        if x.ndim < 2:
            raise ValueError(f"GlobalMaxPool needs rank >= 2, got {x.ndim}")
        return (x.max(axis=tuple(range(2, x.ndim)), keepdims=True),)

    run.algorithm = "reduce"
    return run
