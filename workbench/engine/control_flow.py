"""If and Loop, run by the executor itself so their subgraphs use the session's backend.

Each subgraph is compiled into its own plan once; values it captures from enclosing
graphs arrive after the node's declared inputs (see `Node.implicit_inputs`).
Scan has no native form yet and runs through the reference fallback.
"""

from __future__ import annotations

import numpy as np

from .backends.base import Backend, CompileContext, Kernel
from .ir import Graph, Node


def compile_control_flow(node: Node, backend: Backend, ctx: CompileContext) -> Kernel | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    build = {"If": _if, "Loop": _loop}.get(node.op_type)
    if build is None:
        return None
    return Kernel(build(node, backend, ctx), backend.name, node.op_type, "subgraph", source=__name__)


def _subplan(sub: Graph, node: Node, backend: Backend, ctx: CompileContext):
    """Compile `sub`; return (plan, positions of its captured values in node.implicit_inputs())."""
    from .plan import compile_plan

    captured = sub.captured_values()
    plan = compile_plan(sub, backend, ctx, captured=captured)
    order = {id(v): i for i, v in enumerate(node.implicit_inputs())}
    return plan, [order[id(v)] for v in captured]


def _bind(plan, positions, captured_args, env, first: int) -> None:
    """Place captured outer tensors into a subplan's env (its inputs start at `first`)."""
    for (_, slot), pos in zip(plan.inputs[first:], positions):
        env[slot] = captured_args[pos]


def _if(node: Node, backend: Backend, ctx: CompileContext):
    from .executor import execute

    branches = {
        True: _subplan(node.attrs["then_branch"], node, backend, ctx),
        False: _subplan(node.attrs["else_branch"], node, backend, ctx),
    }

    def run(cond, *captured):
        plan, positions = branches[bool(np.asarray(cond).reshape(-1)[0])]
        env = plan.new_env()
        _bind(plan, positions, captured, env, first=len(plan.graph.inputs))
        execute(plan, env)
        return tuple(env[s] for _, s in plan.outputs)

    return run


def _loop(node: Node, backend: Backend, ctx: CompileContext):
    from .executor import execute

    body: Graph = node.attrs["body"]
    plan, positions = _subplan(body, node, backend, ctx)
    n_state = len(node.inputs) - 2
    n_scan = len(body.outputs) - 1 - n_state
    scan_values = body.outputs[1 + n_state :]
    body_in = [slot for _, slot in plan.inputs[: len(body.inputs)]]

    def run(trip_count, cond, *rest):
        state, captured = list(rest[:n_state]), rest[n_state:]
        limit = int(np.asarray(trip_count).reshape(-1)[0]) if trip_count is not None else None
        going = bool(np.asarray(cond).reshape(-1)[0]) if cond is not None else True
        scans: list[list[np.ndarray]] = [[] for _ in range(n_scan)]
        i = 0
        while going and (limit is None or i < limit):
            env = plan.new_env()
            env[body_in[0]] = np.array(i, dtype=np.int64)
            env[body_in[1]] = np.array(going, dtype=bool)
            for slot, value in zip(body_in[2:], state):
                env[slot] = value
            _bind(plan, positions, captured, env, first=len(body.inputs))
            execute(plan, env)
            outs = [env[s] for _, s in plan.outputs]
            going = bool(np.asarray(outs[0]).reshape(-1)[0])
            state = outs[1 : 1 + n_state]
            for j in range(n_scan):
                scans[j].append(outs[1 + n_state + j])
            i += 1
        stacked = []
        for j, items in enumerate(scans):
            if items:
                stacked.append(np.stack(items))
            else:  # zero iterations: an empty stack of the body's declared element type
                v = scan_values[j]
                stacked.append(np.zeros((0,), dtype=v.dtype or np.float32))
        return (*state, *stacked)

    return run
