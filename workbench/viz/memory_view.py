"""The memory chart: how full the arena of a memory plan is at every step, and with what.

    wb.viz.memory(prof)                      # a Profile carries its plan's layout
    wb.viz.memory(sess)                      # a Session after a run (sess.memory)
    wb.viz.memory(prof, layout="offsets")    # where each buffer lies in the arena

The planner (engine/memory.py) puts every intermediate into buffers of one arena; a buffer
is live from the step producing it to the last step reading it. Per step, the chart stacks
the live buffers' bytes (hover: the tensors in each), so the top of the stack is the bytes
alive at that step; its highest point is the plan's lower bound, and the dashed line above
it is the arena the planner actually allocated (the gap is fragmentation). Values outside
the arena (graph outputs, views of weights, data-dependent shapes) are summed in a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..errors import WorkbenchError
from ._charts_common import describe_profiles, document, empty, hover_list, new_figure, note
from ._style import fmt_bytes, op_color


@dataclass
class _Layout:
    """What the chart needs of a memory plan, from a Profile or a live MemoryPlan."""

    title: str
    steps: list[tuple[str, str]]  # (node, op) per step
    values: dict[str, list[Any]]  # columns, see profiler.profile.memory_layout
    buffers: dict[str, list[int]]
    arena_bytes: int
    lower_bound_bytes: int


def _from_plan(mem: Any, title: str) -> _Layout:
    from ..profiler.profile import memory_layout

    lay = memory_layout(mem)
    steps = [(s.node.name, s.node.op_type) for s in mem.plan.steps]
    return _Layout(
        title, steps, lay["values"], lay["buffers"], mem.arena_bytes, mem.lower_bound_bytes
    )


def _layout(obj: Any) -> _Layout | tuple[str, str]:
    """The plan's layout, or (title, why there is none) for the empty state."""
    from ..engine.executor import Session
    from ..engine.memory import MemoryPlan
    from ..profiler.profile import Profile

    if isinstance(obj, MemoryPlan):
        return _from_plan(obj, f"{obj.plan.backend.name}")
    if isinstance(obj, Session):
        title = f"{obj.model.name}: {obj.backend.name} {obj.precision}"
        if obj.memory is None:
            return title, "no memory plan yet: run the session once with its feeds"
        return _from_plan(obj.memory, title)
    if isinstance(obj, Profile):
        title = describe_profiles([obj])
        mem = obj.meta.get("memory")
        if not mem:
            return title, "this profile has no memory plan (its backend runs without an arena)"
        lay = mem.get("layout")
        if not lay:
            return title, "this profile was stored without the plan's layout; profile again"
        k = obj.kernels
        return _Layout(
            title,
            list(zip(k["node"], k["op"])),
            lay["values"],
            lay["buffers"],
            int(mem["arena_bytes"]),
            int(mem["lower_bound_bytes"]),
        )
    raise WorkbenchError(
        "wb.viz.memory takes a Profile, a Session or a MemoryPlan, got " + type(obj).__name__
    )


def live_bytes(buffers: dict[str, list[int]], n_steps: int) -> np.ndarray:
    """Bytes of the arena buffers live at each step (MemoryPlan.timeline's `live_bytes`)."""
    live = np.zeros(n_steps, np.int64)
    for size, first, last in zip(buffers["nbytes"], buffers["first"], buffers["last"]):
        live[first : min(last, n_steps - 1) + 1] += size
    return live


@document("height")
def memory(obj: Any, layout: str = "stacked", height: int | None = None) -> go.Figure:
    """Arena occupancy over the steps of a memory plan.

    `obj`: a Profile (it carries its plan's layout), a Session that has run (its latest
    plan, `sess.memory`) or a MemoryPlan. `layout="stacked"`: per step, the live buffers
    stacked from 0, largest first, so the stack's height is the bytes alive at that step;
    `layout="offsets"`: each buffer drawn where the planner put it in the arena, from its
    first to its last step (the gaps between blocks are what the arena wastes). A buffer
    is coloured by the op that produced it; hover lists the tensors it holds. A step line
    (hover: every live tensor and its size) follows the live bytes; the dashed line is the
    arena's size and the dotted one the lower bound (the most bytes live at any step).
    """
    if layout not in ("stacked", "offsets"):
        raise WorkbenchError(f'layout must be "stacked" or "offsets", got {layout!r}')
    lay = _layout(obj)
    if isinstance(lay, tuple):
        title, why = lay
        return empty(new_figure(f"Memory: {title}", height), why)
    fig = new_figure(f"Memory ({layout}): {lay.title}", height)
    n = len(lay.steps)
    buf, vals = lay.buffers, lay.values
    if n == 0 or not buf["nbytes"]:
        return empty(fig, "nothing in the arena: every value is a weight, a feed or an output")

    # tensors per buffer, for the hover
    members: list[list[int]] = [[] for _ in buf["nbytes"]]
    for i, b in enumerate(vals["buffer"]):
        if b is not None:
            members[b].append(i)

    def tensor(i: int) -> str:
        shape = vals["shape"][i]
        dims = "x".join(map(str, shape)) if shape else "scalar"
        return f"{vals['name'][i]} {dims} {vals['dtype'][i]} ({vals['kind'][i]})"

    def buffer_text(b: int) -> str:
        first, last = buf["first"][b], min(buf["last"][b], n - 1)
        node, op = lay.steps[first]
        held = hover_list([(tensor(i), "") for i in members[b]], limit=6)
        return (
            f"<b>{fmt_bytes(buf['nbytes'][b])}</b>, steps {first}-{last}, "
            f"offset {buf['offset'][b]}<br>made by {node} ({op})<br>{held}"
        )

    texts = [buffer_text(b) for b in range(len(buf["nbytes"]))]
    colors = [op_color(lay.steps[f][1]) for f in buf["first"]]
    if layout == "stacked":
        # per step the live buffers, largest at the bottom: one bar segment each
        xs, bases, ys, cs, hs = [], [], [], [], []
        order = sorted(range(len(buf["nbytes"])), key=lambda b: (-buf["nbytes"][b], b))
        stack = np.zeros(n, np.int64)
        for b in order:
            for t in range(buf["first"][b], min(buf["last"][b], n - 1) + 1):
                xs.append(t)
                bases.append(int(stack[t]))
                ys.append(buf["nbytes"][b])
                cs.append(colors[b])
                hs.append(texts[b])
                stack[t] += buf["nbytes"][b]
        fig.add_bar(
            name="live buffers",
            x=xs,
            y=ys,
            base=bases,
            width=1.0,
            marker_color=cs,
            marker_line_width=0.3,
            marker_line_color="white",
            hovertext=hs,
            hovertemplate="step %{x}<br>%{hovertext}<extra></extra>",
        )
    else:
        first = np.asarray(buf["first"])
        last = np.minimum(np.asarray(buf["last"]), n - 1)
        fig.add_bar(
            name="buffers at their offsets",
            x=(first + last) / 2,
            y=buf["nbytes"],
            base=buf["offset"],
            width=last - first + 1,
            marker_color=colors,
            marker_line_width=0.3,
            marker_line_color="white",
            hovertext=texts,
            hovertemplate="%{hovertext}<extra></extra>",
        )

    live = live_bytes(buf, n)
    live_names: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    for i, off in enumerate(vals["offset"]):
        if off is None:
            continue
        for t in range(vals["first"][i], min(vals["last"][i], n - 1) + 1):
            live_names[t].append((vals["name"][i], fmt_bytes(vals["nbytes"][i])))
    step_text = [
        f"<b>step {t}</b>: {lay.steps[t][0]} ({lay.steps[t][1]})<br>"
        f"live {fmt_bytes(int(live[t]))} in {len(live_names[t])} tensors<br>"
        + hover_list(sorted(live_names[t], key=lambda x: x[0]), limit=15)
        for t in range(n)
    ]
    fig.add_scatter(
        name="live bytes",
        x=np.arange(n),
        y=live,
        mode="lines",
        line={"shape": "hvh", "color": "#222", "width": 1.5},
        hovertext=step_text,
        hovertemplate="%{hovertext}<extra></extra>",
    )
    for y, label, dash in (
        (lay.arena_bytes, f"arena {fmt_bytes(lay.arena_bytes)}", "dash"),
        (lay.lower_bound_bytes, f"lower bound {fmt_bytes(lay.lower_bound_bytes)}", "dot"),
    ):
        fig.add_scatter(
            name=label,
            x=[-0.5, n - 0.5],
            y=[y, y],
            mode="lines",
            line={"dash": dash, "color": "#d62728" if dash == "dash" else "#555"},
            hovertemplate=f"{label} ({y} bytes)<extra></extra>",
        )
    fig.update_layout(barmode="overlay", bargap=0, hovermode="closest")
    fig.update_xaxes(title_text="step (kernel in execution order)", range=[-0.5, n - 0.5])
    fig.update_yaxes(title_text="bytes" + (" (arena offset)" if layout == "offsets" else ""))
    if height is None:
        fig.update_layout(height=460)
    dyn = [i for i, off in enumerate(vals["offset"]) if off is None]
    if dyn:
        total = sum(vals["nbytes"][i] for i in dyn)
        note(
            fig,
            f"{len(dyn)} values outside the arena ({fmt_bytes(total)}: graph outputs, "
            "views of weights or feeds, non-tensors, data-dependent shapes) are not drawn",
        )
    return fig


__all__ = ["live_bytes", "memory"]
