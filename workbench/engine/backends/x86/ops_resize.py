"""x86 Resize (opsets 10-19): nearest, linear and cubic, every coordinate transformation,
scales or sizes, `axes`, `keep_aspect_ratio_policy` and `antialias`.

Interpolation is separable, so each resized axis reduces to a table: for every output
position, the input indices it reads and their weights (one tap for nearest, two for
linear, four for cubic, more when antialiasing a downscale). The tables depend only on
shapes and scales and are cached. Algorithms recorded as `run.algorithm`:

- ``nearest_gather``: nearest mode, a numpy gather per resized axis (any rank, any dtype).
- ``separable_hw``: linear/cubic on the last two axes of a 4-D float32 tensor, a numba
  loop applying both tables (the common NCHW image resize).
- ``separable_generic``: linear/cubic elsewhere, one numpy weighted gather per axis.

Opset 10 has neither `coordinate_transformation_mode` nor `nearest_mode`; it runs as
onnxruntime does: asymmetric coordinates, nearest rounding down when upsampling and up
when downsampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...memory_guard import check_size
from ._numba import const_input, declines_dtype, has_input, njit, u64
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext

_MODES = ("nearest", "linear", "cubic")
_COORDS = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nearest",
    "tf_crop_and_resize",
)
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "legacy")


@njit
def _resize_hw(x, nc, h, w, rows, iy, wy, ty, ix, wx, tx, oh, ow, y):
    """y[c, p, q] = sum_a wy[p, a] * sum_b wx[q, b] * x[c, iy[p, a], ix[q, b]], all flat.

    Two passes per channel: the input rows listed in `rows` resized along W into a float64
    buffer, then output rows as weighted sums of those; both inner loops run over
    contiguous positions, so they vectorize.
    """
    tmp = np.empty(h * ow, np.float64)
    acc = np.empty(ow, np.float64)
    for c in range(nc):
        xb = c * h * w
        for r in rows:
            for q in range(ow):
                v = 0.0
                for b in range(tx):
                    v += wx[u64(q * tx + b)] * x[u64(xb + r * w + ix[u64(q * tx + b)])]
                tmp[u64(r * ow + q)] = v
        for p in range(oh):
            for q in range(ow):
                acc[u64(q)] = 0.0
            for a in range(ty):
                rb = iy[u64(p * ty + a)] * ow
                wv = wy[u64(p * ty + a)]
                for q in range(ow):
                    acc[u64(q)] += wv * tmp[u64(rb + q)]
            yb = (c * oh + p) * ow
            for q in range(ow):
                y[u64(yb + q)] = acc[u64(q)]


# -- per-axis tables --------------------------------------------------------------------------
class _Axis:
    """Which input indices (out, taps) each output position of one axis reads, with what
    weights, and which positions fall outside a tf_crop_and_resize box."""

    __slots__ = ("idx", "outside", "weights")

    def __init__(self, idx: np.ndarray, weights: np.ndarray | None, outside: np.ndarray | None):
        self.idx, self.weights, self.outside = idx, weights, outside


def _source_coords(
    mode: str, n_in: int, n_out: int, scale: float, roi: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Input coordinate of every output position (ONNX's coordinate_transformation_mode)."""
    y = np.arange(n_out, dtype=np.float64)
    out_f = scale * n_in  # the spec's "length_resized" is the unrounded one
    outside = None
    if mode == "align_corners":
        x = np.zeros(n_out) if out_f == 1 else y * (n_in - 1) / (out_f - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_half_pixel_for_nearest":
        x = (y + 0.5) / scale
    elif mode == "tf_crop_and_resize":
        r0, r1 = roi if roi is not None else (0.0, 1.0)  # (r1 - r0) rounds in roi's dtype
        if out_f == 1:
            x = np.full(n_out, (r1 - r0) * (n_in - 1) / 2)
        else:
            x = y * (r1 - r0) * (n_in - 1) / (out_f - 1)
        x = x + r0 * (n_in - 1)
        outside = (x < 0) | (x > n_in - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(n_out, -0.5) if out_f == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / out_f)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # half_pixel
        x = (y + 0.5) / scale - 0.5
    return x, outside


def _nearest_index(x: np.ndarray, rule: str, scale: float) -> np.ndarray:
    if rule == "legacy":  # opset 10, as onnxruntime: floor on upsampled axes, ceil on downsampled
        rule = "ceil" if scale < 1 else "floor"
    if rule == "round_prefer_floor":
        i = np.ceil(x - 0.5)
    elif rule == "round_prefer_ceil":
        i = np.floor(x + 0.5)
    elif rule == "floor":
        i = np.floor(x)
    else:
        i = np.ceil(x)
    return i.astype(np.int64)


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at distances |d|."""
    d = np.abs(d)
    d2, d3 = d * d, d * d * d
    near = (a + 2) * d3 - (a + 3) * d2 + 1
    far = a * d3 - 5 * a * d2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _axis_table(
    n_in: int, n_out: int, scale: float, roi: tuple[float, float] | None, cfg: dict
) -> _Axis:
    x, outside = _source_coords(cfg["coord"], n_in, n_out, scale, roi)
    if cfg["mode"] == "nearest":
        idx = np.clip(_nearest_index(x, cfg["nearest"], scale), 0, n_in - 1)
        return _Axis(idx[:, None], None, outside)
    x0 = np.floor(x)
    t = x - x0
    # antialias widens the filter by 1/scale when downscaling; without it s stays 1
    s = min(scale, 1.0) if cfg["antialias"] else 1.0
    reach = 1.0 if cfg["mode"] == "linear" else 2.0
    start = math.floor(-reach / s) + 1
    taps = np.arange(start, 2 - start)  # offsets from floor(x)
    dist = (taps[None, :] - t[:, None]) * s
    linear = cfg["mode"] == "linear"
    w = np.clip(1 - np.abs(dist), 0, 1) if linear else _cubic(dist, cfg["cubic_a"])
    if cfg["antialias"]:
        w = w / w.sum(axis=1, keepdims=True)
    idx = x0.astype(np.int64)[:, None] + taps[None, :]
    if cfg["exclude_outside"]:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return _Axis(np.clip(idx, 0, n_in - 1), np.ascontiguousarray(w), outside)


# -- sizes, scales, axes ----------------------------------------------------------------------
def _nonempty(a: np.ndarray | None) -> np.ndarray | None:
    return a if a is not None and a.size else None


def _targets(
    shape: tuple[int, ...],
    scales: np.ndarray | None,
    sizes: np.ndarray | None,
    roi: np.ndarray | None,
    axes: Sequence[int] | None,
    policy: str,
) -> tuple[list[int], list[float], list[tuple[float, float]] | None]:
    """Output shape, per-axis scale and per-axis roi box for an input of `shape`."""
    r = len(shape)
    ax = [a + r if a < 0 else a for a in axes] if axes else list(range(r))
    if any(not 0 <= a < r for a in ax) or len(set(ax)) != len(ax):
        raise ValueError(f"Resize axes {list(axes or [])} invalid for rank {r}")
    out, sc = list(shape), [1.0] * r
    if sizes is not None:
        if sizes.size != len(ax):
            raise ValueError(f"Resize sizes has {sizes.size} values for {len(ax)} axes")
        want = [int(v) for v in sizes.reshape(-1)]
        ratios = [want[i] / shape[a] if shape[a] else 1.0 for i, a in enumerate(ax)]
        if policy in ("not_larger", "not_smaller"):
            k = min(ratios) if policy == "not_larger" else max(ratios)
            for a in ax:
                sc[a] = k
                out[a] = int(k * shape[a] + 0.5)  # round half up, as the spec says
        else:
            for i, a in enumerate(ax):
                sc[a], out[a] = ratios[i], want[i]
    elif scales is not None:
        if scales.size != len(ax):
            raise ValueError(f"Resize scales has {scales.size} values for {len(ax)} axes")
        for i, a in enumerate(ax):
            sc[a] = float(scales.reshape(-1)[i])
            if not (sc[a] > 0 and math.isfinite(sc[a])):
                raise ValueError(f"Resize scales must be positive, got {scales.tolist()}")
            out[a] = int(sc[a] * shape[a])
    else:
        raise ValueError("Resize needs one of scales or sizes")
    boxes = None
    if roi is not None:
        # numpy scalars of roi's own dtype: the reference computes the box in that precision
        flat = list(roi.reshape(-1))
        if len(flat) != 2 * len(ax):
            raise ValueError(f"Resize roi has {len(flat)} values for {len(ax)} axes")
        boxes = [(0.0, 1.0)] * r
        for i, a in enumerate(ax):
            boxes[a] = (flat[i], flat[i + len(ax)])
    return out, sc, boxes


def _identity(n_in: int, n_out: int, scale: float, box: tuple[float, float] | None) -> bool:
    trivial_box = box is None or (
        math.isclose(float(box[0]), 0.0) and math.isclose(float(box[1]), 1.0)
    )
    return n_in == n_out and math.isclose(scale, 1.0) and trivial_box


# -- applying the tables ----------------------------------------------------------------------
def _weighted_take(data: np.ndarray, axis: int, t: _Axis) -> np.ndarray:
    g = np.take(data, t.idx, axis=axis)  # (..., out, taps, ...)
    wshape = (1,) * axis + t.weights.shape + (1,) * (data.ndim - axis - 1)
    return (g * t.weights.reshape(wshape)).sum(axis=axis + 1)


def _cast_back(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        v = np.clip(np.round(v), info.min, info.max)
    return v.astype(dtype, copy=False)


def _apply(x: np.ndarray, tables: dict[int, _Axis], mode: str, ev: float, out_shape) -> np.ndarray:
    active = sorted(tables)
    if mode == "nearest":
        if active == list(range(active[0], active[-1] + 1)):
            # adjacent axes: one broadcast fancy index, one pass over the output
            k = len(active)
            sel = tuple(
                tables[a].idx[:, 0].reshape((-1,) + (1,) * (k - 1 - i))
                for i, a in enumerate(active)
            )
            y = x[(slice(None),) * active[0] + sel]
        else:
            y = x
            for a in active:
                y = np.take(y, tables[a].idx[:, 0], axis=a)
        y = np.ascontiguousarray(y)
    elif x.ndim == 4 and x.dtype == np.float32 and set(active) <= {2, 3}:
        n, c, h, w = x.shape
        ty = tables.get(2) or _Axis(np.arange(h)[:, None], np.ones((h, 1)), None)
        tx = tables.get(3) or _Axis(np.arange(w)[:, None], np.ones((w, 1)), None)
        y = np.empty(out_shape, np.float32)
        oh, ow = out_shape[2], out_shape[3]
        rows = np.unique(ty.idx)  # only the input rows some output row reads
        x1 = np.ascontiguousarray(x).reshape(-1)
        iy, wy, ix, wx = (
            np.ascontiguousarray(a).reshape(-1) for a in (ty.idx, ty.weights, tx.idx, tx.weights)
        )
        _resize_hw(
            x1, n * c, h, w, rows, iy, wy, ty.idx.shape[1], ix, wx, tx.idx.shape[1], oh, ow,
            y.reshape(-1),
        )  # fmt: skip
    else:
        y = x.astype(np.float64)
        for a in active:
            y = _weighted_take(y, a, tables[a])
        y = _cast_back(y, x.dtype)
    for a in active:
        if tables[a].outside is not None and tables[a].outside.any():
            sel = (slice(None),) * a + (tables[a].outside,)
            y[sel] = ev
    return y


def _algorithm(mode: str, rank: int | None, axes: set[int] | None) -> str:
    if mode == "nearest":
        return "nearest_gather"
    if rank == 4 and axes is not None and axes <= {2, 3}:
        return "separable_hw"
    return "separable_generic"


@kernels.register("Resize", since=10)
def resize(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node):
        return None
    a = node.attrs
    legacy = ctx.opset < 11
    mode = a.get("mode", "nearest")
    cfg = {
        "mode": mode,
        "coord": "asymmetric" if legacy else a.get("coordinate_transformation_mode", "half_pixel"),
        "nearest": "legacy" if legacy else a.get("nearest_mode", "round_prefer_floor"),
        "cubic_a": float(a.get("cubic_coeff_a", -0.75)),
        "exclude_outside": bool(a.get("exclude_outside", 0)),
        "antialias": bool(a.get("antialias", 0)),
    }
    if mode not in _MODES or cfg["coord"] not in _COORDS or cfg["nearest"] not in _NEAREST:
        return None
    if cfg["antialias"] and mode == "nearest":
        return None  # the spec defines antialias for linear and cubic only
    policy = a.get("keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        return None
    axes = [int(v) for v in a["axes"]] if a.get("axes") else None
    ev = float(a.get("extrapolation_value", 0.0))
    uses_roi = cfg["coord"] == "tf_crop_and_resize"
    # input positions: opset 10 is (X, scales); later (X, roi, scales, sizes)
    i_roi, i_scales, i_sizes = (None, 1, None) if legacy else (1, 2, 3)
    consts = {i: _nonempty(const_input(node, i)) for i in (i_roi, i_scales, i_sizes) if i}
    # with roi/scales/sizes all constant (or absent) the tables depend on the shape alone
    static = all(
        i is None or not has_input(node, i) or const_input(node, i) is not None
        for i in (i_roi, i_scales, i_sizes)
    )
    cache: dict[tuple, tuple] = {}

    def plan(shape: tuple[int, ...], roi, scales, sizes) -> tuple:
        key = (shape,) if static else (shape, _key(roi), _key(scales), _key(sizes))
        got = cache.get(key)
        if got is not None:
            return got
        out, sc, boxes = _targets(shape, scales, sizes, roi if uses_roi else None, axes, policy)
        check_size(out, np.float32, "Resize output")
        tables = {}
        for ax in range(len(shape)):
            box = boxes[ax] if boxes else None
            if not _identity(shape[ax], out[ax], sc[ax], box):
                if shape[ax] == 0 or out[ax] == 0:
                    continue
                tables[ax] = _axis_table(shape[ax], out[ax], sc[ax], box, cfg)
        got = (tuple(out), tables)
        if len(cache) < 32:
            cache[key] = got
        return got

    def run(x, *rest):
        def arg(i):
            if i is None:
                return None
            c = consts.get(i)
            if c is not None:
                return c
            return _nonempty(rest[i - 1]) if i - 1 < len(rest) and rest[i - 1] is not None else None

        out, tables = plan(tuple(x.shape), arg(i_roi), arg(i_scales), arg(i_sizes))
        check_size(out, x.dtype, "Resize output")
        if 0 in out:
            return (np.empty(out, x.dtype),)
        if not tables:
            return (x.copy(),)
        return (_apply(x, tables, mode, ev, out),)

    rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
    resized = {ax % rank for ax in axes} if axes and rank else None
    scales_c = consts.get(i_scales)
    if resized is None and scales_c is not None and rank is not None and scales_c.size == rank:
        resized = {i for i, s in enumerate(scales_c.reshape(-1)) if not math.isclose(s, 1.0)}
    sizes_c = consts.get(i_sizes) if i_sizes else None
    if resized is None and sizes_c is not None and node.inputs[0].shape is not None:
        shp = node.inputs[0].shape
        if len(shp) == sizes_c.size:
            resized = {
                i for i, (d, s) in enumerate(zip(shp, sizes_c.reshape(-1), strict=True)) if d != s
            }
    run.algorithm = _algorithm(mode, rank, resized)
    return run


def _key(a: np.ndarray | None) -> tuple | None:
    return None if a is None else tuple(a.reshape(-1).tolist())
