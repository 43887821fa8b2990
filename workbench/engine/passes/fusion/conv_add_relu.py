"""`Relu(Add(Conv(x, w, b), z)) -> workbench.FusedConv(x, w, b, z, activation=Relu)`, and
`Add(Conv(x, w, b), z) -> FusedConv(x, w, b, z)` where no Relu follows alone.

The residual connection of ResNet blocks (and MobileNetV2's, which has no Relu after it):
the Conv's output is read once, by the Add, so the fused kernel adds the residual `Z` and
applies the Relu in the pass over the convolution output that adds the bias. The Add must
not broadcast the Conv output to a larger shape (both shapes must be known and equal).
Of two Convs meeting at one Add, the first that is read by the Add alone takes the other
as its residual. Runs after conv_bn, so the Conv carries its folded BatchNormalization.
"""

from __future__ import annotations

from ...ir import Node
from ..fused_ops import define_op
from ..infra import PassContext
from ..rules import Match, Rule, RulePass, fused_name, like, producer
from .activation import ACTIVATION_ATTR_TYPES, ACTIVATION_ATTRS, native_reason

CONV_ATTRS = {
    "auto_pad": "string: as Conv (default NOTSET)",
    "dilations": "ints: as Conv",
    "group": "int: as Conv (default 1)",
    "kernel_shape": "ints: as Conv",
    "pads": "ints: as Conv",
    "strides": "ints: as Conv",
}

FUSED_CONV = define_op(
    "FusedConv",
    "Conv plus an optional residual and activation: Y = act(Conv(X, W, B) + Z). On x86 the "
    "bias, the residual and the activation are applied in one pass over the convolution "
    "output. B is empty when the Conv had no bias and Z is absent without a residual.",
    inputs=[
        ("X", "[N, C, *spatial], as Conv"),
        ("W", "[M, C/group, *kernel], as Conv"),
        ("B?", "[M], as Conv"),
        ("Z?", "residual with the shape of Conv(X, W, B) (or broadcast to it), added before act"),
    ],
    outputs=[("Y", "[N, M, *out], as Conv")],
    attributes={**CONV_ATTRS, **ACTIVATION_ATTRS},
    replaces="act(Add(Conv(X, W, B), Z))",
)


def _conv_operand(add: Node) -> tuple[Node, int] | None:
    """(Conv, index of the residual input) for Add(Conv(...), z) or Add(z, Conv(...)); a
    Conv whose output only this Add reads comes first."""
    found = []
    for i in (0, 1):
        conv = producer(add.inputs[i], "Conv")
        if conv is not None and add.inputs[1 - i] is not add.inputs[i]:
            y = conv.outputs[0]
            alone = {id(u) for u, _ in y.uses} == {id(add)} and y not in add.graph.outputs
            found.append((not alone, i, conv))
    if not found:
        return None
    _, i, conv = min(found, key=lambda t: (t[0], t[1]))
    return conv, 1 - i


class ConvAddRelu(Rule):
    """Add(Conv(x, w, b), z) [-> Relu] -> FusedConv(x, w, b, z [, activation=Relu])."""

    name = "conv_add_relu"
    anchor = ("Add",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        found = _conv_operand(node)
        if found is None:
            return None
        conv, zi = found
        nodes = [conv, node]
        users = node.outputs[0].uses
        relu = users[0][0] if len(users) == 1 else None
        if (
            relu is not None
            and relu.op_type == "Relu"
            and relu.domain in ("", "ai.onnx")
            and node.outputs[0] not in node.graph.outputs
        ):
            nodes.append(relu)
        return Match(nodes, {"conv": conv, "z": node.inputs[zi], "add": node})

    def check(self, match: Match, ctx: PassContext) -> str | None:
        conv, add = match.values["conv"], match.values["add"]
        cs, ads = conv.outputs[0].shape, add.outputs[0].shape
        known = cs is not None and ads is not None and all(d is not None for d in (*cs, *ads))
        if not known:
            return "Conv or Add output shape is unknown (the residual might broadcast it)"
        if tuple(cs) != tuple(ads):
            return f"the Add broadcasts the Conv output {list(cs)} to {list(ads)}"
        return native_reason(ctx, "FusedConv", conv.outputs[0])

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        conv = match.values["conv"]
        bias = conv.inputs[2] if len(conv.inputs) > 2 else None
        attrs = dict(conv.attrs)
        attr_types = dict(conv.attr_types)
        if match.nodes[-1].op_type == "Relu":
            attrs["activation"] = "Relu"
            attr_types.update(ACTIVATION_ATTR_TYPES)
        fused = Node(
            "FusedConv",
            [conv.inputs[0], conv.inputs[1], bias, match.values["z"]],
            [like(match.outputs[0])],
            attrs,
            name=fused_name(match, "FusedConv"),
            domain="workbench",
            attr_types=attr_types,
        )
        return [fused]


PASSES = [
    RulePass(
        "conv_add_relu",
        [ConvAddRelu()],
        level=2,
        order=30,
        description="Conv + Add(residual) [+ Relu] -> workbench.FusedConv with input Z",
    )
]
