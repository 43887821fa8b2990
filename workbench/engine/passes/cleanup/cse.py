"""Common subexpression elimination: a node computing what an earlier node computes (same
op, domain, attributes and inputs) is dropped, its readers reading the earlier one.

Inputs compare by identity, except small constants, which compare by value: folding
turns each exporter Constant into its own initializer, and two `Unsqueeze(x, [0])` with
separate `[0]` constants are still the same computation. Nodes are visited in order, so
merged inputs make their readers mergeable in turn (whole duplicated chains collapse).
Random ops and nodes with subgraphs never merge; neither does a node whose output is a
graph output (its name must stay).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...ir import Graph, Node, Value
from ..infra import Change, FunctionPass, PassContext, PassResult, Rejection, origin_of
from .eliminate import replace_in_subgraph_outputs
from .fold import RANDOM_OPS, constant_of

PASS_NAME = "common_subexpressions"
SMALL_CONSTANT = 1024  # elements: constants up to this size compare by value


def _value_key(v: Value | None, graph: Graph) -> Any:
    if v is None:
        return None
    small = v.is_const and math.prod(v.const_shape) <= SMALL_CONSTANT  # (large ones unread)
    c = constant_of(v, graph) if small else None
    if c is not None:
        return ("const", c.dtype.str, c.shape, c.tobytes())
    return ("value", id(v))


def _attr_key(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        return ("tensor", a.dtype.str, a.shape, a.tobytes())
    if isinstance(a, list | tuple):
        return tuple(_attr_key(x) for x in a)
    return a


def node_key(node: Node, graph: Graph) -> tuple | None:
    """What `node` computes, as a hashable key; None when it must never merge."""
    if node.op_type in RANDOM_OPS or any(True for _ in node.subgraphs()) or not node.outputs:
        return None
    attrs = tuple(sorted((k, _attr_key(a)) for k, a in node.attrs.items()))
    inputs = tuple(_value_key(v, graph) for v in node.inputs)
    domain = "" if node.domain == "ai.onnx" else node.domain
    return (domain, node.op_type, attrs, inputs, len(node.outputs))


def _merge_reason(kept: Node, dup: Node, graph: Graph) -> str | None:
    for a, b in zip(kept.outputs, dup.outputs, strict=True):
        if any(b is o for o in graph.outputs):
            return f"output {b.name!r} is a graph output"
        if b.name and (b.uses or b in graph.outputs) and not a.name:
            return f"output {b.name!r} is read but {kept.name!r} does not produce it"
    return None


def eliminate_common_subexpressions(graph: Graph, ctx: PassContext) -> PassResult:
    """Merges nodes that compute the same thing from the same inputs."""
    changes: list[Change] = []
    rejected: list[Rejection] = []
    seen: dict[tuple, Node] = {}
    for node in list(graph.nodes):
        try:
            key = node_key(node, graph)
            hash(key)
        except TypeError:  # an attribute we cannot compare (should not happen): keep it
            continue
        if key is None:
            continue
        kept = seen.setdefault(key, node)
        if kept is node:
            continue
        reason = _merge_reason(kept, node, graph)
        if reason is not None:
            rejected.append(Rejection(PASS_NAME, "cse", (kept.name, node.name), reason))
            continue
        origin = origin_of([node])
        for a, b in zip(kept.outputs, node.outputs, strict=True):
            if b.name:
                graph.replace_all_uses_with(b, a)
                replace_in_subgraph_outputs(graph, b, a)
        graph.remove(node, safe=False)
        changes.append(Change(PASS_NAME, "cse", "merged", (node.name,), (), origin, kept.name))
    return PassResult(graph, bool(changes), changes, rejected)


PASSES = [
    FunctionPass(
        PASS_NAME,
        eliminate_common_subexpressions,
        level=1,
        order=30,
        description="merges nodes computing the same op on the same inputs",
    )
]
