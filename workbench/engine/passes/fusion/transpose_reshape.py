"""Transpose and Reshape simplification: back-to-back layout ops merged or cancelled.

    Transpose(Transpose(x, p1), p2)   -> Transpose(x, p1[p2])   (nothing if that is 0,1,..)
    Transpose(x, 0,1,..,n-1)          -> x
    Reshape(Reshape|Flatten|Squeeze|Unsqueeze(x), s2) -> Reshape(x, s2')
    Reshape(x, s) whose output shape is x's (all dims known) -> x

A Reshape only depends on its input's size, so the inner op can go, except where the
outer shape `s2` has a 0 ("copy this dim of my input"): that dim then comes from the
inner op's known output dim, or from the inner Reshape's own shape entry (a 0 there
still means x's dim, which is what the merged Reshape reads). When neither says, the pair
is refused with the reason. A `-1` is inferred from the total size, which is unchanged.

Cancelled pairs first become an Identity (rules always produce a node), which this pass
then removes as level-1 elimination would, keeping graph output names.
"""

from __future__ import annotations

import numpy as np

from ...ir import Node, Value
from ..cleanup.eliminate import bypass
from ..infra import Change, PassContext, PassResult, Rejection
from ..rules import Match, Rule, RulePass, const_value, fused_name, initializer, like, producer

_CANCELLED = "cancelled"  # meta key on the Identity a rule leaves for a cancelled pair


def _perm(node: Node) -> list[int] | None:
    """A Transpose's permutation (the default reverses the dims: needs the rank)."""
    if "perm" in node.attrs:
        return [int(p) for p in node.attrs["perm"]]
    x = node.inputs[0]
    return None if x is None or x.shape is None else list(range(len(x.shape)))[::-1]


def _identity(node: Node, x: Value, out: Value) -> Node:
    n = Node("Identity", [x], [like(out)], name=f"{node.name}/cancelled")
    n.meta[_CANCELLED] = True
    return n


class TransposeTranspose(Rule):
    """Transpose(Transpose(x, p1), p2) -> Transpose(x, p1[p2]), or x."""

    name = "transpose_transpose"
    anchor = ("Transpose",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        inner = producer(node.inputs[0], "Transpose")
        if inner is None:
            return None
        return Match([inner, node], {"x": inner.inputs[0]})

    def check(self, match: Match, ctx: PassContext) -> str | None:
        inner, outer = match.nodes
        p1, p2 = _perm(inner), _perm(outer)
        if p1 is None or p2 is None:
            return "a Transpose without perm on an input of unknown rank"
        if sorted(p1) != list(range(len(p1))) or sorted(p2) != sorted(p1):
            return f"perms {p1} and {p2} are not permutations of the same rank"
        match.values["perm"] = [p1[j] for j in p2]
        return None

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        perm, x, out = match.values["perm"], match.values["x"], match.outputs[0]
        if perm == sorted(perm):
            return [_identity(match.nodes[-1], x, out)]
        name = fused_name(match, "Transpose")
        return [Node("Transpose", [x], [like(out)], {"perm": perm}, name=name)]


class IdentityTranspose(Rule):
    """Transpose(x, 0, 1, ..., n-1) -> x."""

    name = "identity_transpose"
    anchor = ("Transpose",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        perm = _perm(node)
        if perm is None or perm != list(range(len(perm))):
            return None
        return Match([node], {"x": node.inputs[0]})

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        return [_identity(match.nodes[0], match.values["x"], match.outputs[0])]


def _static(v: Value | None) -> tuple[int, ...] | None:
    if v is None or v.shape is None or not all(isinstance(d, int) for d in v.shape):
        return None
    return tuple(v.shape)


class ReshapeReshape(Rule):
    """Reshape(Reshape|Flatten|Squeeze|Unsqueeze(x), s2) -> Reshape(x, s2')."""

    name = "reshape_reshape"
    anchor = ("Reshape",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        if len(node.inputs) < 2:
            return None  # Reshape-1 (shape as an attribute): too old to bother
        inner = producer(node.inputs[0], ("Reshape", "Flatten", "Squeeze", "Unsqueeze"))
        if inner is None:
            return None
        return Match([inner, node], {"x": inner.inputs[0], "shape": node.inputs[1]})

    def check(self, match: Match, ctx: PassContext) -> str | None:
        inner, outer = match.nodes
        s2 = const_value(outer.inputs[1])
        if s2 is None:
            return "the second Reshape's shape is computed at run time"
        s2 = [int(d) for d in np.asarray(s2).reshape(-1)]
        if int(outer.attrs.get("allowzero", 0)) or 0 not in s2:
            match.values["new_shape"] = s2
            return None
        # a 0 in s2 copies that dim of the inner op's output: find out what it is
        known = _static(inner.outputs[0])
        s1 = None
        if inner.op_type == "Reshape" and len(inner.inputs) > 1:
            c = const_value(inner.inputs[1])
            s1 = None if c is None else [int(d) for d in np.asarray(c).reshape(-1)]
            if int(inner.attrs.get("allowzero", 0)) and s1 is not None and 0 in s1:
                return "the first Reshape has allowzero=1 and a 0 in its shape"
        resolved = []
        for i, d in enumerate(s2):
            if d != 0:
                resolved.append(d)
            elif known is not None and i < len(known) and known[i] > 0:
                resolved.append(known[i])
            elif s1 is not None and i < len(s1) and s1[i] > 0:
                resolved.append(s1[i])
            elif s1 is not None and i < len(s1) and s1[i] == 0:
                resolved.append(0)  # both copy dim i of x: still true after merging
            else:
                return (
                    f"the second Reshape's shape {s2} copies dim {i} (a 0) from the "
                    f"{inner.op_type}'s output, whose size is not known here"
                )
        match.values["new_shape"] = resolved
        return None

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        outer = match.nodes[-1]
        shape = match.values["shape"]
        wanted = np.array(match.values["new_shape"], np.int64)
        old = const_value(shape)
        if old is None or not np.array_equal(np.asarray(old).reshape(-1), wanted):
            origin = tuple(outer.meta.get("origin", (outer.name,)))
            shape = initializer(outer.graph, f"{outer.name}/shape", wanted, origin)
        attrs = {k: v for k, v in outer.attrs.items() if k == "allowzero"}
        name = fused_name(match, "Reshape")
        return [
            Node("Reshape", [match.values["x"], shape], [like(match.outputs[0])], attrs, name=name)
        ]


class IdentityReshape(Rule):
    """Reshape(x, s) -> x when x and the result have the same, fully known shape."""

    name = "identity_reshape"
    anchor = ("Reshape",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        x = node.inputs[0]
        before, after = _static(x), _static(node.outputs[0])
        if before is None or before != after:
            return None
        return Match([node], {"x": x})

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        return [_identity(match.nodes[0], match.values["x"], match.outputs[0])]


class LayoutPass(RulePass):
    """The rules above, then removal of the Identity nodes cancelled pairs left behind."""

    def run(self, graph, ctx: PassContext) -> PassResult:
        result = super().run(graph, ctx)
        for node in list(graph.nodes):
            if not node.meta.get(_CANCELLED):
                continue
            origin = tuple(node.meta.get("origin", (node.name,)))
            rule = next((c.rule for c in result.changes if node.name in c.added), "")
            reason = bypass(graph, node, node.inputs[0], node.outputs[0])
            node.meta.pop(_CANCELLED, None)
            if reason is None:
                change = Change(self.name, rule, "eliminated", (node.name,), (), origin)
                result.changes.append(change)
            else:  # the Identity stays (a graph input passed straight to an output)
                result.rejected.append(Rejection(self.name, rule, (node.name,), reason))
        result.modified = bool(result.changes)
        return result


PASSES = [
    LayoutPass(
        "transpose_reshape",
        [TransposeTranspose(), IdentityTranspose(), ReshapeReshape(), IdentityReshape()],
        level=2,
        order=5,
        description="merges back-to-back Transpose/Reshape pairs and drops identity ones",
    )
]
