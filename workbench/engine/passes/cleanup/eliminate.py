"""Identity elimination: Identity, inference-mode Dropout and casts to the type a value
already has are removed, their readers reading the input instead.

Graph outputs keep their names: when the removed node's output is a graph output, its
input's producer takes over that name (the input's old name disappears). When the input
has no producer to rename (a graph input, an initializer, an outer-scope value) or is a
graph output itself, the node stays, with the reason recorded. A Dropout stays when its
mask is read or when `training_mode` is not a constant false (a training run draws masks).
"""

from __future__ import annotations

from onnx import TensorProto

from ...ir import Graph, Node, Value
from ..infra import Change, FunctionPass, PassContext, PassResult, Rejection, origin_of
from .fold import constant_of

PASS_NAME = "eliminate_identities"


def _is_output(v: Value, graph: Graph) -> bool:
    return any(v is o for o in graph.outputs)


def replace_in_subgraph_outputs(graph: Graph, old: Value, new: Value) -> None:
    # a subgraph may return an outer value directly; that is no use, so rewire by hand
    for n in graph.walk():
        for sub in n.subgraphs():
            sub.outputs = [new if o is old else o for o in sub.outputs]


def bypass(graph: Graph, node: Node, source: Value, target: Value) -> str | None:
    """Remove `node`, whose output `target` equals its input `source`: readers of `target`
    read `source`. Returns None when done, else why it cannot be done (nothing changed)."""
    if _is_output(target, graph):
        if source.producer is None or source.producer.graph is not graph:
            kind = "an initializer" if source.is_const else "a graph input"
            if not any(source is i for i in graph.inputs) and not source.is_const:
                kind = "an outer-scope value"
            return (
                f"output {target.name!r} is a graph output and input {source.name!r} is "
                f"{kind}: both names must stay"
            )
        if _is_output(source, graph):
            return f"input {source.name!r} and output {target.name!r} are both graph outputs"
        graph.value_info.pop(source.name, None)
        source.name = target.name  # the producer now writes the graph output's name
        source.shape = source.shape if source.shape is not None else target.shape
        source.elem_type = source.elem_type or target.elem_type
    graph.replace_all_uses_with(target, source)
    replace_in_subgraph_outputs(graph, target, source)
    graph.remove(node, safe=False)
    return None


def _dropout_reason(node: Node, graph: Graph) -> str | None:
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        mode = constant_of(node.inputs[2], graph)
        if mode is None:
            return "training_mode is not a constant: a training run would draw a mask"
        if bool(mode.reshape(-1)[0]):
            return "training_mode is true: the node draws a random mask"
    if len(node.outputs) > 1 and node.outputs[1].name:
        mask = node.outputs[1]
        if mask.uses or _is_output(mask, graph):
            return f"its mask output {mask.name!r} is read"
    return None


def _candidate(node: Node) -> str | None:
    """The rule that may remove `node`, if any."""
    if node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is None:
        return None
    if node.op_type == "Identity" and node.inputs[0].type_proto is None:
        return "identity"  # (sequences and optionals keep their Identity: rare, and typed)
    if node.op_type == "Dropout":
        return "dropout"
    if node.op_type == "Cast":
        src = node.inputs[0].elem_type
        if src and src != TensorProto.UNDEFINED and node.attrs.get("to") == src:
            return "noop_cast"
    return None


def eliminate_identities(graph: Graph, ctx: PassContext) -> PassResult:
    """Identity, inference Dropout and no-op Cast removal (graph output names kept)."""
    changes: list[Change] = []
    rejected: list[Rejection] = []
    for node in list(graph.nodes):
        rule = _candidate(node)
        if rule is None:
            continue
        reason = _dropout_reason(node, graph) if rule == "dropout" else None
        origin = origin_of([node])
        if reason is None:
            reason = bypass(graph, node, node.inputs[0], node.outputs[0])
        if reason is not None:
            rejected.append(Rejection(PASS_NAME, rule, (node.name,), reason))
            continue
        changes.append(Change(PASS_NAME, rule, "eliminated", (node.name,), (), origin))
    return PassResult(graph, bool(changes), changes, rejected)


PASSES = [
    FunctionPass(
        PASS_NAME,
        eliminate_identities,
        level=1,
        order=20,
        description="removes Identity, inference-mode Dropout and casts to the same type",
    )
]
