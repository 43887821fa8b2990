"""cuda kernels of the shape ops whose work is on the host: Shape, Size, Range and
ConstantOfShape.

Their outputs are a few integers (a shape, a length) or are sized by a few integers, so the
arithmetic that matters is host arithmetic; what each does on the device is explicit:

- Shape, Size: read the device array's shape (host metadata, no device access) and upload
  the result, rank x 8 bytes.
- Range, ConstantOfShape: copy their scalar / shape inputs back to the host (a synchronizing
  copy of a few bytes) to size the output, then fill it on the device.

Without these the reference fallback would copy Shape's whole *input* tensor to the host.
Their output sizes come from input values, so none writes into the memory arena (`out`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import numpy_helper

from ._launch import download, empty, flat, grid, jit_source, upload
from ._table import float_dtype, kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn


@kernels.register("Shape", since=1)
def shape(node: Node, ctx: CompileContext) -> KernelFn | None:
    start, end = node.attrs.get("start", 0), node.attrs.get("end")

    def run(x: Any) -> tuple:
        dims = tuple(x.shape)
        dims = dims[slice(int(start), None if end is None else int(end))]
        return (upload(np.array(dims, np.int64)),)

    run.algorithm = "host-metadata-upload"
    return run


@kernels.register("Size", since=1)
def size(node: Node, ctx: CompileContext) -> KernelFn | None:
    def run(x: Any) -> tuple:
        return (upload(np.array(int(np.prod(x.shape)), np.int64)),)

    run.algorithm = "host-metadata-upload"
    return run


FILL = """
def kernel(out, n, start, delta):
    i = cuda.grid(1)
    if i < n:
        out[i] = start + i * delta
"""


def _fill(n: int, dtype: Any, start: Any, delta: Any) -> Any:
    out = empty((n,), dtype)
    if n:
        blocks, threads = grid(n)
        jit_source(FILL)[blocks, threads](flat(out), n, start, delta)
    return out


def _scalar(x: Any) -> Any:
    return np.asarray(download(x)).reshape(-1)[0]


@kernels.register("Range", since=11)
def range_(node: Node, ctx: CompileContext) -> KernelFn | None:
    def run(start: Any, limit: Any, delta: Any) -> tuple:
        s, lim, d = _scalar(start), _scalar(limit), _scalar(delta)
        n = max(int(np.ceil((lim - s) / d)), 0)
        dtype = np.dtype(start.dtype)
        return (_fill(n, dtype, dtype.type(s), dtype.type(d)),)

    run.algorithm = "host-size-device-fill"
    return run


@kernels.register("ConstantOfShape", since=9)
def constant_of_shape(node: Node, ctx: CompileContext) -> KernelFn | None:
    value = node.attrs.get("value")
    if value is not None and not isinstance(value, np.ndarray):
        value = numpy_helper.to_array(value)
    v = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dtype = v.dtype
    if dtype in (np.float32, np.float64):
        dtype = float_dtype(ctx.precision)  # floats in the plan's precision
    if dtype.kind not in "fiub":
        return None

    def run(dims: Any) -> tuple:
        target = tuple(int(d) for d in np.asarray(download(dims)).reshape(-1))
        n = int(np.prod(target))
        fill = v[0].item() if dtype.kind != "b" else int(v[0])
        out = _fill(n, dtype if dtype.kind != "b" else np.uint8, fill, 0)
        if dtype.kind == "b":
            out = out.view(np.bool_)
        return (out.reshape(target),)

    run.algorithm = "host-size-device-fill"
    return run
