"""Accuracy charts of a Comparison: error along the topological order, and one tensor's
error histogram.

    wb.viz.error_by_node(cmp, kind="local")           # per backend pair, log y
    wb.viz.error_by_node(cmp, kind="accumulated", metric="max_rel")
    wb.viz.error_histogram(cmp, "/encoder/layer.0/output/Add_output_0")

The numbers are the Comparison's own (`Comparison.tensors`, `Comparison.histogram`,
`Comparison.first_divergence`); nothing is recomputed. Errors that are exactly zero have no
place on a log axis: they are drawn on the axis' floor, as hollow markers, and say so.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from ..errors import WorkbenchError
from ._charts_common import (
    as_comparison,
    document,
    empty,
    error_kind,
    new_figure,
    note,
    pair_label,
    pick_backend,
    short,
)
from ._style import backend_color

if TYPE_CHECKING:
    from ..profiler.compare import Comparison

_KIND_TEXT = {"local": "local", "acc": "accumulated"}
_METRIC_TEXT = {
    "max_abs": "max |error|",
    "mean_abs": "mean |error|",
    "max_rel": "max relative error",
    "rms": "RMS error",
    "max_ulp": "max ULP distance",
    "out_of_tol": "share of elements out of tolerance",
}


@document("comparison", "kind", "backend", "height")
def error_by_node(
    comparison: Comparison,
    kind: str = "local",
    backend: str | None = None,
    metric: str = "max_abs",
    height: int | None = None,
) -> go.Figure:
    """An error metric of every compared tensor along the tested plan's order (x: the
    step that produced it), one series per backend pair, on a log y axis.

    `metric`: a column of `Comparison.tensors` without its prefix ("max_abs", "max_rel",
    "rms", "max_ulp", ...). Tensors with some element out of tolerance are ringed in red;
    the first divergence (`Comparison.first_divergence`: the earliest node whose *local*
    error is out of tolerance) is marked by a vertical line, on the accumulated view too,
    since that is where accumulated error starts. For "max_abs" the horizontal line is
    the comparison's atol (an element passes when |err| <= atol + rtol * |ref|, so a point
    above it can still pass through rtol); for "max_rel" it is rtol.
    """
    c = as_comparison(comparison, "error_by_node")
    k = error_kind(kind)
    col = f"{k}_{metric}"
    if col not in c.tensors.columns:
        raise WorkbenchError(
            f"no metric {metric!r}; one of: "
            + ", ".join(
                x.removeprefix("local_") for x in c.tensors.columns if x.startswith("local_")
            )
        )
    backends = c.backends if backend is None else [pick_backend(c, backend)]
    what = _METRIC_TEXT.get(metric, metric)
    fig = new_figure(
        f"{_KIND_TEXT[k].capitalize()} error ({what}) by node: {c.meta.get('model', '')}, "
        + "; ".join(pair_label(c, b) for b in backends),
        height,
    )
    t = c.tensors
    vals = t[col].to_numpy(np.float64)
    positive = vals[np.isfinite(vals) & (vals > 0)]
    floor = 10 ** (math.floor(math.log10(positive.min())) - 1) if len(positive) else 1e-12
    notes: list[str] = []
    drawn = 0
    n_steps = int(t["topo"].max()) + 1 if len(t) else 1
    tolerances: dict[float, list[str]] = {}
    for b in backends:
        mine = (t["backend"] == b).to_numpy()
        rows = t[mine]
        v = vals[mine]
        lab = pair_label(c, b)
        color = backend_color(b)
        measured = (rows[f"{k}_status"] == "ok").to_numpy() & ~np.isnan(v)
        if not measured.any():
            notes.append(f"{lab}: no tensor could be compared")
            continue
        custom = np.stack(
            [
                rows["node"].to_numpy(object),
                rows["op"].to_numpy(object),
                rows["value"].to_numpy(object),
                [f"{x:.3g}" for x in v],
                [f"{x:.2%}" for x in rows[f"{k}_out_of_tol"].to_numpy(np.float64)],
            ],
            axis=-1,
        )
        hover = (
            "step %{x}: %{customdata[0]} (%{customdata[1]})<br>%{customdata[2]}<br>"
            f"{what}: %{{customdata[3]}}, out of tolerance: %{{customdata[4]}}"
            f"<extra>{b}</extra>"
        )
        pos = measured & (v > 0)
        zero = measured & (v == 0)
        topo = rows["topo"].to_numpy()
        fig.add_scatter(
            name=lab,
            x=topo[pos],
            y=np.where(np.isinf(v[pos]), np.nan, v[pos]),
            mode="markers+lines",
            line={"width": 0.6, "color": color},
            marker={"color": color, "size": 6},
            customdata=custom[pos],
            hovertemplate=hover,
            legendgroup=b,
        )
        drawn += int(pos.sum())
        if zero.any():
            fig.add_scatter(
                name=f"{b}: exact (0), on the floor",
                x=topo[zero],
                y=np.full(int(zero.sum()), floor),
                mode="markers",
                marker={"color": color, "size": 6, "symbol": "circle-open"},
                customdata=custom[zero],
                hovertemplate=hover,
                legendgroup=b,
            )
            drawn += int(zero.sum())
        bad = (rows[f"{k}_out_of_tol"].to_numpy(np.float64) > 0) | (
            rows[f"{k}_mismatch"].to_numpy(np.float64) > 0
        )
        bad &= pos
        if bad.any():
            fig.add_scatter(
                name=f"{b}: out of tolerance",
                x=topo[bad],
                y=np.where(np.isinf(v[bad]), np.nan, v[bad]),
                mode="markers",
                marker={"color": "rgba(0,0,0,0)", "size": 12, "line": {"color": "red", "width": 2}},
                customdata=custom[bad],
                hovertemplate=hover,
                legendgroup=b,
            )
        inf = measured & np.isinf(v)
        if inf.any():
            notes.append(f"{lab}: {int(inf.sum())} tensors with infinite error (not drawn)")
        skipped = rows[(rows[f"{k}_status"] != "ok")]
        if len(skipped):
            why = "; ".join(f"{n} x {s}" for s, n in skipped[f"{k}_status"].value_counts().items())
            notes.append(f"{lab}: {len(skipped)} tensors not compared ({why})")
        d = c.first_divergence(backend=b)
        atol, rtol = c.tolerance(b)
        if d is None:
            notes.append(f"{lab}: no node out of tolerance (atol={atol:g}, rtol={rtol:g})")
        else:
            fig.add_vline(
                x=d.topo,
                line_color=color,
                line_dash="dash",
                annotation_text=f"first divergence ({b}): {short(d.node, 40)} ({d.op})",
                # the text runs toward the middle of the plot, never off its edge
                annotation_position="top right" if d.topo < n_steps / 2 else "top left",
                annotation_font_color=color,
                name=f"first divergence {b}",
            )
        tol = {"max_abs": atol, "max_rel": rtol}.get(metric)
        if tol is not None and tol > 0:
            tolerances.setdefault(tol, []).append(b)
    for tol, bs in tolerances.items():  # one line per distinct tolerance
        color = backend_color(bs[0]) if len(bs) == 1 else "#444"
        fig.add_hline(y=tol, line_color=color, line_dash="dot", name=f"tolerance {','.join(bs)}")
        fig.add_annotation(  # on a log axis an annotation takes log10 of the value
            x=1,
            xref="paper",
            xanchor="right",
            y=math.log10(tol),
            yanchor="top",
            showarrow=False,
            text=f"{'atol' if metric == 'max_abs' else 'rtol'} {tol:g} ({', '.join(bs)})",
            font={"color": color},
            name="tolerance",
        )
    if not drawn:
        empty(fig, "no tensor could be compared: nothing to draw")
        return note(fig, "<br>".join(notes))
    fig.update_yaxes(type="log", title_text=f"{_KIND_TEXT[k]} {what}", exponentformat="e")
    fig.update_xaxes(
        title_text="step of the tested plan (topological order)",
        range=[-0.5, n_steps - 0.5],  # fixed: autorange would make room for the texts
    )
    fig.update_layout(hovermode="closest", height=height or 460)
    note(fig, "<br>".join(notes))
    return fig


@document("comparison", "backend", "kind", "height")
def error_histogram(
    comparison: Comparison,
    value: str,
    backend: str | None = None,
    kind: str = "local",
    height: int | None = None,
) -> go.Figure:
    """How the errors of one tensor (`value`, a value name of `Comparison.tensors`) spread:
    element counts per half decade of |error| (from `Comparison.histogram`), with the
    exactly equal elements as a bar of their own on the left and non-finite mismatches on
    the right, so the bars add up to the tensor's size. The dotted line is the atol.
    """
    c = as_comparison(comparison, "error_histogram")
    k = error_kind(kind)
    b = pick_backend(c, backend)
    fig = new_figure(
        f"{_KIND_TEXT[k].capitalize()} error of {short(value, 60)}: "
        f"{c.meta.get('model', '')}, {pair_label(c, b)}",
        height or 380,
    )
    t = c.tensors
    hit = t[(t["value"] == value) & (t["backend"] == b)]
    if hit.empty:
        raise WorkbenchError(f"no tensor {value!r} compared on {b!r}")
    row = hit.iloc[0]
    if row[f"{k}_status"] != "ok":
        return empty(fig, f"not compared: {row['note'] or row[f'{k}_status']}")
    counts, edges = c.histogram(value, b, "local" if k == "local" else "acc")
    size = int(row["size"])
    exact = round(float(row[f"{k}_exact"]) * size)
    mismatch = int(row[f"{k}_mismatch"]) if math.isfinite(row[f"{k}_mismatch"]) else 0
    counts = np.asarray(counts, np.int64)
    centres = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0])
    used = np.flatnonzero(counts)
    lo = int(used.min()) if len(used) else len(counts) // 2
    hi = int(used.max()) if len(used) else len(counts) // 2
    lo, hi = max(lo - 1, 0), min(hi + 1, len(counts) - 1)
    x = centres[lo : hi + 1]
    fig.add_bar(
        name="|error| per half decade",
        x=x,
        y=counts[lo : hi + 1],
        width=width * 0.95,
        marker_color=backend_color(b),
        customdata=np.stack([10 ** edges[lo : hi + 1], 10 ** edges[lo + 1 : hi + 2]], axis=-1),
        hovertemplate="|error| in [%{customdata[0]:.1e}, %{customdata[1]:.1e}): "
        "%{y} elements<extra></extra>",
    )
    ticks = [float(e) for e in edges if x[0] - width <= e <= x[-1] + width and e == int(e)]
    tickvals, ticktext = list(ticks), [f"1e{int(e)}" for e in ticks]
    exact_x = x[0] - 2 * width
    fig.add_bar(
        name="exact (error 0)",
        x=[exact_x],
        y=[exact],
        width=width * 0.95,
        marker_color="#2ca02c",
        hovertemplate="exactly equal: %{y} elements<extra></extra>",
    )
    tickvals.insert(0, exact_x)
    ticktext.insert(0, "0")
    if mismatch:
        inf_x = x[-1] + 2 * width
        fig.add_bar(
            name="non-finite mismatch",
            x=[inf_x],
            y=[mismatch],
            width=width * 0.95,
            marker_color="#d62728",
            hovertemplate="non-finite mismatch: %{y} elements<extra></extra>",
        )
        tickvals.append(inf_x)
        ticktext.append("inf")
    atol, rtol = c.tolerance(b)
    if atol > 0:
        fig.add_vline(
            x=math.log10(atol),
            line_dash="dot",
            line_color="#444",
            annotation_text=f"atol {atol:g} (rtol {rtol:g})",
            annotation_position="top",
        )
    fig.update_xaxes(title_text="|error| (log scale)", tickvals=tickvals, ticktext=ticktext)
    fig.update_yaxes(title_text="elements")
    fig.update_layout(barmode="overlay", showlegend=True)
    shape = "x".join(map(str, row["shape"])) if len(row["shape"]) else "scalar"
    rest = size - exact - mismatch - int(counts.sum())
    text = (
        f"{row['node']} ({row['op']}), {shape} {row['dtype']}: {size} elements, "
        f"{exact} exact, {mismatch} non-finite mismatches"
    )
    if rest:
        text += f", {rest} not binned"
    return note(fig, text)


__all__ = ["error_by_node", "error_histogram"]
