"""x86 `workbench.FusedConvNHWC` (backends/x86/ops_conv_nhwc.py) against reference on odd
shapes, with every thread split taken: depthwise with strides 1, 2, 3 and mixed,
dilations, asymmetric and auto pads, a 5x3 kernel, channel counts that are not multiples
of the vector width, batch 2; 1x1 by each GEMM algorithm and by the direct kernel for few
outputs (pixel counts not a multiple of its 8, outputs not of its 32); other convs of one group by
their windows and a GEMM (strides, dilations, a 7x7 stem); 3x3 stride-1 convs by
Winograd F(2, 3) and F(4, 3) (partial tiles, asymmetric and auto pads, a bias given at run
time, the bound call) and their selection; bias, residual, activations; the planner's
buffer; and the NCHW <-> NHWC Transpose it relies on."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from workbench.engine.backends.x86 import autotune, pointwise_nhwc
from workbench.testing import assert_close, node_model, run_node

rng = np.random.default_rng(17)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


pytestmark = pytest.mark.usefixtures("split_and_select")


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


def _compare(x, w, b, z, attrs, force=None):
    """x86 against reference on channels-last x (and z), NCHW Conv + epilogue underneath."""
    inputs = [_nhwc(x), w, b, None if z is None else _nhwc(z)]
    with autotune.settings(force=force or {}):
        model, feeds = node_model("FusedConvNHWC", inputs, attrs, domain="workbench", consts=(1, 2))
        sess = wb.Session(wb.load(model, check=False), "x86", level=0)
    assert not sess.plan.fallbacks
    want = wb.Session(wb.load(model, check=False), "reference", level=0).run(feeds)["out0"]
    got = sess.run(feeds)["out0"]
    assert got.shape == want.shape
    assert_close(got, want, rtol=1e-4, atol=1e-5)
    (step,) = sess.plan.steps
    return step, feeds, want


DEPTHWISE = [
    ((2, 17, 9, 7), (3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 37, 11, 10), (3, 3), {"strides": [2, 2], "pads": [0, 1, 1, 0]}),
    ((1, 6, 13, 14), (3, 3), {"strides": [3, 3], "pads": [1, 2, 0, 1]}),
    ((2, 7, 10, 11), (3, 3), {"strides": [1, 2], "dilations": [2, 2], "pads": [1, 1, 2, 2]}),
    ((1, 70, 6, 5), (5, 3), {"pads": [2, 1, 1, 0]}),
    ((1, 24, 7, 7), (3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    # 3x3 undilated, channels a multiple of the vector width: 16 at a time in registers
    ((1, 48, 9, 10), (3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 32, 9, 8), (3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 1]}),
    # few channels, wide rows: runs of interior pixels computed at once, edges one by one
    ((1, 8, 5, 70), (3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 16, 6, 80), (5, 3), {"dilations": [1, 2], "pads": [2, 2, 1, 3]}),
]


@pytest.mark.parametrize("act", ["", "Clip", "Relu"])
@pytest.mark.parametrize(("xs", "k", "attrs"), DEPTHWISE)
def test_depthwise_matches_reference(xs, k, attrs, act):
    c = xs[1]
    x, w, b = f32(*xs), f32(c, 1, *k), f32(c)
    full = {**attrs, "group": c}
    if act:
        full["activation"] = act
        if act == "Clip":
            full["activation_params"] = [-0.5, 1.0]
    y_nchw = run_node("reference", "Conv", [x, w, b], {**attrs, "group": c}, consts=(1, 2))[0]
    z = f32(*y_nchw.shape) if act != "Relu" else None  # with and without a residual
    step, _, _ = _compare(x, w, b, z, full)
    assert step.kernel.algorithm == "depthwise_nhwc"


def test_pointwise_by_each_gemm_matches_reference(gemm_alg):
    alg = gemm_alg
    x, w, b = f32(2, 19, 5, 7), f32(23, 19, 1, 1), f32(23)
    z = f32(2, 23, 5, 7)
    attrs = {"activation": "HardSwish"}
    step, feeds, want = _compare(x, w, b, z, attrs, force={"MatMul": alg})
    assert step.kernel.algorithm == f"{alg}_nhwc"
    # into the planner's buffer, the epilogue on each thread's block
    buf = np.full(want.shape, np.nan, np.float32)
    (got,) = step.run(feeds["in0"], w, b, feeds["in3"], out=(buf,))
    assert got.base is buf or got is buf
    assert_close(buf, want, rtol=1e-4, atol=1e-5)


THIN = [
    ((2, 19, 5, 7), (23, 19, 1, 1)),  # 70 pixels: 8 groups of 8 and 6 alone; a part vector
    ((1, 7, 3, 3), (40, 7, 1, 1)),  # two blocks of 32 outputs, the second 8 wide
    ((1, 33, 4, 4), (16, 33, 1, 1)),
    ((1, 5, 1, 1), (1, 5, 1, 1)),  # one pixel, one output
]


@pytest.mark.parametrize("act", ["", "HardSwish", "Relu"])
@pytest.mark.parametrize(("xs", "ws"), THIN)
def test_pointwise_by_the_direct_kernel_matches_reference(xs, ws, act):
    x, w, b = f32(*xs), f32(*ws), f32(ws[0])
    z = f32(xs[0], ws[0], *xs[2:]) if act != "Relu" else None  # with and without a residual
    attrs = {"activation": act} if act else {}
    inputs = [_nhwc(x), w, b, None if z is None else _nhwc(z)]
    model, feeds = node_model("FusedConvNHWC", inputs, attrs, domain="workbench", consts=(1, 2))
    with autotune.settings(force={"FusedConvNHWC": "direct_1x1_nhwc"}):
        sess = wb.Session(wb.load(model, check=False), "x86", level=0)
    assert sess.plan.steps[0].kernel.algorithm == "direct_1x1_nhwc"
    ref = wb.Session(wb.load(model, check=False), "reference", level=0)
    for _ in range(3):  # bound to the arena's buffers from the second run on
        feeds["in0"][...] = _nhwc(f32(*xs))  # new values in the same memory
        assert_close(sess.run(feeds)["out0"], ref.run(feeds)["out0"], rtol=1e-4, atol=1e-5)


def test_pointwise_direct_kernel_takes_a_bias_at_run_time_and_is_offered_for_few_outputs():
    x, w, b = f32(1, 9, 6, 5), f32(21, 9, 1, 1), f32(21)
    inputs = [_nhwc(x), w, b, None]
    with autotune.settings(force={"FusedConvNHWC": "direct_1x1_nhwc"}):
        model, feeds = node_model("FusedConvNHWC", inputs, {}, domain="workbench", consts=(1,))
        sess = wb.Session(wb.load(model, check=False), "x86", level=0)
    assert sess.plan.steps[0].kernel.algorithm == "direct_1x1_nhwc"
    want = run_node("reference", "Conv", [x, w, b], {}, consts=(1, 2))[0]
    for _ in range(2):
        assert_close(sess.run(feeds)["out0"], _nhwc(want), rtol=1e-4, atol=1e-5)
    # many outputs: BLAS's alone (the forced name is not a candidate there)
    wide = f32(pointwise_nhwc.MAX_OUTPUTS + 1, 9, 1, 1)
    step, _, _ = _compare(x, wide, None, None, {}, force={"FusedConvNHWC": "direct_1x1_nhwc"})
    assert step.kernel.algorithm != "direct_1x1_nhwc"


IM2COL = [
    ((2, 3, 9, 8), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 5, 11, 10), (7, 5, 3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((1, 4, 12, 13), (3, 4, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 0, 3]}),
    ((1, 3, 23, 22), (8, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),  # a stem
    ((2, 6, 10, 9), (4, 6, 5, 5), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 17, 6, 7), (9, 17, 1, 1), {"strides": [2, 2]}),  # 1x1 strided
]


@pytest.mark.parametrize("act", ["", "Relu"])
@pytest.mark.parametrize(("xs", "ws", "attrs"), IM2COL)
def test_convolutions_by_windows_and_gemm_match_reference(xs, ws, attrs, act):
    x, w, b = f32(*xs), f32(*ws), f32(ws[0])
    y_nchw = run_node("reference", "Conv", [x, w, b], attrs, consts=(1, 2))[0]
    z = f32(*y_nchw.shape) if act else None
    full = {**attrs, **({"activation": act} if act else {})}
    step, _, _ = _compare(x, w, b, z, full)
    assert step.kernel.algorithm.endswith("_im2col_nhwc")


WINOGRAD = [
    ((2, 19, 9, 11), (23, 19, 3, 3), {"pads": [1, 1, 1, 1]}),  # outputs cut tiles short
    ((1, 17, 13, 7), (33, 17, 3, 3), {"pads": [0, 1, 2, 1]}),
    ((1, 5, 6, 6), (7, 5, 3, 3), {}),  # no padding: 4x4 out, one F(4, 3) tile
    ((1, 8, 10, 10), (16, 8, 3, 3), {"auto_pad": "SAME_UPPER"}),
]
# relative to max |y|: the transforms' rounding, as in test_x86_algorithms.py's bounds
WINOGRAD_TOL = {"winograd_f2_nhwc": 1e-5, "winograd_f4_nhwc": 1e-4}


@pytest.mark.parametrize("alg", sorted(WINOGRAD_TOL))
@pytest.mark.parametrize("act", ["", "Relu"])
@pytest.mark.parametrize(("xs", "ws", "attrs"), WINOGRAD)
def test_winograd_matches_reference(xs, ws, attrs, act, alg):
    x, w, b = f32(*xs), f32(*ws), f32(ws[0])
    y_nchw = run_node("reference", "Conv", [x, w, b], attrs, consts=(1, 2))[0]
    z = f32(*y_nchw.shape) if act else None  # a residual with the activation
    full = {**attrs, **({"activation": act} if act else {})}
    consts = (1, 2) if act else (1,)  # without: the bias is given at run time
    inputs = [_nhwc(x), w, b, None if z is None else _nhwc(z)]
    with autotune.settings(force={"FusedConvNHWC": alg}):
        model, feeds = node_model("FusedConvNHWC", inputs, full, domain="workbench", consts=consts)
        sess = wb.Session(wb.load(model, check=False), "x86", level=0)
    (step,) = sess.plan.steps
    assert step.kernel.algorithm == alg
    want = wb.Session(wb.load(model, check=False), "reference", level=0).run(feeds)["out0"]
    for _ in range(3):  # the arena's runs are bound from the second on
        feeds["in0"][...] = _nhwc(f32(*xs))  # new values in the same memory
        want = wb.Session(wb.load(model, check=False), "reference", level=0).run(feeds)["out0"]
        got = sess.run(feeds)["out0"]
        assert got.shape == want.shape
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err <= WINOGRAD_TOL[alg], f"{alg} relative error {err:.2e} on {xs} {ws} {attrs}"


def test_winograd_is_a_candidate_of_3x3_stride_1_convs_only():
    """A 3x3 stride-1 conv measures both Winograd transforms against windows + GEMM, each
    charged its weights' read from memory (Winograd's transformed ones); a strided one
    does not."""
    x, w = f32(1, 32, 20, 20), f32(32, 32, 3, 3)
    step, _, _ = _compare(x, w, None, None, {"pads": [1, 1, 1, 1]})
    run = step.run
    assert run.choice.source == "measured"
    wino = {"winograd_f2_nhwc", "winograd_f4_nhwc"}
    assert wino < set(run.candidates) and len(run.candidates) == 3
    assert set(run.candidates) == set(run.candidates_cold)
    assert all(v > 0 for v in run.candidates_cold.values())
    # F(4, 3) holds 36/16 of F(2, 3)'s transformed weights, and streams them as well
    f2, f4 = (run.candidates_cold[a] for a in sorted(wino))
    assert f4 == pytest.approx(f2 * 36 / 16, rel=0.05)
    assert step.kernel.algorithm == autotune.pick(run.candidates, run.candidates_mib)
    step, _, _ = _compare(x, w, None, None, {"pads": [1, 1, 1, 1], "strides": [2, 2]})
    assert not wino & set(step.run.candidates)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_gemm_candidates_are_measured_with_the_nodes_epilogue(monkeypatch, residual, k):
    """Each GEMM candidate is timed as the model runs it: with the node's bias, activation
    and residual on each part's block (a split by columns reads its blocks back from L3)."""
    from workbench.engine.backends.x86.ops_fused_conv import Epilogue

    seen = []
    real = autotune.measure

    def spy(fn, args, best=float("inf")):
        seen.append(args)
        return real(fn, args, best)

    monkeypatch.setattr(autotune, "measure", spy)
    x, w, b = f32(1, 64, 32, 32), f32(48, 64, k, k), f32(48)  # (enough work to be measured)
    z = f32(1, 48, 32, 32) if residual else None
    attrs = {"activation": "Relu", **({"pads": [1, 1, 1, 1]} if k == 3 else {})}
    _compare(x, w, b, z, attrs)
    gemm = [a for a in seen if len(a) == 3 and a[0].shape == (32 * 32, 64 * k * k)]
    assert gemm, "no GEMM candidate measured"
    for _, o2, post in gemm:
        assert isinstance(post, Epilogue) and post.act == 1
        np.testing.assert_array_equal(post.bias, b)
        assert post.z.size == (o2.size if residual else 0)


def test_pointwise_without_bias_or_residual():
    x, w = f32(1, 5, 3, 4), f32(9, 5, 1, 1)
    _compare(x, w, None, None, {})


def test_grouped_convolutions_are_declined_and_reference_runs_them():
    """The pass never emits these; a hand-made graph still runs, on reference."""
    x, w = f32(1, 4, 6, 6), f32(6, 2, 3, 3)
    attrs = {"pads": [1, 1, 1, 1], "group": 2}
    model, feeds = node_model(
        "FusedConvNHWC", [_nhwc(x), w], attrs, domain="workbench", consts=(1,)
    )
    sess = wb.Session(wb.load(model, check=False), "x86", level=0)
    assert sess.plan.fallbacks
    want = run_node("reference", "Conv", [x, w], attrs, consts=(1,))[0]
    assert_close(sess.run(feeds)["out0"], _nhwc(want), rtol=1e-4, atol=1e-5)


MAX_POOLS = [
    ((2, 5, 11, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 17, 8, 7), {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0]}),
    ((1, 70, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 3, 10, 6), {"kernel_shape": [3, 2], "dilations": [2, 2], "auto_pad": "SAME_UPPER"}),
    # channels in vectors of 16 (_maxpool_hwc16): ResNet's stem pool, and odd windows
    ((2, 32, 11, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 64, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 16, 10, 6), {"kernel_shape": [3, 2], "dilations": [2, 2], "auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize(("xs", "attrs"), MAX_POOLS)
def test_max_pool_nhwc_matches_reference(xs, attrs):
    x = f32(*xs)
    x[0, 0, 1, 1] = np.nan  # a NaN in a window is its max, as in the reference
    x[0, -1, 2, 3] = x[0, 1, 4, 4] = np.nan  # (and in the lanes past the first)
    model, feeds = node_model("MaxPoolNHWC", [_nhwc(x)], attrs, domain="workbench")
    sess = wb.Session(wb.load(model, check=False), "x86", level=0)
    assert not sess.plan.fallbacks
    want = _nhwc(run_node("reference", "MaxPool", [x], attrs)[0])
    for _ in range(2):  # the second run into the arena's buffer
        got = sess.run(feeds)["out0"]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2]])
@pytest.mark.parametrize("channels", [37, 1, 2, 3, 4, 5])
def test_layout_transposes_match_numpy(perm, channels):
    """Few channels (an image input) take the pixel-split loop when going channels-last."""
    x = f32(2, channels, 5, 7)
    (y,) = run_node("x86", "Transpose", [x], {"perm": perm})
    assert np.array_equal(y, np.transpose(x, perm))
