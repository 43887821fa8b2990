"""wb.viz.fusion_diff and fusion_partners: fused nodes and the originals they replaced share
a key and a colour in both panels; refused candidates carry their reason."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from onnx import helper

import workbench as wb
from workbench.testing import graph_model
from workbench.viz.fusion_view import (
    FUSION_HIGHLIGHT_JS,
    KEPT,
    fusion_diff,
    fusion_partners,
)

FUSED = ["/a/Conv", "/a/BatchNormalization", "/a/Relu"]


@pytest.fixture(scope="module")
def result():
    """Branch a: Conv+BN+Relu, all constant: fused into one node. Branch b: a BN whose
    scale is a graph input: refused, with the reason."""
    rng = np.random.default_rng(0)
    c = 4
    inits = {
        "w": rng.standard_normal((c, 3, 3, 3)).astype(np.float32),
        "cb": rng.standard_normal(c).astype(np.float32),
        "w2": rng.standard_normal((c, 3, 3, 3)).astype(np.float32),
        "scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "bias": rng.standard_normal(c).astype(np.float32),
        "mean": rng.standard_normal(c).astype(np.float32),
        "var": rng.uniform(0.5, 1.5, c).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "cb"], ["a1"], name=FUSED[0], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["a1", "scale", "bias", "mean", "var"], ["a2"], name=FUSED[1]
        ),
        helper.make_node("Relu", ["a2"], ["y1"], name=FUSED[2]),
        helper.make_node("Conv", ["x", "w2"], ["b1"], name="/b/Conv", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["b1", "s", "bias", "mean", "var"], ["y2"], name="/b/BN"
        ),
    ]
    model = graph_model(
        nodes,
        [("x", [1, 3, 8, 8]), ("s", [c])],
        [("y1", [1, c, 8, 8]), ("y2", [1, c, 8, 8])],
        inits,
    )
    return wb.optimize(model, level=2)


def _fused_node(result) -> str:
    return next(n.name for n in result.after.graph.nodes if len(n.meta.get("origin", ())) == 3)


def test_partners_of_a_conv_bn_relu_fusion(result):
    fused = _fused_node(result)
    assert fusion_partners(result, fused) == {"before": FUSED, "after": [fused]}
    for original in FUSED:  # from any of the originals, the same group
        assert fusion_partners(result, original) == {"before": FUSED, "after": [fused]}
    kept = fusion_partners(result, "/b/Conv")
    assert kept == {"before": ["/b/Conv"], "after": ["/b/Conv"]}
    with pytest.raises(wb.WorkbenchError, match="no node '/nope'"):
        fusion_partners(result, "/nope")


def test_figure_pairs_before_and_after_by_key_and_colour(result):
    fig = fusion_diff(result)
    go.Figure(fig.to_dict())  # valid plotly
    meta = fig.layout.meta
    assert meta["kind"] == "fusion_diff"
    before = fig.data[meta["node_traces"]["before"]]
    after = fig.data[meta["node_traces"]["after"]]
    assert sorted(c[0] for c in before.customdata) == sorted(
        n.name for n in result.before.graph.nodes
    )
    assert sorted(c[0] for c in after.customdata) == sorted(
        n.name for n in result.after.graph.nodes
    )
    fused = _fused_node(result)
    key = f"fusion:{fused}"
    assert meta["fusion_groups"][key] == {"before": FUSED, "after": [fused]}
    b_key = {c[0]: c[1] for c in before.customdata}
    b_col = dict(zip([c[0] for c in before.customdata], before.marker.color))
    a_col = dict(zip([c[0] for c in after.customdata], after.marker.color))
    assert all(b_key[n] == key for n in FUSED)
    assert {b_col[n] for n in FUSED} == {a_col[fused]} and a_col[fused] != KEPT
    assert b_col["/b/Conv"] == a_col["/b/Conv"] == KEPT
    i = [c[0] for c in after.customdata].index(fused)
    assert all(n in after.hovertext[i] for n in FUSED)


def test_rejected_candidates_are_marked_with_their_reason(result):
    reasons = [r.reason for r in result.rejected if r.rule == "conv_bn"]
    assert reasons == ["BatchNormalization scale is not constant"]
    fig = fusion_diff(result)
    ringed = {t.name: t for t in fig.data if t.name and t.name.endswith("rejected")}
    assert set(ringed) == {"before rejected", "after rejected"}
    for t in ringed.values():
        names = [c[0] for c in t.customdata]
        assert names == ["/b/Conv", "/b/BN"]
        assert all("BatchNormalization scale is not constant" in h for h in t.hovertext)
    assert fig.layout.meta["rejected"][0]["reason"] == reasons[0]
    before = fig.data[fig.layout.meta["node_traces"]["before"]]
    j = [c[0] for c in before.customdata].index("/b/BN")
    assert "not fused by conv_bn" in before.hovertext[j]


def test_highlight_script_is_wired_for_write_html(result, tmp_path):
    assert "{plot_id}" in FUSION_HIGHLIGHT_JS and "plotly_click" in FUSION_HIGHLIGHT_JS
    assert "node_traces" in FUSION_HIGHLIGHT_JS  # reads the same meta the figure carries
    path = tmp_path / "fusion.html"
    fusion_diff(result).write_html(path, include_plotlyjs=False, post_script=FUSION_HIGHLIGHT_JS)
    text = path.read_text()
    assert "plotly_click" in text and "{plot_id}" not in text


def test_fusion_diff_refuses_anything_else(result):
    with pytest.raises(wb.WorkbenchError, match=r"wb\.optimize"):
        fusion_diff(result.after)
