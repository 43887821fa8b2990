"""The Explorer dashboard driven through its traits, and the HTML reprs.

One Explorer on tiny_bert (x86 and reference, level 2, 2 timed runs) is shared by the
module: run, profile and compare once, then every test reads the state a click, a group
expansion or an error leaves behind. Clicks go through the message a browser sends
(`FigureWidget._js2py_pointsCallback`), so plotly's own dispatch reaches the callback.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import pytest

import workbench as wb
from workbench.widgets import reprs
from workbench.widgets.detail import node_detail
from workbench.widgets.explorer import Explorer
from workbench.widgets.figures import MIME


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Explorer:
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_RUNS", str(tmp_path_factory.mktemp("runs")))
    # collapse=True: tiny_bert is small enough to be drawn open by default
    e = Explorer("tiny_bert", backends=["x86", "reference"], level=2, repeat=2, collapse=True)
    assert e.error == ""
    assert e.run() is not None, e.error
    assert e.profile() is not None, e.error
    yield e
    mp.undo()


def _click(fig: go.FigureWidget, trace_index: int, point: int) -> None:
    """What the browser sends when a point is clicked."""
    fig._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {
            "trace_indexes": [trace_index],
            "point_indexes": [point],
            "xs": [0],
            "ys": [0],
        },
        "device_state": None,
    }


def _is_chart(w: object) -> bool:
    """A static chart: an Output holding the plotly mime bundle of its `.figure`."""
    if not isinstance(w, widgets.Output) or not isinstance(getattr(w, "figure", None), go.Figure):
        return False
    (out,) = w.outputs
    data = out["data"][MIME]
    return len(data["data"]) == len(w.figure.data) and data["config"]["displaylogo"] is False


def _nodes(fig: go.FigureWidget) -> tuple[int, list[str]]:
    index = fig.layout.meta["node_trace"]
    assert fig.data[index].name == "nodes"
    return index, [row[0] for row in fig.data[index].customdata]


def test_selectors_show_what_is_available(ex: Explorer) -> None:
    infos = wb.backends()
    for info in infos:
        box = ex.backend_boxes[info.name]
        assert box.disabled == (not info.available)
        if not info.available:
            assert html.escape(info.reason) in ex.unavailable.value
    assert ex.backends == ["reference", "x86"]  # registry order
    assert ex.level == 2 and ex.precision == "fp32"


def test_click_on_a_node_fills_the_detail_panel(ex: Explorer) -> None:
    fig = ex.graph_figure
    assert isinstance(fig, go.FigureWidget)
    index, keys = _nodes(fig)
    sess = ex.sessions["reference"]  # the graph is the first ticked backend's
    x86_nodes = {s.node.name for s in ex.sessions["x86"].plan.steps}
    plan_nodes = [s.node.name for s in sess.plan.steps]
    # a node of the graph on screen that the x86 plan has too (not fused differently)
    point = next(i for i, k in enumerate(keys) if k in plan_nodes[5:] and k in x86_nodes)
    name = keys[point]
    before = ex.detail_panel.text.value

    _click(fig, index, point)

    assert ex.selected_node == name
    d = ex.detail
    node = next(n for n in sess.model.graph.nodes if n.name == name)
    assert d["name"] == name and d["op"] == node.op_type
    # shapes as the run saw them
    kept = ex.intermediates["reference"]
    out = node.outputs[0].name
    assert d["outputs"][0]["shape"] == list(kept[out].shape)
    assert d["outputs"][0]["source"] == "run"
    # time per backend: the profile's own median for this kernel
    k = ex.profiles["reference"].kernels
    assert d["time"]["reference"]["median_ms"] == float(
        k.loc[k["node"] == name, "median_ms"].iloc[0]
    )
    k86 = ex.profiles["x86"].kernels
    assert d["time"]["x86"]["median_ms"] == float(k86.loc[k86["node"] == name, "median_ms"].iloc[0])
    # a histogram of the node's output values, counting every finite element
    h = d["histogram"]
    assert h is not None and int(np.sum(h["counts"])) == int(np.isfinite(kept[h["value"]]).sum())
    # the panel shows it
    assert ex.detail_panel.text.value != before
    assert name in ex.detail_panel.text.value and node.op_type in ex.detail_panel.text.value
    (hist,) = ex.detail_panel.hist.children  # the histogram figure
    assert _is_chart(hist) and list(hist.figure.data[0].y) == list(h["counts"])
    assert list(fig.data[index].selectedpoints) == [point]


def test_a_fused_node_shows_its_origin(ex: Explorer) -> None:
    sess = ex.sessions["x86"]
    fused = next(n for n in sess.model.graph.nodes if len(n.meta.get("origin", ())) > 1)
    d = ex.select(fused.name)
    assert d["origin"] == tuple(fused.meta["origin"])
    assert d["domain"] == "workbench"
    assert d["time"]["x86"]["kernel"] == fused.name
    # one of its originals, looked up in the loaded graph: time of the kernel it went into
    orig = node_detail(
        fused.meta["origin"][0],
        [("loaded", ex.model.graph)],
        profiles={"x86": ex.profiles["x86"]},
        fates=sess.optimized.fates(),
    )
    assert orig["time"]["x86"]["kernel"] == fused.name
    assert fused.name in orig["fate"]


def test_without_a_run_shapes_come_from_the_profile(ex: Explorer) -> None:
    sess = ex.sessions["x86"]
    k = ex.profiles["x86"].kernels
    node = next(n for n in sess.model.graph.nodes if len(n.outputs) == 1)
    d = node_detail(node.name, [("x86", sess.model.graph)], profiles={"x86": ex.profiles["x86"]})
    (out,) = d["outputs"]
    assert out["source"] == "profile"
    assert "x".join(map(str, out["shape"])) == k.loc[k["node"] == node.name, "out_shapes"].iloc[0]


def test_selecting_a_group_expands_it(ex: Explorer) -> None:
    fig = ex.graph_figure
    index, keys = _nodes(fig)
    groups = fig.layout.meta["groups"]
    point = next((i for i, k in enumerate(keys) if k.startswith("group:")), None)
    if point is None:
        pytest.skip(f"the graph of {ex.model.name} has no collapsed group to expand")
    gid = keys[point][len("group:") :]
    _click(fig, index, point)
    assert ex.selected_node == f"group:{gid}"
    assert ex.detail["kind"] == "group" and ex.detail["members"] == list(groups[gid])
    assert gid in ex.expanded
    assert ex.graph_figure is fig  # refilled in place, not a new widget
    _, after = _nodes(ex.graph_figure)
    assert f"group:{gid}" not in after
    assert set(groups[gid]) <= set(after)


def test_profile_fills_timing_and_memory(ex: Explorer) -> None:
    assert set(ex.profiles) == {"reference", "x86"}
    timing = ex.timing_tab.children
    assert all(_is_chart(c) for c in timing), [getattr(c, "value", "") for c in timing]
    # kernel time by node, by op, the timeline, one time ratio (2 backends), the roofline
    assert len(timing) == 5
    ratio = timing[3].figure
    assert "x86" in ratio.layout.title.text and "reference" in ratio.layout.title.text
    memory = ex.memory_tab.children
    assert len(memory) == 2 and all(_is_chart(c) for c in memory)
    assert ex.progress.value == ex.progress.max and "profile done" in ex.status.value


def test_graph_colours_by_what_was_measured(ex: Explorer) -> None:
    try:
        ex.color_w.value = "local_error"  # nothing compared yet: op types, and why
        assert ex.comparison is None and ex.error == ""
        assert ex.graph_figure.layout.meta["color_by"] == "op"
        assert "needs a comparison" in ex.status.value
        ex.color_w.value = "time"
        meta = ex.graph_figure.layout.meta
        assert meta["color_by"] == "time" and meta["backend"] == "reference"
        # the colour value of a node is the profile's median for it
        k = ex.profiles["reference"].kernels.set_index("node")["median_ms"]
        rows = ex.graph_figure.data[meta["node_trace"]].customdata
        node_rows = [r for r in rows if r[2] == "node" and r[0] in k.index]
        assert node_rows
        for name, value, _ in node_rows:
            assert value == pytest.approx(k[name])
    finally:
        ex.color_w.value = "op"


def test_compare_fills_accuracy_and_the_detail(ex: Explorer) -> None:
    c = ex.compare()
    assert c is not None, ex.error
    assert ex.comparison is c and c.backends == ["reference", "x86"]
    text = ex.accuracy_tab.children[0].value
    for b in c.backends:
        d = c.first_divergence(backend=b)
        assert (d.node if d else "no first divergence") in text
    assert _is_chart(ex.accuracy_tab.children[1]) and _is_chart(ex.accuracy_tab.children[2])
    # the detail of a node now carries its error per backend pair, from the comparison
    t = c.tensors[c.tensors["backend"] == "x86"]
    row = t.iloc[len(t) // 2]
    d = ex.select(row["node"])
    e = d["error"]["x86 vs reference"]
    worst = t[t["node"] == row["node"]]["local_max_abs"].max()
    assert e["local_max_abs"] == pytest.approx(worst, nan_ok=True)
    assert "x86 vs reference" in ex.detail_panel.text.value
    # its error histogram per backend pair in the Accuracy tab
    assert len(ex.error_hist_box.children) == 2
    assert all(_is_chart(c) for c in ex.error_hist_box.children)


def test_fusion_tab_highlights_partners(ex: Explorer) -> None:
    fig = ex.fusion_figure
    assert isinstance(fig, go.FigureWidget), ex.fusion_tab.children
    res = ex.sessions["reference"].optimized  # the first ticked backend's optimization
    fused = next(n for n in res.after.graph.nodes if len(n.meta.get("origin", ())) > 1)
    after = next(i for i, t in enumerate(fig.data) if t.name == "after nodes")
    point = next(i for i, row in enumerate(fig.data[after].customdata) if row[0] == fused.name)
    _click(fig, after, point)  # a click in the "after" panel
    got = ex.fusion_highlight
    assert ex.error == ""
    assert got["after"] == [fused.name]
    assert set(got["before"]) == set(fused.meta["origin"])
    before = next(t for t in fig.data if t.name == "before nodes")
    picked = {before.customdata[i][0] for i in before.selectedpoints}
    assert picked == set(fused.meta["origin"])
    assert list(fig.data[after].selectedpoints) == [point]


def test_errors_are_shown_and_the_widget_survives(ex: Explorer) -> None:
    ex.select("no/such/node")
    assert "no node named 'no/such/node'" in ex.error
    assert "no/such/node" in ex.error_area.value
    # an error from the public API (wb.profile refuses repeat=0)
    ex.repeat = 0
    try:
        assert ex.profile() is None
    finally:
        ex.repeat = 2
    assert "repeat must be at least 1" in ex.error
    assert ex.progress.bar_style == "danger" and not ex.busy
    assert not ex.profile_b.disabled  # buttons come back
    # nothing ticked
    ticked = {n: b.value for n, b in ex.backend_boxes.items()}
    for b in ex.backend_boxes.values():
        b.value = False
    try:
        assert ex.run() is None and "tick at least one" in ex.error
    finally:
        for n, v in ticked.items():
            ex.backend_boxes[n].value = v
    # still usable: the next action clears the error
    ex.select(ex.sessions["x86"].plan.steps[0].node.name)
    assert ex.error == "" and ex.error_area.value == ""


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(wb.WorkbenchError, match="neither a file nor a zoo model"):
        Explorer("no_such_model")


def test_reprs_carry_the_key_numbers(ex: Explorer) -> None:
    m = ex.model
    h = reprs.model_html(m)
    n_params = sum(int(v.const.size) for v in m.graph.initializers.values())
    assert m.name in h and f"{len(m.graph.nodes)} nodes" in h
    assert reprs._count(n_params) in h

    # once profiled, the compiled model's nodes carry their FLOPs (node.meta["prof"])
    p = ex.profiles["x86"]
    h = reprs.model_html(ex.sessions["x86"].model)
    assert f"{p.flops / 1e9:.3g} GFLOP per run (profiled)" in h

    h = reprs.profile_html(p)
    assert f"{p.latency['median']:.3f} ms" in h and "x86" in h and "fp32" in h
    assert p.kernels.nlargest(1, "median_ms")["node"].iloc[0] in h
    assert "native" in h  # the emulated flag: x86 runs natively here

    c = ex.comparison
    h = reprs.comparison_html(c)
    for b in c.backends:
        d = c.first_divergence(backend=b)
        assert (d.node if d else "no divergence") in h
        assert c.worst(1, backend=b)["node"].iloc[0] in h


def test_profile_repr_flags_emulated_timing(ex: Explorer) -> None:
    p = ex.profiles["x86"]
    fake = type(p)(p.kernels, p.runs, {**p.meta, "emulated": True}, p.stamps, p.bounds)
    assert "emulated: times are not the target's" in reprs.profile_html(fake)


def test_an_unavailable_backend_asked_for_is_unticked_with_its_reason() -> None:
    gone = next((b for b in wb.backends() if not b.available), None)
    if gone is None:
        pytest.skip("every backend is available on this machine")
    e = Explorer(wb.load(wb.zoo.get("tiny_resnet")), backends=["x86", gone.name], level=0)
    assert e.backends == ["x86"]
    assert gone.name in e.error and gone.reason in e.error
