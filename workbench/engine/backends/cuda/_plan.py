"""Host <-> device copies as steps of the plan, so a profile shows them as their own rows.

`place(plan)` runs after `compile_plan` on the cuda backend and rewrites the step list:

- one `CopyToDevice` step per graph input (the feed arrives on the host: `Session.prepare`
  leaves it there because `plan.places_inputs` is set) and one `CopyToHost` step per graph
  output at the end;
- around every fallback (a kernel of the `reference` backend, on the host): a `CopyToHost`
  of each device input before it and a `CopyToDevice` of each output after it. Constants
  a fallback reads get a host copy in the template instead (weights are not copied per run);
- weights are uploaded once, in the precision the plan computes in (float16 under fp16).

A copy writes into a new slot (whose `plan.values` entry is None: it names no model value),
and later readers are redirected to it, so comparisons by value name are unchanged. The
copies' nodes live outside the graph (op types in the domain `workbench.copy`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...ir import Node
from ..base import Kernel, dest
from ._launch import download, host_c, is_device, upload
from ._table import float_dtype

H2D, D2H = "CopyToDevice", "CopyToHost"
DOMAIN = "workbench.copy"


def _to_device(dtype: np.dtype):
    def run(x: Any, out: Any = None) -> tuple:
        if x is None or is_device(x):
            return (x,)
        x = np.asarray(x)
        if x.dtype.kind == "f" and x.dtype != dtype:  # feeds in the plan's precision
            x = x.astype(dtype)
        into = dest(out)
        if into is None:
            return (upload(x),)
        into.copy_to_device(host_c(x))  # into the device arena
        return (into,)

    run.writes_out = True
    return run


def _to_host(x: Any) -> tuple:
    return ([download(i) for i in x] if isinstance(x, list) else download(x),)


def _step(plan: Any, op: str, run: Any, src: int, name: str, Step: Any) -> tuple[Any, int]:
    dst = len(plan.values)
    plan.values.append(None)
    plan.template.append(None)
    node = Node(op, [], [], name=f"{op}({name})", domain=DOMAIN)
    node.meta["origin"] = ()
    kernel = Kernel(run, "cuda", op, "h2d" if op == H2D else "d2h", source=f"{__name__}.{op}")
    return Step(node, kernel, run, (src,), (dst,), (), getattr(run, "writes_out", False)), dst


def place(plan: Any) -> None:
    """Insert the copy steps (see the module docstring); `plan` is changed in place."""
    from ...plan import NONE_SLOT, SINK_SLOT, Step, _mark_frees

    dtype = float_dtype(plan.precision)
    h2d = _to_device(dtype)
    consts: set[int] = set()
    for v in plan.graph.initializers.values():
        s = plan.slot[id(v)]
        consts.add(s)
        c = np.asarray(v.const)
        if c.dtype.kind == "f" and c.dtype != dtype:
            c = c.astype(dtype)
        plan.template[s] = upload(c)
    moved: dict[int, int] = {}  # slot -> the slot its device (or host) copy is in
    steps: list[Any] = []
    for v, s in plan.inputs:
        step, moved[s] = _step(plan, H2D, h2d, s, v.name, Step)
        steps.append(step)
    host_consts: dict[int, int] = {}
    for step in plan.steps:
        ins = tuple(moved.get(i, i) for i in step.inputs)
        if not step.kernel.fallback:
            run = getattr(step.run, "__wrapped__", step.run)  # the guard measures host RAM
            steps.append(_replace(step, Step, ins, run))
            continue
        host_ins = []
        for i in ins:
            if i in (NONE_SLOT, SINK_SLOT):
                host_ins.append(i)
            elif i in consts:
                if i not in host_consts:
                    host_consts[i] = len(plan.values)
                    plan.values.append(None)
                    plan.template.append(download(plan.template[i]))
                host_ins.append(host_consts[i])
            else:
                name = plan.values[i].name if plan.values[i] is not None else ""
                copy, dst = _step(plan, D2H, _to_host, i, name, Step)
                steps.append(copy)
                host_ins.append(dst)
        steps.append(_replace(step, Step, tuple(host_ins), step.run))
        for o in step.outputs:
            if o != SINK_SLOT:
                copy, moved[o] = _step(plan, H2D, h2d, o, plan.values[o].name, Step)
                steps.append(copy)
    outputs = []
    for name, s in plan.outputs:
        copy, dst = _step(plan, D2H, _to_host, moved.get(s, s), name, Step)
        steps.append(copy)
        outputs.append((name, dst))
    plan.steps, plan.outputs = steps, outputs
    plan.places_inputs = True
    _mark_frees(plan)


def _replace(step: Any, Step: Any, ins: tuple, run: Any) -> Any:
    """`step` reading `ins`, run by `run` (its destination passing as `run` declares it)."""
    writes, inplace = getattr(run, "writes_out", False), tuple(getattr(run, "inplace", ()))
    return Step(step.node, step.kernel, run, ins, step.outputs, (), writes, inplace)
