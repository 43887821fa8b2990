"""Timing charts of Profiles: where the time goes per node or op, one run as a timeline, and
the per-op time ratio between two backends.

    wb.viz.kernel_time([prof_x86, prof_ref], by="op")   # median ms per op, a bar per backend
    wb.viz.timeline([prof_x86, prof_ref])               # one lane per backend, a bar per kernel
    wb.viz.time_ratio(prof_x86, prof_ref)               # x86 / reference per op, log axis

Every number drawn is a median over the profile's timed runs (`Profile.kernels.median_ms`),
except the timeline, which draws the raw clock stamps of one run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from ..errors import WorkbenchError
from ._charts_common import (
    EMULATED,
    as_profiles,
    describe_profiles,
    document,
    empty,
    lane_labels,
    new_figure,
    note,
    short,
)
from ._style import backend_color, fmt_ms, op_color

if TYPE_CHECKING:
    import pandas as pd

    from ..profiler.profile import Profile

OTHER = "other"


def _times(p: Profile, by: str) -> tuple[pd.Series, dict[str, str]]:
    """Median ms per node (in plan order) or per op, and each entry's op type."""
    k = p.kernels
    if by == "node":
        s = k.set_index("node")["median_ms"]
        return s, dict(zip(k["node"], k["op"]))
    if by == "op":
        s = p.by_op()["median_ms"]
        return s, {op: op for op in s.index}
    raise WorkbenchError(f'by must be "node" or "op", got {by!r}')


@document("profiles", "by", "top", "height")
def kernel_time(
    profiles: Profile | Iterable[Profile],
    by: str = "node",
    top: int = 30,
    mode: str = "group",
    height: int | None = None,
) -> go.Figure:
    """Median kernel time per node or per op type, as horizontal bars, one colour per backend.

    Entries are ranked by their largest time over the profiles; past `top`, the rest of each
    profile is summed into one "other" bar (its hover says how many it holds).
    `mode="group"`: entries down the side, a bar per backend beside each other;
    `mode="stack"`: one bar per backend, stacked from its entries (coloured by op type), so
    the bar's length is the profile's whole kernel time.
    """
    ps = as_profiles(profiles, "kernel_time")
    if mode not in ("group", "stack"):
        raise WorkbenchError(f'mode must be "group" or "stack", got {mode!r}')
    if top < 1:
        raise WorkbenchError(f"top must be at least 1, got {top}")
    labels = lane_labels(ps)
    fig = new_figure(f"Kernel time by {by}: {describe_profiles(ps)}", height)
    series = [_times(p, by) for p in ps]
    if not any(len(s) for s, _ in series):
        return empty(fig, "no kernels: the profiles hold no timed kernel")

    # rank by the largest median over the profiles: a node slow anywhere is worth a row
    best: dict[str, float] = {}
    ops: dict[str, str] = {}
    for s, op_of in series:
        ops.update(op_of)
        for name, ms in s.items():
            best[name] = max(best.get(name, -math.inf), float(ms))
    ranked = sorted(best, key=lambda n: -best[n])
    shown, rest = ranked[:top], ranked[top:]
    cats = shown + ([OTHER] if rest else [])
    ticks = [short(c) for c in cats]

    values: list[dict[str, float]] = []
    hidden: list[int] = []
    for s, _ in series:
        row = {c: float(s[c]) for c in shown if c in s.index}
        others = [float(s[c]) for c in rest if c in s.index]
        if others:
            row[OTHER] = float(np.sum(others))
        values.append(row)
        hidden.append(len(others))

    if mode == "group":
        for p, lab, row, n_other in zip(ps, labels, values, hidden):
            ys = [c for c in cats if c in row]
            fig.add_bar(
                name=lab,
                orientation="h",
                y=ys,
                x=[row[c] for c in ys],
                marker_color=backend_color(p.backend),
                customdata=[[c, ops.get(c, f"{n_other} {by}s"), fmt_ms(row[c]), lab] for c in ys],
                hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>"
                "%{customdata[3]}: %{customdata[2]}<extra></extra>",
            )
        fig.update_layout(barmode="group", legend_title_text="backend")
        fig.update_yaxes(
            categoryorder="array",
            categoryarray=cats,
            tickvals=cats,
            ticktext=ticks,
            autorange="reversed",
        )
        fig.update_xaxes(title_text="median time per run (ms)")
        rows = len(cats) * max(1, len(ps))
    else:
        for c in cats:
            ys = [lab for lab, row in zip(labels, values) if c in row]
            xs = [row[c] for row in values if c in row]
            color = "#c7c7c7" if c == OTHER else op_color(ops.get(c, c))
            fig.add_bar(
                name=short(c, 40),
                orientation="h",
                y=ys,
                x=xs,
                marker_color=color,
                customdata=[[c, ops.get(c, "summed"), fmt_ms(x)] for x in xs],
                hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>%{y}: %{customdata[2]}"
                "<extra></extra>",
            )
        fig.update_layout(barmode="stack", legend_title_text=by, legend_traceorder="normal")
        fig.update_yaxes(categoryorder="array", categoryarray=labels, autorange="reversed")
        fig.update_xaxes(title_text="median time per run (ms), summed")
        rows = max(3 * len(ps), len(cats))  # the legend lists every entry
    if height is None:
        fig.update_layout(height=min(2000, 160 + 18 * rows))
    if rest:
        note(fig, f'"{OTHER}": the {len(rest)} {by}s past the top {top}, summed per backend')
    return fig


@document("profiles", "height")
def timeline(
    profiles: Profile | Iterable[Profile],
    run: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """One timed run per profile as a Gantt chart: a lane per backend, a bar per kernel from
    its start to its end (the profile's clock stamps), coloured by op type, on a time axis
    starting at the run's start; a pale bar behind shows the whole run (feeds in, outputs
    out), so the gaps are the time spent outside kernels.

    `run`: which timed run to draw (an index into `Profile.runs`); None: each profile's
    median run (the one whose end-to-end time is the median).
    """
    ps = as_profiles(profiles, "timeline")
    labels = lane_labels(ps)
    which = "median run" if run is None else f"run {run}"
    fig = new_figure(f"Timeline ({which}): {describe_profiles(ps)}", height)
    if not ps or all(p.stamps.size == 0 for p in ps):
        return empty(fig, "no timed runs in these profiles")
    for p, lab in zip(ps, labels):
        n_runs = p.stamps.shape[0]
        if run is not None and not -n_runs <= run < n_runs:
            raise WorkbenchError(f"run {run} out of range: the {lab} profile has {n_runs} runs")
        r = _median_run(p) if run is None else run % n_runs
        t0 = p.bounds[r, 0]
        start = (p.stamps[r, :-1] - t0) * 1e3
        dur = np.diff(p.stamps[r]) * 1e3
        e2e = (p.bounds[r, 1] - t0) * 1e3
        fig.add_bar(
            name=f"{lab}: whole run",
            orientation="h",
            y=[lab],
            x=[e2e],
            base=[0.0],
            width=0.8,
            marker_color=backend_color(p.backend),
            opacity=0.18,
            showlegend=False,
            hovertemplate=f"{lab}, run {r}: {fmt_ms(e2e)} end to end, "
            f"{fmt_ms(float(dur.sum()))} in kernels<extra></extra>",
        )
        k = p.kernels
        fig.add_bar(
            name=lab,
            orientation="h",
            y=[lab] * len(k),
            x=dur,
            base=start,
            width=0.55,
            marker_color=[op_color(op) for op in k["op"]],
            marker_line_width=0,
            customdata=np.stack(
                [
                    k["node"].to_numpy(object),
                    k["op"].to_numpy(object),
                    [fmt_ms(d) for d in dur],
                    [fmt_ms(s) for s in start],
                    k["backend"].to_numpy(object),
                ],
                axis=-1,
            )
            if len(k)
            else None,
            hovertemplate="%{customdata[0]}<br>%{customdata[1]} on %{customdata[4]}: "
            "%{customdata[2]} (starts at %{customdata[3]})<extra>" + lab + "</extra>",
            showlegend=False,
        )
    # the colour key: one legend entry per op type, drawing nothing
    for op in dict.fromkeys(op for p in ps for op in p.kernels["op"]):
        fig.add_scatter(
            name=op,
            x=[None],
            y=[None],
            mode="markers",
            marker={"color": op_color(op), "symbol": "square", "size": 10},
            legendgroup="ops",
            legendgrouptitle_text="op",
        )
    fig.update_layout(barmode="overlay", bargap=0.2)
    fig.update_xaxes(title_text="time since the run started (ms)", rangemode="tozero")
    fig.update_yaxes(categoryorder="array", categoryarray=labels, autorange="reversed")
    if height is None:
        n_ops = len(fig.data) - 2 * len(ps)
        fig.update_layout(height=max(180 + 60 * len(ps), 150 + 22 * n_ops))
    if any(EMULATED in lab for lab in labels):
        note(fig, "emulated timing: measured inside an emulator, not the target hardware")
    return fig


def _median_run(p: Profile) -> int:
    """The index of the run whose end-to-end time is the median (the lower of two)."""
    e2e = p.bounds[:, 1] - p.bounds[:, 0]
    order = np.argsort(e2e, kind="stable")
    return int(order[(len(order) - 1) // 2])


@document("by", "top", "height")
def time_ratio(
    a: Profile,
    b: Profile,
    by: str = "op",
    top: int = 40,
    height: int | None = None,
) -> go.Figure:
    """Time of `a` over time of `b` per op type (or per node), on a log axis centred on 1:
    a bar to the right means `a` takes longer, to the left that it is faster. Only entries
    both profiles have are drawn (the others are listed in a note); the dashed line is the
    ratio of the two profiles' whole kernel time. With more than `top` entries, those with
    the most time in either profile are drawn.
    """
    pa, pb = as_profiles([a, b], "time_ratio")
    la, lb = lane_labels([pa, pb])
    fig = new_figure(f"Time ratio {la} / {lb} by {by}: {describe_profiles([pa, pb])}", height)
    sa, ops_a = _times(pa, by)
    sb, ops_b = _times(pb, by)
    common = [c for c in sa.index if c in sb.index]
    only_a = [c for c in sa.index if c not in sb.index]
    only_b = [c for c in sb.index if c not in sa.index]
    usable = [c for c in common if sa[c] > 0 and sb[c] > 0]
    zero = [c for c in common if not (sa[c] > 0 and sb[c] > 0)]
    missing = []
    if only_a:
        missing.append(f"only in {la}: {_names(only_a)}")
    if only_b:
        missing.append(f"only in {lb}: {_names(only_b)}")
    if zero:
        missing.append(f"no measurable time in one of them: {_names(zero)}")
    if not usable:
        empty(fig, f"no {by} has a time in both profiles")
        return note(fig, "<br>".join(missing))

    usable.sort(key=lambda c: -(sa[c] + sb[c]))
    cut = usable[top:]
    usable = usable[:top]
    ratio = np.array([sa[c] / sb[c] for c in usable])
    order = np.argsort(-ratio, kind="stable")
    cats = [usable[i] for i in order]
    ratio = ratio[order]
    ops = {**ops_b, **ops_a}
    faster = [pb.backend if r > 1 else pa.backend for r in ratio]
    fig.add_bar(
        orientation="h",
        y=cats,
        x=ratio - 1.0,  # a bar spans [base, base + x]: from 1 to the ratio
        base=np.ones(len(cats)),
        marker_color=[backend_color(f) for f in faster],
        customdata=[
            [c, ops.get(c, c), fmt_ms(sa[c]), fmt_ms(sb[c]), f"{r:.3g}"]
            for c, r in zip(cats, ratio)
        ],
        hovertemplate="%{customdata[0]} (%{customdata[1]})<br>"
        f"{la}: %{{customdata[2]}}, {lb}: %{{customdata[3]}}<br>"
        f"{la} / {lb} = %{{customdata[4]}}<extra></extra>",
        showlegend=False,
        name="ratio",
    )
    total = pa.kernels_ms / pb.kernels_ms if pb.kernels_ms > 0 else math.nan
    span = float(np.max(np.abs(np.log10(ratio))))
    if math.isfinite(total) and total > 0:
        span = max(span, abs(math.log10(total)))
        fig.add_vline(x=total, line_dash="dash", line_color="#444")
        # an annotation on a log axis takes log10 of the value (a shape takes the value)
        fig.add_annotation(
            x=math.log10(total),
            y=1,
            yref="paper",
            yanchor="bottom",
            showarrow=False,
            text=f"all kernels: {total:.3g}",
            name="total",
        )
    span = max(span * 1.15, 0.1)
    fig.add_vline(x=1.0, line_color="#222", line_width=1)
    fig.update_xaxes(
        type="log",
        range=[-span, span],  # log10 units: centred on a ratio of 1
        title_text=f"time of {la} / time of {lb} (right: {la} slower)",
    )
    fig.update_yaxes(
        categoryorder="array",
        categoryarray=cats,
        tickvals=cats,
        ticktext=[short(c) for c in cats],
        autorange="reversed",
    )
    if height is None:
        fig.update_layout(height=min(2000, 160 + 20 * len(cats)))
    if cut:
        missing.append(f"{len(cut)} more {by}s with less time not drawn (top={top})")
    missing.insert(0, "bar colour: the backend that is faster on that entry")
    note(fig, "<br>".join(missing))
    return fig


def _names(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(short(i, 40) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


__all__ = ["kernel_time", "time_ratio", "timeline"]
