"""The direct channels-last conv for inputs of few channels (backends/x86/direct_nhwc.py,
its vectors from _vec16.py): against the reference backend's Conv on odd shapes (output
channels not a multiple of the 16-lane vector, padding, stride 2, dilation, a 7x7 stem,
a batch of 2), with a residual and each kind of activation, a bias given at run time, its
bound call, and its selection against windows + GEMM in a channels-last chain."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import workbench as wb
from workbench.engine.backends.x86 import autotune, ops_conv_nhwc
from workbench.testing import assert_close, graph_model

rng = np.random.default_rng(31)
pytestmark = pytest.mark.usefixtures("split_and_select")


def f32(*shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def reference_conv(x_nchw, w, b, attrs, z=None, act=None) -> np.ndarray:
    """Conv (+ Add z, + activation) on the reference backend, NCHW."""
    names = ["x", "w"] + (["b"] if b is not None else [])
    nodes = [helper.make_node("Conv", names, ["c"], **attrs)]
    last = "c"
    if z is not None:
        nodes.append(helper.make_node("Add", ["c", "z"], ["s"]))
        last = "s"
    if act is not None:
        op, extra = act
        nodes.append(helper.make_node(op, [last, *extra], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    inits = {"w": w, **({"b": b} if b is not None else {})}
    inits.update({"lo": np.float32(0.0), "hi": np.float32(6.0)})
    inputs = [("x", list(x_nchw.shape))] + ([("z", list(z.shape))] if z is not None else [])
    feeds = {"x": x_nchw, **({"z": z} if z is not None else {})}
    return wb.Session(graph_model(nodes, inputs, [("y", list("nmhw"))], inits), "reference").run(
        feeds
    )["y"]


NHWC, NCHW = (0, 2, 3, 1), (0, 3, 1, 2)

CASES = [
    # (n, h, w, c, m, k, attrs)
    (1, 9, 11, 3, 20, 3, {"pads": [1, 1, 1, 1]}),
    (1, 11, 7, 2, 33, 5, {"pads": [2, 1, 0, 2], "strides": [2, 2]}),
    (2, 10, 10, 3, 17, 3, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    (1, 15, 13, 3, 64, 7, {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    (1, 6, 9, 4, 48, 1, {"strides": [1, 2]}),
    (1, 8, 8, 1, 5, 3, {}),
    # 64 channels a pass (4 x 64 registers), with groups of 4 inside pixels: a wider stem
    (1, 20, 30, 3, 64, 7, {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    # 96 channels: three passes of 32; 40: one of 64, partly stored
    (1, 12, 21, 3, 96, 3, {"pads": [1, 1, 1, 1]}),
    (1, 9, 17, 2, 40, 3, {"pads": [0, 1, 2, 1], "strides": [1, 2]}),
    # dilated, 64 channels: every pixel goes the checked way
    (1, 10, 14, 2, 64, 3, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}h{}w{}c{}m{}k{}".format(*c[:6]))
@pytest.mark.parametrize("act", [None, (1, ("Relu", [])), (3, ("Clip", ["lo", "hi"]))])
def test_direct_matches_reference(case, act):
    n, h, wd, c, m, k, attrs = case
    x = f32(n, c, h, wd)
    w, b = f32(m, c, k, k), f32(m)
    code = (0, np.float32(0), np.float32(0)) if act is None else (act[0], *act_params(act[0]))
    run = ops_conv_nhwc._direct(w, b, code, attrs)
    (y,) = run(np.ascontiguousarray(x.transpose(NHWC)), w)
    want = reference_conv(x, w, b, attrs, act=None if act is None else act[1])
    assert_close(y.transpose(NCHW), want, rtol=1e-4, atol=1e-5)


def act_params(code: int) -> tuple:
    return (np.float32(0), np.float32(6)) if code == 3 else (np.float32(0), np.float32(0))


def test_residual_sigmoid_and_a_bias_given_at_run_time():
    n, h, wd, c, m, k, attrs = CASES[1]
    x, w, b = f32(n, c, h, wd), f32(m, c, k, k), f32(m)
    oh, ow = (h + 2 + 1 - k) // 2 + 1, (wd + 1 + 2 - k) // 2 + 1
    z = f32(n, m, oh, ow)
    run = ops_conv_nhwc._direct(w, None, (4, np.float32(0), np.float32(0)), attrs)
    (y,) = run(np.ascontiguousarray(x.transpose(NHWC)), w, b, z.transpose(NHWC).copy())
    want = reference_conv(x, w, b, attrs, z=z, act=("Sigmoid", []))
    assert_close(y.transpose(NCHW), want, rtol=1e-4, atol=1e-5)
    # a bias given at run time is not bound (it would be padded anew per call)
    out = np.empty_like(y)
    assert run.bind(np.ascontiguousarray(x.transpose(NHWC)), w, b, None, out=(out,)) is None


def test_the_bound_call_reads_its_input_anew():
    n, h, wd, c, m, k, attrs = CASES[2]
    w, b = f32(m, c, k, k), f32(m)
    run = ops_conv_nhwc._direct(w, b, (1, np.float32(0), np.float32(0)), attrs)
    x = np.ascontiguousarray(f32(n, c, h, wd).transpose(NHWC))
    (y0,) = run(x, w)
    out = np.empty_like(y0)
    call = run.bind(x, w, out=(out,))
    assert call is not None
    for _ in range(2):
        x[...] = f32(*x.shape)  # new values in the same memory
        call()
        (want,) = run(x, w)
        assert_close(out, want, rtol=0, atol=0)


def _chain() -> wb.Model:
    """A 3-channel stem conv, a depthwise and a 1x1 (a channels-last chain on any x86)."""
    nodes = [
        helper.make_node("Conv", ["x", "sw", "sb"], ["s"], pads=[1] * 4, strides=[2, 2]),
        helper.make_node("Clip", ["s", "lo", "hi"], ["sa"]),
        helper.make_node("Conv", ["sa", "dw"], ["d"], group=24, pads=[1] * 4),
        helper.make_node("Conv", ["d", "pw"], ["y"]),
    ]
    inits = {
        "sw": f32(24, 3, 3, 3), "sb": f32(24), "dw": f32(24, 1, 3, 3), "pw": f32(8, 24, 1, 1),
        "lo": np.float32(0.0), "hi": np.float32(6.0),
    }  # fmt: skip
    return graph_model(nodes, [("x", [1, 3, 33, 31])], [("y", [1, 8, 17, 16])], inits)


@pytest.mark.parametrize("force", ["direct_nhwc", None])
def test_selected_in_a_channels_last_chain(force):
    model = _chain()
    with autotune.settings(force={"FusedConvNHWC": force} if force else None):
        sess = wb.Session(model, "x86", level=3)
    (stem,) = [s for s in sess.plan.steps if s.node.op_type == "FusedConvNHWC"][:1]
    if force:
        assert stem.run.algorithm == "direct_nhwc"
    else:  # measured (or too small to measure): either way a choice between the two
        assert stem.run.choice.source in ("measured", "small")
        assert stem.run.algorithm.endswith("im2col_nhwc") or stem.run.algorithm == "direct_nhwc"
        if stem.run.choice.source == "measured":
            assert "direct_nhwc" in stem.run.candidates and len(stem.run.candidates) == 2
    feeds = sess.random_feeds(seed=4)
    want = wb.Session(model, "reference").run(feeds)
    for _ in range(3):  # the arena runs bound from the second on
        got = sess.run(feeds)
        assert_close(got["y"], want["y"], rtol=1e-4, atol=1e-4)
