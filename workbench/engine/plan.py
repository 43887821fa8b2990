"""Compiling a graph for a backend: one kernel per node, values numbered into slots.

The executor then only indexes a list: `env[slot]`. Slot 0 always holds None (for
omitted optional inputs) and slot 1 is a sink for outputs nobody named. Each step
knows which slots die with it, so a run without an arena releases intermediates as
soon as they are dead, and whether its kernel writes into given buffers (`writes_out`)
and may overwrite a dying input (`inplace`), which the memory planner (memory.py) uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnsupportedOpError
from .backends import all_backends, get_backend
from .backends.base import Backend, CompileContext, Kernel
from .ir import Graph, Node, Value
from .memory_guard import guard_kernel

NONE_SLOT, SINK_SLOT = 0, 1


@dataclass(slots=True)
class Step:
    node: Node
    kernel: Kernel
    run: Any  # kernel.run, looked up once
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    free: tuple[int, ...] = ()  # slots whose last reader is this step
    writes_out: bool = False  # run(*inputs, out=(array | None, ...)) writes into out
    inplace: tuple[int, ...] = ()  # inputs whose buffer output 0 may take over


@dataclass
class Plan:
    graph: Graph
    backend: Backend
    precision: str
    steps: list[Step] = field(default_factory=list)
    values: list[Value | None] = field(default_factory=list)  # slot -> Value
    slot: dict[int, int] = field(default_factory=dict)  # id(Value) -> slot
    inputs: list[tuple[Value, int]] = field(default_factory=list)  # fed by the caller
    outputs: list[tuple[str, int]] = field(default_factory=list)
    template: list[Any] = field(default_factory=list)  # env before a run: constants in place
    places_inputs: bool = False  # feeds stay on the host: the plan's own steps copy them

    @property
    def fallbacks(self) -> list[Step]:
        return [s for s in self.steps if s.kernel.fallback]

    def new_env(self) -> list[Any]:
        return list(self.template)


def host_cast(array: np.ndarray, precision: str) -> np.ndarray:
    """Constants and feeds in the precision a plan computes in (fp64 widens floats)."""
    if precision == "fp64" and array.dtype in (np.float32, np.float16):
        return array.astype(np.float64)
    return array


def compile_plan(
    graph: Graph,
    backend: Backend,
    ctx: CompileContext,
    captured: list[Value] = (),  # type: ignore[assignment]
) -> Plan:
    """Compile `graph` (or a subgraph, whose outer values arrive as `captured`)."""
    plan = Plan(graph, backend, ctx.precision)
    plan.values = [None, None]
    plan.template = [None, None]

    def slot_of(v: Value) -> int:
        key = id(v)
        if key not in plan.slot:
            plan.slot[key] = len(plan.values)
            plan.values.append(v)
            plan.template.append(None)
        return plan.slot[key]

    for v in graph.initializers.values():
        slot_of(v)
    for v in [*graph.inputs, *captured]:
        plan.inputs.append((v, slot_of(v)))
    reference = get_backend("reference", require_available=False)
    for node in graph.nodes:
        kernel = compile_node(node, backend, ctx, reference)
        reads = [*node.inputs, *node.implicit_inputs()]
        ins = tuple(NONE_SLOT if v is None else slot_of(v) for v in reads)
        outs = tuple(slot_of(v) if v.name else SINK_SLOT for v in node.outputs)
        run = kernel.run  # the attributes of the callable the executor calls (after guards)
        writes, inplace = getattr(run, "writes_out", False), getattr(run, "inplace", ())
        plan.steps.append(Step(node, kernel, run, ins, outs, (), writes, tuple(inplace)))
    for v in graph.outputs:
        plan.outputs.append((v.name, slot_of(v)))
    baked = _baked(plan)
    for v in graph.initializers.values():
        if plan.slot[id(v)] in baked:  # shape and dtype only, in no memory: broadcast zeros
            const = np.broadcast_to(host_cast(np.zeros((), v.dtype), ctx.precision), v.shape)
        else:
            const = backend.to_device(host_cast(np.asarray(v.const), ctx.precision))
        plan.template[plan.slot[id(v)]] = const
    _mark_frees(plan)
    if hasattr(backend, "place"):  # a device backend adds its host<->device copy steps
        backend.place(plan)
    return plan


def _baked(plan: Plan) -> set[int]:
    """Slots of constants that every step reading them took in when compiled (`run.baked`:
    the input indices whose data a kernel holds in its own form and never reads from env).
    The template holds a stand-in of their shape and dtype, so a weight read from its file
    to be packed is not kept a second time."""
    baked: set[int] = set()
    read: set[int] = {s for _, s in plan.outputs}
    for step in plan.steps:
        own = getattr(step.run, "baked", ())
        for i, s in enumerate(step.inputs):
            (baked if i in own else read).add(s)
    return baked - read


def _mark_frees(plan: Plan) -> None:
    keep = {s for _, s in plan.outputs} | {NONE_SLOT, SINK_SLOT}
    keep |= {plan.slot[id(v)] for v in plan.graph.initializers.values()}
    last: dict[int, int] = {}
    for i, step in enumerate(plan.steps):
        for s in (*step.inputs, *step.outputs):
            last[s] = i
    frees: dict[int, list[int]] = {}
    for s, i in last.items():
        if s not in keep:
            frees.setdefault(i, []).append(s)
    for i, step in enumerate(plan.steps):
        step.free = tuple(frees.get(i, ()))


def compile_node(node: Node, backend: Backend, ctx: CompileContext, reference: Backend) -> Kernel:
    """The backend's kernel for `node`; else the reference one, marked as a fallback."""
    from .control_flow import compile_control_flow

    node_ctx = CompileContext(
        backend, _opset(ctx, node.domain), ctx.precision, ctx.opsets, ctx.functions
    )
    kernel = compile_control_flow(node, backend, node_ctx)
    if kernel is None:
        kernel = backend.compile(node, node_ctx)
    if kernel is None and backend is not reference:
        precision = ctx.precision if ctx.precision in reference.precisions else "fp32"
        ref_ctx = CompileContext(reference, node_ctx.opset, precision, ctx.opsets, ctx.functions)
        kernel = reference.compile(node, ref_ctx)
        if kernel is not None:
            kernel.fallback = True
    if kernel is None:
        raise UnsupportedOpError(_unsupported_message(node, backend, node_ctx.opset))
    # ops whose output size comes from input *values* are checked against free memory first
    kernel.run = guard_kernel(node, kernel.run)
    return kernel


def _opset(ctx: CompileContext, domain: str) -> int:
    if domain in ("", "ai.onnx"):
        return ctx.opsets.get("", ctx.opsets.get("ai.onnx", ctx.opset))
    return ctx.opsets.get(domain, 1)


def _unsupported_message(node: Node, backend: Backend, opset: int) -> str:
    domain = node.domain or "ai.onnx"
    who = [
        b.name
        for b in all_backends().values()
        if b is not backend and b.supports(node.domain, node.op_type, opset)
    ]
    where = f"backends that support it: {', '.join(who)}" if who else "no backend supports it"
    return (
        f"node {node.name or '(unnamed)'!r}: op {node.op_type!r} (domain {domain!r}, "
        f"opset {opset}) has no kernel on {backend.name!r} and no reference fallback; {where}"
    )
