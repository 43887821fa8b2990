"""If, Loop and Scan, run by the executor itself so their subgraphs use the session's backend.

Each subgraph is compiled into its own plan once; values it captures from enclosing
graphs arrive after the node's declared inputs (see `Node.implicit_inputs`). The run
function carries its subplans as `run.subplans`, so tools (conformance, profilers) can
see which kernels ran inside.
"""

from __future__ import annotations

import numpy as np

from .backends.base import Backend, CompileContext, Kernel
from .ir import Graph, Node, Value


def compile_control_flow(node: Node, backend: Backend, ctx: CompileContext) -> Kernel | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    build = {"If": _if, "Loop": _loop, "Scan": _scan}.get(node.op_type)
    if build is None:
        return None
    return Kernel(
        build(node, backend, ctx), backend.name, node.op_type, "subgraph", source=__name__
    )


def _subplan(sub: Graph, node: Node, backend: Backend, ctx: CompileContext):
    """Compile `sub`; return (plan, positions of its captured values in node.implicit_inputs())."""
    from .plan import compile_plan

    captured = sub.captured_values()
    plan = compile_plan(sub, backend, ctx, captured=captured)
    order = {id(v): i for i, v in enumerate(node.implicit_inputs())}
    return plan, [order[id(v)] for v in captured]


def _bind(plan, positions, captured_args, env, first: int) -> None:
    """Place captured outer tensors into a subplan's env (its inputs start at `first`)."""
    for (_, slot), pos in zip(plan.inputs[first:], positions, strict=False):
        env[slot] = captured_args[pos]


def _empty_stack(v: Value) -> np.ndarray:
    """Zero iterations: an empty stack of the body output's declared type and rank
    (its unknown dims become 0, there being no element to take them from)."""
    shape = [d if isinstance(d, int) else 0 for d in (v.shape or ())]
    return np.zeros((0, *shape), dtype=v.dtype or np.float32)


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

    run.subplans = [branches[True][0], branches[False][0]]
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
            for slot, value in zip(body_in[2:], state, strict=False):
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
            else:
                stacked.append(_empty_stack(scan_values[j]))
        return (*state, *stacked)

    run.subplans = [plan]
    return run


def _scan(node: Node, backend: Backend, ctx: CompileContext):
    """Scan: opset 8 (a leading batch axis, optional sequence_lens) and 9+ (axes, directions).

    Opset 8 is run as opset 9 once per batch entry, with its scan axis 1 seen as axis 0
    of that entry; outputs past an entry's sequence length are zeros.
    """
    from .executor import execute

    body: Graph = node.attrs["body"]
    a = node.attrs
    plan, positions = _subplan(body, node, backend, ctx)
    n_in = int(a["num_scan_inputs"])
    v8 = ctx.opset < 9
    n_state = len(node.inputs) - n_in - (1 if v8 else 0)
    n_out = len(body.outputs) - n_state
    if v8:
        in_dirs, in_axes = list(a.get("directions") or [0] * n_in), [0] * n_in
        out_dirs, out_axes = [0] * n_out, [0] * n_out
    else:
        in_dirs = list(a.get("scan_input_directions") or [0] * n_in)
        in_axes = list(a.get("scan_input_axes") or [0] * n_in)
        out_dirs = list(a.get("scan_output_directions") or [0] * n_out)
        out_axes = list(a.get("scan_output_axes") or [0] * n_out)
    body_in = [slot for _, slot in plan.inputs[: len(body.inputs)]]
    n_body_in = len(body.inputs)

    def scan(states, xs, captured, length=None):
        axes = [ax % x.ndim for ax, x in zip(in_axes, xs, strict=False)]
        steps = xs[0].shape[axes[0]] if xs else 0
        todo = steps if length is None else min(int(length), steps)
        outs: list[list[np.ndarray]] = [[] for _ in range(n_out)]
        for t in range(todo):
            env = plan.new_env()
            for slot, value in zip(body_in, states, strict=False):
                env[slot] = value
            for k, (x, ax) in enumerate(zip(xs, axes, strict=False)):
                i = t if in_dirs[k] == 0 else steps - 1 - t
                env[body_in[n_state + k]] = np.take(x, i, axis=ax)
            _bind(plan, positions, captured, env, first=n_body_in)
            execute(plan, env)
            res = [env[s] for _, s in plan.outputs]
            states = res[:n_state]
            for j in range(n_out):
                outs[j].append(res[n_state + j])
        stacked = []
        for j, items in enumerate(outs):
            if out_dirs[j] == 1:
                items = items[::-1]
            if not items:
                stacked.append(_empty_stack(body.outputs[n_state + j]))
                continue
            y = np.stack(items)
            if todo < steps:  # opset 8, a sequence shorter than the batch's longest
                pad = np.zeros((steps - todo, *y.shape[1:]), dtype=y.dtype)
                y = np.concatenate([y, pad])
            stacked.append(np.moveaxis(y, 0, out_axes[j] % y.ndim))
        return [*states, *stacked]

    def run(*args):
        if not v8:
            states, rest = list(args[:n_state]), args[n_state:]
            return tuple(scan(states, list(rest[:n_in]), rest[n_in:]))
        lens, states, rest = args[0], list(args[1 : 1 + n_state]), args[1 + n_state :]
        xs, captured = list(rest[:n_in]), rest[n_in:]
        batch = (xs[0] if xs else states[0]).shape[0]
        per = [
            scan(
                [s[b] for s in states],
                [x[b] for x in xs],
                captured,
                None if lens is None else np.asarray(lens).reshape(-1)[b],
            )
            for b in range(batch)
        ]
        return tuple(np.stack([p[j] for p in per]) for j in range(n_state + n_out))

    run.subplans = [plan]
    return run
