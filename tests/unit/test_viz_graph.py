"""wb.viz.graph: what the figure holds (nodes, groups, colours, hover, fan-out copies) for a
Model, an OptimizeResult, a Profile and a Comparison; graph_node_info; the layout module."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from onnx import helper

import workbench as wb
from workbench import zoo
from workbench.testing import graph_model
from workbench.viz import _layout
from workbench.viz._groups import scope_groups, structure_groups
from workbench.viz.graph_view import COLOR_BY, graph, graph_node_info, top_color


@pytest.fixture(scope="module")
def tiny_bert():
    return wb.load(zoo.get("tiny_bert"))


@pytest.fixture(scope="module")
def prof(tiny_bert):
    return wb.profile(tiny_bert, backend="x86", repeat=2, warmup=0, save=False, progress=False)


@pytest.fixture(scope="module")
def cmp(tiny_bert):
    return wb.compare(tiny_bert, backends=["x86"], save=False, progress=False)


def nodes_of(fig: go.Figure):
    meta = fig.layout.meta
    assert meta["kind"] == "graph"
    trace = fig.data[meta["node_trace"]]
    assert trace.name == "nodes" and trace.type == "scatter"
    return trace


def trace_named(fig: go.Figure, name: str):
    hits = [t for t in fig.data if t.name == name]
    return hits[0] if hits else None


def test_model_graph_draws_every_node_once(tiny_bert):
    fig = graph(tiny_bert, collapse=False)
    go.Figure(fig.to_dict())  # the figure is valid plotly (built without validation)
    t = nodes_of(fig)
    names = [c[0] for c in t.customdata]
    assert sorted(names) == sorted(n.name for n in tiny_bert.graph.nodes)
    assert len(t.x) == len(t.y) == len(t.marker.color) == len(tiny_bert.graph.nodes)
    # op colouring: a node's colour is its op's colour from the shared style
    from workbench.viz._style import op_color

    by_name = {n.name: n for n in tiny_bert.graph.nodes}
    assert all(
        col == op_color(by_name[c[0]].op_type) for c, col in zip(t.customdata, t.marker.color)
    )
    # top-down: every edge's consumer is drawn below its producer
    pos = {c[0]: (x, y) for c, x, y in zip(t.customdata, t.x, t.y)}
    for n in tiny_bert.graph.nodes:
        for v in n.inputs:
            if v is not None and v.producer is not None:
                assert pos[v.producer.name][1] > pos[n.name][1]
    edges = trace_named(fig, "edges")
    assert edges.mode == "lines" and len(edges.x) > 0
    assert fig.layout.meta["layout"] == "dot"


def test_hover_has_op_attributes_shapes_and_weight_stats(tiny_bert):
    fig = graph(tiny_bert, collapse=False)
    t = nodes_of(fig)
    i = next(k for k, c in enumerate(t.customdata) if c[0].endswith("query/MatMul"))
    node = next(n for n in tiny_bert.graph.nodes if n.name == t.customdata[i][0])
    hover = t.hovertext[i]
    assert "<b>MatMul</b>" in hover and node.name in hover
    x, w = node.inputs
    shape = "[" + ", ".join(str(d) for d in x.shape) + "]"
    assert shape in hover  # [batch, sequence, 32]: symbolic dims as named
    assert f"min {w.const.min():.4g} max {w.const.max():.4g}" in hover
    assert f"std {w.const.std():.4g}" in hover
    # attributes: a Softmax carries its axis
    j = next(k for k, c in enumerate(t.customdata) if c[0].endswith("Softmax"))
    assert "axis = " in t.hovertext[j]


def test_bad_color_by_names_the_valid_ones(tiny_bert):
    with pytest.raises(wb.WorkbenchError) as e:
        graph(tiny_bert, color_by="latency")
    for key in COLOR_BY:
        assert repr(key) in str(e.value)
    assert "needs a Profile" in str(e.value) and "needs a Comparison" in str(e.value)
    with pytest.raises(wb.WorkbenchError, match="needs a Profile"):
        graph(tiny_bert, color_by="time")
    with pytest.raises(wb.WorkbenchError, match="needs a Comparison"):
        graph(tiny_bert, color_by="local_error")
    with pytest.raises(wb.WorkbenchError, match="takes a Model"):
        graph("not a model")


def test_time_colour_puts_the_slowest_node_on_top(prof):
    fig = graph(prof, color_by="time")
    t = nodes_of(fig)
    times = dict(zip(prof.kernels["node"], prof.kernels["median_ms"]))
    assert sorted(c[0] for c in t.customdata) == sorted(times)  # the level-2 graph that ran
    slowest = max(times, key=times.get)
    fastest = min(times, key=times.get)
    colors = {c[0]: col for c, col in zip(t.customdata, t.marker.color)}
    assert colors[slowest] == top_color("time")
    assert colors[fastest] != top_color("time")
    assert {c[0]: c[1] for c in t.customdata}[slowest] == pytest.approx(times[slowest])
    i = [c[0] for c in t.customdata].index(slowest)
    assert "time x86" in t.hovertext[i]
    share = nodes_of(graph(prof, color_by="share"))
    assert {c[0]: col for c, col in zip(share.customdata, share.marker.color)}[
        slowest
    ] == top_color("share")


def test_profile_with_its_model_and_memory_colour(tiny_bert, prof):
    fig = graph([tiny_bert, prof], color_by="memory")
    t = nodes_of(fig)
    values = {c[0]: c[1] for c in t.customdata}
    biggest = max((k for k in values if values[k] is not None), key=values.get)
    colors = dict(zip([c[0] for c in t.customdata], t.marker.color))
    assert colors[biggest] == top_color("memory")
    # the bytes come from the shapes the profiled run saw
    row = prof.kernels.set_index("node").loc[biggest]
    dims = [int(d) for d in row["out_shapes"].split(", ")[0].split("x")]
    assert values[biggest] >= np.prod(dims) * 4


def test_error_colour_follows_the_comparison(cmp):
    fig = graph(cmp, color_by="accumulated_error")
    t = nodes_of(fig)
    tensors = cmp.tensors[cmp.tensors["backend"] == "x86"]
    ref = tensors["ref_max_abs"].where(tensors["ref_max_abs"] > 0, 1.0)
    scaled = (tensors["acc_max_abs"] / ref).groupby(tensors["node"]).max()
    values = {c[0]: c[1] for c in t.customdata}
    for node, v in scaled.items():
        assert values[node] == pytest.approx(v, nan_ok=True)
    worst = scaled.idxmax()
    if scaled.max() > scaled.min():
        colors = dict(zip([c[0] for c in t.customdata], t.marker.color))
        assert colors[worst] == top_color("accumulated_error")
    assert "x86 vs reference" in fig.layout.title.text
    with pytest.raises(wb.WorkbenchError, match="no comparison of backend"):
        graph(cmp, color_by="error", pair=("reference", "cuda"))


def test_groups_collapse_and_expand_by_name(tiny_bert):
    full = len(tiny_bert.graph.nodes)
    fig = graph(tiny_bert, collapse=True)
    meta = fig.layout.meta
    assert sorted(meta["groups"]) == ["encoder.layer.0", "encoder.layer.1"]
    assert meta["collapsed"] == ["encoder.layer.0", "encoder.layer.1"]
    t = nodes_of(fig)
    names = [c[0] for c in t.customdata]
    inside = sum(len(m) for m in meta["groups"].values())
    assert len(names) == full - inside + 2
    assert "group:encoder.layer.1" in names
    g = names.index("group:encoder.layer.1")
    assert f"{len(meta['groups']['encoder.layer.1'])} nodes" in t.hovertext[g]
    opened = graph(tiny_bert, collapse=True, expand=("encoder.layer.1",))
    names2 = [c[0] for c in nodes_of(opened).customdata]
    assert "group:encoder.layer.1" not in names2 and "group:encoder.layer.0" in names2
    assert set(opened.layout.meta["groups"]["encoder.layer.1"]) <= set(names2)
    with pytest.raises(wb.WorkbenchError, match=r"encoder\.layer\.0"):
        graph(tiny_bert, collapse=True, expand=("encoder.layer.7",))


def test_bert_collapses_its_twelve_layers_by_default():
    bert = wb.load(zoo.get("tiny_bert", layers=12))  # bert's graph (777 nodes), tiny weights
    assert len(bert.graph.nodes) == 777
    fig = graph(bert)  # above AUTO_COLLAPSE
    meta = fig.layout.meta
    assert meta["collapsed"] == [f"encoder.layer.{i}" for i in sorted(range(12), key=str)]
    names = [c[0] for c in nodes_of(fig).customdata]
    assert sum(n.startswith("group:") for n in names) == 12
    assert len(names) == 777 - sum(len(m) for m in meta["groups"].values()) + 12
    # the extended attention mask feeds all 12 layers: drawn as copies, not 12 long edges
    assert "/Mul_output_0" in meta["fanout"]
    copies = trace_named(fig, "fan-out copies")
    assert sum(c[0] == "value:/Mul_output_0" for c in copies.customdata) == 12
    opened = graph(bert, expand=("encoder.layer.3",))
    names3 = [c[0] for c in nodes_of(opened).customdata]
    assert "group:encoder.layer.3" not in names3
    assert "/encoder/layer.3/attention/self/Softmax" in names3


def test_fan_out_input_is_drawn_beside_each_reader():
    branches = 6
    nodes = []
    for i in range(branches):
        nodes.append(helper.make_node("Mul", ["x", "x"], [f"m{i}"], name=f"/b{i}/Mul"))
        nodes.append(helper.make_node("Add", [f"m{i}", "mask"], [f"a{i}"], name=f"/b{i}/Add"))
    nodes.append(helper.make_node("Concat", [f"a{i}" for i in range(branches)], ["y"], axis=0))
    model = graph_model(nodes, [("x", [2, 3]), ("mask", [2, 3])], [("y", [12, 3])])
    fig = graph(model)
    assert fig.layout.meta["fanout"] == ["mask", "x"]  # x also feeds all six Muls
    copies = trace_named(fig, "fan-out copies")
    readers = sorted(c[0] for c in copies.customdata if c[0] == "value:mask")
    assert len(readers) == branches
    io = trace_named(fig, "inputs/outputs")
    assert not any(c[0] == "input:mask" for c in io.customdata)  # no node with 6 edges
    assert "[2, 3] float32" in copies.hovertext[0]


def test_graph_node_info_matches_the_hover(tiny_bert, prof, cmp):
    after = wb.optimize(tiny_bert).after.graph.nodes
    node = next(n for n in after if "MatMul" in n.op_type and n.inputs[1].const is not None)
    name = node.name
    info = graph_node_info([tiny_bert, prof, cmp], name)
    assert info["op"] == node.op_type and info["kind"] == "node"
    assert info["time_ms"]["x86"] == pytest.approx(
        prof.kernels.set_index("node").loc[name, "median_ms"]
    )
    assert "x86 vs reference" in info["error"]
    weight = next(i for i in info["inputs"] if "weight" in i)["weight"]
    w = node.inputs[1].const
    assert weight["shape"] == list(w.shape)
    assert weight["mean"] == pytest.approx(float(w.mean()), rel=1e-5, abs=1e-7)
    assert weight["std"] == pytest.approx(float(w.std()), rel=1e-4)
    group = graph_node_info(tiny_bert, "group:encoder.layer.0")
    assert group["kind"] == "group" and sum(group["ops"].values()) == len(group["nodes"])
    with pytest.raises(wb.WorkbenchError, match="no node"):
        graph_node_info(tiny_bert, "/nope")


def test_optimize_result_draws_after_with_origins(tiny_bert):
    res = wb.optimize(tiny_bert, level=2)
    t = nodes_of(graph(res))
    assert len(t.customdata) == len(res.after.graph.nodes)
    fused = next(n for n in res.after.graph.nodes if len(n.meta.get("origin", ())) > 2)
    i = [c[0] for c in t.customdata].index(fused.name)
    assert f"from {len(fused.meta['origin'])}" in t.hovertext[i]


def test_scope_and_structure_groups():
    names = [f"/layer{s}/layer{s}.{b}/conv{k}/Conv" for s in (1, 2) for b in (0, 1) for k in (1, 2)]
    g = scope_groups(names)
    assert set(g.members) == {"layer1", "layer2", "layer1.0", "layer1.1", "layer2.0", "layer2.1"}
    assert g.parent["layer1.0"] == "layer1" and g.chain[names[0]] == ("layer1", "layer1.0")
    assert g.drawn_as(True, ("layer1.1",))[names[0]] == "group:layer1.0"
    ops = ["Conv", "Relu", "Add"] * 4
    s = structure_groups([f"n{i}" for i in range(12)], ops)
    assert s.source == "structure" and len(s.members) == 4
    assert all(len(m) == 3 for m in s.members.values())


def test_layout_engines_and_cache():
    edges = [(i, i + 1) for i in range(30)] + [(i, i + 3) for i in range(0, 27, 3)]
    _layout.clear_cache()
    a = _layout.layout(31, edges)
    assert a.engine == "dot" and a.xy.shape == (31, 2)
    assert _layout.layout(31, edges) is a  # cached by structure
    b = _layout.layout(31, edges, engine="sugiyama")
    assert b.engine == "sugiyama" and len(b.paths) == len(edges)
    for lay in (a, b):  # layered top-down: every edge goes down
        assert all(lay.xy[t, 1] > lay.xy[h, 1] for t, h in edges)


def test_runs_of_a_model_built_here_draw_on_the_graph_they_ran():
    # No zoo rebuild is possible for a hand-built model: the Profile and the Comparison
    # carry the graph that ran, and its timings and errors land on its nodes.
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["m"], name="square"),
        helper.make_node("Relu", ["m"], ["y"], name="relu"),
    ]
    model = graph_model(nodes, [("x", [4, 8])], [("y", [4, 8])])
    p = wb.profile(model, backend="x86", repeat=2, warmup=0, save=False, progress=False)
    c = wb.compare(model, backends=["x86"], save=False, progress=False)
    fig = graph(p, color_by="time")
    names = {d[0] for d in nodes_of(fig).customdata}
    assert set(p.kernels["node"]) <= names
    assert {d[0] for d in nodes_of(graph(c, color_by="error")).customdata} == set(c.nodes["node"])
