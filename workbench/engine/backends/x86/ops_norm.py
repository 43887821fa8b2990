"""Normalization x86 kernels: BatchNormalization (inference), LayerNormalization and
InstanceNormalization.

BatchNormalization folds its four parameter vectors into one scale and one shift (once, in
the factory, when they are constants) and then costs one multiply-add pass. Layer and
instance normalization share one numba kernel that normalizes each row of a 2-D view:
mean, then centred variance (both float64 sums), then a pass that applies the affine part
while writing; a row is usually still in cache for the second and third pass. All three
write into the arena's buffers when the executor passes `out=` (see backends/base.py).
Only BatchNormalization (numpy) may write over its input: given overlapping arrays, the
numba loops fall back from their vectorized form to a scalar one (LLVM's alias check).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..base import deliver, dest
from ._numba import const_input, njit
from ._table import kernels
from .ops_elementwise import FLOATS, dtypes_ok

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

_NUMBA_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# reassoc lets LLVM vectorize the two float64 sums (a fixed order per shape: results are
# deterministic); the rest of the arithmetic is exact IEEE.
@njit(fastmath={"reassoc", "nsz", "contract"})
def _normalize_rows(x, eps, w, b, per_row, y, mean, rstd):  # pragma: no cover - compiled
    """Each row i of `x` (rows, n): y = (x - mean) * rstd, then scaled and shifted by
    w[i], b[i] (`per_row`) or by w[j], b[j] per column. Sums and the centring are in
    float64, so a large mean does not cost the small deviations their precision."""
    rows, n = x.shape
    for i in range(rows):
        row = x[i]
        acc = 0.0
        for j in range(n):
            acc += np.float64(row[j])
        mu = acc / n
        acc = 0.0
        for j in range(n):
            d = np.float64(row[j]) - mu
            acc += d * d
        r = 1.0 / math.sqrt(acc / n + eps)
        mean[i] = mu
        rstd[i] = r
        out = y[i]
        if per_row:
            s = w[i] * r
            for j in range(n):
                out[j] = (np.float64(row[j]) - mu) * s + b[i]
        else:
            for j in range(n):
                out[j] = (np.float64(row[j]) - mu) * r * w[j] + b[j]


def _normalize(
    x2: np.ndarray,
    eps: float,
    w: np.ndarray,
    b: np.ndarray,
    per_row: bool,
    y=None,
    mean=None,
    rstd=None,
):
    """(y, mean, rstd) for a 2-D float array; float16 goes through float32. `y` (rows, n),
    `mean` and `rstd` (rows,) are written into when given in the working dtype."""
    dt = x2.dtype
    work = dt if dt in _NUMBA_FLOATS else np.dtype(np.float32)
    x2 = np.ascontiguousarray(x2, dtype=work)
    w = np.ascontiguousarray(w, dtype=work)
    b = np.ascontiguousarray(b, dtype=work)
    rows = x2.shape[0]
    y = y if y is not None and y.dtype == work else np.empty_like(x2)
    mean = mean if mean is not None and mean.dtype == work else np.empty(rows, dtype=work)
    rstd = rstd if rstd is not None and rstd.dtype == work else np.empty(rows, dtype=work)
    if x2.size:
        _normalize_rows(x2, float(eps), w, b, per_row, y, mean, rstd)
    elif rows:
        mean.fill(np.nan)  # statistics of an empty row are undefined
        rstd.fill(np.nan)
    return y.astype(dt, copy=False), mean.astype(dt, copy=False), rstd.astype(dt, copy=False)


@kernels.register("BatchNormalization", since=1)
def batch_normalization(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Inference BN, always with the running statistics: y = x * a + c with
    a = scale / sqrt(var + eps), c = bias - mean * a.

    Before opset 14 `is_test`/`spatial` attributes never make us use batch statistics;
    from 14 on training_mode=1 asks for training explicitly and is declined."""
    if ctx.opset >= 14 and node.attrs.get("training_mode", 0):
        return None
    if not dtypes_ok(node, FLOATS):
        return None
    eps = float(node.attrs.get("epsilon", 1e-5))
    n_extra = sum(1 for v in node.outputs[1:] if v.name)
    params = [const_input(node, i) for i in (1, 2, 3, 4)]
    folded: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}
    fixed = _fold(*params, eps) if all(p is not None for p in params) else None

    def run(x, scale, bias, mean, var, out=None):
        dt = x.dtype
        if fixed is None:
            a, c = (t.astype(dt) for t in _fold(scale, bias, mean, var, eps))
        else:
            if dt not in folded:
                folded[dt] = (fixed[0].astype(dt), fixed[1].astype(dt))
            a, c = folded[dt]
        # per channel (C,) or, with spatial=0 before opset 9, per (C, D1, ...)
        shape = (1, -1) + (1,) * (x.ndim - 2) if a.ndim == 1 else (1, *a.shape)
        y = np.multiply(x, a.reshape(shape), out=dest(out))
        y += c.reshape(shape)
        extra = (mean.copy(), var.copy(), mean.copy(), var.copy())[:n_extra]
        if out is not None:
            extra = tuple(deliver(o, e) for o, e in zip(out[1:], extra))
        return (y, *extra)

    run.writes_out, run.inplace = True, (0,)
    return run


def _fold(scale, bias, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    a = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    c = bias.astype(np.float64) - mean.astype(np.float64) * a
    return a, c


@kernels.register("LayerNormalization", since=17)
def layer_normalization(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Normalize over the dims from `axis` on; Scale and B broadcast onto them. Mean and
    InvStdDev come out shaped x.shape[:axis] + [1, ...], in the input's dtype."""
    if not dtypes_ok(node, FLOATS) or int(node.attrs.get("stash_type", 1)) != 1:
        return None
    axis_attr = int(node.attrs.get("axis", -1))
    eps = float(node.attrs.get("epsilon", 1e-5))
    consts = (const_input(node, 1), const_input(node, 2))
    cached: dict = {}

    def affine(scale, bias, norm_shape, dt):
        """Scale and B as flat vectors over the normalized dims, or None if they also
        broadcast over the leading dims (then applied afterwards with numpy)."""
        key = (norm_shape, dt)
        if key in cached:
            return cached[key]
        try:
            w = np.broadcast_to(scale, norm_shape).reshape(-1)
            b = np.zeros(w.size) if bias is None else np.broadcast_to(bias, norm_shape).reshape(-1)
            wb = (w.astype(dt), b.astype(dt))
        except ValueError:
            wb = None
        if consts[0] is not None and (bias is None or consts[1] is not None):
            cached[key] = wb
        return wb

    def run(x, scale, bias=None, out=None):
        axis = axis_attr + x.ndim if axis_attr < 0 else axis_attr
        norm_shape = x.shape[axis:]
        rows = math.prod(x.shape[:axis])
        n = math.prod(norm_shape)
        wb = affine(scale, bias, norm_shape, x.dtype)
        if wb is None:
            w, b = np.ones(n, x.dtype), np.zeros(n, x.dtype)
        else:
            w, b = wb
        o = (None, None, None) if out is None else (*out, None, None)[:3]
        flat = [None if a is None else a.reshape(-1) for a in o]  # views: out is contiguous
        y2 = None if flat[0] is None or wb is None else flat[0].reshape(rows, n)
        got = (y2, flat[1], flat[2])
        raw = _normalize(x.reshape(rows, n), eps, w, b, False, *got)
        y, mean, rstd = raw
        y = y.reshape(x.shape)
        if wb is None:
            y = (y * scale).astype(x.dtype, copy=False)
            if bias is not None:
                y += bias
        stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
        res = (y, mean.reshape(stat_shape), rstd.reshape(stat_shape))
        # an output `_normalize` wrote into `out` is that array; others are copied there
        return tuple(
            r if a is None else a if g is not None and g is c else deliver(a, r)
            for a, g, c, r in zip(o, got, raw, res)
        )

    run.writes_out = True
    return run


@kernels.register("InstanceNormalization", since=1)
def instance_normalization(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Each (n, c) plane normalized over its spatial dims, then scale[c], bias[c]."""
    if not dtypes_ok(node, FLOATS):
        return None
    eps = float(node.attrs.get("epsilon", 1e-5))

    def run(x, scale, bias, out=None):
        n, c = x.shape[0], x.shape[1]
        rows = n * c
        w = np.tile(scale.reshape(-1), n)
        b = np.tile(bias.reshape(-1), n)
        o = dest(out)
        x2 = x.reshape(rows, math.prod(x.shape[2:]))
        y2 = None if o is None else o.reshape(x2.shape)
        y, _, _ = _normalize(x2, eps, w, b, True, y2)
        return (o if y is y2 else deliver(o, y.reshape(x.shape)),)

    run.writes_out = True
    return run
