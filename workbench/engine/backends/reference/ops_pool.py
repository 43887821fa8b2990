"""Reference pools: MaxPool (with Indices), AveragePool, GlobalMaxPool, GlobalAveragePool.

onnx.reference gets these wrong in several places: GlobalMaxPool reduces axes 1..2 on
anything but 4-D input; MaxPool/AveragePool with SAME_LOWER and stride > 1 compute the
output size with floor and put the odd pad at the end; with ceil_mode their windows shift
once the extra padding reaches 2. Written here from the spec, for any number of spatial
axes.

Per spatial axis (k kernel, s stride, d dilation, span = (k - 1) * d + 1):

  explicit pads (pb, pe)  out = floor((in + pb + pe - span) / s) + 1, or ceil(...) + 1 with
                          ceil_mode, less one if that last window would start in the right
                          padding (out - 1) * s >= in + pb ("such windows are ignored")
  SAME_UPPER/SAME_LOWER   out = ceil(in / s); total pad (out - 1) * s + span - in (>= 0),
                          the odd pixel at the end (UPPER) or the beginning (LOWER)
  VALID                   pads of zero, then as explicit pads. With ceil_mode the doc's
                          VALID formula ceil((in - span + 1) / s) is floor's number again;
                          onnx's shape inference and onnxruntime both use ceil: so do we.

Window o reads input positions o * s - pb + j * d, j = 0..k-1; positions outside [0, in)
are padding. MaxPool takes the max over the real ones. AveragePool divides the sum of the
real ones by their count, or, with count_include_pad, by the count of positions inside
the declared padding [-pb, in + pe): the extra room ceil_mode adds past `pe` is never
counted. Both divisors are products of per-axis counts, which keeps this separable.
"""

from __future__ import annotations

import math

import numpy as np

from ..common import conv_pads
from ._table import kernels


def pool_geometry(in_spatial, attrs) -> tuple[list[int], ...]:
    """(kernel, strides, dilations, pads_begin, pads_end, out) of a pool over `in_spatial`."""
    n = len(in_spatial)
    k = [int(v) for v in attrs["kernel_shape"]]
    if len(k) != n:
        raise ValueError(f"pool kernel_shape {k} for an input with {n} spatial axes")
    strides = [int(v) for v in attrs.get("strides") or [1] * n]
    dil = [int(v) for v in attrs.get("dilations") or [1] * n]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    pads = conv_pads(in_spatial, k, strides, dil, attrs.get("pads"), auto_pad)
    begin, end, out = pads[:n], pads[n:], []
    for i in range(n):
        span = (k[i] - 1) * dil[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-in_spatial[i] // strides[i])
        else:  # explicit pads, or VALID: pads of zero
            room = in_spatial[i] + begin[i] + end[i] - span
            if ceil_mode:
                o = -(-room // strides[i]) + 1
                if (o - 1) * strides[i] >= in_spatial[i] + begin[i]:
                    o -= 1  # that window would start in the right padding: dropped
            else:
                o = room // strides[i] + 1
        if o < 0:
            raise ValueError(f"pool window larger than the padded input on spatial axis {i}")
        out.append(o)
    return k, strides, dil, begin, end, out


def _windows(x, fill, k, strides, dil, begin, out):
    """View (N, C, *out, *k) of the windows of `x` padded with `fill`."""
    n = len(k)
    span = [(k[i] - 1) * dil[i] + 1 for i in range(n)]
    need = [max(out[i] - 1, 0) * strides[i] + span[i] for i in range(n)]  # padded length read
    after = [max(need[i] - begin[i] - x.shape[2 + i], 0) for i in range(n)]
    xp = np.pad(x, [(0, 0), (0, 0), *zip(begin, after)], constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + n)))
    sl = (slice(None), slice(None))
    sl += tuple(slice(0, out[i] * strides[i], strides[i]) for i in range(n))
    sl += tuple(slice(None, None, d) for d in dil)
    return win[sl]


def _positions(i, k, strides, dil, begin, out) -> np.ndarray:
    """Input position read by window o, tap j along spatial axis i: shape (out, k)."""
    return np.arange(out[i])[:, None] * strides[i] - begin[i] + np.arange(k[i]) * dil[i]


def _lowest(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _acc_dtype(dtype: np.dtype) -> np.dtype:
    return np.result_type(dtype, np.float32)


@kernels.register("MaxPool", since=1)
def max_pool(node, ctx):
    attrs = node.attrs
    storage_order = int(attrs.get("storage_order", 0))
    want_indices = len(node.outputs) > 1 and bool(node.outputs[1].name)

    def run(x):
        spatial = x.shape[2:]
        k, strides, dil, begin, _, out = pool_geometry(spatial, attrs)
        n = len(k)
        win = _windows(x, _lowest(x.dtype), k, strides, dil, begin, out)
        kaxes = tuple(range(-n, 0))
        y = win.max(axis=kaxes)
        if not want_indices:
            return (y,)
        # the first maximum among the real (unpadded) taps, in row-major tap order
        pos = [_positions(i, k, strides, dil, begin, out) for i in range(n)]
        valid = np.ones((*out, *k), bool)
        for i in range(n):
            shape = [1] * (2 * n)
            shape[i], shape[n + i] = out[i], k[i]
            valid = valid & ((pos[i] >= 0) & (pos[i] < spatial[i])).reshape(shape)
        m = y.reshape(*y.shape, *([1] * n))
        hit = win == m
        if x.dtype.kind == "f":
            hit |= np.isnan(win) & np.isnan(m)  # a NaN maximum: the first NaN
        hit &= valid
        hit = hit.reshape(*y.shape, math.prod(k))
        taps = np.unravel_index(hit.argmax(axis=-1), k)
        where = []
        for i in range(n):
            o = np.arange(out[i]).reshape([-1 if a == i else 1 for a in range(n)])
            where.append(np.clip(pos[i][o, taps[i]], 0, spatial[i] - 1))
        flat = np.ravel_multi_index(where, spatial, order="F" if storage_order else "C")
        nc = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[0], x.shape[1], *([1] * n))
        indices = nc * math.prod(spatial) + flat
        # a window of padding alone (pads >= kernel, or dilation stepping over the input)
        # has no element to point at: its max is the lowest value and its index -1
        indices = np.where(hit.any(axis=-1), indices, -1)
        return (y, indices.astype(np.int64))

    return run


@kernels.register("AveragePool", since=1)
def average_pool(node, ctx):
    attrs = node.attrs
    include_pad = bool(attrs.get("count_include_pad", 0))

    def run(x):
        spatial = x.shape[2:]
        k, strides, dil, begin, end, out = pool_geometry(spatial, attrs)
        n = len(k)
        win = _windows(x, 0, k, strides, dil, begin, out)
        total = win.sum(axis=tuple(range(-n, 0)), dtype=_acc_dtype(x.dtype))
        count = np.ones(out, np.int64)
        for i in range(n):
            p = _positions(i, k, strides, dil, begin, out)
            lo, hi = (-begin[i], spatial[i] + end[i]) if include_pad else (0, spatial[i])
            per_axis = ((p >= lo) & (p < hi)).sum(axis=1)
            count = count * per_axis.reshape([-1 if a == i else 1 for a in range(n)])
        return ((total / count).astype(x.dtype, copy=False),)

    return run


@kernels.register("GlobalMaxPool", since=1)
def global_max_pool(node, ctx):
    """Max over every spatial axis 2..n-1, kept as size 1."""

    def run(x):
        return (x.max(axis=tuple(range(2, x.ndim)), keepdims=True),)

    return run


@kernels.register("GlobalAveragePool", since=1)
def global_average_pool(node, ctx):
    """Mean over every spatial axis 2..n-1, kept as size 1."""

    def run(x):
        axes = tuple(range(2, x.ndim))
        y = x.mean(axis=axes, keepdims=True, dtype=_acc_dtype(x.dtype))
        return (y.astype(x.dtype, copy=False),)

    return run
