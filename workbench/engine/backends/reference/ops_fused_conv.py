"""Reference kernels of the fused ops of the `workbench` domain, composed of the plain ops
they stand for: FusedConv is Conv, Add(Z), then the activation's ONNX ops (FusedConvNHWC
the same between transposes to and from channels-last); FusedGemm is
Gemm then the activation; FusedMatMul is MatMul, Add(Bias), then the activation.

Each step is this backend's own kernel for the plain op, compiled once per fused node, so a
fused op means exactly what the unfused graph meant: these kernels are its definition,
and the x86 epilogues are checked against them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ....errors import WorkbenchError
from ...ir import Node, Value
from ..base import CompileContext
from ._table import kernels

if TYPE_CHECKING:
    from ..base import KernelFn

# The plain ops are compiled at this opset: the first with Gelu; Conv, Gemm, MatMul, Add
# and the activations mean the same at every opset from 14 (HardSwish) on.
_PLAIN_OPSET = 20

# activation -> (ONNX op, its attributes from the parameters, how many parameters)
_SIMPLE: dict[str, tuple[str, Callable[[list[float]], dict], int]] = {
    "Relu": ("Relu", lambda p: {}, 0),
    "LeakyRelu": ("LeakyRelu", lambda p: {"alpha": p[0]}, 1),
    "Sigmoid": ("Sigmoid", lambda p: {}, 0),
    "HardSigmoid": ("HardSigmoid", lambda p: {"alpha": p[0], "beta": p[1]}, 2),
    "HardSwish": ("HardSwish", lambda p: {}, 0),
    "Gelu": ("Gelu", lambda p: {"approximate": "none"}, 0),
    "GeluTanh": ("Gelu", lambda p: {"approximate": "tanh"}, 0),
}
_DEFAULTS = {"LeakyRelu": [0.01], "HardSigmoid": [0.2, 0.5], "Clip": [-np.inf, np.inf]}
KNOWN = ("", *_SIMPLE, "Clip", "SiLU")


def _plain(
    op_type: str, n_inputs: int, attrs: dict, node: Node, ctx: CompileContext
) -> Callable[..., tuple]:
    """This backend's kernel for one plain op on fresh values of the fused node's type."""
    from . import BACKEND  # (the package imports this module before it defines BACKEND)

    elem = node.outputs[0].elem_type
    plain = Node(
        op_type,
        [Value(f"in{i}", elem) for i in range(n_inputs)],
        [Value("out", elem)],
        attrs,
        name=f"{node.name}/{op_type}",
    )
    plain_ctx = CompileContext(BACKEND, _PLAIN_OPSET, ctx.precision, {"": _PLAIN_OPSET})
    kernel = BACKEND.compile(plain, plain_ctx)
    if kernel is None:
        raise WorkbenchError(f"node {node.name!r}: reference has no {op_type} kernel")
    return kernel.run


def activation(node: Node, ctx: CompileContext) -> Callable[[np.ndarray], np.ndarray]:
    """The node's `activation` as a function of the pre-activation tensor."""
    name = node.attrs.get("activation", "")
    if isinstance(name, bytes):
        name = name.decode()
    if name not in KNOWN:
        raise WorkbenchError(
            f"node {node.name!r} (workbench.{node.op_type}): unknown activation {name!r}; "
            f"known: {', '.join(k for k in KNOWN if k)}"
        )
    params = [float(p) for p in node.attrs.get("activation_params", _DEFAULTS.get(name, []))]
    wanted = len(_DEFAULTS.get(name, []))
    if len(params) != wanted:
        raise WorkbenchError(
            f"node {node.name!r} (workbench.{node.op_type}): activation {name} takes "
            f"{wanted} activation_params, got {params}"
        )
    if name == "":
        return lambda y: y
    if name == "Clip":
        clip = _plain("Clip", 3, {}, node, ctx)
        lo, hi = params
        return lambda y: clip(y, np.asarray(lo, y.dtype), np.asarray(hi, y.dtype))[0]
    if name == "SiLU":  # x * Sigmoid(x), as the two nodes it replaces
        sigmoid = _plain("Sigmoid", 1, {}, node, ctx)
        mul = _plain("Mul", 2, {}, node, ctx)
        return lambda y: mul(y, sigmoid(y)[0])[0]
    op_type, make_attrs, _ = _SIMPLE[name]
    run = _plain(op_type, 1, make_attrs(params), node, ctx)
    return lambda y: run(y)[0]


_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


@kernels.register("FusedConv", domain="workbench", since=1)
def fused_conv(node: Node, ctx: CompileContext) -> KernelFn:
    """Y = act(Conv(X, W, B) + Z)."""
    attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRS}
    conv = _plain("Conv", 3, attrs, node, ctx)
    add = _plain("Add", 2, {}, node, ctx)
    act = activation(node, ctx)

    def run(x, w, b=None, z=None):
        (y,) = conv(x, w, b)
        if z is not None:
            (y,) = add(y, z)
        return (act(y),)

    return run


@kernels.register("FusedConvNHWC", domain="workbench", since=1)
def fused_conv_nhwc(node: Node, ctx: CompileContext) -> KernelFn:
    """FusedConv on channels-last X, Z and Y: the NCHW FusedConv between transposes."""
    nchw = fused_conv(node, ctx)

    def run(x, w, b=None, z=None):
        zt = None if z is None else np.transpose(z, (0, 3, 1, 2))
        (y,) = nchw(np.transpose(x, (0, 3, 1, 2)), w, b, zt)
        return (np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1))),)

    return run


@kernels.register("MaxPoolNHWC", domain="workbench", since=1)
def max_pool_nhwc(node: Node, ctx: CompileContext) -> KernelFn:
    """MaxPool on channels-last X and Y: the NCHW MaxPool between transposes."""
    pool = _plain("MaxPool", 1, dict(node.attrs), node, ctx)

    def run(x):
        (y,) = pool(np.transpose(x, (0, 3, 1, 2)))
        return (np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1))),)

    return run


@kernels.register("FusedGemm", domain="workbench", since=1)
def fused_gemm(node: Node, ctx: CompileContext) -> KernelFn:
    """Y = act(Gemm(A, B, C))."""
    attrs = {k: v for k, v in node.attrs.items() if k in ("alpha", "beta", "transA", "transB")}
    has_c = len(node.inputs) > 2 and node.inputs[2] is not None
    gemm = _plain("Gemm", 3 if has_c else 2, attrs, node, ctx)
    act = activation(node, ctx)

    def run(a, b, c=None):
        return (act(gemm(a, b, c)[0] if has_c else gemm(a, b)[0]),)

    return run


@kernels.register("FusedMatMul", domain="workbench", since=1)
def fused_matmul(node: Node, ctx: CompileContext) -> KernelFn:
    """Y = act(MatMul(A, B) + Bias)."""
    matmul = _plain("MatMul", 2, {}, node, ctx)
    add = _plain("Add", 2, {}, node, ctx)
    act = activation(node, ctx)

    def run(a, b, bias=None):
        (y,) = matmul(a, b)
        if bias is not None:
            (y,) = add(y, bias)
        return (act(y),)

    return run
