"""`fusion_diff(result)`: the graph before and after optimization, side by side, fusions paired.

    res = wb.optimize(model, level=2)
    fig = wb.viz.fusion_diff(res)
    fig.write_html("fusions.html", post_script=FUSION_HIGHLIGHT_JS)   # click to pair
    fusion_partners(res, "/relu/Relu/FusedConv")   # {"before": [3 originals], "after": [it]}

Each fused node and the original nodes it replaced (its `meta["origin"]`) share a colour;
nodes kept as they were are grey in both panels, nodes folded or eliminated are hollow in
the "before" panel with their fate on hover. Candidates a rule looked at and refused are
ringed in red, with the rule and the reason on hover.

Selecting one node highlights its partners: in a static figure (a notebook's output, the
HTML report) through `FUSION_HIGHLIGHT_JS`, a plotly_click handler that restyles both
panels; in the Explorer's FigureWidget through `fusion_partners` on the Python side. Both
read the same pairing: `customdata[i] = [node name, fusion key, side]`, partners share a
key, and `fig.layout.meta["fusion_groups"][key]` lists them.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go

from ..errors import WorkbenchError
from . import _layout
from ._graph_data import resolve
from .graph_view import _copy_traces, _drawing, _edge_trace, _scatter


def _esc(text: str) -> str:
    # quotes stay: plotly's hover labels decode only a few entities
    if "&" in text or "<" in text or ">" in text:
        return html.escape(text, quote=False)
    return text


KEPT = "#c7c7c7"  # a node the optimizer left as it was
GONE = "white"  # an original node folded or eliminated (hollow, outlined)
REJECTED = "#d62728"
_PALETTE = pc.qualitative.Dark24 + pc.qualitative.Alphabet

# Runs in the page after plotly draws the figure ({plot_id} is filled in by plotly's
# write_html / to_html). On a click, the points sharing the clicked point's fusion key
# (customdata[1]) are outlined in both panels and the rest fade; a click on a node with no
# partners clears the highlight. Plain ES5, no dependency beyond plotly.js itself.
FUSION_HIGHLIGHT_JS = """
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.on) { return; }
  gd.on('plotly_click', function (ev) {
    var meta = gd.layout.meta || {};
    var idx = meta.node_traces;
    if (!idx || !ev.points.length) { return; }
    var cd = ev.points[0].customdata;
    var key = cd && cd.length > 1 ? cd[1] : '';
    var traces = [idx.before, idx.after];
    var widths = [], opac = [];
    traces.forEach(function (t) {
      var data = gd.data[t].customdata || [];
      widths.push(data.map(function (c) { return key && c[1] === key ? 3.5 : 0.5; }));
      opac.push(data.map(function (c) { return !key || c[1] === key ? 1.0 : 0.25; }));
    });
    Plotly.restyle(gd, {'marker.line.width': widths, 'marker.opacity': opac}, traces);
  });
})();
"""


def _after_node_origin(result: Any) -> dict[str, tuple[str, ...]]:
    return {n.name: tuple(n.meta.get("origin", (n.name,))) for n in result.after.graph.nodes}


def _is_fused(name: str, origin: tuple[str, ...]) -> bool:
    return origin != (name,)


def fusion_groups(result: Any) -> dict[str, dict[str, list[str]]]:
    """key -> {"before": [...], "after": [...]}: "fusion:<node>" for each optimized node that
    stands for other nodes, "kept:<node>" for each node kept as it was."""
    before = {n.name for n in result.before.graph.nodes}
    out: dict[str, dict[str, list[str]]] = {}
    for name, origin in _after_node_origin(result).items():
        key = f"fusion:{name}" if _is_fused(name, origin) else f"kept:{name}"
        out[key] = {"before": [o for o in origin if o in before], "after": [name]}
    return out


def fusion_partners(result: Any, node_name: str) -> dict[str, list[str]]:
    """The nodes that go with `node_name` (a node of either graph): for an optimized node,
    itself and the original nodes it stands for; for an original node, the optimized
    node(s) it went into and every original node that went with it."""
    origins = _after_node_origin(result)
    before = [n.name for n in result.before.graph.nodes]
    if node_name in origins:
        keep = set(origins[node_name])
        return {"before": [b for b in before if b in keep], "after": [node_name]}
    if node_name not in set(before):
        raise WorkbenchError(
            f"no node {node_name!r} in the graph before or after optimization of "
            f"{result.before.name!r}"
        )
    after = [a for a, origin in origins.items() if node_name in origin]
    keep = {node_name} | {o for a in after for o in origins[a]}
    return {"before": [b for b in before if b in keep], "after": after}


def _rejections(result: Any) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """node name -> reasons, for the before and the after panel. A rejection names the
    nodes of the graph its pass saw: an original node, an optimized one, or a node an
    earlier rule made and a later one fused away (found through the change records)."""
    before = {n.name for n in result.before.graph.nodes}
    origins = _after_node_origin(result)
    made: dict[str, tuple[str, ...]] = {}
    for ch in result.changes:
        for a in ch.added:
            made[a] = tuple(ch.origin)
    fused_from = {f: n.name for n in result.after.graph.nodes for f in n.meta.get("fused_from", ())}
    on_before: dict[str, list[str]] = {}
    on_after: dict[str, list[str]] = {}
    for r in result.rejected:
        why = f"not fused by {r.rule or r.pass_name}: {r.reason}"
        for name in r.nodes:
            olds = [name] if name in before else [o for o in made.get(name, ()) if o in before]
            for o in olds:
                on_before.setdefault(o, []).append(why)
            new = name if name in origins else fused_from.get(name)
            if new is not None:
                on_after.setdefault(new, []).append(why)
    return on_before, on_after


def _rules(result: Any) -> dict[str, str]:
    """optimized node -> the rules that made it, in order."""
    out: dict[str, list[str]] = {}
    for ch in result.changes:
        for a in ch.added:
            out.setdefault(a, []).append(ch.rule or ch.pass_name)
    return {k: ", ".join(dict.fromkeys(v)) for k, v in out.items()}


def fusion_diff(result: Any, height: int | None = None) -> go.Figure:
    """Before and after of an `OptimizeResult` side by side, each fused node and the
    originals it replaced in one colour, refused candidates ringed with their reason."""
    from ..engine.passes.optimize import OptimizeResult

    if not isinstance(result, OptimizeResult):
        raise WorkbenchError(
            f"fusion_diff takes the result of wb.optimize(model, level=2), got "
            f"{type(result).__name__}"
        )
    groups = fusion_groups(result)
    fused_keys = [k for k in groups if k.startswith("fusion:")]
    color_of = {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(fused_keys)}
    key_of_before: dict[str, str] = {}
    for k in fused_keys + [k for k in groups if k.startswith("kept:")]:
        for b in groups[k]["before"]:
            key_of_before.setdefault(b, k)
    fates = result.fates()
    rules = _rules(result)
    rej_before, rej_after = _rejections(result)

    traces: list[dict[str, Any]] = []
    node_traces: dict[str, int] = {}
    spans = []
    for side, model, axis in (("before", result.before, ""), ("after", result.after, "2")):
        s = resolve(model)
        d = _drawing(s, {})
        lay = _layout.layout(len(d.units), d.edges)
        xy = lay.xy
        spans.append(float(np.ptp(xy[:, 1])) if len(xy) else 0.0)
        ax = {"xaxis": f"x{axis}", "yaxis": f"y{axis}"}
        traces.append({**_edge_trace(lay.paths), **ax})
        idx = [i for i, k in enumerate(d.kinds) if k == "node"]
        by_name = {n.name: n for n in model.graph.nodes}
        colors, lines, hover, custom, ringed = [], [], [], [], []
        rej = rej_before if side == "before" else rej_after
        for i in idx:
            name = d.units[i]
            n = by_name[name]
            if side == "before":
                key = key_of_before.get(name, "")
                color = color_of.get(key, KEPT if key else GONE)
                fate = fates.get(name)
                extra = [f"fate: {fate}"] if fate is not None else []
            else:
                key = f"fusion:{name}" if f"fusion:{name}" in groups else f"kept:{name}"
                color = color_of.get(key, KEPT)
                origin = groups[key]["before"]
                extra = []
                if key.startswith("fusion:"):
                    extra.append(f"fused by {rules.get(name, '?')} from {len(origin)}:")
                    extra += [f"  {o}" for o in origin[:8]]
            reasons = rej.get(name, [])
            if reasons:
                ringed.append(i)
            colors.append(color)
            lines.append(0.5 if color != GONE else 1.0)
            head = f"<b>{_esc(n.op_type)}</b> {_esc(name)}"
            hover.append("<br>".join([head, *(_esc(t) for t in extra + reasons[:4])]))
            custom.append([name, key, side])
        node_traces[side] = len(traces)
        traces.append(
            _scatter(
                name=f"{side} nodes",
                x=xy[idx, 0],
                y=xy[idx, 1],
                mode="markers+text" if len(idx) <= 400 else "markers",
                text=[by_name[d.units[i]].op_type for i in idx],
                textposition="middle right",
                textfont={"size": 9, "color": "#333"},
                hovertext=hover,
                hoverinfo="text",
                customdata=custom,
                marker={
                    "symbol": "square",
                    "size": 13,
                    "color": colors,
                    "opacity": [1.0] * len(idx),
                    "line": {"width": lines, "color": "#222"},
                },
                showlegend=False,
                **ax,
            )
        )
        for t in _copy_traces(d, xy):
            traces.append({**t, **ax})
        if ringed:
            traces.append(
                _scatter(
                    name=f"{side} rejected",
                    x=xy[ringed, 0],
                    y=xy[ringed, 1],
                    mode="markers",
                    hovertext=[
                        _esc(d.units[i] + "\n" + "\n".join(rej[d.units[i]][:4])).replace(
                            "\n", "<br>"
                        )
                        for i in ringed
                    ],
                    hoverinfo="text",
                    customdata=[[d.units[i], "", side] for i in ringed],
                    marker={
                        "symbol": "circle-open",
                        "size": 24,
                        "color": REJECTED,
                        "line": {"width": 2.5, "color": REJECTED},
                    },
                    showlegend=False,
                    **ax,
                )
            )
    nb, na = len(result.before.graph.nodes), len(result.after.graph.nodes)
    span = max(spans) if spans else 0.0
    axis = {"visible": False}
    layout = {
        "title": {
            "text": f"{result.before.name}: {nb} -> {na} nodes at level {result.level} "
            f"for {result.backend} ({len(fused_keys)} fused, {len(result.rejected)} refused)"
        },
        "height": height or int(min(max(span * 0.9 + 160, 420), 1400)),
        "margin": {"l": 10, "r": 10, "t": 70, "b": 10},
        "plot_bgcolor": "white",
        "hovermode": "closest",
        "dragmode": "pan",
        "uirevision": "fusion",
        "xaxis": {**axis, "domain": [0.0, 0.49]},
        "yaxis": {**axis, "anchor": "x"},
        "xaxis2": {**axis, "domain": [0.51, 1.0]},
        "yaxis2": {**axis, "anchor": "x2"},
        "annotations": [
            {
                "text": f"before: {nb} nodes",
                "x": 0.245,
                "y": 1.0,
                "xref": "paper",
                "yref": "paper",
                "yanchor": "bottom",
                "showarrow": False,
            },
            {
                "text": f"after: {na} nodes",
                "x": 0.755,
                "y": 1.0,
                "xref": "paper",
                "yref": "paper",
                "yanchor": "bottom",
                "showarrow": False,
            },
        ],
        "meta": {
            "kind": "fusion_diff",
            "node_traces": node_traces,
            "fusion_groups": groups,
            "rejected": [
                {"rule": r.rule, "pass": r.pass_name, "nodes": list(r.nodes), "reason": r.reason}
                for r in result.rejected
            ],
        },
    }
    return go.Figure(data=traces, layout=layout, _validate=False)
