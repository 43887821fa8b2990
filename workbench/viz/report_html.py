"""`report(model)`: one self-contained HTML file with the graph, timing, memory and accuracy.

    wb.viz.report("resnet18", backends=["x86"], path="report.html")
    workbench report resnet18 --backends x86 -o report.html

The work is done in two halves. `collect` runs what takes time (optimize, a profile per
backend, a comparison against the reference); `wb.profile` and `wb.compare` save to the run
store as soon as each result exists, so nothing measured is lost if a later step fails.
`render` then draws every section from those results; a section whose figure fails gets
an error box and the others are still written (and the failure is said on stderr).

The file carries plotly.js once, inlined in <head>, so it opens offline and from file://.
Every section is a `<section id="...">` (summary, graph, fusion, timing, memory, roofline,
accuracy) so a reader can link to it and a test can find it.
"""

from __future__ import annotations

import html
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from ._style import backend_color, fmt_bytes, fmt_ms

REFERENCE = "reference"
EMULATED_REPEAT = 1  # timed runs on an emulated backend


# -- collecting ---------------------------------------------------------------------------------


@dataclass
class ReportData:
    """What a report is drawn from; a failed step leaves its exception in `errors`."""

    model: Any  # workbench Model
    backends: list[str]
    level: int
    precision: str
    repeat: int
    optimized: Any = None  # OptimizeResult
    profiles: dict[str, Any] = field(default_factory=dict)  # backend -> Profile
    comparison: Any = None  # Comparison of the non-reference backends vs reference
    errors: dict[str, BaseException] = field(default_factory=dict)  # step -> what went wrong
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)  # progress lines count from here


class _Progress:
    """One line per step on stderr (a report is a batch job: lines, not bars)."""

    def __init__(self, enabled: bool, t0: float | None = None) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter() if t0 is None else t0

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.t0
            print(f"report [{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def _load(model: Any) -> Any:
    """A Model as given, or loaded from a path, bytes, a ModelProto or a zoo name."""
    from ..engine import load
    from ..engine.model import Model

    if isinstance(model, Model):
        return model
    if isinstance(model, str) and not os.path.exists(model) and not model.endswith(".onnx"):
        from .. import zoo

        if model in zoo.names():
            return load(zoo.get(model))
    return load(model)


def default_backends() -> list[str]:
    """Every backend available here except the reference (the reference alone if none)
    and except emulated ones (arm under QEMU takes minutes: name it to include it)."""
    from ..engine.backends import backends

    names = [
        b.name for b in backends() if b.available and b.name != REFERENCE and b.mode != "emulated"
    ]
    return names or [REFERENCE]


def _check_backends(names: Sequence[str], precision: str) -> list[str]:
    from ..engine.backends import backends
    from ..errors import WorkbenchError

    infos = {b.name: b for b in backends()}
    out: list[str] = []
    for name in names:
        info = infos.get(name)
        if info is None:
            raise WorkbenchError(f"unknown backend {name!r}; known: {', '.join(infos)}")
        if not info.available:
            raise WorkbenchError(f"backend {name!r} is not available here: {info.reason}")
        if precision not in info.precisions:
            raise WorkbenchError(
                f"backend {name!r} has no precision {precision!r}; it has: "
                + ", ".join(info.precisions)
            )
        if name not in out:
            out.append(name)
    if not out:
        raise WorkbenchError("a report needs at least one backend")
    return out


def collect(
    model: Any,
    backends: Sequence[str] | str | None = None,
    level: int = 2,
    precision: str = "fp32",
    repeat: int = 10,
    progress: bool = True,
) -> ReportData:
    """Optimize, profile on every backend and compare with the reference: the slow half
    of `report`. A step that fails is recorded in `errors`, the others still run."""
    from ..engine.executor import Session
    from ..engine.passes import optimize
    from ..profiler import compare, profile

    say = _Progress(progress)
    if isinstance(backends, str):
        backends = [b for b in backends.split(",") if b.strip()]
    names = _check_backends(backends if backends else default_backends(), precision)
    source = _load(model)
    data = ReportData(source, names, level, precision, repeat, started=say.t0)
    say(f"{source.name}: {len(source.graph.nodes)} nodes; backends {', '.join(names)}")

    def step(key: str, what: str, fn: Callable[[], Any]) -> Any:
        say(what)
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # kept for its section's error box; the other steps go on
            data.errors[key] = e
            say(f"{what} FAILED: {type(e).__name__}: {e}")
            return None
        finally:
            data.seconds[key] = time.perf_counter() - t0

    target = next((b for b in names if b != REFERENCE), names[0])
    data.optimized = step(
        "optimize",
        f"optimizing at level {level} for {target}",
        lambda: optimize(source, level, target),
    )
    modes = _modes()
    for b in names:
        # the reference runs the graph as given, as `workbench run` does
        lvl = 0 if b == REFERENCE else level
        emulated = modes.get(b) == "emulated"
        # an emulated backend's times say nothing about its hardware and each run is slow
        # (resnet18 under QEMU: ~25 s): one timed run shows where the time goes
        reps, warmup = (min(repeat, EMULATED_REPEAT), 1) if emulated else (repeat, 3)

        def run(b: str = b, lvl: int = lvl, reps: int = reps, warmup: int = warmup) -> Any:
            sess = Session(source, b, precision=precision, level=lvl)
            return profile(sess, repeat=reps, warmup=warmup, progress=False, name=source.name)

        what = f"profiling on {b} ({precision}, level {lvl}, {reps} run{'s' * (reps != 1)}"
        what += ", emulated)" if emulated else ")"
        prof = step(f"profile:{b}", what, run)
        if prof is not None:
            data.profiles[b] = prof
            say(f"  {b}: median {fmt_ms(prof.latency_ms)}; saved in {prof.path}")
    tested = [b for b in names if b != REFERENCE]
    if tested:
        data.comparison = step(
            "compare",
            f"comparing {', '.join(tested)} with {REFERENCE} (fp64)",
            lambda: compare(source, tested, level=level, progress=False),
        )
    return data


# -- rendering ----------------------------------------------------------------------------------

# A part of a section: a figure (with an optional script run after it is drawn) or HTML.
Part = go.Figure | tuple[go.Figure, str] | str


class SectionError(Exception):
    """A section cannot be drawn because a step it depends on failed."""


def _needs(data: ReportData, *keys: str) -> None:
    for key in keys:
        if key in data.errors:
            e = data.errors[key]
            raise SectionError(f"{key} failed: {type(e).__name__}: {e}") from e


def _profiles(data: ReportData) -> list[Any]:
    for b in data.backends:
        _needs(data, f"profile:{b}")
    return [data.profiles[b] for b in data.backends]


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _modes() -> dict[str, str]:
    from ..engine.backends import backends

    return {b.name: b.mode for b in backends()}


def _emulated(prof: Any, mode: str) -> bool:
    meta = prof.meta if prof is not None else {}
    return bool(meta.get("emulated")) or meta.get("mode") == "emulated" or mode == "emulated"


def _machine_line(machine: dict[str, Any]) -> str:
    peak, bw = machine.get("peak_gflops"), machine.get("mem_gbps")
    roof = f"{peak:.0f} GFLOP/s peak, {bw:.1f} GB/s" if peak and bw else "roofline not measured"
    return (
        f"{machine.get('cpu', '?')} ({machine.get('arch', '?')}), "
        f"threads in use: {machine.get('threads', '?')}; {roof}"
    )


def section_summary(data: ReportData) -> list[Part]:
    m = data.model
    machines: dict[str, list[str]] = {}  # one line per distinct machine: its backends
    for b, p in data.profiles.items():
        machines.setdefault(_machine_line(p.machine), []).append(b)
    if not machines:
        from ..profiler import machine_info

        machines[_machine_line(machine_info(measure=False))] = []
    items = [("model", f"{m.name} ({len(m.graph.nodes)} nodes)")]
    for line, bs in machines.items():
        items.append(("machine", f"{line} [{', '.join(bs)}]" if len(machines) > 1 else line))
    items += [
        ("backends", ", ".join(data.backends)),
        ("precision", data.precision),
        ("opt level", str(data.level)),
        ("timed runs", f"{data.repeat} per backend ({EMULATED_REPEAT} on an emulated one)"),
    ]
    if data.optimized is not None:
        before = len(data.optimized.before.graph.nodes)
        after = len(data.optimized.after.graph.nodes)
        items.append(("optimization", f"{before} -> {after} nodes at level {data.level}"))
    parts: list[Part] = [
        "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items) + "</dl>"
    ]
    modes = _modes()
    rows = []
    for b in data.backends:
        p = data.profiles.get(b)
        mode = modes.get(b, "?")
        flag = "EMULATED (times are not the target's)" if _emulated(p, mode) else mode
        if p is None:
            rows.append((b, flag, "failed", "", "", "", "", ""))
            continue
        s = p.meta.get("summary", {})
        rows.append(
            (
                b,
                flag,
                fmt_ms(p.latency_ms),
                f"{fmt_ms(p.latency['min'])} .. {fmt_ms(p.latency['max'])}",
                str(len(p.runs)),
                f"{len(p.kernels)} ({int(p.kernels['fallback'].sum())} fallback)",
                fmt_bytes(p.meta["memory"]["arena_bytes"]) if p.meta.get("memory") else "-",
                f"{s.get('gflop_s', float('nan')):.1f}",
            )
        )
    headers = ("backend", "mode", "median", "min .. max", "runs", "kernels", "arena", "GFLOP/s")
    parts.append(_table(headers, rows))
    if any(r[1].startswith("EMULATED") for r in rows):
        parts.append(
            '<p class="warn">Some backends ran emulated: their times say nothing about the '
            "real hardware, only their numerics count.</p>"
        )
    if data.profiles:
        fig = go.Figure(
            [
                go.Bar(
                    x=[p.latency_ms],
                    y=[b],
                    orientation="h",
                    name=b,
                    marker_color=backend_color(b),
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": [p.latency["max"] - p.latency_ms],
                        "arrayminus": [p.latency_ms - p.latency["min"]],
                    },
                    hovertemplate=f"{b}: median %{{x:.3f}} ms<extra></extra>",
                )
                for b, p in data.profiles.items()
            ]
        )
        fig.update_layout(
            title="End-to-end latency (median, min..max)",
            xaxis_title="ms",
            height=140 + 40 * len(data.profiles),
            showlegend=False,
            margin={"l": 90, "r": 20, "t": 40, "b": 40},
        )
        parts.append(fig)
    return parts


def section_graph(data: ReportData) -> list[Part]:
    from . import graph

    parts: list[Part] = ["<h3>Before optimization (as loaded), by op type</h3>", graph(data.model)]
    _needs(data, "optimize")
    target = next((b for b in data.backends if b != REFERENCE), None)
    prof = data.profiles.get(target) if target else None
    if prof is not None:
        # the graph as it ran on the first tested backend, coloured by where the time went
        parts.append(
            f"<h3>After optimization (level {data.level}), by kernel time on {_esc(target)}</h3>"
        )
        parts.append(graph([data.optimized, prof], color_by="time", backend=target))
    else:
        parts += [f"<h3>After optimization (level {data.level})</h3>", graph(data.optimized)]
    return parts


def section_fusion(data: ReportData) -> list[Part]:
    from . import fusion_diff
    from .fusion_view import FUSION_HIGHLIGHT_JS

    _needs(data, "optimize")
    res = data.optimized
    parts: list[Part] = [
        "<p>Click a node: the fused node and the original nodes it replaced light up together.</p>",
        (fusion_diff(res), FUSION_HIGHLIGHT_JS),
        f"<pre>{_esc(res.summary())}</pre>",
    ]
    return parts


def section_timing(data: ReportData) -> list[Part]:
    from . import kernel_time, time_ratio, timeline

    profiles = _profiles(data)
    parts: list[Part] = [kernel_time(profiles), timeline(profiles)]
    for other in profiles[1:]:
        parts.append(time_ratio(profiles[0], other))
    top = profiles[0].top(10)
    parts.append(f"<h3>Slowest kernels on {_esc(profiles[0].backend)}</h3>")
    parts.append(
        _table(
            ("node", "op", "algorithm", "median", "%", "shapes"),
            [
                (r.node, r.op, r.algorithm, fmt_ms(r.median_ms), f"{r.pct:.1f}", r.out_shapes)
                for r in top.itertuples()
            ],
        )
    )
    return parts


def section_memory(data: ReportData) -> list[Part]:
    from . import memory

    parts: list[Part] = []
    for p in _profiles(data):
        parts.append(f"<h3>{_esc(p.backend)}</h3>")
        if p.meta.get("memory"):
            parts.append(f"<p>{_esc(p.meta['memory']['summary'])}</p>")
        parts.append(memory(p))
    return parts


def section_roofline(data: ReportData) -> list[Part]:
    from . import roofline

    return [roofline(_profiles(data))]


def section_accuracy(data: ReportData) -> list[Part]:
    from . import error_by_node, graph

    tested = [b for b in data.backends if b != REFERENCE]
    if not tested:
        return ["<p>Only the reference backend ran: there is nothing to compare it with.</p>"]
    _needs(data, "compare")
    cmp = data.comparison
    parts: list[Part] = [error_by_node(cmp)]
    for b in cmp.backends:
        atol, rtol = cmp.tolerance(b)
        d = cmp.first_divergence(backend=b)
        if d is None:
            words = (
                f"{b}: no divergence: every node's own (local) error is within tolerance "
                f"(atol={atol:g}, rtol={rtol:g})."
            )
        else:
            words = str(d)
        parts.append(f'<p class="divergence">{_esc(words)}</p>')
    for b in cmp.backends:
        parts.append(f"<h3>Each node's own (local) error on {_esc(b)}</h3>")
        parts.append(graph([data.model, cmp], color_by="error", pair=b))
    parts.append(f"<pre>{_esc(cmp.summary())}</pre>")
    return parts


# (id, title, builder): the order of the report
SECTIONS: list[tuple[str, str, Callable[[ReportData], list[Part]]]] = [
    ("summary", "Summary", section_summary),
    ("graph", "Graph before and after optimization", section_graph),
    ("fusion", "Fusions", section_fusion),
    ("timing", "Timing", section_timing),
    ("memory", "Memory", section_memory),
    ("roofline", "Roofline", section_roofline),
    ("accuracy", "Accuracy against the reference", section_accuracy),
]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1300px; padding: 0 1em;
       color: #222; }
nav { position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #ddd;
      z-index: 10; }
nav a { margin-right: 1em; }
section { margin: 1.5em 0; scroll-margin-top: 3em; }  /* headings clear the sticky nav */
h2 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: 90%; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { font-weight: bold; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 85%; }
.error { border: 2px solid #d62728; background: #fde8e8; padding: .6em 1em; }
.warn { color: #8a5300; }
.divergence { font-family: monospace; }
"""


def _figure_html(fig: go.Figure, div_id: str, post_script: str | None) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,  # inlined once in <head>
        div_id=div_id,
        post_script=post_script,
        config={"displaylogo": False, "responsive": True},
    )


def _render_section(sid: str, title: str, parts: list[Part]) -> str:
    out = []
    n = 0
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        fig, script = part if isinstance(part, tuple) else (part, None)
        out.append(_figure_html(fig, f"{sid}-fig{n}", script))
        n += 1
    return "\n".join(out)


def _error_box(sid: str, e: BaseException) -> str:
    if isinstance(e, SectionError):
        detail = ""
    else:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        detail = f"<details><summary>traceback</summary><pre>{_esc(tb)}</pre></details>"
    return (
        f'<div class="error" id="{sid}-error"><b>This section could not be drawn:</b> '
        f"{_esc(type(e).__name__)}: {_esc(e)}{detail}</div>"
    )


def render(
    data: ReportData, path: str | os.PathLike = "report.html", progress: bool = True
) -> dict[str, BaseException]:
    """Write the report of `data` to `path`; returns the sections that failed (id -> error).

    Each section is drawn on its own: one that fails becomes an error box and is said on
    stderr, the others are written."""
    from plotly.offline import get_plotlyjs

    say = _Progress(progress, data.started)
    failed: dict[str, BaseException] = {}
    bodies = []
    for sid, title, build in SECTIONS:
        t0 = time.perf_counter()
        try:
            body = _render_section(sid, title, build(data))
        except Exception as e:  # one broken figure must not cost the whole report
            failed[sid] = e
            body = _error_box(sid, e)
            print(
                f"report: section {sid!r} failed: {type(e).__name__}: {e}",
                file=sys.stderr,
                flush=True,
            )
        else:
            say(f"section {sid} drawn in {time.perf_counter() - t0:.1f}s")
        bodies.append(f'<section id="{sid}">\n<h2>{_esc(title)}</h2>\n{body}\n</section>')
    nav = "".join(f'<a href="#{sid}">{_esc(title.split()[0])}</a>' for sid, title, _ in SECTIONS)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    title = f"workbench report: {data.model.name}"
    doc = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>{_esc(title)}</h1>
<p>Written {stamp} by workbench. Backends: {_esc(", ".join(data.backends))};
precision {_esc(data.precision)}; opt level {data.level}.</p>
<nav>{nav}</nav>
{"".join(bodies)}
</body>
</html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a report
    say(f"written to {path} ({fmt_bytes(path.stat().st_size)})")
    return failed


def report(
    model: Any,
    backends: Sequence[str] | str | None = None,
    path: str | os.PathLike = "report.html",
    level: int = 2,
    precision: str = "fp32",
    repeat: int = 10,
    progress: bool = True,
) -> Path:
    """Profile `model` on `backends` (default: every available one but the reference),
    compare them with the reference, and write one self-contained HTML report to `path`.

    `model`: a Model, a path, bytes, an onnx.ModelProto or a zoo name. `level`: the opt
    level of the backends (the reference runs the graph as given). `repeat`: timed runs per
    backend (an emulated backend gets `EMULATED_REPEAT`: its times are not its hardware's,
    and the summary flags it). Progress lines go to stderr. Returns the path written.
    """
    data = collect(model, backends, level, precision, repeat, progress)
    render(data, path, progress)
    return Path(path)


__all__ = ["ReportData", "collect", "default_backends", "render", "report"]
