"""Short HTML summaries of a Model, a Profile and a Comparison, for notebooks' rich reprs.

Each function returns a small self-contained HTML block (no scripts, no plotly): the
numbers a person looks at first. `Model._repr_html_` and friends call these.
"""

from __future__ import annotations

import html
import math
from typing import Any

_STYLE = "font-family: sans-serif; font-size: 13px; line-height: 1.4"
_TABLE = "border-collapse: collapse; font-size: 12px; margin-top: 4px"


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, spec: str = ".3g") -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return _esc(x)
    if math.isnan(f):
        return "n/a"
    return format(f, spec)


def _count(n: float) -> str:
    """1234567 -> '1.23 M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th style='text-align:left; padding:0 8px 0 0'>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:0 8px 0 0'>{c}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table style='{_TABLE}'><tr>{th}</tr>{body}</table>"


def _shape(v: Any) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in (v.shape or ())) + "]"


def model_html(model: Any) -> str:
    """Name, nodes, op types, parameters, inputs/outputs, and FLOPs when a profile has
    written them into the nodes' meta (`node.meta["prof"]`)."""
    g = model.graph
    nodes = list(g.walk())
    counts = model.op_counts()
    sizes = [(math.prod(v.const_shape), v.dtype) for v in g.initializers.values()]
    n_params = sum(n for n, _ in sizes)
    weight_bytes = sum(n * dt.itemsize for n, dt in sizes if dt is not None)
    flops = [n.meta["prof"].get("flops") for n in nodes if "prof" in n.meta]
    known = [f for f in flops if f is not None and f == f]
    line = (
        f"<b>{_esc(model.name)}</b>: {len(nodes)} nodes, {len(counts)} op types, "
        f"{_count(n_params)} parameters ({weight_bytes / 2**20:.1f} MiB), opset {model.opset()}"
    )
    if known:
        line += f", {sum(known) / 1e9:.3g} GFLOP per run (profiled)"
    ins = ", ".join(f"<code>{_esc(v.name)}</code> {_shape(v)}" for v in g.inputs)
    outs = ", ".join(f"<code>{_esc(v.name)}</code> {_shape(v)}" for v in g.outputs)
    top = ", ".join(f"{_esc(op)} {n}" for op, n in counts.most_common(6))
    return (
        f"<div style='{_STYLE}'>{line}<br>inputs: {ins}<br>outputs: {outs}"
        f"<br><small>ops: {top}</small></div>"
    )


def _mode(profile: Any) -> str:
    """How the backend ran: recorded in the profile when it says, else asked of it now."""
    meta = profile.meta
    for where in (meta, meta.get("machine") or {}):
        if "mode" in where:
            return str(where["mode"])
        if "emulated" in where:
            return "emulated" if where["emulated"] else "native"
    try:
        from ..engine.backends import get_backend

        return get_backend(profile.backend, require_available=False).availability().mode + " (now)"
    except Exception:  # a profile of a backend this install does not know
        return "unknown"


def profile_html(profile: Any, top: int = 5) -> str:
    """Latency, kernels, backend, precision, level, whether emulated, and the top kernels."""
    m = profile.meta
    lat = profile.latency
    mode = _mode(profile)
    emulated = mode.startswith("emulated")
    fb = int(profile.kernels["fallback"].sum()) if len(profile.kernels) else 0
    warn = " <b style='color:#d62728'>emulated: times are not the target's</b>" if emulated else ""
    head = (
        f"<b>{_esc(profile.model)}</b> on <b>{_esc(profile.backend)}</b> "
        f"({_esc(m.get('precision', '?'))}, level {_esc(m.get('level', '?'))}, {_esc(mode)}){warn}"
        f"<br>latency median <b>{lat['median']:.3f} ms</b> (min {lat['min']:.3f}, "
        f"max {lat['max']:.3f}) over {len(profile.runs)} runs; "
        f"{len(profile.kernels)} kernels, {fb} fallbacks, {profile.flops / 1e9:.3g} GFLOP"
    )
    rows = [
        [f"<code>{_esc(r.node)}</code>", _esc(r.op), f"{r.median_ms:.4f}", f"{r.pct:.1f}%"]
        for r in profile.kernels.nlargest(top, "median_ms").itertuples()
    ]
    where = f"<br><small>saved in {_esc(profile.path)}</small>" if profile.path else ""
    return (
        f"<div style='{_STYLE}'>{head}"
        + _table(["kernel", "op", "median ms", "share"], rows)
        + f"{where}</div>"
    )


def comparison_html(comparison: Any, top: int = 3) -> str:
    """Per tested backend: tensors, the worst local errors, and the first divergence."""
    m = comparison.meta
    parts = [
        f"<b>{_esc(m['model'])}</b>: {_esc(', '.join(comparison.backends))} vs "
        f"{_esc(m['reference'])} ({_esc(m['reference_precision'])}, level 0), "
        f"{len(comparison.tensors)} tensors"
    ]
    for b in comparison.backends:
        t = comparison.tensors[comparison.tensors["backend"] == b]
        atol, rtol = comparison.tolerance(b)
        d = comparison.first_divergence(backend=b)
        first = (
            f"first divergence at <code>{_esc(d.node)}</code> ({_esc(d.op)}), step {d.topo}"
            if d
            else "no divergence"
        )
        parts.append(
            f"<br><b>{_esc(b)}</b> ({_esc(m['precisions'].get(b, '?'))}, level {_esc(m['level'])},"
            f" atol {atol:g}, rtol {rtol:g}): {len(t)} tensors, "
            f"max local {_num(t['local_max_abs'].max())}, "
            f"max accumulated {_num(t['acc_max_abs'].max())}; {first}"
        )
        worst = comparison.worst(top, kind="local", backend=b)
        rows = [
            [
                f"<code>{_esc(r['node'])}</code>",
                _esc(r["op"]),
                _num(r["local_max_abs"]),
                _num(r["local_max_rel"]),
                _num(r["local_snr_db"], ".1f"),
            ]
            for _, r in worst.iterrows()
        ]
        if rows:
            parts.append(_table(["node", "op", "local max abs", "max rel", "SNR dB"], rows))
    return f"<div style='{_STYLE}'>" + "".join(parts) + "</div>"


__all__ = ["comparison_html", "model_html", "profile_html"]
