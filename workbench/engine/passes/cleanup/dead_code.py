"""Dead code elimination: nodes none of whose outputs reach a graph output, and
initializers nothing reads, are removed.

Liveness runs backwards from the graph outputs through node inputs and the outer values
subgraphs capture, so a value read only inside an If branch stays alive. Initializers
that are also graph inputs (overridable defaults) are part of the interface and stay.
Subgraphs are cleaned too, each from its own outputs. Runs last among the cleanups, after
folding and merging have left their leftovers.
"""

from __future__ import annotations

from ...ir import Graph, Node
from ..infra import Change, FunctionPass, PassContext, PassResult

PASS_NAME = "dead_code"


def _sweep(graph: Graph, changes: list[Change]) -> None:
    for n in graph.nodes:
        for sub in n.subgraphs():
            _sweep(sub, changes)
    live = {id(v) for v in graph.outputs}
    keep: list[Node] = []
    for n in reversed(graph.nodes):
        if any(id(v) in live for v in n.outputs):
            keep.append(n)
            live.update(id(v) for v in [*n.inputs, *n.implicit_inputs()] if v is not None)
    kept = {id(n) for n in keep}
    for n in list(reversed(graph.nodes)):
        if id(n) not in kept:
            origin = tuple(n.meta.get("origin", (n.name,)))
            graph.remove(n, safe=False)
            changes.append(Change(PASS_NAME, "dead_code", "eliminated", (n.name,), (), origin))
    interface = {id(v) for v in graph.inputs}
    for name, v in list(graph.initializers.items()):
        if id(v) in live or id(v) in interface:
            continue
        del graph.initializers[name]
        if "origin" in v.meta:  # a folded constant: the nodes it stood for die with it
            changes.append(
                Change(PASS_NAME, "dead_code", "eliminated", (), (), tuple(v.meta["origin"]))
            )


def eliminate_dead_code(graph: Graph, ctx: PassContext) -> PassResult:
    """Removes nodes and initializers that no graph output depends on."""
    changes: list[Change] = []
    _sweep(graph, changes)
    return PassResult(graph, bool(changes), changes)


PASSES = [
    FunctionPass(
        PASS_NAME,
        eliminate_dead_code,
        level=1,
        order=90,
        description="removes nodes and initializers no graph output depends on",
    )
]
