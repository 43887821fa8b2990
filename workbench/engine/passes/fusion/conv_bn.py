"""`BatchNormalization(Conv(x, w, b)) -> Conv(x, w * s, (b - mean) * s + beta)` with
`s = gamma / sqrt(var + epsilon)` per output channel: inference BN folded into the Conv.

Exporters keep BN separate when asked to preserve training-time structure (our zoo's
ResNets and MobileNetV2 do); folding it removes a whole pass over every activation map.
The folded weight and bias are new initializers computed in float64 and stored in the
weight's dtype, with `meta["origin"]` naming the Conv and the BN; the old ones are
dropped when nothing else reads them. Refused when a BN parameter or the Conv's weight
or bias is not constant, when the BN is in training mode, or when its parameters are
not one value per output channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...ir import Computed, Graph, Node, Value
from ..infra import PassContext, origin_of
from ..rules import Match, Rule, RulePass, const_value, fused_name, initializer, like, producer

_BN_PARAMS = ("scale", "bias", "mean", "var")


def _training(bn: Node, ctx: PassContext) -> bool:
    if ctx.opset >= 14:
        return bool(bn.attrs.get("training_mode", 0))
    # before 14, running statistics as (used) outputs mean an update step is wanted
    return any(v.name and (v.uses or v in bn.graph.outputs) for v in bn.outputs[1:])


def release_constants(
    graph: Graph, values: Sequence[Value | None], readers: Sequence[Node]
) -> None:
    """Drop the initializers among `values` that only `readers` read: a rewrite is about
    to remove those readers, and a constant nobody reads would still sit in every plan."""
    mine = {id(n) for n in readers}
    for v in values:
        if v is None or not v.is_const or graph.initializers.get(v.name) is not v:
            continue
        if v in graph.inputs or v in graph.outputs:
            continue
        if all(id(u) in mine for u, _ in v.uses):
            del graph.initializers[v.name]


def _shape_and_dtype(v: Value | None) -> tuple[tuple[int, ...], np.dtype | None] | None:
    """A constant's shape and dtype, an initializer's without reading its data (it may be
    left in its file: ir.Deferred); None when `v` is not constant."""
    if v is not None and v.is_const:
        return v.const_shape, v.dtype
    data = const_value(v)
    return None if data is None else (data.shape, data.dtype)


class ConvBatchNorm(Rule):
    """BatchNormalization(Conv(x, w[, b])) -> Conv(x, w', b') with the BN folded in."""

    name = "conv_bn"
    anchor = ("BatchNormalization",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        conv = producer(node.inputs[0], "Conv")
        if conv is None:
            return None
        return Match([conv, node], {"conv": conv, "bn": node})

    def check(self, match: Match, ctx: PassContext) -> str | None:
        conv, bn = match.values["conv"], match.values["bn"]
        if _training(bn, ctx):
            return "BatchNormalization in training mode"
        if len(bn.inputs) < 5 or any(v is None for v in bn.inputs[1:5]):
            return "BatchNormalization lacks one of scale, bias, mean, var"
        params = {}
        for role, v in zip(_BN_PARAMS, bn.inputs[1:5], strict=True):
            data = const_value(v)
            if data is None:
                return f"BatchNormalization {role} is not constant"
            params[role] = data
        w = _shape_and_dtype(conv.inputs[1])
        if w is None:
            return "Conv weight is not constant"
        if w[1] is None or w[1].kind != "f" or len(w[0]) < 3:
            return f"Conv weight is {w[1]} of shape {list(w[0])}, not a float kernel"
        has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None
        if has_bias and const_value(conv.inputs[2]) is None:
            return "Conv bias is not constant"
        m = w[0][0]
        for role, data in params.items():
            if data.size != m or data.ndim != 1:
                return (
                    f"BatchNormalization {role} of shape {list(data.shape)} is not one value "
                    f"per output channel ({m})"
                )
        return None

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        conv, bn = match.values["conv"], match.values["bn"]
        graph = bn.graph
        gamma, beta, mean, var = (const_value(v).astype(np.float64) for v in bn.inputs[1:5])
        w_in = conv.inputs[1]
        shape, dtype = _shape_and_dtype(w_in)
        has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None
        b = const_value(conv.inputs[2]).astype(np.float64) if has_bias else 0.0
        s = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        folded_b = ((b - mean) * s + beta).astype(dtype)
        scale = s.reshape((-1,) + (1,) * (len(shape) - 1))

        def fold_w(w: np.ndarray) -> np.ndarray:
            # w * scale in float64, rounded once to w's dtype, numpy's buffers casting a
            # few thousand elements at a time: no float64 copies of the weight (they were
            # four times its size at once, ResNet-50's peak on its first run)
            out = np.empty(w.shape, w.dtype)
            return np.multiply(w, scale, out=out, casting="same_kind")

        # a weight read from its file when needed is folded when needed too: the kernel
        # that packs it then holds the only copy (ir.Deferred)
        if w_in.const_deferred:
            folded_w = Computed(lambda: fold_w(w_in.const), shape, dtype)
        else:
            folded_w = fold_w(const_value(w_in))
        origin = origin_of([conv, bn])
        w_val = initializer(graph, f"{conv.inputs[1].name}_bn_folded", folded_w, origin)
        b_val = initializer(graph, f"{bn.inputs[2].name}_conv_folded", folded_b, origin)
        release_constants(graph, conv.inputs[1:3], [conv])
        release_constants(graph, bn.inputs[1:5], [bn])
        folded = Node(
            "Conv",
            [conv.inputs[0], w_val, b_val],
            [like(match.outputs[0])],
            dict(conv.attrs),
            name=fused_name(match, "Conv"),
            attr_types=dict(conv.attr_types),
        )
        return [folded]


PASSES = [
    RulePass(
        "conv_bn",
        [ConvBatchNorm()],
        level=2,
        order=10,
        description="Conv + BatchNormalization -> Conv with folded weights and bias",
    )
]
