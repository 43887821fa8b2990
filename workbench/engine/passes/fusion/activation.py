"""`act(Conv | FusedConv | Gemm | MatMul | FusedMatMul (x)) -> FusedConv | FusedGemm |
FusedMatMul (x, activation=act)`: an activation folded into the op that feeds it.

Recognized activations: Relu, LeakyRelu(alpha), Clip(min, max; constant bounds, so ReLU6
too), Sigmoid, HardSigmoid(alpha, beta), HardSwish, SiLU written as Mul(x, Sigmoid(x)),
and Gelu (the ONNX op, or `workbench.Gelu` from the gelu rule). Their vocabulary in the
`activation` / `activation_params` attributes is defined here for every fused op; the
kernels apply it as the last step of their epilogue.

Gemm stays a Gemm with an activation (`workbench.FusedGemm`); a MatMul without a bias
becomes a FusedMatMul without one. A Clip whose bounds are not constant is refused.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import AttributeProto

from ...ir import Node, Value
from ..fused_ops import define_op
from ..infra import PassContext
from ..rules import Match, Rule, RulePass, const_value, fused_name, like, producer
from .conv_bn import release_constants

ACTIVATION_ATTRS = {
    "activation": (
        "string: applied last: Relu, LeakyRelu, Clip, Sigmoid, HardSigmoid, HardSwish, "
        "SiLU (x * Sigmoid(x)), Gelu (exact, erf), GeluTanh (tanh approximation); "
        "empty or absent: none"
    ),
    "activation_params": (
        "floats: LeakyRelu [alpha]; Clip [min, max] (-inf / inf for an absent bound); "
        "HardSigmoid [alpha, beta]; nothing for the others"
    ),
}
ACTIVATION_ATTR_TYPES = {
    "activation": AttributeProto.STRING,
    "activation_params": AttributeProto.FLOATS,
}
# Clip before opset 11 bounds by attributes, whose defaults are float32's extremes
_F32_MAX = float(np.finfo(np.float32).max)

FUSED_GEMM = define_op(
    "FusedGemm",
    "Gemm followed by an activation: Y = act(alpha * A' * B' + beta * C), A' and B' "
    "transposed as transA / transB say. On x86 the activation (and C) is applied in one "
    "pass over the GEMM output.",
    inputs=[
        ("A", "[M, K] (or [K, M] with transA)"),
        ("B", "[K, N] (or [N, K] with transB)"),
        ("C?", "bias, unidirectionally broadcastable to [M, N]"),
    ],
    outputs=[("Y", "[M, N]")],
    attributes={
        "alpha": "float: scale of A' * B' (default 1.0)",
        "beta": "float: scale of C (default 1.0)",
        "transA": "int: transpose A (default 0)",
        "transB": "int: transpose B (default 0)",
        **ACTIVATION_ATTRS,
    },
    replaces="act(Gemm(A, B, C))",
)

# (domain, op type) of a producer -> the fused op it becomes with an activation
_TARGETS = {
    ("", "Conv"): "FusedConv",
    ("workbench", "FusedConv"): "FusedConv",
    ("", "Gemm"): "FusedGemm",
    ("", "MatMul"): "FusedMatMul",
    ("workbench", "FusedMatMul"): "FusedMatMul",
}
# the attributes each fused op carries over from its producer
_CARRIED = {
    "Conv": ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"),
    "Gemm": ("alpha", "beta", "transA", "transB"),
    "MatMul": (),
}


def native_reason(ctx: PassContext, op_type: str, value: Value | None = None) -> str | None:
    """Why the target backend could not run `workbench.<op_type>` on `value`'s dtype
    natively, or None: a fused op the backend would hand to `reference` is a slowdown."""
    from ...backends import get_backend

    if not ctx.backend_supports(op_type):
        return f"{ctx.backend} has no kernel for workbench.{op_type}"
    dt = value.dtype if value is not None else None
    dtypes = get_backend(ctx.backend, require_available=False).dtypes
    if dt is not None and dt.name not in dtypes:
        return f"{ctx.backend} computes {'/'.join(sorted(dtypes))}, not {dt.name}"
    return None


def _target(p: Node) -> str | None:
    """The fused op `p` becomes with an activation, if any."""
    return _TARGETS.get(("" if p.domain == "ai.onnx" else p.domain, p.op_type))


def _fusable(v: Value | None) -> Node | None:
    """The producer of `v` if an activation can be folded into it."""
    p = v.producer if v is not None else None
    if p is None or _target(p) is None or p.attrs.get("activation"):
        return None
    return p


def _feeds_silu(sigmoid: Node) -> bool:
    """Whether this Sigmoid is only read by Mul(x, Sigmoid(x)): the Mul anchors that."""
    x = sigmoid.inputs[0]
    uses = sigmoid.outputs[0].uses
    return bool(uses) and all(
        u.op_type == "Mul" and x in u.inputs and u.domain in ("", "ai.onnx") for u, _ in uses
    )


def _clip_bounds(clip: Node, ctx: PassContext) -> tuple[list[float] | None, list[Node]]:
    """([min, max], the Constant nodes only this Clip reads) or (None, []) if not constant."""
    if ctx.opset < 11:
        lo = float(clip.attrs.get("min", -_F32_MAX))
        return [lo, float(clip.attrs.get("max", _F32_MAX))], []
    bounds, consts = [], []
    for i, default in ((1, -math.inf), (2, math.inf)):
        v = clip.inputs[i] if i < len(clip.inputs) else None
        if v is None:
            bounds.append(default)
            continue
        c = const_value(v)
        if c is None:
            return None, []
        bounds.append(float(c.reshape(-1)[0]) if c.size else default)
        p = v.producer
        if p is not None and p.op_type == "Constant" and {id(u) for u, _ in v.uses} == {id(clip)}:
            consts.append(p)  # dies with the Clip: fused away with it
    return bounds, consts


def _activation(node: Node, ctx: PassContext) -> tuple[str, list[float], list[Node], str]:
    """(activation name, parameters, extra nodes to take along, reason it cannot be fused)."""
    op, a = node.op_type, node.attrs
    if op in ("Relu", "Sigmoid", "HardSwish"):
        return op, [], [], ""
    if op == "LeakyRelu":
        return op, [float(a.get("alpha", 0.01))], [], ""
    if op == "HardSigmoid":
        return op, [float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))], [], ""
    if op == "Clip":
        bounds, consts = _clip_bounds(node, ctx)
        if bounds is None:
            return op, [], [], "Clip min/max are not constant"
        return op, bounds, consts, ""
    if op == "Gelu":
        approx = a.get("approximate", "none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        if approx not in ("none", "tanh"):
            return op, [], [], f"Gelu approximate={approx!r} is not 'none' or 'tanh'"
        return ("Gelu" if approx == "none" else "GeluTanh"), [], [], ""
    raise AssertionError(op)


class FuseActivation(Rule):
    """act(P(...)) -> Fused<P>(..., activation=act), P one of Conv, FusedConv, Gemm, MatMul,
    FusedMatMul without an activation yet."""

    name = "activation"
    anchor = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "Mul")

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        if node.op_type == "Mul":
            return self._silu(node)
        if node.op_type == "Sigmoid" and _feeds_silu(node):
            return None
        p = _fusable(node.inputs[0] if node.inputs else None)
        if p is None:
            return None
        name, params, extra, why = _activation(node, ctx)
        values = {"producer": p, "activation": name, "params": params, "why": why}
        return Match([p, *extra, node], values)

    def _silu(self, mul: Node) -> Match | None:
        for i in (0, 1):
            sigmoid = producer(mul.inputs[i], "Sigmoid")
            x = mul.inputs[1 - i]
            if sigmoid is None or sigmoid.inputs[0] is not x:
                continue
            p = _fusable(x)
            if p is not None:
                values = {"producer": p, "activation": "SiLU", "params": [], "why": ""}
                return Match([p, sigmoid, mul], values)
        return None

    def check(self, match: Match, ctx: PassContext) -> str | None:
        p = match.values["producer"]
        if match.values["why"]:
            return match.values["why"]
        extra = set(p.attrs) - set(_CARRIED.get(p.op_type, ())) - set(ACTIVATION_ATTRS)
        if p.domain in ("", "ai.onnx") and extra:
            return f"{p.op_type} has attributes the fused op does not take: {sorted(extra)}"
        return native_reason(ctx, _target(p), p.outputs[0])

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        p = match.values["producer"]
        target = _target(p)
        act = match.nodes[-1]
        if act.op_type == "Clip":  # its bounds live on in the attribute
            release_constants(act.graph, act.inputs[1:], [act])
        attrs = {**p.attrs, "activation": match.values["activation"]}
        attr_types = {**p.attr_types, **ACTIVATION_ATTR_TYPES}
        if match.values["params"]:
            attrs["activation_params"] = [float(v) for v in match.values["params"]]
        fused = Node(
            target,
            list(p.inputs),
            [like(match.outputs[0])],
            attrs,
            name=fused_name(match, target),
            domain="workbench",
            attr_types=attr_types,
        )
        return [fused]


class FuseWorkbenchGelu(FuseActivation):
    """The same for `workbench.Gelu`, the gelu rule's rewrite of the Erf/Tanh formulas."""

    name = "activation_gelu"
    anchor = ("Gelu",)
    domain = "workbench"


PASSES = [
    RulePass(
        "activation",
        [FuseActivation(), FuseWorkbenchGelu()],
        level=2,
        order=40,
        description="Conv/Gemm/MatMul (fused or not) + activation -> one fused op",
    )
]
