"""The channels_last layout pass (opt level 3): which convolutions move to NHWC, where the
transposes go, what it refuses and why, provenance, and outputs equal to the unoptimized
graph on reference and x86 (the zoo's MobileNetV2 too)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper

import workbench as wb
from workbench import zoo
from workbench.engine.backends.x86 import X86Backend, _mkl
from workbench.engine.passes import optimize
from workbench.testing import assert_close, graph_model, op_names, rejection_reasons

RNG = np.random.default_rng(5)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _block(c: int = 16, e: int = 24, hw: int = 9, extra_output: bool = False) -> wb.Model:
    """An inverted residual like MobileNetV2's (1x1 expand, Clip; depthwise 3x3, Clip; 1x1
    project; + the block's input), a stride-2 depthwise and a 1x1 after it, between a 3x3
    stem conv and a GlobalAveragePool (done channels-last: a mean over H and W)."""
    nodes = [
        helper.make_node("Conv", ["x", "stem_w", "stem_b"], ["s"], name="stem", pads=[1] * 4),
        helper.make_node("Conv", ["s", "exp_w", "exp_b"], ["e"], name="expand"),
        helper.make_node("Clip", ["e", "lo", "hi"], ["ea"], name="expand_clip"),
        helper.make_node("Conv", ["ea", "dw_w", "dw_b"], ["d"], name="dw", group=e, pads=[1] * 4),
        helper.make_node("Clip", ["d", "lo", "hi"], ["da"], name="dw_clip"),
        helper.make_node("Conv", ["da", "proj_w", "proj_b"], ["p"], name="project"),
        helper.make_node("Add", ["p", "s"], ["r"], name="residual"),
        helper.make_node(
            "Conv", ["r", "dw2_w"], ["d2"], name="dw2", group=c, strides=[2, 2], pads=[1] * 4
        ),
        helper.make_node("Relu", ["d2"], ["d2a"], name="dw2_relu"),
        helper.make_node("Conv", ["d2a", "pw_w"], ["q"], name="pw"),
        helper.make_node("GlobalAveragePool", ["q"], ["y"], name="pool"),
    ]
    inits = {
        "stem_w": _w(c, 3, 3, 3), "stem_b": _w(c), "exp_w": _w(e, c, 1, 1), "exp_b": _w(e),
        "dw_w": _w(e, 1, 3, 3), "dw_b": _w(e), "proj_w": _w(c, e, 1, 1), "proj_b": _w(c),
        "dw2_w": _w(c, 1, 3, 3), "pw_w": _w(2 * c, c, 1, 1),
        "lo": np.float32(0.0), "hi": np.float32(6.0),
    }  # fmt: skip
    out = hw // 2 + hw % 2
    outputs = [("y", [1, 2 * c, 1, 1])] + ([("d", [1, e, hw, hw])] if extra_output else [])
    return graph_model(nodes, [("x", [1, 3, hw, hw])], outputs, inits, opset=17) if out else None


def _check(model: wb.Model, result) -> None:
    """The level-3 graph exports and means what the original meant, on both backends."""
    onnx.checker.check_model(wb.to_onnx(result.after))
    feeds = wb.Session(model, "reference").random_feeds(seed=1)
    want = wb.Session(model, "reference", level=0).run(feeds)
    for backend in ("reference", "x86"):
        sess = wb.Session(result.after, backend, level=0)
        assert not sess.plan.fallbacks, backend
        got = sess.run(feeds)
        for name in want:
            assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_the_chain_moves_to_nhwc_with_one_transpose_in_and_one_out():
    model = _block()
    result = optimize(model, level=3, backend="x86", strict=True)
    ops = op_names(result.after)
    # stem, expand, dw, project, dw2, pw: the stem's output (read by expand and, as the
    # residual, by project) is channels-last from the start
    assert Counter(ops)["workbench.FusedConvNHWC"] == 6
    assert ops.count("Transpose") == 2
    (t_in,) = [n for n in result.after.graph if n.name == "x/to_nhwc"]
    assert t_in.attrs["perm"] == [0, 2, 3, 1]
    # the pool is a mean over H and W of the last conv's channels-last output, its
    # [1, 1, 1, C] turned to the pool's [1, C, 1, 1] under the pool's output name
    (mean,) = [n for n in result.after.graph if n.op_type == "ReduceMean"]
    assert mean.inputs[0].name == "q/nhwc" and mean.attrs["axes"] == [1, 2]
    assert result.origin(mean.name) == ("pool",)
    (t_out,) = [n for n in result.after.graph if n.op_type == "Transpose" and n is not t_in]
    assert t_out.attrs["perm"] == [0, 3, 1, 2] and t_out.outputs[0].name == "y"
    assert t_out.inputs[0] is mean.outputs[0] and "GlobalAveragePool" not in ops
    assert result.counts_by_rule()["channels_last"] == 7
    _check(model, result)


def test_the_pool_channels_last_at_opset_18_takes_its_axes_as_an_input():
    model = wb.load(onnx.version_converter.convert_version(wb.to_onnx(_block()), 18))
    result = optimize(model, level=3, backend="x86", strict=True)
    (mean,) = [n for n in result.after.graph if n.op_type == "ReduceMean"]
    assert "axes" not in mean.attrs and list(mean.inputs[1].const) == [1, 2]
    _check(model, result)


def test_provenance_points_at_the_channels_last_nodes():
    model = _block()
    result = optimize(model, level=3, backend="x86", strict=True)
    fates = result.fates()
    project = fates["project"]
    assert project.into.endswith("/nhwc") and project.into in {n.name for n in result.after.graph}
    assert result.origin(project.into) == ("project", "residual")  # conv_add_relu at level 2
    assert fates["dw_clip"].into == fates["dw"].into
    for n in result.after.graph:
        if n.op_type == "Transpose":  # made by the pass: no original node stands behind it
            assert result.origin(n.name) == ()


def test_a_value_read_outside_the_region_goes_back_to_nchw_under_its_name():
    model = _block(extra_output=True)
    result = optimize(model, level=3, backend="x86", strict=True)
    back = [n for n in result.after.graph if n.op_type == "Transpose" and n.outputs[0].name == "d"]
    assert len(back) == 1 and back[0].attrs["perm"] == [0, 3, 1, 2]
    assert "d" in [v.name for v in result.after.graph.outputs]
    _check(model, result)


def test_level_2_and_other_backends_keep_nchw():
    model = _block()
    for level, backend in ((2, "x86"), (3, "reference"), (3, "cuda")):
        result = optimize(model, level=level, backend=backend, strict=True)
        assert "workbench.FusedConvNHWC" not in op_names(result.after), (level, backend)


@pytest.mark.parametrize(
    ("nodes", "reason"),
    [
        (
            [helper.make_node("Conv", ["x", "dw_w"], ["y"], group=8, pads=[1] * 4)],
            "a lone convolution: two transposes would cost more than channels-last saves",
        ),
        (
            [
                helper.make_node("Conv", ["x", "pw_w"], ["t"]),
                helper.make_node("Conv", ["t", "pw_w"], ["y"]),
            ],
            "no depthwise convolution in the chain, and this backend's channels-last GEMM "
            "gains nothing over its NCHW one",
        ),
    ],
    ids=["lone", "no-depthwise"],
)
def test_refusals_say_why(nodes, reason, monkeypatch):
    monkeypatch.setattr(X86Backend, "channels_last_any_chain", False)  # x86 without MKL
    inits = {"dw_w": _w(8, 1, 3, 3), "pw_w": _w(8, 8, 1, 1)}
    model = graph_model(nodes, [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])], inits)
    result = optimize(model, level=3, backend="x86", strict=True)
    assert "workbench.FusedConvNHWC" not in op_names(result.after)
    assert rejection_reasons(result, "channels_last") == [reason]


def test_grouped_convolutions_stay_out_and_split_the_chain():
    """A grouped conv that is not depthwise has no channels-last kernel: the depthwise
    conv before it and the full conv after it are then each a lone convolution."""
    nodes = [
        helper.make_node("Conv", ["x", "dw_w"], ["a"], group=8, pads=[1] * 4),
        helper.make_node("Conv", ["a", "g_w"], ["b"], group=2),
        helper.make_node("Conv", ["b", "full_w"], ["y"], pads=[1] * 4),
    ]
    inits = {"dw_w": _w(8, 1, 3, 3), "g_w": _w(8, 4, 1, 1), "full_w": _w(8, 8, 3, 3)}
    model = graph_model(nodes, [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])], inits)
    result = optimize(model, level=3, backend="x86", strict=True)
    assert "workbench.FusedConvNHWC" not in op_names(result.after)
    lone = "a lone convolution: two transposes would cost more than channels-last saves"
    assert rejection_reasons(result, "channels_last") == [lone, lone]


def test_strided_and_full_convolutions_join_a_depthwise_chain():
    nodes = [
        helper.make_node("Conv", ["x", "dw_w"], ["a"], group=8, pads=[1] * 4),
        helper.make_node("Conv", ["a", "pw_w"], ["b"], strides=[2, 2]),
        helper.make_node("Conv", ["b", "full_w"], ["y"], pads=[1, 0, 2, 1], dilations=[1, 2]),
    ]
    inits = {"dw_w": _w(8, 1, 3, 3), "pw_w": _w(8, 8, 1, 1), "full_w": _w(5, 8, 3, 3)}
    model = graph_model(nodes, [("x", [1, 8, 7, 7])], [("y", [1, 5, 5, 1])], inits)
    result = optimize(model, level=3, backend="x86", strict=True)
    assert Counter(op_names(result.after))["workbench.FusedConvNHWC"] == 3
    _check(model, result)


def test_mobilenet_v2_runs_channels_last_from_input_to_pool():
    model = wb.load(zoo.get("tiny_mobilenet_v2"))
    result = optimize(model, level=3, backend="x86", strict=True)
    ops = Counter(op_names(result.after))
    assert ops["workbench.FusedConvNHWC"] >= 6 and ops["Transpose"] == 2
    assert "workbench.FusedConv" not in ops  # the 3x3 stem too: gathered channels-last
    _level_3_matches_reference(model, seed=2, atol=1e-5)


def test_a_residual_that_broadcasts_keeps_its_conv_out():
    """Add(Conv, z) with z of shape [1, C, 1, 1] fuses into a FusedConv whose Z broadcasts:
    it is not permuted, so that conv stays NCHW (and the 1x1 after it is alone)."""
    nodes = [
        helper.make_node("Conv", ["x", "dw_w"], ["a"], group=8, pads=[1] * 4),
        helper.make_node("Add", ["a", "shift"], ["b"]),
        helper.make_node("Conv", ["b", "pw_w"], ["y"]),
    ]
    inits = {"dw_w": _w(8, 1, 3, 3), "shift": _w(1, 8, 1, 1), "pw_w": _w(8, 8, 1, 1)}
    model = graph_model(nodes, [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])], inits)
    result = optimize(model, level=3, backend="x86", strict=True)
    ops = op_names(result.after)
    assert "workbench.FusedConv" in ops and "workbench.FusedConvNHWC" not in ops
    _check(model, result)


def _bottleneck() -> wb.Model:
    """A ResNet bottleneck (1x1, 3x3, 1x1 + the block's input, Relu) between a 3x3 stem
    and a stride-2 3x3 of 12 channels (not a multiple of the vector width): no depthwise
    conv anywhere."""
    nodes = [
        helper.make_node("Conv", ["x", "stem_w", "stem_b"], ["s0"], name="stem", pads=[1] * 4),
        helper.make_node("Relu", ["s0"], ["s"], name="stem_relu"),
        helper.make_node("Conv", ["s", "a_w", "a_b"], ["a0"], name="reduce"),
        helper.make_node("Relu", ["a0"], ["a"], name="reduce_relu"),
        helper.make_node("Conv", ["a", "b_w", "b_b"], ["b0"], name="conv3x3", pads=[1] * 4),
        helper.make_node("Relu", ["b0"], ["b"], name="conv3x3_relu"),
        helper.make_node("Conv", ["b", "c_w", "c_b"], ["c"], name="expand"),
        helper.make_node("Add", ["c", "s"], ["r0"], name="residual"),
        helper.make_node("Relu", ["r0"], ["r"], name="residual_relu"),
        helper.make_node("Conv", ["r", "d_w"], ["y"], name="down", strides=[2, 2], pads=[1] * 4),
    ]
    inits = {
        "stem_w": _w(12, 3, 3, 3), "stem_b": _w(12), "a_w": _w(5, 12, 1, 1), "a_b": _w(5),
        "b_w": _w(5, 5, 3, 3), "b_b": _w(5), "c_w": _w(12, 5, 1, 1), "c_b": _w(12),
        "d_w": _w(12, 12, 3, 3),
    }  # fmt: skip
    return graph_model(nodes, [("x", [1, 3, 9, 9])], [("y", [1, 12, 5, 5])], inits, opset=17)


def test_a_chain_without_depthwise_moves_where_the_backend_gains(monkeypatch):
    """x86 with MKL: its channels-last GEMM beats the NCHW ones (see X86Backend), so a
    ResNet-style chain moves whole, with one transpose in and one out."""
    monkeypatch.setattr(X86Backend, "channels_last_any_chain", True)
    model = _bottleneck()
    result = optimize(model, level=3, backend="x86", strict=True)
    ops = Counter(op_names(result.after))
    assert ops["workbench.FusedConvNHWC"] == 5 and ops["Transpose"] == 2
    assert "workbench.FusedConv" not in ops and not rejection_reasons(result, "channels_last")
    _check(model, result)
    monkeypatch.setattr(X86Backend, "channels_last_any_chain", False)
    result = optimize(model, level=3, backend="x86", strict=True)
    assert "workbench.FusedConvNHWC" not in op_names(result.after)


def _stem_and_pool(pool_attrs: dict, indices: bool = False) -> wb.Model:
    """ResNet's head: a 7x7 stride-2 stem conv, Relu, a MaxPool, then two convs."""
    pool_out = ["p", "pi"] if indices else ["p"]
    nodes = [
        helper.make_node("Conv", ["x", "stem_w"], ["s"], name="stem", strides=[2, 2], pads=[3] * 4),
        helper.make_node("Relu", ["s"], ["sr"], name="stem_relu"),
        helper.make_node("MaxPool", ["sr"], pool_out, name="pool", **pool_attrs),
        helper.make_node("Conv", ["p", "a_w"], ["a"], name="a"),
        helper.make_node("Conv", ["a", "b_w"], ["y"], name="b", pads=[1] * 4),
    ]
    inits = {"stem_w": _w(8, 3, 7, 7), "a_w": _w(6, 8, 1, 1), "b_w": _w(5, 6, 3, 3)}
    outputs = [("y", ["n", 5, "h", "w"])] + ([("pi", ["n", 8, "h", "w"])] if indices else [])
    return graph_model(nodes, [("x", [1, 3, 21, 19])], outputs, inits, opset=17)


@pytest.mark.parametrize(
    "pool_attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0], "ceil_mode": 1},
        {"kernel_shape": [3, 3], "dilations": [2, 1], "auto_pad": "SAME_UPPER"},
    ],
)
def test_a_max_pool_between_convolutions_joins_their_region(monkeypatch, pool_attrs):
    """The stem, its pool and the convs after it run channels-last: the one transpose in
    is the 3-channel image's; outputs equal reference's."""
    monkeypatch.setattr(X86Backend, "channels_last_any_chain", True)
    model = _stem_and_pool(pool_attrs)
    result = optimize(model, level=3, backend="x86", strict=True)
    ops = Counter(op_names(result.after))
    assert ops["workbench.MaxPoolNHWC"] == 1 and ops["workbench.FusedConvNHWC"] == 3
    assert ops["Transpose"] == 2 and "MaxPool" not in ops
    (first,) = [n for n in result.after.graph.nodes if n.op_type == "Transpose"][:1]
    assert first.inputs[0].name == "x"  # the image's 3 channels, not the pool's 8
    _check(model, result)
    _level_3_matches_reference(model, seed=4, atol=1e-5)


def test_a_max_pool_with_indices_stays_nchw_and_splits_the_chain(monkeypatch):
    monkeypatch.setattr(X86Backend, "channels_last_any_chain", True)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    result = optimize(_stem_and_pool(attrs, indices=True), level=3, backend="x86", strict=True)
    ops = Counter(op_names(result.after))
    assert "workbench.MaxPoolNHWC" not in ops and ops["MaxPool"] == 1
    assert ops["workbench.FusedConvNHWC"] == 2  # the two after it; the stem alone stays


def test_x86_moves_any_chain_exactly_when_mkl_is_there():
    assert X86Backend().channels_last_any_chain is _mkl.available()
    model = wb.load(zoo.get("tiny_resnet"))
    result = optimize(model, level=3, backend="x86", strict=True)
    moved = "workbench.FusedConvNHWC" in op_names(result.after)
    assert moved is _mkl.available()
    _level_3_matches_reference(model, seed=3, atol=1e-4)


def _level_3_matches_reference(model: wb.Model, seed: int, atol: float) -> None:
    """x86 at level 3 runs the whole model (no fallbacks) and agrees with reference."""
    sess = wb.Session(model, "x86", level=3)
    assert not sess.plan.fallbacks
    feeds = sess.random_feeds(seed=seed)
    want = wb.Session(model, "reference").run(feeds)
    for name, y in sess.run(feeds).items():
        assert_close(y, want[name], rtol=1e-4, atol=atol)
