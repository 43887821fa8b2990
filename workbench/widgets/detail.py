"""The node detail panel: what one node is, what it took, and what it cost on each backend.

`node_detail(...)` gathers the facts into a plain dict (tests read it; nothing here runs
a kernel): op, attributes, input and output shapes and dtypes (the shapes a run saw when
there was one, else the declared ones), weight statistics, the median time per profiled
backend, the error per compared backend pair, and a histogram of the node's first output
from the last run's intermediates. `DetailPanel` draws that dict.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..engine.ir import Graph, Node
from ..errors import WorkbenchError

HIST_BINS = 30
_BLOCK = "font-size:12px; line-height:1.35"
_TD = "padding:0 6px 0 0; line-height:1.3; vertical-align:top"
_ERROR_COLUMNS = ("local_max_abs", "acc_max_abs", "local_max_rel", "acc_snr_db", "local_status")


def find_node(name: str, graphs: Sequence[tuple[str, Graph]]) -> tuple[str, Node] | None:
    """The first node called `name` in `graphs` ((label, graph) pairs, searched in order)."""
    for label, graph in graphs:
        for node in graph.walk():
            if node.name == name:
                return label, node
    return None


def _short(value: Any, limit: int = 80) -> str:
    """An attribute as one short line: arrays by shape, subgraphs by name, long lists cut."""
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return np.array2string(value.ravel(), separator=", ")
        return f"array{list(value.shape)} {value.dtype}"
    if isinstance(value, Graph):
        return f"<subgraph {value.name}: {len(value.nodes)} nodes>"
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dims(shape: Any) -> list[Any] | None:
    return None if shape is None else [d if d is not None else "?" for d in shape]


def _tensor(value: Any, seen: Mapping[str, Any]) -> dict[str, Any]:
    """Name, shape, dtype of a value: measured when a run kept it, else as declared."""
    if value is None:
        return {"name": "", "shape": None, "dtype": "", "source": "absent"}
    array = seen.get(value.name)
    if isinstance(array, np.ndarray):
        return {
            "name": value.name,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "source": "run",
        }
    out = {
        "name": value.name,
        "shape": _dims(value.shape),
        "dtype": str(value.dtype) if value.dtype is not None else "",
        "source": "declared",
    }
    if value.is_const:
        c = np.asarray(value.const)
        out.update(shape=list(c.shape), dtype=str(c.dtype), source="weight")
        if c.size and np.issubdtype(c.dtype, np.number):
            f = c.astype(np.float64, copy=False)
            out["stats"] = {
                "min": float(f.min()),
                "max": float(f.max()),
                "mean": float(f.mean()),
                "std": float(f.std()),
            }
    return out


def _profiled_shapes(node: Node, profiles: Mapping[str, Any]) -> tuple[list[str], list[str]] | None:
    """The input and output shapes a profile recorded for this node's kernel ("1x8x32"
    per tensor, "-" for an absent one), from the first profile that ran it."""
    for prof in profiles.values():
        k = prof.kernels
        rows = k[k["node"] == node.name]
        if len(rows):
            r = rows.iloc[0]
            split = [s.strip() for s in str(r["in_shapes"]).split(",")]
            out = [s.strip() for s in str(r["out_shapes"]).split(",")]
            return split, out
    return None


def _with_profiled(tensors: list[dict[str, Any]], shapes: Any) -> list[dict[str, Any]]:
    """Declared shapes replaced by the ones a profile measured, where no run kept them."""
    if not shapes or len(shapes) != len(tensors):
        return tensors
    for t, text in zip(tensors, shapes):
        if t["source"] != "declared" or text in ("", "-"):
            continue
        dims = text.split("x") if text != "scalar" else []
        if all(d.isdigit() for d in dims):
            t["shape"] = [int(d) for d in dims]
            t["source"] = "profile"
    return tensors


def _times(node: Node, profiles: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per profiled backend: the node's median time, or that of the kernel it was fused into."""
    out: dict[str, dict[str, Any]] = {}
    for backend, prof in profiles.items():
        k = prof.kernels
        rows = k[k["node"] == node.name]
        if len(rows):
            r = rows.iloc[0]
            out[backend] = {"median_ms": float(r["median_ms"]), "pct": float(r["pct"])}
            out[backend]["kernel"] = node.name
            continue
        # an original node the profiled graph fused away: the time is its kernel's
        hit = k[k["origin"].map(lambda o: node.name in str(o).split(", "))]
        if len(hit):
            r = hit.iloc[0]
            out[backend] = {
                "median_ms": float(r["median_ms"]),
                "pct": float(r["pct"]),
                "kernel": str(r["node"]),
            }
    return out


def _errors(node: Node, comparison: Any) -> dict[str, dict[str, Any]]:
    """Per compared backend pair ("x86 vs reference"): the errors of the node's outputs,
    matched by value name (a fused node keeps the names of the values it replaced)."""
    if comparison is None:
        return {}
    t = comparison.tensors
    names = [v.name for v in node.outputs if v.name]
    rows = t[t["value"].isin(names)]
    ref = comparison.meta.get("reference", "reference")
    out: dict[str, dict[str, Any]] = {}
    for backend, group in rows.groupby("backend", sort=False):
        worst = group.loc[group["local_max_abs"].fillna(-1).idxmax()]
        rec = {c: worst[c] for c in _ERROR_COLUMNS if c in group}
        for c, v in rec.items():
            if isinstance(v, np.floating):
                rec[c] = float(v)
        rec["value"] = str(worst["value"])
        rec["tested_node"] = str(worst["node"])
        out[f"{backend} vs {ref}"] = rec
    return out


def _histogram(node: Node, intermediates: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Counts of the first numeric output's values, from the first backend that kept it."""
    for backend, seen in intermediates.items():
        for v in node.outputs:
            x = seen.get(v.name)
            if not isinstance(x, np.ndarray) or not x.size:
                continue
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
                continue
            f = x.astype(np.float64, copy=False).ravel()
            f = f[np.isfinite(f)]
            if not f.size:
                continue
            counts, edges = np.histogram(f, bins=HIST_BINS)
            return {
                "backend": backend,
                "value": v.name,
                "counts": counts,
                "edges": edges,
                "min": float(f.min()),
                "max": float(f.max()),
                "mean": float(f.mean()),
            }
    return None


def node_detail(
    name: str,
    graphs: Sequence[tuple[str, Graph]],
    *,
    intermediates: Mapping[str, Mapping[str, Any]] | None = None,
    profiles: Mapping[str, Any] | None = None,
    comparison: Any = None,
    fates: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the panel shows about node `name`, as plain data.

    `graphs`: (label, graph) pairs to look the node up in (the graph on screen first);
    `intermediates`: backend -> {value name: array} from `Session.run(feeds, keep=True)`;
    `profiles`: backend -> Profile; `comparison`: a Comparison; `fates`: original node ->
    `Fate` from the optimization, for "fused into ..." lines.
    """
    found = find_node(name, graphs)
    if found is None:
        where = ", ".join(label for label, _ in graphs) or "no graph"
        raise WorkbenchError(f"no node named {name!r} in {where}")
    label, node = found
    intermediates = intermediates or {}
    measured = _profiled_shapes(node, profiles or {})
    seen: dict[str, Any] = {}
    for arrays in intermediates.values():
        for k, v in arrays.items():
            seen.setdefault(k, v)
    fate = (fates or {}).get(name)
    return {
        "kind": "node",
        "name": node.name,
        "op": node.op_type,
        "domain": node.domain or "ai.onnx",
        "graph": label,
        "origin": tuple(node.meta.get("origin", (node.name,))),
        "fate": str(fate) if fate is not None else "",
        "attributes": {k: _short(v) for k, v in sorted(node.attrs.items())},
        "inputs": _with_profiled([_tensor(v, seen) for v in node.inputs], measured and measured[0]),
        "outputs": _with_profiled(
            [_tensor(v, seen) for v in node.outputs], measured and measured[1]
        ),
        "time": _times(node, profiles or {}),
        "error": _errors(node, comparison),
        "histogram": _histogram(node, intermediates),
    }


def group_detail(group: str, members: Sequence[str]) -> dict[str, Any]:
    """What the panel shows for a collapsed group: its members."""
    return {"kind": "group", "name": f"group:{group}", "group": group, "members": list(members)}


# -- drawing -------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.4g}"
    return html.escape(str(x))


def _shape_rows(title: str, tensors: list[dict[str, Any]]) -> str:
    rows = []
    for t in tensors:
        if not t["name"]:
            continue
        shape = "?" if t["shape"] is None else "x".join(str(d) for d in t["shape"]) or "scalar"
        extra = ""
        if "stats" in t:
            s = t["stats"]
            extra = f" (weight: min {s['min']:.3g}, max {s['max']:.3g}, std {s['std']:.3g})"
        cells = [title, f"<code>{html.escape(t['name'])}</code>", html.escape(shape)]
        cells += [html.escape(t["dtype"]), html.escape(t["source"] + extra)]
        rows.append("<tr>" + "".join(f"<td style='{_TD}'>{c}</td>" for c in cells) + "</tr>")
    return "".join(rows)


def detail_html(d: Mapping[str, Any]) -> str:
    """The detail dict as a compact HTML block."""
    if d.get("kind") == "group":
        members = ", ".join(html.escape(m) for m in d["members"][:20])
        more = f" and {len(d['members']) - 20} more" if len(d["members"]) > 20 else ""
        return (
            f"<b>group {html.escape(d['group'])}</b>: {len(d['members'])} nodes, "
            f"expanded in the graph<br><small>{members}{more}</small>"
        )
    parts = [
        f"<b>{html.escape(d['name'])}</b> &nbsp; <code>{html.escape(d['op'])}</code>"
        f" <small>({html.escape(d['domain'])}, in the {html.escape(d['graph'])} graph)</small>"
    ]
    if d["origin"] != (d["name"],):
        parts.append(f"<br><small>from: {html.escape(', '.join(d['origin']))}</small>")
    if d["fate"]:
        parts.append(f"<br><small>optimization: {html.escape(d['fate'])}</small>")
    if d["attributes"]:
        attrs = "; ".join(f"{html.escape(k)}={html.escape(v)}" for k, v in d["attributes"].items())
        parts.append(f"<br><small>attributes: {attrs}</small>")
    head = "".join(
        f"<th style='{_TD}; text-align:left'>{h}</th>"
        for h in ("", "value", "shape", "dtype", "from")
    )
    parts.append(
        f"<table style='border-collapse:collapse; margin:4px 0'><tr>{head}</tr>"
        + _shape_rows("in", d["inputs"])
        + _shape_rows("out", d["outputs"])
        + "</table>"
    )
    if d["time"]:
        cells = ", ".join(
            f"{html.escape(b)} {t['median_ms']:.4f} ms ({t['pct']:.1f}%)"
            + (f" in kernel {html.escape(t['kernel'])}" if t["kernel"] != d["name"] else "")
            for b, t in d["time"].items()
        )
        parts.append(f"time (median): {cells}")
    else:
        parts.append("<small>time: profile to see it</small>")
    if d["error"]:
        for pair, e in d["error"].items():
            cells = ", ".join(f"{k} {_fmt(e[k])}" for k in _ERROR_COLUMNS if k in e)
            parts.append(f"<br>error {html.escape(pair)} ({html.escape(e['value'])}): {cells}")
    else:
        parts.append("<br><small>error: compare to see it</small>")
    return f"<div style='{_BLOCK}'>" + "".join(parts) + "</div>"


class DetailPanel(widgets.VBox):
    """The panel: an HTML block plus a histogram of the node's output values."""

    def __init__(self) -> None:
        self.text = widgets.HTML("<i>click a node in the graph</i>")
        self.hist = widgets.Box()
        super().__init__([self.text, self.hist])

    def show(self, d: Mapping[str, Any]) -> None:
        self.text.value = detail_html(d)
        h = d.get("histogram")
        if not h:
            self.hist.children = ()
            return
        import plotly.graph_objects as go

        from .figures import static

        centers = (h["edges"][:-1] + h["edges"][1:]) / 2
        fig = go.Figure(
            go.Bar(x=centers, y=h["counts"], name=h["value"], marker_color="#1f77b4"),
            layout={
                "height": 220,
                "margin": {"l": 40, "r": 10, "t": 30, "b": 30},
                "title": {"text": f"values of {h['value']} ({h['backend']})", "font": {"size": 12}},
                "bargap": 0.05,
                "template": "plotly_white",
            },
        )
        self.hist.children = (static(fig),)

    def clear(self) -> None:
        self.text.value = "<i>click a node in the graph</i>"
        self.hist.children = ()
