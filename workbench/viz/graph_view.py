"""`graph(obj, color_by=...)`: a model's graph as a plotly figure, coloured by a metric.

    wb.viz.graph(model)                          # op types
    wb.viz.graph(wb.optimize(model))             # the optimized graph, origins on hover
    wb.viz.graph(prof, color_by="time")          # a Profile: time, share of time, memory
    wb.viz.graph(cmp, color_by="local_error")    # a Comparison: error per node and backend pair
    wb.viz.graph([model, prof1, prof2, cmp])     # several at once: the hover shows them all

Layout: top-down layered by Graphviz `dot` (igraph's Sugiyama past `_layout.DOT_MAX_NODES`).
A value read by `FANOUT` or more drawn nodes (an attention mask, a shape tensor) is drawn as
a small copy beside each reader instead of as edges across the graph. Repeated blocks
(transformer layers, CNN stages) collapse into one node each when the graph is large;
`expand=("encoder.layer.3",)` opens one.

The figure's contract, which the Explorer and the report code against: one scatter trace
named "nodes" whose `customdata[i][0]` is the node name, or "group:<id>" for a collapsed
block; edges in separate line traces; `fig.layout.meta` holds at least
`{"kind": "graph", "node_trace": <index>, "groups": {id: [node names]}}`.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import Any

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go

from ..errors import WorkbenchError
from . import _layout
from ._graph_data import Subject, group_info, node_info, resolve
from ._groups import find_groups
from ._style import fmt_bytes, fmt_ms, op_color


def _esc(text: str) -> str:
    # quotes stay: plotly's hover labels decode only a few entities
    if "&" in text or "<" in text or ">" in text:
        return html.escape(text, quote=False)
    return text


# color_by -> (what it needs, colour scale, log scale, colour bar title)
COLOR_BY: dict[str, tuple[str | None, str, bool, str]] = {
    "op": (None, "", False, "op type"),
    "time": ("Profile", "YlOrRd", True, "time (ms)"),
    "share": ("Profile", "YlOrRd", False, "share of time (%)"),
    "memory": (None, "Blues", True, "output bytes"),
    "error": ("Comparison", "RdPu", True, "local error / max|ref|"),
    "local_error": ("Comparison", "RdPu", True, "local error / max|ref|"),
    "accumulated_error": ("Comparison", "RdPu", True, "accumulated error / max|ref|"),
}
AUTO_COLLAPSE = 300  # collapse="auto" collapses blocks of graphs with more nodes than this
FANOUT = 5  # a value read by this many drawn units is drawn as copies beside each
LABEL_MAX = 400  # op names are written beside the markers up to this many units
MISSING = "#d9d9d9"  # a node the metric does not cover (not profiled, not compared)
GROUP_COLOR = "#525252"
_MAX_HOVER_ATTRS, _MAX_HOVER_INPUTS = 8, 8


def _check_color_by(color_by: str) -> None:
    if color_by not in COLOR_BY:
        need = "; ".join(
            f"{k!r}" + (f" (needs a {req})" if req else "") for k, (req, *_) in COLOR_BY.items()
        )
        raise WorkbenchError(f"color_by={color_by!r} is not one of: {need}")


def graph(
    obj: Any,
    color_by: str = "op",
    backend: str | None = None,
    pair: str | tuple[str, str] | None = None,
    collapse: bool | str = "auto",
    expand: tuple[str, ...] | list[str] = (),
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """The graph of `obj` (a Model, OptimizeResult, Profile, Comparison, or a list of them)
    as a plotly figure with nodes coloured by `color_by`.

    color_by: "op", "time", "share" (of total time), "memory" (bytes of outputs),
        "error" / "local_error" / "accumulated_error". Time and share need a Profile,
        errors a Comparison.
    backend: the Profile whose times colour the nodes (default: the first), and for a
        Comparison the tested backend (default: the first compared).
    pair: for errors, the backend pair, as the tested backend ("x86") or ("reference", "x86").
    collapse: "auto" (collapse repeated blocks above `AUTO_COLLAPSE` nodes), True, False.
    expand: ids of blocks to draw open, e.g. ("encoder.layer.3",).
    """
    _check_color_by(color_by)
    if collapse not in ("auto", True, False):
        raise WorkbenchError(f"collapse must be 'auto', True or False, got {collapse!r}")
    s = resolve(obj, backend, pair)
    need = COLOR_BY[color_by][0]
    if need == "Profile" and not s.times:
        raise WorkbenchError(f"color_by={color_by!r} needs a Profile: pass wb.profile(...)")
    if need == "Comparison" and not s.errors:
        raise WorkbenchError(f"color_by={color_by!r} needs a Comparison: pass wb.compare(...)")
    nodes = s.graph.nodes
    infos = {n.name: node_info(s, n) for n in nodes}
    groups = find_groups([n.name for n in nodes], [n.op_type for n in nodes])
    collapsed = len(nodes) > AUTO_COLLAPSE if collapse == "auto" else bool(collapse)
    unit_of = groups.drawn_as(collapsed, expand)

    d = _drawing(s, unit_of)
    lay = _layout.layout(len(d.units), d.edges)
    xy = lay.xy

    # per drawn unit: its facts and the metric
    members: dict[str, list[Any]] = {}
    for n in nodes:
        if n.name in unit_of:
            members.setdefault(unit_of[n.name], []).append(n)
    unit_infos: dict[str, dict[str, Any]] = {}
    for key, kind in zip(d.units, d.kinds):
        if kind == "node":
            unit_infos[key] = infos[key]
        elif kind == "group":
            unit_infos[key] = group_info(s, key[len("group:") :], members[key], infos)
    drawn = [i for i, k in enumerate(d.kinds) if k in ("node", "group")]
    values = np.array([_metric(unit_infos[d.units[i]], color_by, s) for i in drawn], np.float64)
    colors, bar = _colors(color_by, values, [unit_infos[d.units[i]] for i in drawn])

    traces: list[Any] = [_edge_trace(lay.paths)]
    labels = len(d.units) <= LABEL_MAX
    hover = [_hover(unit_infos[d.units[i]], color_by, s) for i in drawn]
    text = []
    for i in drawn:
        info = unit_infos[d.units[i]]
        if info["kind"] == "group":
            text.append(f"{info['group']} ({len(info['nodes'])})")
        else:
            text.append(info["op"] if labels else "")
    is_group = np.array([d.kinds[i] == "group" for i in drawn], bool)
    node_trace = _scatter(
        name="nodes",
        x=xy[drawn, 0] if drawn else [],
        y=xy[drawn, 1] if drawn else [],
        mode="markers+text",
        text=text,
        textposition="middle right",
        textfont={"size": 9, "color": "#333"},
        hovertext=hover,
        hoverinfo="text",
        customdata=[
            [d.units[i], None if math.isnan(v) else float(v), d.kinds[i]]
            for i, v in zip(drawn, values)
        ],
        marker={
            "symbol": "square",
            "size": np.where(is_group, 22, 13).tolist(),
            "color": colors,
            "line": {"width": np.where(is_group, 2.0, 0.5).tolist(), "color": "#222"},
        },
        showlegend=False,
    )
    node_index = len(traces)
    traces.append(node_trace)
    traces += _io_traces(d, xy)
    traces += _copy_traces(d, xy)
    traces += bar
    span = float(np.ptp(xy[:, 1])) if len(xy) else 0.0
    layout = dict(
        title={"text": title if title is not None else _title(s, color_by, len(nodes), len(drawn))},
        height=height or int(min(max(span * 0.9 + 140, 380), 1400)),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        plot_bgcolor="white",
        hovermode="closest",
        dragmode="pan",
        uirevision="graph",
        xaxis={"visible": False},
        yaxis={"visible": False},
        legend={"itemsizing": "constant", "font": {"size": 10}},
        meta={
            "kind": "graph",
            "node_trace": node_index,
            "groups": {gid: list(m) for gid, m in groups.members.items()},
            "group_source": groups.source,
            "collapsed": sorted({k[len("group:") :] for k in unit_of.values()}),
            "color_by": color_by,
            "backend": s.backend,
            "pair": s.pair,
            "layout": lay.engine,
            "fanout": sorted(d.copied),
            "n_nodes": len(nodes),
        },
    )
    # every property above is fixed by this module (tests validate a copy of the figure):
    # skipping plotly's per-element validation saves most of the figure's build time
    return go.Figure(data=traces, layout=layout, _validate=False)


def graph_node_info(
    obj: Any, name: str, backend: str | None = None, pair: Any = None
) -> dict[str, Any]:
    """The facts the hover shows about one node ("group:<id>" for a block): op, attributes,
    input/output shapes and dtypes, weight statistics, time per backend, error per pair."""
    s = resolve(obj, backend, pair)
    nodes = s.graph.nodes
    if name.startswith("group:"):
        gid = name[len("group:") :]
        groups = find_groups([n.name for n in nodes], [n.op_type for n in nodes])
        if gid not in groups.members:
            raise WorkbenchError(f"no block {gid!r} in this graph")
        members = set(groups.members[gid])
        picked = [n for n in nodes if n.name in members]
        return group_info(s, gid, picked, {n.name: node_info(s, n) for n in picked})
    for n in nodes:
        if n.name == name:
            return node_info(s, n)
    raise WorkbenchError(f"no node {name!r} in the graph of {s.name!r}")


# -- what is drawn -------------------------------------------------------------------------------


class _Drawing:
    def __init__(self) -> None:
        self.units: list[str] = []  # node name, "group:<id>", "input:<v>", "output:<v>"
        self.kinds: list[str] = []  # node | group | input | output
        self.index: dict[str, int] = {}
        self.edges: list[tuple[int, int]] = []
        self.copies: list[tuple[str, int, str]] = []  # (value, consumer unit, producer label)
        self.copied: set[str] = set()
        self.io_info: dict[str, str] = {}

    def add(self, key: str, kind: str) -> int:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.units)
            self.units.append(key)
            self.kinds.append(kind)
        return i


def _drawing(s: Subject, unit_of: dict[str, str]) -> _Drawing:
    g = s.graph
    d = _Drawing()
    graph_inputs = {id(v) for v in g.inputs if not v.is_const}
    for v in g.inputs:
        if not v.is_const and v.uses:
            d.io_info[f"input:{v.name}"] = f"graph input {v.name} {_vdesc(v)}"
    # which values fan out to many drawn units
    readers: dict[int, set[str]] = {}
    for n in g.nodes:
        u = unit_of.get(n.name, n.name)
        for v in n.inputs:
            if v is not None and not v.is_const:
                readers.setdefault(id(v), set()).add(u)
    fan = {k for k, r in readers.items() if len(r) >= FANOUT}
    for n in g.nodes:  # inputs first, so they come out on top in order
        for v in n.inputs:
            if v is not None and id(v) in graph_inputs and id(v) not in fan:
                d.add(f"input:{v.name}", "input")
    for n in g.nodes:
        u = unit_of.get(n.name, n.name)
        d.add(u, "group" if u.startswith("group:") else "node")
    pairs: dict[tuple[int, int], None] = {}
    copies: dict[tuple[str, int], str] = {}
    for n in g.nodes:
        head = d.index[unit_of.get(n.name, n.name)]
        for v in n.inputs:
            if v is None or v.is_const:
                continue
            if v.producer is not None:
                tail_key = unit_of.get(v.producer.name, v.producer.name)
                if tail_key not in d.index:
                    continue  # a value of an enclosing graph: drawn there
                source = f"{v.producer.op_type} {v.producer.name}"
            elif id(v) in graph_inputs:
                tail_key, source = f"input:{v.name}", "graph input"
            else:
                continue
            if id(v) in fan:
                d.copied.add(v.name)
                copies.setdefault((v.name, head), f"{source} {_vdesc(v)}")
                continue
            tail = d.index[tail_key]
            if tail != head:
                pairs.setdefault((tail, head), None)
    for v in g.outputs:
        if v.producer is not None:
            tail = d.index[unit_of.get(v.producer.name, v.producer.name)]
            o = d.add(f"output:{v.name}", "output")
            d.io_info[f"output:{v.name}"] = f"graph output {v.name} {_vdesc(v)}"
            pairs.setdefault((tail, o), None)
    d.edges = list(pairs)
    d.copies = [(name, head, src) for (name, head), src in copies.items()]
    return d


def _vdesc(v: Any) -> str:
    from ._graph_data import _dtype, fmt_shape

    return f"{fmt_shape(v.shape)} {_dtype(v)}"


# -- metrics and colours ---------------------------------------------------------------------------


def _metric(info: dict[str, Any], color_by: str, s: Subject) -> float:
    if color_by == "op":
        return math.nan
    if color_by == "time":
        return float(info["time_ms"].get(s.backend, math.nan))
    if color_by == "share":
        return float(info["share_pct"].get(s.backend, math.nan))
    if color_by == "memory":
        b = info.get("memory_bytes")
        return math.nan if b is None else float(b)
    col = "acc_scaled" if color_by == "accumulated_error" else "local_scaled"
    row = info["error"].get(s.pair or "")
    return math.nan if row is None else float(row.get(col, math.nan))


def _colors(
    color_by: str, values: np.ndarray, infos: list[dict[str, Any]]
) -> tuple[list[str], list[Any]]:
    """A colour per drawn unit, and the traces that explain them (legend or colour bar)."""
    if color_by == "op":
        colors = [GROUP_COLOR if i["kind"] == "group" else op_color(i["op"]) for i in infos]
        ops = Counter(i["op"] for i in infos if i["kind"] == "node")
        legend = [
            _scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=op,
                marker={"symbol": "square", "size": 10, "color": op_color(op)},
                hoverinfo="skip",
            )
            for op, _ in ops.most_common(20)
        ]
        return colors, legend
    _, scale, log, label = COLOR_BY[color_by]
    ok = ~np.isnan(values)
    if not ok.any():
        return [MISSING] * len(values), []
    v = values.copy()
    if log:
        positive = v[ok & (v > 0)]
        floor = positive.min() / 10 if len(positive) else 1e-12
        v[ok] = np.log10(np.maximum(v[ok], floor))
    lo, hi = float(v[ok].min()), float(v[ok].max())
    frac = np.where(ok, (v - lo) / (hi - lo) if hi > lo else 1.0, 0.0)
    sampled = pc.sample_colorscale(scale, np.clip(frac[ok], 0, 1).tolist(), colortype="rgb")
    colors = [MISSING] * len(values)
    for i, c in zip(np.flatnonzero(ok), sampled):
        colors[i] = c
    ticks = np.linspace(lo, hi, 5) if hi > lo else np.array([lo])
    shown = 10**ticks if log else ticks
    fmt = {"time": fmt_ms, "memory": fmt_bytes}.get(color_by, lambda x: f"{x:.3g}")
    bar = _scatter(
        x=[None],
        y=[None],
        mode="markers",
        name=label,
        showlegend=False,
        hoverinfo="skip",
        marker={
            "colorscale": scale,
            "cmin": lo,
            "cmax": hi,
            "color": [lo],
            "showscale": True,
            "colorbar": {
                "title": {"text": label},
                "tickvals": ticks.tolist(),
                "ticktext": [fmt(float(t)) for t in shown],
                "thickness": 12,
            },
        },
    )
    return colors, [bar]


def top_color(color_by: str) -> str:
    """The colour the largest value of a continuous metric gets."""
    return pc.sample_colorscale(COLOR_BY[color_by][1], [1.0], colortype="rgb")[0]


# -- traces -------------------------------------------------------------------------------------


def _scatter(**props: Any) -> dict[str, Any]:
    return {"type": "scatter", **props}


def _edge_trace(paths: list[np.ndarray]) -> dict[str, Any]:
    chunks: list[np.ndarray] = []
    gap = np.array([[np.nan, np.nan]])
    for p in paths:
        chunks += [p, gap]
    pts = np.concatenate(chunks) if chunks else np.zeros((0, 2))
    return _scatter(
        name="edges",
        x=pts[:, 0],
        y=pts[:, 1],
        mode="lines",
        line={"color": "#b0b0b0", "width": 1},
        hoverinfo="skip",
        showlegend=False,
    )


def _io_traces(d: _Drawing, xy: np.ndarray) -> list[Any]:
    idx = [i for i, k in enumerate(d.kinds) if k in ("input", "output")]
    if not idx:
        return []
    return [
        _scatter(
            name="inputs/outputs",
            x=xy[idx, 0],
            y=xy[idx, 1],
            mode="markers+text",
            text=[d.units[i].split(":", 1)[1] for i in idx],
            textposition="middle right",
            textfont={"size": 9, "color": "#555"},
            hovertext=[_esc(d.io_info.get(d.units[i], d.units[i])) for i in idx],
            hoverinfo="text",
            customdata=[[d.units[i], None, d.kinds[i]] for i in idx],
            marker={"symbol": "circle", "size": 10, "color": "white", "line": {"width": 1.5}},
            showlegend=False,
        )
    ]


def _copy_traces(d: _Drawing, xy: np.ndarray) -> list[Any]:
    """Small copies of fan-out values beside each reader, with a short stub edge."""
    if not d.copies:
        return []
    dx = _layout.NODE_W * 72 / 2 + 8
    stacked: Counter[int] = Counter()
    pts, stubs, hover, custom = [], [], [], []
    for name, head, src in d.copies:
        k = stacked[head]
        stacked[head] += 1
        x, y = xy[head]
        p = (x - dx - 12 * k, y + 14)
        pts.append(p)
        stubs += [p, (x, y), (np.nan, np.nan)]
        hover.append(
            _esc(f"{name} (drawn beside each of its readers)\n{src}").replace("\n", "<br>")
        )
        custom.append([f"value:{name}", None, "copy"])
    pts_a, stubs_a = np.asarray(pts), np.asarray(stubs)
    return [
        _scatter(
            name="copies",
            x=stubs_a[:, 0],
            y=stubs_a[:, 1],
            mode="lines",
            line={"color": "#d0d0d0", "width": 1, "dash": "dot"},
            hoverinfo="skip",
            showlegend=False,
        ),
        _scatter(
            name="fan-out copies",
            x=pts_a[:, 0],
            y=pts_a[:, 1],
            mode="markers",
            hovertext=hover,
            hoverinfo="text",
            customdata=custom,
            marker={"symbol": "diamond", "size": 7, "color": "#9e9e9e"},
            showlegend=False,
        ),
    ]


# -- text -----------------------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:.4g}"


def _hover(info: dict[str, Any], color_by: str, s: Subject) -> str:
    e = _esc
    lines: list[str] = []
    if info["kind"] == "group":
        lines.append(f"<b>block {e(info['group'])}</b>: {len(info['nodes'])} nodes")
        ops = ", ".join(f"{op} x{c}" for op, c in list(info["ops"].items())[:6])
        lines.append(e(ops))
    else:
        lines.append(f"<b>{e(info['op'])}</b> {e(info['name'])}")
        if info["domain"] != "ai.onnx":
            lines.append(f"domain {e(info['domain'])}")
        if info["origin"] != [info["name"]]:
            lines.append(f"from {len(info['origin'])}: " + e(", ".join(info["origin"][:6])))
        for k, v in list(info["attributes"].items())[:_MAX_HOVER_ATTRS]:
            lines.append(f"{e(k)} = {e(v)}")
        for item in info["inputs"][:_MAX_HOVER_INPUTS]:
            w = item.get("weight")
            if w is not None and "min" in w:
                lines.append(
                    f"in {e(item['name'])} {w['shape']} {w['dtype']} weight: min "
                    f"{_num(w['min'])} max {_num(w['max'])} mean {_num(w['mean'])} "
                    f"std {_num(w['std'])}"
                )
            else:
                lines.append(f"in {e(item['name'])} {e(item['shape'])} {e(item['dtype'])}")
        for item in info["outputs"]:
            lines.append(f"out {e(item['name'])} {e(item['shape'])} {e(item['dtype'])}")
        for b, sh in info.get("runtime_shapes", {}).items():
            lines.append(f"ran on {e(b)}: {e(sh['in'])} -> {e(sh['out'])}")
    for b, ms in info["time_ms"].items():
        share = info["share_pct"].get(b, math.nan)
        alg = info.get("algorithm", {}).get(b)
        lines.append(f"time {e(b)}: {fmt_ms(ms)} ({share:.1f}%)" + (f", {e(alg)}" if alg else ""))
    if info.get("memory_bytes") is not None:
        lines.append(f"outputs: {fmt_bytes(info['memory_bytes'])}")
    for pair, row in info["error"].items():
        lines.append(
            f"error {e(pair)}: local {row['local_max_abs']:.3g} "
            f"(/max|ref| {row['local_scaled']:.3g}), accumulated {row['acc_max_abs']:.3g}"
        )
    if color_by != "op":
        v = _metric(info, color_by, s)
        lines.append(f"<i>{COLOR_BY[color_by][3]}: {'n/a' if math.isnan(v) else _num(v)}</i>")
    return "<br>".join(lines)


def _title(s: Subject, color_by: str, n: int, drawn: int) -> str:
    where = f", level {s.level}" if s.level is not None else ""
    if color_by in ("time", "share") and s.backend:
        where += f" on {s.backend}"
    if "error" in color_by and s.pair:
        where += f", {s.pair}"
    shown = f", {drawn} drawn" if drawn != n else ""
    return f"{s.name}: {n} nodes{shown}{where}, coloured by {color_by}"
