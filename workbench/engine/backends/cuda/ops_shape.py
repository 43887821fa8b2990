"""cuda kernels of the shape ops: Reshape, Flatten, Squeeze, Unsqueeze are views of a
contiguous device array (no kernel); Transpose, Slice, Expand, Concat are strided copies of
the elementwise family; Gather indexes along one axis. Shapes, axes, starts... must be
constants (a shape computed at run time declines: the reference runs it, with copies)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import dest
from ._elementwise import copy_strided, run_program
from ._launch import broadcast_strides, flat, grid, jit_source, result, strides, writes_out
from ._table import const_of, kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn


@kernels.register("Reshape", since=5)
def reshape(node: Node, ctx: CompileContext) -> KernelFn | None:
    target = const_of(node, 1)
    if target is None:
        return None
    allowzero = int(node.attrs.get("allowzero", 0))

    def run(x: Any, _shape: Any = None) -> tuple:
        shape = [int(d) for d in target]
        if not allowzero:
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1]))
            shape[shape.index(-1)] = x.size // max(known, 1)
        return (x.reshape(tuple(shape)),)

    return run


@kernels.register("Flatten", since=1)
def flatten(node: Node, ctx: CompileContext) -> KernelFn | None:
    axis = int(node.attrs.get("axis", 1))

    def run(x: Any) -> tuple:
        a = axis + len(x.shape) if axis < 0 else axis
        outer = int(np.prod(x.shape[:a]))
        return (x.reshape((outer, x.size // max(outer, 1))),)

    return run


@kernels.register(["Squeeze", "Unsqueeze"], since=1)
def squeeze(node: Node, ctx: CompileContext) -> KernelFn | None:
    axes = const_of(node, 1) if ctx.opset >= 13 else node.attrs.get("axes")
    if axes is None and (node.op_type == "Unsqueeze" or len(node.inputs) > 1):
        return None
    unsq = node.op_type == "Unsqueeze"

    def run(x: Any, _axes: Any = None) -> tuple:
        shape = list(x.shape)
        if unsq:
            rank = len(shape) + len(axes)
            for a in sorted(int(a) + rank if int(a) < 0 else int(a) for a in axes):
                shape.insert(a, 1)
        else:
            drop = (
                {int(a) + len(shape) if int(a) < 0 else int(a) for a in axes}
                if axes is not None
                else {i for i, d in enumerate(shape) if d == 1}
            )
            shape = [d for i, d in enumerate(shape) if i not in drop]
        return (x.reshape(tuple(shape)),)

    return run


@kernels.register("Transpose", since=1)
def transpose(node: Node, ctx: CompileContext) -> KernelFn | None:
    perm = node.attrs.get("perm")

    def run(x: Any, out: Any = None) -> tuple:
        p = list(perm) if perm is not None else list(reversed(range(len(x.shape))))
        src = strides(x.shape)
        return (copy_strided(x, [x.shape[i] for i in p], [src[i] for i in p], 0, dest(out)),)

    return writes_out(run)


@kernels.register("Slice", since=10)
def slice_(node: Node, ctx: CompileContext) -> KernelFn | None:
    consts = [const_of(node, i) for i in range(1, 5)]
    if any(c is None for c, v in zip(consts, node.inputs[1:5]) if v is not None):
        return None
    starts, ends, axes, steps = consts

    def run(x: Any, *_: Any, out: Any = None) -> tuple:
        rank = len(x.shape)
        ax = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
        st = steps if steps is not None else [1] * len(ax)
        shape, src = list(x.shape), strides(x.shape)
        step_strides, base = list(src), 0
        for a, s0, e0, k in zip(ax, starts, ends, st):
            begin, end, step = slice(int(s0), int(e0), int(k)).indices(x.shape[a])
            n = len(range(begin, end, step))
            shape[a], base = n, base + begin * src[a]
            step_strides[a] = src[a] * step
        return (copy_strided(x, shape, step_strides, base, dest(out)),)

    return writes_out(run)


@kernels.register("Expand", since=8)
def expand(node: Node, ctx: CompileContext) -> KernelFn | None:
    target = const_of(node, 1)
    if target is None:
        return None

    def run(x: Any, _shape: Any = None, out: Any = None) -> tuple:
        shape = np.broadcast_shapes(tuple(x.shape), tuple(int(d) for d in target))
        return (copy_strided(x, shape, broadcast_strides(x.shape, shape), 0, dest(out)),)

    return writes_out(run)


@kernels.register("Concat", since=4)
def concat(node: Node, ctx: CompileContext) -> KernelFn | None:
    axis = int(node.attrs["axis"])
    ident = [("Identity", (("x", 0),), {})]

    def run(*xs: Any, out: Any = None) -> tuple:
        a = axis % len(xs[0].shape)
        shape = list(xs[0].shape)
        shape[a] = sum(int(x.shape[a]) for x in xs)
        out = result(out, shape, np.result_type(*[np.dtype(x.dtype) for x in xs]))
        dst, offset = strides(shape), 0
        for x in xs:
            run_program(ident, [x], x.shape, out.dtype, out=out, out_base=offset * dst[a],
                        out_strides=dst, exact=True)  # fmt: skip
            offset += int(x.shape[a])
        return (out,)

    return writes_out(run)


GATHER = """
def kernel(data, idx, out, total, nidx, inner, axis_len):
    i = cuda.grid(1)
    if i >= total:
        return
    k = i % inner
    q = (i // inner) % nidx
    o = i // (inner * nidx)
    j = idx[q]
    if j < 0:
        j += axis_len
    out[i] = data[(o * axis_len + j) * inner + k]
"""


@kernels.register("Gather", since=1)
def gather(node: Node, ctx: CompileContext) -> KernelFn | None:
    axis = int(node.attrs.get("axis", 0))

    def run(data: Any, idx: Any, out: Any = None) -> tuple:
        a = axis % len(data.shape)
        shape = (*data.shape[:a], *idx.shape, *data.shape[a + 1 :])
        out = result(out, shape, data.dtype)
        inner = int(np.prod(data.shape[a + 1 :]))
        total = out.size
        if total:
            k = jit_source(GATHER)
            blocks, threads = grid(total)
            idx_flat = flat(idx) if len(idx.shape) else idx.reshape((1,))
            k[blocks, threads](
                flat(data), idx_flat, flat(out), total, max(idx.size, 1), inner, data.shape[a]
            )
        return (out,)

    return writes_out(run)
