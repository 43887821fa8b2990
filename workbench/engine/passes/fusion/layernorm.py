"""LayerNorm fusion: the decomposition exporters write below opset 17 -> one node.

    d = Sub(x, ReduceMean(x));  v = ReduceMean(Pow(d, 2))       (or Mul(d, d))
    Add(Mul(Div(d, Sqrt(Add(v, eps))), gamma), beta)  -> LayerNormalization(x, gamma, beta)

over the last axis, with ReduceMean's axes an attribute (before opset 18) or an input
(from 18); the Mul(gamma) and Add(beta) are optional (a missing gamma becomes a constant
of ones). From opset 17 the result is the standard `LayerNormalization` (axis=-1),
below it `workbench.LayerNorm` (same inputs and attributes). Refused, with the reason,
when the reduction is not over the last axis, epsilon is not a constant, or the
exponent is not 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ...ir import Node, Value
from ..fused_ops import define_op
from ..infra import PassContext, origin_of
from ..rules import Match, Rule, RulePass, const_value, fused_name, initializer, like, producer
from ..rules import scalar as scalar_of
from .gelu import absorb_producers, near

LAYER_NORM = define_op(
    "LayerNorm",
    "Layer normalization over the last axis: y = (x - mean) / sqrt(var + epsilon) * Scale "
    "+ B, mean and (biased) variance taken over the last axis. The same as the standard "
    "LayerNormalization of opset 17 with axis=-1 (first output only), for older opsets.",
    inputs=[
        ("X", "input tensor [..., N]"),
        ("Scale", "[N] gain"),
        ("B?", "[N] shift (optional)"),
    ],
    outputs=[("Y", "normalized tensor, shaped like X")],
    attributes={
        "axis": "int: the normalized axis; always -1",
        "epsilon": "float: added to the variance",
    },
    replaces="Add(Mul(Div(Sub(x, ReduceMean(x)), Sqrt(Add(ReduceMean(Pow(d, 2)), eps))), g), b)",
)


def _reduced_axes(node: Node) -> list[int] | str:
    """ReduceMean's axes (attribute before opset 18, input from 18), or why not usable."""
    if int(node.attrs.get("keepdims", 1)) != 1:
        return "ReduceMean drops the reduced axis (keepdims=0)"
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = const_value(node.inputs[1])
        if axes is None:
            return "ReduceMean axes are not constant"
        return [int(a) for a in np.asarray(axes).reshape(-1)]
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    return "ReduceMean reduces over every axis"


def _is_last_axis(axes: list[int], rank: int | None) -> bool:
    if len(axes) != 1:
        return False
    return axes[0] == -1 or (rank is not None and axes[0] == rank - 1)


def _affine_ok(p: Value, x: Value) -> bool:
    """Whether `p` can be LayerNormalization's Scale or B for `x`: it broadcasts over the
    last axis alone (leading dims 1, last dim 1 or N), and is a constant or a vector."""
    c = const_value(p)
    shape = tuple(c.shape) if c is not None else p.shape
    rank = len(x.shape) if x.shape is not None else None
    if shape is None or any(d != 1 for d in shape[:-1]):
        return False
    if len(shape) > max(rank or 1, 1) or (c is None and len(shape) > 1):
        return False
    n = x.shape[-1] if x.shape else None
    return not (shape and isinstance(n, int) and shape[-1] not in (1, n))


def _affine_step(node: Node, want: tuple[str, ...]) -> Iterator[tuple[Node, Value]]:
    """For Mul(normed, gamma) / Add(., beta): (the node of type `want` feeding it, used
    only there, and the other operand), in both operand orders."""
    for i in (0, 1):
        p = producer(node.inputs[i], want)
        if p is not None and len(node.inputs[i].uses) == 1:
            yield p, node.inputs[1 - i]


def _core(div: Node) -> dict[str, Any] | None:
    """Div(d, Sqrt(Add(ReduceMean(Pow(d, 2) | Mul(d, d)), eps))) with d = x - mean(x):
    its nodes and the epsilon operand by name, or None."""
    d = div.inputs[0]
    sub = producer(d, "Sub")
    sqrt = producer(div.inputs[1], "Sqrt")
    if sub is None or sqrt is None:
        return None
    mean = producer(sub.inputs[1], "ReduceMean")
    add_eps = producer(sqrt.inputs[0], "Add")
    if mean is None or mean.inputs[0] is not sub.inputs[0] or add_eps is None:
        return None
    for var, eps in _affine_step(add_eps, ("ReduceMean",)):
        power = producer(var.inputs[0], ("Pow", "Mul"))
        if power is None or power.inputs[0] is not d:
            continue
        if power.op_type == "Mul" and power.inputs[1] is not d:
            continue
        return {
            "x": sub.inputs[0],
            "nodes": [mean, sub, power, var, add_eps, sqrt, div],
            "mean": mean,
            "var": var,
            "power": power,
            "eps": eps,
        }
    return None


def _find(node: Node) -> tuple[dict[str, Any], Value | None, Value | None, list[Node]] | None:
    """The LayerNorm ending at `node` (Div, Mul(gamma) or Add(beta)):
    (core, gamma, beta, affine nodes), or None."""
    if node.op_type == "Div":
        core = _core(node)
        return None if core is None else (core, None, None, [])
    want = ("Div", "Mul") if node.op_type == "Add" else ("Div",)
    for p, param in _affine_step(node, want):
        if p.op_type == "Div":
            core = _core(p)
            if core is not None and _affine_ok(param, core["x"]):
                if node.op_type == "Mul":
                    return core, param, None, [node]
                return core, None, param, [node]
        else:  # Add(Mul(Div, gamma), beta)
            found = _find(p)
            if found is not None and found[1] is not None and _affine_ok(param, found[0]["x"]):
                return found[0], found[1], param, [p, node]
    return None


class LayerNormRule(Rule):
    """Anchored at the last node (Add(beta), Mul(gamma) or the Div itself)."""

    name = "layernorm"
    anchor = ("Div", "Mul", "Add")

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        found = _find(node)
        if found is None:
            return None
        users = node.outputs[0].uses
        if node.op_type != "Add" and len(users) == 1:
            user = users[0][0]
            if user.op_type in ("Mul", "Add") and _find(user) is not None:
                return None  # the affine part follows: fuse from its last node
        core, gamma, beta, affine = found
        values = {**core, "gamma": gamma, "beta": beta}
        nodes = absorb_producers([*core["nodes"], *affine], [core["x"], gamma, beta])
        return Match(nodes, values, [node.outputs[0]])

    def check(self, match: Match, ctx: PassContext) -> str | None:
        v = match.values
        x = v["x"]
        rank = len(x.shape) if x.shape is not None else None
        for reduce in (v["mean"], v["var"]):
            axes = _reduced_axes(reduce)
            if isinstance(axes, str):
                return axes
            if not _is_last_axis(axes, rank):
                return f"ReduceMean axes {axes} are not the last axis"
        power = v["power"]
        if power.op_type == "Pow":
            e = scalar_of(power.inputs[1])
            if e is None:
                return "Pow exponent is not constant"
            if not near(e, 2.0):
                return f"Pow exponent is {e:g}, not 2"
        eps = scalar_of(v["eps"])
        if eps is None:
            return "epsilon is not constant"
        if eps < 0:
            return f"epsilon is {eps:g}, below 0"
        v["epsilon"] = eps
        n = x.shape[-1] if x.shape else None
        if v["gamma"] is None and not isinstance(n, int):
            return "no gamma, and the last axis has no static size to make one"
        std = ctx.opset >= 17
        if std:
            ok = ctx.backend_supports("LayerNormalization", domain="", opset=ctx.opset)
        else:
            ok = ctx.backend_supports("LayerNorm")
        if not ok:
            op = "LayerNormalization" if std else "workbench.LayerNorm"
            return f"backend {ctx.backend!r} has no kernel for {op}"
        return None

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        v = match.values
        x = v["x"]
        graph = match.nodes[-1].graph
        origin = origin_of(match.nodes)
        gamma, beta = v["gamma"], v["beta"]
        if gamma is None:
            ones = np.ones(x.shape[-1], x.dtype or np.dtype(np.float32))
            gamma = initializer(graph, f"{x.name}/ln_scale", ones, origin)
        inputs = [x, _flat(graph, gamma, origin)]
        if beta is not None:
            inputs.append(_flat(graph, beta, origin))
        std = ctx.opset >= 17
        op = "LayerNormalization" if std else "LayerNorm"
        return [
            Node(
                op,
                inputs,
                [like(match.outputs[0])],
                {"axis": -1, "epsilon": float(v["epsilon"])},
                name=fused_name(match, op),
                domain="" if std else "workbench",
            )
        ]


def _flat(graph, p: Value, origin: tuple[str, ...]) -> Value:
    """A constant gamma/beta shaped [1, 1, N] as [N]: LayerNormalization's Scale and B
    broadcast onto the normalized axis only. Runtime ones are already of rank <= 1."""
    c = const_value(p)
    if c is None or c.ndim <= 1:
        return p
    return initializer(graph, f"{p.name}/flat", c.reshape(-1), origin)


PASSES = [
    RulePass(
        "layernorm_fusion",
        [LayerNormRule()],
        level=2,
        order=12,
        description="decomposed LayerNorm (ReduceMean ... Div, Mul, Add) -> LayerNormalization",
    )
]
