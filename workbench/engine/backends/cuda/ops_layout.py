"""cuda kernels that move data by per-axis index tables: Pad, Tile, Resize (nearest,
linear, cubic) and Split.

Pad, Tile and nearest Resize are one *gather* kernel: for every axis a table maps each
output coordinate to an input coordinate (-1: outside, the pad value), built on the host
from the shapes alone (cached per input shape) and uploaded once. Linear and cubic Resize
weigh several taps per resized axis (the tables of the x86 backend's separable resize,
shared through `x86/ops_resize.py`), accumulating in fp32. Split is strided copies.
Pads, repeats, scales and split sizes must be constants (else the reference runs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import dest
from ._elementwise import copy_strided
from ._launch import flat, grid, jit_source, result, strides, upload, writes_out
from ._table import const_of, kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn


def _gather_source(ndim: int, weighted: tuple[int, ...] | None) -> str:
    """out[i] = x[table coordinates of i] (-1 anywhere: `value`); with `weighted` (taps per
    axis, 0 where an axis is not resized) the weighted sum over the taps' combinations."""
    lines = ["def kernel(x, out, n, shp, xs, idx, wts, off, value):", "    i = cuda.grid(1)"]
    lines += ["    if i >= n:", "        return", "    r = i"]
    for d in reversed(range(ndim)):
        lines += [f"    c{d} = r % shp[{d}]", f"    r = r // shp[{d}]"]
    if weighted is None:
        lines += ["    p = 0", "    inside = True"]
        for d in range(ndim):
            lines += [f"    j = idx[off[{d}] + c{d}]", "    if j < 0:", "        inside = False"]
            lines += [f"    p += j * xs[{d}]"]
        lines += ["    out[i] = x[p] if inside else value"]
        return "\n".join(lines) + "\n"
    lines += ["    acc = float32(0.0)"]
    indent = "    "
    for d in range(ndim):
        if weighted[d]:
            lines += [f"{indent}for a{d} in range({weighted[d]}):"]
            indent += "    "
    terms, weights = [], []
    for d in range(ndim):
        if weighted[d]:
            k = f"off[{d}] + c{d} * {weighted[d]} + a{d}"
            terms.append(f"idx[{k}] * xs[{d}]")
            weights.append(f"wts[{k}]")
        else:
            terms.append(f"c{d} * xs[{d}]")
    lines += [f"{indent}acc += {' * '.join(weights)} * float32(x[{' + '.join(terms)}])"]
    lines += ["    out[i] = acc"]
    return "\n".join(lines) + "\n"


class Tables:
    """Per-axis index (and weight) tables of one output shape, on the device."""

    def __init__(self, maps: list[np.ndarray], weights: list[np.ndarray] | None = None):
        """`maps[d]`: (output length,) input coordinates, or with `weights` (output length,
        taps) coordinates and their weights."""
        self.shape = tuple(int(m.shape[0]) for m in maps)
        self.taps = tuple(int(w.shape[1]) for w in weights) if weights else None
        sizes = [m.size for m in maps]
        self.off = tuple(int(v) for v in np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        self.idx = upload(np.concatenate([m.reshape(-1) for m in maps]).astype(np.int64))
        w = [wi.reshape(-1) for wi in weights] if weights else [np.ones(1)]
        self.wts = upload(np.concatenate(w).astype(np.float32))

    def run(self, x: Any, out: Any, value: float = 0.0) -> Any:
        res = result(out, self.shape, x.dtype)
        if res.size:
            k = jit_source(_gather_source(len(self.shape), self.taps))
            blocks, threads = grid(res.size)
            xs = strides(x.shape)
            v = value if np.dtype(x.dtype).kind == "f" else int(value)
            k[blocks, threads](flat(x), flat(res), res.size, self.shape, xs, self.idx, self.wts,
                               self.off, v)  # fmt: skip
        return res


def _cached(build: Any) -> Any:
    cache: dict[tuple, Tables] = {}

    def get(shape: tuple) -> Tables:
        if shape not in cache:
            cache[shape] = build(shape)
        return cache[shape]

    return get


def _pad_map(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """Input coordinate of each output coordinate of one padded axis (-1: the constant)."""
    j = np.arange(-before, n + after)
    if mode == "constant" or n == 0:
        return np.where((j >= 0) & (j < n), j, -1)
    if mode == "edge":
        return np.clip(j, 0, n - 1)
    if mode == "wrap":
        return j % n
    period = 2 * (n - 1) if n > 1 else 1  # reflect: mirror without repeating the edge
    j = np.abs(j) % period
    return np.where(j >= n, period - j, j)


@kernels.register("Pad", since=11)
def pad(node: Node, ctx: CompileContext) -> KernelFn | None:
    pads, value, axes = const_of(node, 1), const_of(node, 2), const_of(node, 3)
    if pads is None or any(
        v is not None and c is None for v, c in zip(node.inputs[2:4], (value, axes))
    ):
        return None
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    fill = float(value.reshape(-1)[0]) if value is not None and value.size else 0.0
    pads = [int(p) for p in pads]

    def build(shape: tuple) -> Tables:
        rank = len(shape)
        ax = [int(a) % rank for a in axes] if axes is not None else list(range(rank))
        before, after = [0] * rank, [0] * rank
        for k, a in enumerate(ax):
            before[a], after[a] = pads[k], pads[k + len(ax)]
        return Tables([_pad_map(shape[d], before[d], after[d], mode) for d in range(rank)])

    tables = _cached(build)

    def run(x: Any, *_: Any, out: Any = None) -> tuple:
        return (tables(tuple(x.shape)).run(x, dest(out), fill),)

    return writes_out(run)


@kernels.register("Tile", since=6)
def tile(node: Node, ctx: CompileContext) -> KernelFn | None:
    reps = const_of(node, 1)
    if reps is None:
        return None
    reps = [int(r) for r in reps]

    def build(shape: tuple) -> Tables:  # output coordinate c reads input c mod n
        return Tables([np.arange(n * r) % max(n, 1) for n, r in zip(shape, reps)])

    tables = _cached(build)

    def run(x: Any, _reps: Any = None, out: Any = None) -> tuple:
        if len(reps) != len(x.shape):
            raise ValueError(f"Tile: {len(reps)} repeats for a rank-{len(x.shape)} input")
        return (tables(tuple(x.shape)).run(x, dest(out)),)

    return writes_out(run)


@kernels.register("Split", since=2)
def split(node: Node, ctx: CompileContext) -> KernelFn | None:
    axis = int(node.attrs.get("axis", 0))
    n_out = int(node.attrs.get("num_outputs", len(node.outputs)))
    sizes = const_of(node, 1) if ctx.opset >= 13 else node.attrs.get("split")
    if ctx.opset >= 13 and len(node.inputs) > 1 and node.inputs[1] is not None and sizes is None:
        return None

    def run(x: Any, _sizes: Any = None, out: Any = None) -> tuple:
        a = axis % len(x.shape)
        dim = x.shape[a]
        parts = [int(p) for p in sizes] if sizes is not None and len(sizes) else None
        if not parts:
            chunk = -(-dim // n_out)
            parts = [min(chunk, max(dim - chunk * i, 0)) for i in range(n_out)]
        if sum(parts) != dim:
            raise ValueError(f"Split: sizes {parts} do not add up to dim {dim}")
        src, outs, start = strides(x.shape), [], 0
        for i, p in enumerate(parts):
            shape = list(x.shape)
            shape[a] = p
            into = dest(out, i) if out is not None and i < len(out) else None
            outs.append(copy_strided(x, shape, src, start * src[a], into))
            start += p
        return tuple(outs)

    return writes_out(run)


@kernels.register("Resize", since=11)
def resize(node: Node, ctx: CompileContext) -> KernelFn | None:
    from ..x86 import ops_resize as x86

    a = node.attrs
    mode = a.get("mode", "nearest")
    cfg = {
        "mode": mode,
        "coord": a.get("coordinate_transformation_mode", "half_pixel"),
        "nearest": a.get("nearest_mode", "round_prefer_floor"),
        "cubic_a": float(a.get("cubic_coeff_a", -0.75)),
        "exclude_outside": bool(a.get("exclude_outside", 0)),
        "antialias": bool(a.get("antialias", 0)),
    }
    cfg = {k: v.decode() if isinstance(v, bytes) else v for k, v in cfg.items()}
    if cfg["mode"] not in ("nearest", "linear", "cubic") or cfg["coord"] == "tf_crop_and_resize":
        return None  # the crop box's extrapolation: the reference
    if cfg["antialias"] and cfg["mode"] == "nearest":
        return None
    scales, sizes = x86._nonempty(const_of(node, 2)), x86._nonempty(const_of(node, 3))
    if (scales is None) == (sizes is None):
        return None  # computed at run time, or neither: the reference
    policy = a.get("keep_aspect_ratio_policy", "stretch")
    axes = [int(v) for v in a["axes"]] if a.get("axes") else None

    def build(shape: tuple) -> Tables:
        out, sc, _ = x86._targets(shape, scales, sizes, None, axes, policy)
        maps, weights = [], []  # an axis kept as it is: itself, one tap of weight 1
        for d, n in enumerate(shape):
            if x86._identity(n, out[d], sc[d], None) or n == 0 or out[d] == 0:
                maps.append(np.arange(out[d])[:, None])
                weights.append(np.ones((out[d], 1)))
                continue
            t = x86._axis_table(n, out[d], sc[d], None, cfg)
            maps.append(t.idx)
            weights.append(t.weights if t.weights is not None else np.ones(t.idx.shape))
        if cfg["mode"] == "nearest":
            return Tables([m[:, 0] for m in maps])
        return Tables(maps, weights)

    tables = _cached(build)

    def run(x: Any, *_: Any, out: Any = None) -> tuple:
        return (tables(tuple(x.shape)).run(x, dest(out)),)

    run.algorithm = "gather-tables" if mode == "nearest" else f"separable-{mode}-taps"
    return writes_out(run)
