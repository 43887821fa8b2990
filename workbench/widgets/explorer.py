"""`Explorer(model)`: a notebook dashboard to run, profile and compare a model, on its graph.

    ex = wb.widgets.Explorer("tiny_bert", backends=["x86"], level=2)
    ex                     # in a notebook: header, selectors, buttons, graph, detail, tabs
    ex.profile()           # what the Profile button does; fills the Timing and Memory tabs
    ex.compare()           # fills the Accuracy tab
    ex.select("/attn/MatMul")   # what a click on that node does; ex.detail holds the facts

Everything is computed through the public API (`wb.Session`, `wb.profile`, `wb.compare`,
`wb.optimize`) and drawn with `wb.viz`; the widget never runs a kernel of its own. A
`WorkbenchError` (or any failure) of an action lands in the error area and leaves the
widget usable. Long work reports progress step by step (compile, run, profile per backend).
"""

from __future__ import annotations

import html
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets
import numpy as np
import traitlets

from ..engine.backends import backends as list_backends
from ..engine.model import Model
from ..engine.passes import LEVELS
from ..errors import WorkbenchError
from . import figures
from .detail import DetailPanel, group_detail, node_detail
from .reprs import model_html

log = logging.getLogger("workbench.widgets")

REFERENCE = "reference"
# graph colourings offered, and what each needs before it can be drawn
COLOR_CHOICES = [
    ("op type", "op"),
    ("time", "time"),
    ("share of time", "share"),
    ("memory (output bytes)", "memory"),
    ("error (local)", "local_error"),
    ("error (accumulated)", "accumulated_error"),
]
_NEEDS_PROFILE = {"time", "share"}
GRAPH_WIDTH = 620  # pixels
_NEEDS_COMPARISON = {"local_error", "accumulated_error"}


def resolve_model(model: Any) -> Model:
    """A Model as given, else loaded from a path, bytes, an onnx.ModelProto or a zoo name."""
    from ..engine.onnx_io import load

    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)) and not os.path.exists(model):
        from .. import zoo

        name = os.fspath(model)
        if name in zoo.names():
            return load(zoo.get(name))
        if not name.endswith(".onnx"):
            raise WorkbenchError(
                f"{name!r} is neither a file nor a zoo model; zoo models: {', '.join(zoo.names())}"
            )
    return load(model)


def _viz(name: str) -> Callable[..., Any]:
    from .. import viz

    return getattr(viz, name)


class Explorer(widgets.VBox):
    """Run, profile and compare a model from a notebook, and look at it on its graph.

    `model`: a Model, a path, an onnx.ModelProto or a zoo name. `backends`: the backends
    ticked at first (default: every available one). `level`, `precision`: the opt level and
    precision the actions use (a backend without that precision runs its default, and the
    status line says so). `repeat`: timed runs per profile (small, to stay responsive);
    `dims`: values of symbolic input dims; `save`: whether profiles and comparisons go to
    the run store as `wb.profile` / `wb.compare` do by default; `collapse`: whether the
    graph draws repeated blocks as one node each ("auto": when the graph is large).

    State for code and tests: `selected_node` (trait), `detail` (dict of the node panel),
    `sessions`, `outputs`, `intermediates` (per backend), `profiles` (backend -> Profile),
    `comparison`, `error` (trait: the last action's failure, "" when it went well).
    """

    selected_node = traitlets.Unicode("")
    error = traitlets.Unicode("")
    busy = traitlets.Bool(False)

    def __init__(
        self,
        model: Any,
        backends: Sequence[str] | str | None = None,
        level: int = 2,
        precision: str = "fp32",
        *,
        repeat: int = 5,
        dims: dict[str, int] | None = None,
        save: bool = True,
        collapse: bool | str = "auto",
    ) -> None:
        self.model = resolve_model(model)
        self.collapse = collapse
        self.repeat = int(repeat)
        self.dims = dict(dims or {})
        self.save = save
        self.sessions: dict[str, Any] = {}
        self.outputs: dict[str, dict[str, np.ndarray]] = {}
        self.intermediates: dict[str, dict[str, np.ndarray]] = {}
        self.profiles: dict[str, Any] = {}
        self.comparison: Any = None
        self.detail: dict[str, Any] = {}
        self.expanded: set[str] = set()
        self.fusion_highlight: dict[str, list[str]] = {}
        self.last_exception: BaseException | None = None
        self._sessions: dict[tuple[str, str, int], Any] = {}
        self.graph_figure: Any = None
        self._profiles_shown: list[int] = []
        self.fusion_figure: Any = None
        self._fusion_result: Any = None

        infos = list_backends()
        self.available = [b.name for b in infos if b.available]
        if isinstance(backends, str):
            backends = [b.strip() for b in backends.split(",") if b.strip()]
        wanted = list(backends) if backends else [b for b in self.available if b != REFERENCE]
        known = {b.name: b for b in infos}
        for b in wanted:
            if b not in known:
                raise WorkbenchError(f"unknown backend {b!r}; known: {', '.join(known)}")
        wanted = wanted or self.available[:1]
        self.backend_boxes: dict[str, widgets.Checkbox] = {}
        for info in infos:
            why = info.reason or info.mode
            box = widgets.Checkbox(
                value=info.available and info.name in wanted,
                description=info.name,
                disabled=not info.available,
                indent=False,
                tooltip=why
                if not info.available
                else f"{info.mode} ({', '.join(info.precisions)})",
                layout=widgets.Layout(width="auto"),
            )
            self.backend_boxes[info.name] = box
        gone = [b for b in infos if not b.available]
        asked_gone = [b for b in wanted if b in known and not known[b].available]
        note = "; ".join(f"<b>{html.escape(b.name)}</b>: {html.escape(b.reason)}" for b in gone)
        self.unavailable = widgets.HTML(f"<small>unavailable here: {note}</small>" if note else "")

        if int(level) not in (0, 1, 2):
            raise WorkbenchError(f"opt level must be 0, 1 or 2, got {level!r}")
        if precision not in {p for b in infos for p in b.precisions}:
            raise WorkbenchError(
                f"no backend has precision {precision!r}; they have: "
                + ", ".join(sorted({p for b in infos for p in b.precisions}))
            )
        precisions = sorted({p for b in infos if b.available for p in b.precisions} | {precision})
        self.level_w = widgets.Dropdown(
            options=sorted(LEVELS), value=int(level), description="level", layout={"width": "130px"}
        )
        self.precision_w = widgets.Dropdown(
            options=precisions,
            value=precision,
            description="precision",
            layout={"width": "170px"},
        )
        self.color_w = widgets.Dropdown(
            options=COLOR_CHOICES, value="op", description="color", layout={"width": "220px"}
        )
        self.color_w.observe(lambda _: self.recolor(), "value")

        self.run_b = widgets.Button(
            description="Run", icon="play", tooltip="run once, keep tensors"
        )
        self.profile_b = widgets.Button(
            description="Profile", icon="clock-o", tooltip=f"time every kernel ({self.repeat} runs)"
        )
        self.compare_b = widgets.Button(
            description="Compare", icon="balance-scale", tooltip="every tensor vs reference fp64"
        )
        self.run_b.on_click(lambda _: self.run())
        self.profile_b.on_click(lambda _: self.profile())
        self.compare_b.on_click(lambda _: self.compare())
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout={"width": "160px"})
        self.status = widgets.HTML("")
        self.error_area = widgets.HTML("")

        self.header = widgets.HTML(model_html(self.model))
        # the figure's width is fixed (GRAPH_WIDTH): a widget view is drawn before it is in
        # the page, so plotly cannot measure its box; the panel takes the rest, or wraps
        self.graph_box = widgets.Box(layout=widgets.Layout(flex="0 0 auto"))
        self.detail_panel = DetailPanel()
        self.detail_panel.layout = widgets.Layout(
            flex="1 1 320px",
            min_width="300px",
            max_height="720px",
            overflow="auto",
            padding="0 0 0 8px",
        )
        self.timing_tab = widgets.VBox([widgets.HTML("<i>profile to see the timing</i>")])
        self.memory_tab = widgets.VBox([widgets.HTML("<i>profile to see the memory</i>")])
        self.accuracy_tab = widgets.VBox([widgets.HTML("<i>compare to see the accuracy</i>")])
        self.fusion_tab = widgets.VBox([widgets.HTML("<i>run at level 1 or 2 to see fusions</i>")])
        self.error_hist_box = widgets.VBox()
        self.tabs = widgets.Tab(
            children=[self.timing_tab, self.memory_tab, self.accuracy_tab, self.fusion_tab]
        )
        for i, title in enumerate(("Timing", "Memory", "Accuracy", "Fusion")):
            self.tabs.set_title(i, title)

        controls = widgets.HBox(
            [
                widgets.HTML("<b>backends</b>&nbsp;"),
                *self.backend_boxes.values(),
                self.level_w,
                self.precision_w,
                self.color_w,
            ],
            layout={"flex_flow": "row wrap", "align_items": "center"},
        )
        actions = widgets.HBox(
            [self.run_b, self.profile_b, self.compare_b, self.progress, self.status],
            layout={"align_items": "center"},
        )
        main = widgets.HBox([self.graph_box, self.detail_panel], layout={"flex_flow": "row wrap"})
        super().__init__(
            [self.header, controls, self.unavailable, actions, self.error_area, main, self.tabs]
        )
        self._guarded("graph", self._refresh_graph)
        if asked_gone:
            gone_text = ", ".join(f"{b!r} ({known[b].reason})" for b in asked_gone)
            self._show_error(
                WorkbenchError(f"backend {gone_text} is not available here; unticked"),
                append=True,
            )

    # -- what the user chose -----------------------------------------------------------------
    @property
    def backends(self) -> list[str]:
        """The ticked backends, in the registry's order."""
        return [name for name, box in self.backend_boxes.items() if box.value and not box.disabled]

    @property
    def level(self) -> int:
        return int(self.level_w.value)

    @property
    def precision(self) -> str:
        return str(self.precision_w.value)

    # -- actions -------------------------------------------------------------------------------
    def run(self) -> dict[str, dict[str, np.ndarray]] | None:
        """Run once on every ticked backend, keeping every intermediate (for the detail
        panel's histograms); returns backend -> outputs, None when it failed."""
        with self._action("run") as step:
            names = self._chosen()
            step.total(2 * len(names))
            for b in names:
                sess = self._session(b, step)
                step(f"running on {b}")
                outs = sess.run(sess.random_feeds(self.dims), keep=True)
                self.outputs[b] = outs
                self.intermediates[b] = dict(sess.intermediates)
                shapes = ", ".join(
                    f"{k} {'x'.join(map(str, np.shape(v))) or 'scalar'}" for k, v in outs.items()
                )
                step.note(f"{b}: {shapes}")
            self._after_action()
            return {b: self.outputs[b] for b in names}
        return None

    def profile(self) -> dict[str, Any] | None:
        """Profile every ticked backend (`repeat` timed runs each); fills Timing and Memory."""
        from ..profiler import profile

        with self._action("profile") as step:
            names = self._chosen()
            step.total(2 * len(names))
            for b in names:
                sess = self._session(b, step)
                step(f"profiling {b} ({self.repeat} runs)")
                self.profiles[b] = profile(
                    sess,
                    repeat=self.repeat,
                    warmup=1,
                    dims=self.dims or None,
                    progress=False,
                    save=self.save,
                    name=self.model.name,
                )
                step.note(f"{b} {self.profiles[b].latency_ms:.3f} ms")
            self._after_action()
            return dict(self.profiles)
        return None

    def compare(self) -> Any:
        """Compare every ticked backend with the reference in fp64; fills Accuracy."""
        from ..profiler import compare

        with self._action("compare") as step:
            names = self._chosen()
            step.total(1)
            step(f"comparing {', '.join(names)} with {REFERENCE} (fp64), every tensor")
            self.comparison = compare(
                self.model,
                names,
                level=self.level,
                dims=self.dims or None,
                progress=False,
                save=self.save,
            )
            differs = [
                b for b, p in self.comparison.meta["precisions"].items() if p != self.precision
            ]
            if differs:  # compare runs each backend in its own default precision
                step.note(f"compared in {self.comparison.meta['precisions']}")
            self._fill_accuracy()
            self._after_action()
            return self.comparison
        return None

    def select(self, name: str) -> dict[str, Any]:
        """What a click on a graph point does: a node name fills the detail panel, a
        "group:<id>" expands that group. Returns the detail dict ({} when it failed)."""
        self._clear_error()
        try:
            if name.startswith("group:"):
                gid = name[len("group:") :]
                groups = self._groups()
                if gid not in groups:
                    raise WorkbenchError(
                        f"no group {gid!r} in the graph; groups: {', '.join(groups) or 'none'}"
                    )
                self.expanded.add(gid)
                self.detail = group_detail(gid, groups[gid])
                self._refresh_graph()
            else:
                self.detail = node_detail(
                    name,
                    self._graphs(),
                    intermediates=self.intermediates,
                    profiles=self.profiles,
                    comparison=self.comparison,
                    fates=self._fates(),
                )
                self._highlight(name)
            self.detail_panel.show(self.detail)
            self._fill_error_histogram()
            self.selected_node = name
        except Exception as e:
            self._show_error(e)
            return {}
        return self.detail

    def recolor(self) -> None:
        """Redraw the graph in the colouring chosen in the `color` selector."""
        self._clear_error()
        self._guarded("graph", self._refresh_graph)

    # -- graph ---------------------------------------------------------------------------------
    def _graph_args(self) -> tuple[list[Any], dict[str, Any]]:
        """What `wb.viz.graph` gets: the graph that ran on the first ticked backend (else the
        model as loaded), every profile and the comparison (their numbers show on hover),
        and the colouring chosen, when what it needs exists (else op type, and the status
        line says what is missing)."""
        primary = next(iter(self.sessions), None)
        objs: list[Any] = []
        if primary is not None:
            objs.append(self.sessions[primary].model)
        objs.append(self.model)  # where the graph of a measurement at another level comes from
        profiles = sorted(self.profiles.items(), key=lambda kv: kv[0] != primary)
        objs += [p for _, p in profiles]
        kw: dict[str, Any] = {"collapse": self.collapse}
        if profiles:
            kw["backend"] = profiles[0][0]
        if self.comparison is not None:
            objs.append(self.comparison)
            if primary in self.comparison.backends:
                kw["pair"] = primary
        color = str(self.color_w.value)
        missing = ""
        if color in _NEEDS_PROFILE and not self.profiles:
            missing = "a profile"
        elif color in _NEEDS_COMPARISON and self.comparison is None:
            missing = "a comparison"
        if missing:
            self.status.value = (
                f"<small>coloring by {html.escape(color)} needs {missing} first</small>"
            )
            color = "op"
        kw["color_by"] = color
        if self.expanded:
            kw["expand"] = sorted(self.expanded)
        return objs, kw

    def _refresh_graph(self) -> None:
        objs, kw = self._graph_args()
        new = _viz("graph")(objs, **kw)
        new.update_layout(width=GRAPH_WIDTH)
        fig = figures.refill(self.graph_figure, new)
        trace = self._node_trace(fig)
        if trace is not None:
            trace.on_click(self._on_node_click)
        if self.graph_figure is None:
            self.graph_figure = fig
            self.graph_box.children = (fig,)

    def _on_node_click(self, trace: Any, points: Any, state: Any = None) -> None:
        """plotly's click callback on the "nodes" trace (also called for clicks elsewhere,
        with no points of this trace)."""
        if not points.point_inds:
            return
        key = trace.customdata[points.point_inds[0]][0]
        self.select(str(key))

    def _node_trace(self, fig: Any = None) -> Any:
        fig = fig if fig is not None else self.graph_figure
        if fig is None:
            return None
        meta = fig.layout.meta or {}
        index = meta.get("node_trace") if isinstance(meta, dict) else None
        if index is None:
            return next((t for t in fig.data if t.name == "nodes"), None)
        return fig.data[index]

    def _highlight(self, name: str) -> None:
        trace = self._node_trace()
        if trace is None or trace.customdata is None:
            return
        hits = [i for i, row in enumerate(trace.customdata) if row[0] == name]
        if hits:
            trace.selectedpoints = hits

    def _groups(self) -> dict[str, list[str]]:
        fig = self.graph_figure
        meta = (fig.layout.meta or {}) if fig is not None else {}
        groups = meta.get("groups") if isinstance(meta, dict) else None
        return {str(k): list(v) for k, v in (groups or {}).items()}

    def _graphs(self) -> list[tuple[str, Any]]:
        """Where a clicked name is looked up: each compiled graph, then the model as loaded."""
        out = [(f"{b} level {s.level}", s.model.graph) for b, s in self.sessions.items()]
        out.append(("loaded", self.model.graph))
        return out

    def _fates(self) -> dict[str, Any]:
        for sess in self.sessions.values():
            if sess.optimized is not None:
                return sess.optimized.fates()
        return {}

    # -- tabs ----------------------------------------------------------------------------------
    def _fill_timing(self) -> None:
        profs = list(self.profiles.values())
        if not profs:
            self.timing_tab.children = (widgets.HTML("<i>profile to see the timing</i>"),)
            self.memory_tab.children = (widgets.HTML("<i>profile to see the memory</i>"),)
            return
        parts = [
            self._chart("kernel_time", profs, by="node"),
            self._chart("kernel_time", profs, by="op"),
            self._chart("timeline", profs),
        ]
        parts += [self._chart("time_ratio", other, profs[0]) for other in profs[1:]]
        parts.append(self._chart("roofline", profs))
        self.timing_tab.children = tuple(parts)

    def _fill_memory(self) -> None:
        if self.profiles:
            charts = tuple(self._chart("memory", p) for p in self.profiles.values())
            self.memory_tab.children = charts

    def _fill_accuracy(self) -> None:
        c = self.comparison
        lines = []
        for b in c.backends:
            d = c.first_divergence(backend=b)
            text = str(d) if d else "every node within tolerance: no first divergence"
            lines.append(f"<b>{html.escape(b)}</b>: {html.escape(text)}")
        self.accuracy_tab.children = (
            widgets.HTML("<br>".join(lines)),
            self._chart("error_by_node", c, kind="local"),
            self._chart("error_by_node", c, kind="accumulated"),
            self.error_hist_box,
        )
        self._fill_error_histogram()

    def _fill_error_histogram(self) -> None:
        """The selected node's error histogram (Accuracy tab), per compared backend."""
        errors = self.detail.get("error") if self.detail.get("kind") == "node" else None
        if self.comparison is None or not errors:
            self.error_hist_box.children = ()
            return
        value = next(iter(errors.values()))["value"]
        self.error_hist_box.children = tuple(
            self._chart("error_histogram", self.comparison, value, backend=b)
            for b in self.comparison.backends
        )

    def _fill_fusion(self) -> None:
        result = next((s.optimized for s in self.sessions.values() if s.optimized), None)
        if result is not None and result is self._fusion_result:
            return  # drawn already: the sessions are cached, so is their optimization
        if result is None:
            self._fusion_result = None
            self.fusion_tab.children = (
                widgets.HTML("<i>level 0: the graph runs as given, nothing fused</i>"),
            )
            return
        self._fusion_result = result
        try:
            fig = figures.refill(self.fusion_figure, _viz("fusion_diff")(result))
        except Exception as e:
            self.fusion_tab.children = (self._chart_error("fusion_diff", e),)
            return
        for trace in fig.data:
            if trace.customdata is not None:
                trace.on_click(self._on_fusion_click)
        self.fusion_figure = fig
        summary = html.escape(result.summary()).replace("\n", "<br>")
        self.fusion_tab.children = (widgets.HTML(f"<small>{summary}</small>"), fig)

    def _on_fusion_click(self, trace: Any, points: Any, state: Any = None) -> None:
        if not points.point_inds:
            return
        self.highlight_fusion(str(trace.customdata[points.point_inds[0]][0]))

    def highlight_fusion(self, node: str) -> dict[str, list[str]]:
        """Select `node` (of either graph) in the fusion view: it and its partners, the
        fused node and the originals it replaced (`viz.fusion_view.fusion_partners`), are
        selected in their panels and the rest fade. Returns {"before": [...], "after": [...]}
        ({} when it failed; the error area says why)."""
        from ..viz.fusion_view import fusion_partners

        self._clear_error()
        try:
            if self._fusion_result is None:
                raise WorkbenchError("nothing fused: run, profile or compare at level 1 or 2")
            partners = fusion_partners(self._fusion_result, node)
        except Exception as e:
            self._show_error(e)
            return {}
        for trace in getattr(self.fusion_figure, "data", ()):
            rows = trace.customdata
            if rows is None or not trace.name or not trace.name.endswith(" nodes"):
                continue
            side = trace.name.split()[0]  # "before nodes" / "after nodes"
            names = set(partners.get(side, ()))
            trace.selectedpoints = [i for i, row in enumerate(rows) if str(row[0]) in names]
        self.fusion_highlight = {k: list(v) for k, v in partners.items()}
        return self.fusion_highlight

    def _chart(self, name: str, *args: Any, **kw: Any) -> widgets.Widget:
        """`wb.viz.<name>(*args, **kw)` as a static figure (`figures.static`; its
        `.figure` is the plotly Figure), or a message saying why it is missing: the tab
        stays usable when one chart fails."""
        try:
            return figures.static(_viz(name)(*args, **kw))
        except Exception as e:
            return self._chart_error(name, e)

    def _chart_error(self, name: str, e: BaseException) -> widgets.HTML:
        bug = not isinstance(e, WorkbenchError)
        log.log(logging.WARNING if bug else logging.DEBUG, "chart %s failed", name, exc_info=e)
        kind = f"{type(e).__name__}: " if bug else ""
        return widgets.HTML(
            f"<span style='color:#d62728'>{html.escape(name)}: {html.escape(kind + str(e))}</span>"
        )

    # -- machinery -----------------------------------------------------------------------------
    def _chosen(self) -> list[str]:
        names = self.backends
        if not names:
            raise WorkbenchError("tick at least one available backend")
        return names

    def _session(self, backend: str, step: Any) -> Any:
        """A compiled session per (backend, precision, level), reused across actions."""
        from ..engine.backends import get_backend
        from ..engine.executor import Session

        info = get_backend(backend)
        precision = self.precision if self.precision in info.precisions else None
        if precision is None:
            step.note(f"{backend} has no {self.precision}: {info.default_precision}")
        key = (backend, precision or info.default_precision, self.level)
        sess = self._sessions.get(key)
        step(f"compiling for {backend} (level {self.level})")
        if sess is None:
            sess = Session(self.model, backend, precision=precision, level=self.level)
            self._sessions[key] = sess
        if self.sessions.get(backend) not in (None, sess):
            # another level or precision: what the old session measured no longer matches
            # the graph on screen
            for held in (self.outputs, self.intermediates, self.profiles):
                held.pop(backend, None)
        self.sessions[backend] = sess
        return sess

    def _after_action(self) -> None:
        """Redraw what depends on the sessions and results; keep the selection."""
        for b in list(self.sessions):
            if b not in self.backends:
                for held in (self.sessions, self.outputs, self.intermediates, self.profiles):
                    held.pop(b, None)
        shown = [id(p) for p in self.profiles.values()]
        if shown != self._profiles_shown:
            self._profiles_shown = shown
            self._fill_timing()
            self._fill_memory()
        # the action's results stand even when a figure fails: say so, do not fail it
        self._guarded("graph", self._refresh_graph)
        self._guarded("fusion", self._fill_fusion)
        if self.selected_node and not self.selected_node.startswith("group:"):
            try:
                self.detail = node_detail(
                    self.selected_node,
                    self._graphs(),
                    intermediates=self.intermediates,
                    profiles=self.profiles,
                    comparison=self.comparison,
                    fates=self._fates(),
                )
                self.detail_panel.show(self.detail)
                self._highlight(self.selected_node)
            except WorkbenchError:  # the node is not in the new graph (fused away)
                pass

    @contextmanager
    def _action(self, what: str) -> Iterator[_Steps]:
        self._clear_error()
        self.busy = True
        buttons = (self.run_b, self.profile_b, self.compare_b)
        for b in buttons:
            b.disabled = True
        steps = _Steps(self.progress, self.status, what)
        try:
            yield steps
            steps.done()
        except Exception as e:
            steps.failed()
            self._show_error(e)
        finally:
            for b in buttons:
                b.disabled = False
            self.busy = False

    def _guarded(self, what: str, fn: Callable[[], Any]) -> None:
        """Run a redraw; a failure goes to the error area (after any error shown already)."""
        try:
            fn()
        except Exception as e:
            self._show_error(e, append=True)

    def _clear_error(self) -> None:
        self.error = ""
        self.error_area.value = ""

    def _show_error(self, e: BaseException, append: bool = False) -> None:
        self.last_exception = e
        if isinstance(e, WorkbenchError):
            text = str(e)
        else:  # a bug, not bad input: say what it was, keep the traceback in the log
            log.error("explorer action failed", exc_info=e)
            text = f"{type(e).__name__}: {e}"
        if append and self.error:
            text = f"{self.error}\n{text}"
        self.error = text
        self.error_area.value = (
            f"<div style='color:#d62728; white-space:pre-wrap'>{html.escape(text)}</div>"
        )

    _repr_as_text = False  # set by %workbench while its cell runs (magics.py)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        if self._repr_as_text:
            return {"text/plain": repr(self)}
        return super()._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return (
            f"<workbench Explorer {self.model.name}: backends {', '.join(self.backends) or '-'}, "
            f"level {self.level}, {self.precision}>"
        )


class _Steps:
    """Step-wise progress: `total(n)`, then `step("what")` per step; notes collect on the
    status line (the profiler has no progress callback, so a step is a compile or a run)."""

    def __init__(self, bar: widgets.IntProgress, status: widgets.HTML, what: str) -> None:
        self.bar, self.status, self.what = bar, status, what
        self.notes: list[str] = []
        self.count = 0
        self.t0 = time.perf_counter()
        bar.bar_style = ""
        bar.value, bar.max = 0, 1

    def total(self, n: int) -> None:
        self.bar.max = max(int(n), 1)
        self.bar.value = 0

    def __call__(self, message: str) -> None:
        # a new step means the one before it is finished
        self.bar.value = min(self.count, self.bar.max)
        self.count += 1
        self.status.value = f"<small>{html.escape(message)}...</small>"

    def note(self, text: str) -> None:
        self.notes.append(text)

    def done(self) -> None:
        self.bar.value = self.bar.max
        self.bar.bar_style = "success"
        took = time.perf_counter() - self.t0
        extra = f": {'; '.join(self.notes)}" if self.notes else ""
        self.status.value = (
            f"<small>{html.escape(self.what)} done in {took:.1f} s{html.escape(extra)}</small>"
        )

    def failed(self) -> None:
        self.bar.bar_style = "danger"
        self.status.value = f"<small>{html.escape(self.what)} failed</small>"


__all__ = ["Explorer", "resolve_model"]
