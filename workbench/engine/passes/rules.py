"""Fusion rules as data: `pattern` finds a candidate, `check` says why not, `rewrite` replaces.

Like the onnxscript rewriter: a rule is anchored at one op type (the *last* node of the
pattern, whose output the fused node takes over), walks producers backwards to match,
and returns a `Match`. `RulePass` applies a family of rules and keeps the story: a
`Change` per rewrite, a `Rejection` with a reason per refused candidate, and on every
new node `meta["origin"]` (the original ONNX nodes) and `meta["fused_from"]`.

The new node takes over the *names* of the values it replaces, so downstream nodes,
graph outputs and numeric comparisons by value name are unaffected by fusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir import Deferred, Graph, Node, Value
from .infra import Change, Pass, PassContext, PassResult, Rejection, origin_of


@dataclass
class Match:
    """Matched nodes (any order) and named bindings a rewrite needs."""

    nodes: list[Node]
    values: dict[str, Any] = field(default_factory=dict)  # "x": Value, "alpha": 0.1, ...
    outputs: list[Value] = field(default_factory=list)  # replaced values (default: last node's)

    def __post_init__(self) -> None:
        if not self.outputs:
            self.outputs = list(self.nodes[-1].outputs[:1])


class Rule:
    """Subclass and set `name`, `anchor` (op types the pattern ends at); implement
    `pattern`, optionally `check`, and `rewrite`."""

    name: str = ""
    anchor: tuple[str, ...] = ()
    domain: str = ""

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        raise NotImplementedError

    def check(self, match: Match, ctx: PassContext) -> str | None:
        return None

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        """New nodes; those producing the match's outputs must produce values made with
        `like(old_value)` (same name, type and shape) in the same order."""
        raise NotImplementedError


# -- helpers for patterns -----------------------------------------------------------------------


def producer(v: Value | None, op_type: str | Sequence[str] | None = None) -> Node | None:
    """The node producing `v`, if it is of `op_type` (any when None) and in the default domain."""
    if v is None or v.producer is None:
        return None
    n = v.producer
    ops = (op_type,) if isinstance(op_type, str) else op_type
    if ops is not None and (n.op_type not in ops or n.domain not in ("", "ai.onnx")):
        return None
    return n


def const_value(v: Value | None) -> np.ndarray | None:
    """The data of `v` if it is an initializer or the output of a Constant node."""
    if v is None:
        return None
    if v.is_const:
        return v.const
    n = v.producer
    if n is not None and n.op_type == "Constant" and "value" in n.attrs:
        return np.asarray(n.attrs["value"])
    return None


def scalar(v: Value | None) -> float | None:
    """`v` as a Python float if it is a constant holding one value."""
    c = const_value(v)
    if c is None or c.size != 1:
        return None
    return float(c.reshape(-1)[0])


def like(v: Value) -> Value:
    """A fresh value standing in for `v`: same name, element type and shape."""
    new = Value(v.name, v.elem_type, v.shape, type_proto=v.type_proto)
    new.meta = dict(v.meta)
    return new


def initializer(
    graph: Graph, name: str, array: np.ndarray | Deferred, origin: Sequence[str] = ()
) -> Value:
    """Add a constant to `graph` under a name not yet taken; returns its Value."""
    taken = graph.values()
    base, k = name, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    v = Value(name, _elem_type(array), tuple(array.shape), const=array)
    if origin:
        v.meta["origin"] = tuple(origin)
    return graph.add_initializer(v)


def _elem_type(array: np.ndarray | Deferred) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(array.dtype)


def fused_name(match: Match, suffix: str) -> str:
    """A readable name for a fused node: the last matched node's name with a suffix."""
    return f"{match.nodes[-1].name}/{suffix}"


# -- the pass that applies rules --------------------------------------------------------------


def _outside_use(match: Match, graph: Graph) -> str | None:
    """Reason to refuse if a matched node's output is needed outside the pattern."""
    inside = {id(n) for n in match.nodes}
    replaced = {id(v) for v in match.outputs}
    for n in match.nodes:
        for v in n.outputs:
            if id(v) in replaced or not v.name:
                continue
            if v in graph.outputs:
                return f"{n.op_type} output {v.name!r} is a graph output"
            for user, _ in v.uses:
                if id(user) not in inside:
                    return (
                        f"{n.op_type} output {v.name!r} has a second consumer "
                        f"({user.op_type} {user.name!r})"
                    )
    return None


class RulePass(Pass):
    """Applies each rule of a family once over the graph, in node order."""

    def __init__(
        self,
        name: str,
        rules: Sequence[Rule],
        *,
        level: int = 2,
        order: int = 50,
        description: str = "",
    ) -> None:
        self.name, self.rules, self.level, self.order = name, list(rules), level, order
        self.description = description

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes: list[Change] = []
        rejected: list[Rejection] = []
        for rule in self.rules:
            for node in list(graph.nodes):
                if node.graph is not graph or node.op_type not in rule.anchor:
                    continue
                if node.domain != rule.domain and not (
                    rule.domain == "" and node.domain == "ai.onnx"
                ):
                    continue
                match = rule.pattern(node, ctx)
                if match is None:
                    continue
                reason = _outside_use(match, graph) or rule.check(match, ctx)
                names = tuple(n.name for n in match.nodes)
                if reason:
                    rejected.append(Rejection(self.name, rule.name, names, reason))
                    continue
                new_nodes = rule.rewrite(match, ctx)
                apply_rewrite(graph, match, new_nodes)
                kind = "fused" if len(match.nodes) > 1 else "rewritten"
                changes.append(
                    Change(
                        self.name,
                        rule.name,
                        kind,
                        names,
                        tuple(n.name for n in new_nodes),
                        origin_of(match.nodes),
                    )
                )
        return PassResult(graph, bool(changes), changes, rejected)


def apply_rewrite(graph: Graph, match: Match, new_nodes: Sequence[Node]) -> None:
    """Put `new_nodes` where the last matched node was, hand them the matched outputs'
    consumers, drop the matched nodes, and record provenance on the new nodes."""
    origin = origin_of(match.nodes)
    fused_from = tuple(n.name for n in match.nodes)
    produced = {v.name: v for n in new_nodes for v in n.outputs}
    anchor_at = max(graph.nodes.index(n) for n in match.nodes)
    for i, n in enumerate(new_nodes):
        n.meta.setdefault("origin", origin)
        n.meta.setdefault("fused_from", fused_from)
        graph.insert_at(anchor_at + 1 + i, n)
    for old in match.outputs:
        new = produced.get(old.name)
        if new is None:
            raise ValueError(f"rewrite produced no value named {old.name!r}")
        graph.replace_all_uses_with(old, new)
    consts = {id(v): v for n in match.nodes for v in n.inputs if v is not None and v.is_const}
    for n in sorted(match.nodes, key=graph.nodes.index, reverse=True):
        graph.remove(n, safe=False)
    for v in consts.values():  # weights only the replaced nodes read (e.g. folded BN params)
        if not v.uses and graph.initializers.get(v.name) is v and v not in graph.inputs:
            del graph.initializers[v.name]
