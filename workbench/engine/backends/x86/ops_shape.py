"""Shape and data-movement x86 kernels: Reshape, Transpose, Concat, Split, Slice, Gather,
GatherElements, Expand, Squeeze, Unsqueeze, Flatten, Shape, Size, Cast, CastLike, Pad,
Range, ConstantOfShape, Constant, Tile and Trilu.

These move or create data without arithmetic on it, so they take every dtype ONNX allows
(int64 shapes, bool masks, strings) and are exact. Reshape, Squeeze, Unsqueeze and Flatten
return views; every other output is a fresh array. Shape-like inputs (Reshape's shape,
Slice's starts/ends, Unsqueeze's axes, Pad's pads...) are read once in the factory when
they are initializers. Kernels whose output size depends on data (Expand, Tile, Pad,
Range, ConstantOfShape) ask `check_size` before allocating. Transpose, Concat, Split,
Gather, Cast, Shape, Constant and Slice with constant bounds write into the arena's buffers
when the executor passes `out=` (see backends/base.py), one pass over the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...ir import np_dtype
from ...memory_guard import check_size
from ..base import deliver, dest
from ..common import constant_value
from ._numba import const_input, has_input
from ._table import kernels
from .depthwise_nhwc import to_channels_first, to_channels_last
from .ops_elementwise import ANY_STD, NUMBERS, dtypes_ok, ints_of

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn


def _axis(a: int, ndim: int) -> int:
    if not -ndim <= a < max(ndim, 1):
        raise ValueError(f"axis {a} is out of range for a rank-{ndim} tensor")
    return a + ndim if a < 0 else a


def _fixed_ints(node: Node, i: int) -> list[int] | None:
    """Input `i` as a list of ints when it is an initializer, else None."""
    c = const_input(node, i)
    return None if c is None else ints_of(c)


def _std_dtype(dt: np.dtype | None) -> bool:
    return dt is not None and dt.kind in ANY_STD and dt.type.__module__.startswith("numpy")


# -- views ------------------------------------------------------------------------------------


def reshape_target(shape: Sequence[int], target: Sequence[int], allowzero: bool) -> tuple:
    """ONNX Reshape's output shape: 0 copies the input dim (unless allowzero), -1 infers."""
    out = [shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        size = math.prod(shape)
        out[out.index(-1)] = size // known if known else 0
    return tuple(out)


@kernels.register("Reshape", since=1)
def reshape(node: Node, ctx: CompileContext) -> KernelFn | None:
    allowzero = bool(node.attrs.get("allowzero", 0))
    if ctx.opset < 5:
        fixed: list[int] | None = ints_of(node.attrs.get("shape", []))
    else:
        fixed = _fixed_ints(node, 1)

    def run(x, shape=None):
        target = fixed if fixed is not None else ints_of(shape)
        return (x.reshape(reshape_target(x.shape, target, allowzero)),)

    return run


@kernels.register("Squeeze", since=1)
def squeeze(node: Node, ctx: CompileContext) -> KernelFn | None:
    fixed = node.attrs.get("axes") if ctx.opset < 13 else _fixed_ints(node, 1)
    runtime = ctx.opset >= 13 and has_input(node, 1) and fixed is None

    def run(x, axes=None):
        given = ints_of(axes) if runtime else fixed
        if not given:  # no axes: every size-1 dim
            return (x.reshape([d for d in x.shape if d != 1]),)
        drop = {_axis(int(a), x.ndim) for a in given}
        for a in drop:
            if x.shape[a] != 1:
                raise ValueError(f"Squeeze: dim {a} of shape {list(x.shape)} is not 1")
        return (x.reshape([d for i, d in enumerate(x.shape) if i not in drop]),)

    return run


@kernels.register("Unsqueeze", since=1)
def unsqueeze(node: Node, ctx: CompileContext) -> KernelFn | None:
    fixed = ints_of(node.attrs.get("axes", [])) if ctx.opset < 13 else _fixed_ints(node, 1)

    def run(x, axes=None):
        given = fixed if fixed is not None else ints_of(axes)
        rank = x.ndim + len(given)
        new = {_axis(a, rank) for a in given}
        if len(new) != len(given):
            raise ValueError(f"Unsqueeze: repeated axes {given}")
        dims = iter(x.shape)
        return (x.reshape([1 if i in new else next(dims) for i in range(rank)]),)

    return run


@kernels.register("Flatten", since=1)
def flatten(node: Node, ctx: CompileContext) -> KernelFn | None:
    axis_attr = int(node.attrs.get("axis", 1))

    def run(x):
        axis = axis_attr + x.ndim if axis_attr < 0 else axis_attr
        return (x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:])),)

    return run


# -- copies -----------------------------------------------------------------------------------


@kernels.register("Transpose", since=1)
def transpose(node: Node, ctx: CompileContext) -> KernelFn | None:
    perm = node.attrs.get("perm")
    perm = None if perm is None else [int(p) for p in perm]

    layout = {(0, 2, 3, 1): to_channels_last, (0, 3, 1, 2): to_channels_first}.get(
        tuple(perm or ())
    )
    shape = node.inputs[0].shape if node.inputs else None
    if shape is not None and _keeps_order(tuple(d if d == 1 else 2 for d in shape), perm):
        # Only axes of size 1 move, whatever the size of the others (an axis taken as
        # larger than 1 that is 1 at run time moves nothing either): a reshape, as a view
        # (the channels_last pass's [N, 1, 1, C] -> [N, C, 1, 1] after the global pool)
        def view(x):
            if not _keeps_order(x.shape, perm):  # (not the shape the model declared)
                return (np.transpose(x, perm).copy(),)
            return (x.reshape(np.transpose(x, perm).shape),)

        return view

    def run(x, out=None):
        o = dest(out)
        if _keeps_order(x.shape, perm):  # the values in the same order: a reshape's copy
            y = x.reshape(np.transpose(x, perm).shape)
            if o is None:
                return (y.copy(),)
            np.copyto(o, y)
            return (o,)
        if layout is not None and x.ndim == 4 and x.dtype == np.float32:
            # NCHW <-> NHWC (the channels_last pass's transposes): tiled, over the threads
            y = np.empty(np.transpose(x, perm).shape, np.float32) if o is None else o
            if y.dtype == np.float32 and y.flags.c_contiguous:
                layout(np.ascontiguousarray(x), y)
                return (y,)
        # copy(): a fresh C-ordered array, never a strided view of the input
        if o is None:
            return (np.transpose(x, perm).copy(),)
        np.copyto(o, np.transpose(x, perm))
        return (o,)

    run.writes_out = True
    return run


def _keeps_order(shape: tuple[int, ...], perm: list[int] | None) -> bool:
    """Whether transposing by `perm` moves only axes of size 1 (NHWC <-> NCHW of a 1x1
    image: 23.7 us through the layout kernel for MobileNetV2's 1280 values, 5.4 as a copy)."""
    order = list(range(len(shape)))[::-1] if perm is None else perm
    moved = [a for a in order if shape[a] != 1]
    return moved == sorted(moved)


@kernels.register("Concat", since=1)
def concat(node: Node, ctx: CompileContext) -> KernelFn | None:
    axis_attr = int(node.attrs.get("axis", 1))  # optional (default 1) only before opset 4

    def run(*xs, out=None):
        axis = axis_attr + xs[0].ndim if axis_attr < 0 else axis_attr
        return (np.concatenate(xs, axis=axis, out=dest(out)),)

    run.writes_out = True
    return run


@kernels.register("Split", since=1)
def split(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Sizes from the `split` attribute (before 13) or input (opset 1 and 13+); else
    `num_outputs` (18+) or the node's output count, in ceil-sized chunks."""
    axis_attr = int(node.attrs.get("axis", 0))
    n_out = int(node.attrs.get("num_outputs", len(node.outputs)))
    split_in_input = ctx.opset >= 13 or ctx.opset < 2
    fixed: list[int] | None = None
    if split_in_input:
        fixed = _fixed_ints(node, 1)
        runtime = has_input(node, 1) and fixed is None
    else:
        runtime = False
    if fixed is None and not runtime and node.attrs.get("split") is not None:
        fixed = ints_of(node.attrs["split"])

    def run(x, sizes=None, out=None):
        axis = _axis(axis_attr, x.ndim)
        dim = x.shape[axis]
        parts = ints_of(sizes) if runtime else fixed
        if not parts:
            chunk = -(-dim // n_out)
            parts = [min(chunk, max(dim - chunk * i, 0)) for i in range(n_out)]
        if sum(parts) != dim:
            raise ValueError(f"Split: sizes {parts} do not add up to dim {dim}")
        outs, start = [], 0
        index: list[Any] = [slice(None)] * x.ndim
        for i, p in enumerate(parts):
            index[axis] = slice(start, start + p)
            o = dest(out, i) if out is not None and i < len(out) else None
            outs.append(x[tuple(index)].copy() if o is None else deliver(o, x[tuple(index)]))
            start += p
        return tuple(outs)

    run.writes_out = not runtime  # sizes read from a runtime tensor: shapes are checked
    return run


def slice_index(
    shape: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    axes: Sequence[int] | None,
    steps: Sequence[int] | None,
) -> tuple:
    """ONNX Slice bounds as a numpy index. A negative step's end may clamp to -1, "before
    the first element", which a python slice can only say with None."""
    ndim = len(shape)
    index: list[Any] = [slice(None)] * ndim
    axes = range(len(starts)) if axes is None or len(axes) == 0 else axes
    steps = [1] * len(starts) if steps is None or len(steps) == 0 else steps
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = _axis(int(a), ndim)
        dim = shape[a]
        if st == 0:
            raise ValueError("Slice: step 0")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
        index[a] = slice(s, e if e >= 0 else None, st)
    return tuple(index)


@kernels.register("Slice", since=1)
def slice_(node: Node, ctx: CompileContext) -> KernelFn | None:
    if ctx.opset < 10:
        a = node.attrs
        bounds = (ints_of(a["starts"]), ints_of(a["ends"]), a.get("axes"), None)

        def run_attrs(x):
            return (x[slice_index(x.shape, *bounds)].copy(),)

        return run_attrs
    fixed = [_fixed_ints(node, i) for i in (1, 2, 3, 4)]
    dynamic = [has_input(node, i) and fixed[i - 1] is None for i in (1, 2, 3, 4)]

    def run(x, starts, ends, axes=None, steps=None, out=None):
        given = (starts, ends, axes, steps)
        b = [ints_of(given[i]) if dynamic[i] else fixed[i] for i in range(4)]
        part = x[slice_index(x.shape, *b)]
        return (part.copy() if out is None else deliver(out[0], part),)

    # bounds read from runtime tensors decide the shape: then it is checked, not assumed
    run.writes_out = not any(dynamic)
    return run


@kernels.register("Gather", since=1)
def gather(node: Node, ctx: CompileContext) -> KernelFn | None:
    axis_attr = int(node.attrs.get("axis", 0))

    def run(x, indices, out=None):
        # np.take takes negative indices from the end, as ONNX 11+ says, and copies
        axis, o = _axis(axis_attr, x.ndim), dest(out)
        if o is None:
            return (np.asarray(np.take(x, indices, axis=axis)),)  # (0-d: not a scalar)
        # into `out`, mode "raise" goes through a temporary (3x the time of a fresh take
        # for an embedding lookup); "wrap" after a bounds check does not, and wraps negative
        # indices as "raise" does. Small outputs skip the check's two reductions.
        if o.nbytes <= 1 << 16:
            return (np.take(x, indices, axis=axis, out=o),)
        n = x.shape[axis]
        if indices.size and (indices.min() < -n or indices.max() >= n):
            bad = indices[(indices < -n) | (indices >= n)].reshape(-1)[0]
            raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
        return (np.take(x, indices, axis=axis, out=o, mode="wrap"),)

    run.writes_out = True
    return run


@kernels.register("GatherElements", since=11)
def gather_elements(node: Node, ctx: CompileContext) -> KernelFn | None:
    axis_attr = int(node.attrs.get("axis", 0))

    def run(x, indices):
        axis = _axis(axis_attr, x.ndim)
        idx = np.where(indices < 0, indices + x.shape[axis], indices)
        # the output has the indices' shape, which may be smaller than x off the axis
        crop = tuple(slice(None) if i == axis else slice(0, d) for i, d in enumerate(indices.shape))
        return (np.take_along_axis(x[crop], idx, axis=axis),)

    return run


@kernels.register("Expand", since=8)
def expand(node: Node, ctx: CompileContext) -> KernelFn | None:
    fixed = _fixed_ints(node, 1)

    def run(x, shape):
        out = np.broadcast_shapes(x.shape, tuple(fixed if fixed is not None else ints_of(shape)))
        check_size(out, x.dtype, "Expand")
        return (np.broadcast_to(x, out).copy(),)

    return run


@kernels.register("Tile", since=6)
def tile(node: Node, ctx: CompileContext) -> KernelFn | None:
    fixed = _fixed_ints(node, 1)

    def run(x, repeats):
        reps = fixed if fixed is not None else ints_of(repeats)
        if len(reps) != x.ndim:
            raise ValueError(f"Tile: {len(reps)} repeats for a rank-{x.ndim} input")
        check_size([d * r for d, r in zip(x.shape, reps, strict=True)], x.dtype, "Tile")
        return (np.tile(x, reps) if x.ndim else x.copy(),)

    return run


@kernels.register("Trilu", since=14)
def trilu(node: Node, ctx: CompileContext) -> KernelFn | None:
    fn = np.triu if int(node.attrs.get("upper", 1)) else np.tril
    fixed = _fixed_ints(node, 1)

    def run(x, k=None):
        kk = fixed[0] if fixed else (int(k.reshape(-1)[0]) if k is not None else 0)
        return (fn(x, kk),)

    return run


# -- shapes as data ---------------------------------------------------------------------------


@kernels.register("Shape", since=1)
def shape(node: Node, ctx: CompileContext) -> KernelFn | None:
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    end = None if end is None else int(end)

    def run(x, out=None):
        o = dest(out)
        if o is None:
            return (np.array(x.shape[start:end], dtype=np.int64),)
        o[...] = x.shape[start:end]
        return (o,)

    run.writes_out = True
    return run


@kernels.register("Size", since=1)
def size(node: Node, ctx: CompileContext) -> KernelFn | None:
    def run(x):
        return (np.array(x.size, dtype=np.int64),)

    return run


@kernels.register("Cast", since=1)
def cast(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Between numpy-native dtypes only; float8/int4/bfloat16/string conversions (with
    their saturation and rounding rules) are left to the reference backend."""
    to = node.attrs.get("to")
    if isinstance(to, str):  # opset 1 spelled the type as a string
        from onnx import TensorProto

        to = getattr(TensorProto, to.upper(), 0)
    dt = np_dtype(int(to or 0))
    if not _std_dtype(dt) or not dtypes_ok(node, ANY_STD):
        return None

    def run(x, out=None):
        o = dest(out)
        with np.errstate(all="ignore"):  # out-of-range float -> int: undefined in ONNX too
            if o is None:
                return (x.astype(dt),)
            np.copyto(o, x, casting="unsafe")  # astype's conversion, into the arena
            return (o,)

    run.writes_out = True
    return run


@kernels.register("CastLike", since=15)
def cast_like(node: Node, ctx: CompileContext) -> KernelFn | None:
    target = node.inputs[1].dtype if has_input(node, 1) else None
    if not dtypes_ok(node, ANY_STD) or (target is not None and not _std_dtype(target)):
        return None

    def run(x, like, out=None):
        o = dest(out)
        with np.errstate(all="ignore"):
            if o is None:
                return (x.astype(like.dtype),)
            np.copyto(o, x, casting="unsafe")
            return (o,)

    run.writes_out = True
    return run


# -- data-dependent allocations ---------------------------------------------------------------

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


@kernels.register("Pad", since=1)
def pad(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Pads (negative ones crop) as attributes before opset 11, then inputs; opset 18 adds
    `axes` saying which dims the pads are for."""
    mode = node.attrs.get("mode", "constant")
    if mode not in _PAD_MODES or not dtypes_ok(node, ANY_STD, [0]):
        return None
    if ctx.opset < 11:
        a = node.attrs
        fixed_pads = ints_of(a.get("pads", a.get("paddings", [])))
        fixed_value = float(a.get("value", 0.0))

        def run_attrs(x):
            return (_pad(x, fixed_pads, fixed_value, None, mode),)

        return run_attrs
    consts = [const_input(node, i) for i in (1, 2, 3)]
    dynamic = [has_input(node, i) and consts[i - 1] is None for i in (1, 2, 3)]
    fixed = [
        None if consts[0] is None else ints_of(consts[0]),
        None if consts[1] is None or consts[1].size == 0 else consts[1].reshape(-1)[0],
        None if consts[2] is None else ints_of(consts[2]),
    ]

    def run(x, pads, value=None, axes=None):
        p = ints_of(pads) if dynamic[0] else fixed[0]
        v = (value.reshape(-1)[0] if value.size else None) if dynamic[1] else fixed[1]
        ax = ints_of(axes) if dynamic[2] else fixed[2]
        return (_pad(x, p, v, ax, mode),)

    return run


def _pad(x: np.ndarray, pads: list[int], value: Any, axes: list[int] | None, mode: str):
    axes = list(range(x.ndim)) if axes is None else [_axis(a, x.ndim) for a in axes]
    n = len(axes)
    if len(pads) != 2 * n:
        raise ValueError(f"Pad: {len(pads)} pads for {n} axes")
    width = [[0, 0] for _ in range(x.ndim)]
    for i, a in enumerate(axes):
        width[a] = [pads[i], pads[n + i]]
    # negative pads crop first; np.pad then only adds
    crop = tuple(
        slice(max(-b, 0), d - max(-e, 0)) for (b, e), d in zip(width, x.shape, strict=True)
    )
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    check_size([d + b + e for d, (b, e) in zip(x.shape, width, strict=True)], x.dtype, "Pad")
    if mode == "constant":
        fill = x.dtype.type(0 if value is None else value)
        return np.pad(x, width, mode="constant", constant_values=fill)
    return np.pad(x, width, mode=mode)


@kernels.register("Range", since=11)
def range_(node: Node, ctx: CompileContext) -> KernelFn | None:
    """start + i * delta for i < max(ceil((limit - start) / delta), 0)."""
    if not dtypes_ok(node, NUMBERS):
        return None

    def run(start, limit, delta):
        dt = start.dtype
        s, lim, d = start.item(), limit.item(), delta.item()
        if d == 0:
            raise ValueError("Range: delta is 0")
        if dt.kind == "f":
            n = max(math.ceil((lim - s) / d), 0)
            check_size([n], dt, "Range")
            y = np.arange(n, dtype=np.float64)
            y *= d
            y += s
            return (y.astype(dt),)
        n = max(-((s - lim) // d), 0)  # integer ceil((lim - s) / d), exact
        check_size([n], dt, "Range")
        return ((np.arange(n, dtype=np.int64) * d + s).astype(dt),)

    return run


@kernels.register("ConstantOfShape", since=9)
def constant_of_shape(node: Node, ctx: CompileContext) -> KernelFn | None:
    value = node.attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if not _std_dtype(value.dtype):
        return None
    fill, dt = value.reshape(-1)[0], value.dtype
    fixed = _fixed_ints(node, 0)

    def run(shape):
        dims = fixed if fixed is not None else ints_of(shape)
        check_size(dims, dt, "ConstantOfShape")
        return (np.full(dims, fill, dtype=dt),)

    return run


@kernels.register("Constant", since=1)
def constant(node: Node, ctx: CompileContext) -> KernelFn | None:
    """The attribute's tensor; a fresh copy per run so no caller can edit the constant."""
    value = constant_value(node.attrs)
    if value is None:
        return None  # sparse_value

    def run(out=None):
        return (value.copy() if out is None else deliver(out[0], value),)

    run.writes_out = True
    return run
