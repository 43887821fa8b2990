"""x86 algorithm selection (backends/x86/autotune.py): every Conv and GEMM candidate, forced
by name, against the reference backend on odd shapes; Winograd's error bound; the disk
cache (a second selection measures nothing, another shape does); selection switched off
falls back to the heuristic; a choice made on the first call shows in the plan; the one
thread setting (workbench/_threads.py) reaches BLAS and numba."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from onnx import helper

import workbench as wb
from workbench import _threads
from workbench.engine.backends.x86 import _mkl, _native, _parallel, autotune
from workbench.testing import assert_close, graph_model, node_model, run_node

rng = np.random.default_rng(11)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# each test selects against an empty cache of its own, on two threads, every split taken
pytestmark = pytest.mark.usefixtures("split_and_select")


def session(op, inputs, attrs, consts=(1, 2), symbolic=False):
    model, feeds = node_model(op, inputs, attrs, consts=consts)
    if symbolic:  # the batch dim unknown at compile time: selection on the first call
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    sess = wb.Session(wb.load(model, check=False), "x86")
    assert not sess.plan.fallbacks
    return sess, feeds


def forced(op, alg, inputs, attrs, consts=(1, 2)):
    """Output and the step's run with `alg` forced for `op`."""
    with autotune.settings(force={op: alg}):
        sess, feeds = session(op, inputs, attrs, consts)
    out = sess.run(feeds)["out0"]
    (step,) = sess.plan.steps
    return out, step


# (x, w, attrs): padding, stride 2, dilations, groups, channel counts 3/5/17, batch 2,
# non-square images and kernels
IM2COL = [
    ((2, 3, 9, 7), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 5, 8, 11), (17, 5, 3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((1, 17, 9, 8), (3, 17, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 0, 3]}),
    ((2, 3, 10, 9), (5, 3, 5, 5), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((2, 5, 11), (17, 5, 4), {"strides": [2], "pads": [1, 2], "dilations": [2]}),
    ((1, 3, 11, 12), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1]}),  # tap pairs
    ((1, 2, 10, 13), (3, 2, 2, 4), {"strides": [3, 3], "pads": [0, 2, 1, 1]}),
]
ONE_BY_ONE = [
    ((2, 17, 5, 7), (5, 17, 1, 1), {}),
    ((1, 3, 4, 9), (17, 3, 1, 1), {}),
    ((2, 17, 1, 1), (5, 17, 1, 1), {}),  # one pixel: GEMM outputs of one column
]
DEPTHWISE = [
    ((2, 5, 9, 7), (5, 1, 3, 3), {"group": 5, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 3, 9, 8), (6, 1, 3, 3), {"group": 3, "pads": [0, 1, 2, 0], "dilations": [1, 2]}),
]
# one output channel per input channel (channels-last applies): 3x3 windows inside the
# image and at its edges, strides 2 and 3 and mixed (each has its own way of splitting
# rows into phase planes), dilation, asymmetric pads, other kernel sizes, a 1-D conv, 17
# and 37 channels (not multiples of the vector width) and tiles of 64 crossed
DEPTHWISE_1 = [
    ((2, 17, 9, 7), (17, 1, 3, 3), {"group": 17, "pads": [1, 1, 1, 1]}),
    ((1, 37, 11, 10), (37, 1, 3, 3), {"group": 37, "strides": [2, 2], "pads": [0, 1, 1, 0]}),
    ((1, 6, 13, 14), (6, 1, 3, 3), {"group": 6, "strides": [3, 3], "pads": [1, 2, 0, 1]}),
    (
        (2, 7, 10, 11),
        (7, 1, 3, 3),
        {"group": 7, "strides": [1, 2], "dilations": [2, 2], "pads": [1, 1, 2, 2]},
    ),
    ((1, 4, 9, 9), (4, 1, 3, 3), {"group": 4, "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ((1, 8, 5, 70), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),  # runs of pixels
    ((2, 5, 12, 9), (5, 1, 3, 3), {"group": 5, "dilations": [2, 3], "pads": [2, 3, 2, 3]}),
    ((1, 70, 6, 5), (70, 1, 5, 3), {"group": 70, "pads": [2, 1, 1, 0]}),
    ((2, 9, 13), (9, 1, 4), {"group": 9, "strides": [2], "pads": [1, 2]}),
]
WINOGRAD = [
    ((2, 5, 9, 7), (17, 5, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 17, 7, 10), (3, 17, 3, 3), {"pads": [0, 1, 2, 0]}),
    ((2, 3, 6, 5), (5, 3, 3, 3), {}),
    ((1, 5, 11, 13), (5, 5, 3, 3), {"auto_pad": "SAME_LOWER"}),
    ((1, 64, 12, 12), (32, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
]

# MKL's candidates join when the `mkl` extra is installed (`make test` installs it)
needs_mkl = pytest.mark.skipif(not _mkl.available(), reason=f"no MKL here: {_mkl.why()}")
needs_native = pytest.mark.skipif(
    not _native.available(), reason=f"numba's parallel loops do not run here: {_native.why()}"
)


def mkl(*case):
    return pytest.param(*case, marks=needs_mkl)


CONV_CASES = (
    [("im2col_gemm", *c) for c in IM2COL]
    + [mkl("im2col_gemm_mkl", *c) for c in IM2COL]
    + [mkl("gemm_1x1_mkl", *c) for c in ONE_BY_ONE]
    + [("im2col_gemm_t", *c) for c in IM2COL if len(c[0]) == 4]
    + [(alg, *c) for c in ONE_BY_ONE for alg in ("gemm_1x1", "gemm_1x1_t")]
    + [(alg, *c) for c in DEPTHWISE for alg in ("depthwise", "grouped_im2col_gemm")]
    + [(alg, *c) for c in DEPTHWISE_1 for alg in ("depthwise", "depthwise_nhwc")]
    + [("grouped_im2col_gemm", (2, 6, 9, 9), (10, 3, 3, 3), {"group": 2, "pads": [2, 1, 2, 1]})]
    + [("generic", *c) for c in IM2COL[:2]]
)


@pytest.mark.parametrize(("alg", "xs", "ws", "attrs"), CONV_CASES)
def test_conv_algorithm_matches_reference(alg, xs, ws, attrs):
    x, w, b = f32(*xs), f32(*ws), f32(ws[0])
    got, step = forced("Conv", alg, [x, w, b], attrs)
    assert step.kernel.algorithm == alg and step.run.choice.source == "forced"
    ref = run_node("reference", "Conv", [x, w, b], attrs, consts=(1, 2))[0]
    assert_close(got, ref, rtol=1e-4, atol=1e-5, err_msg=f"{alg} {xs} {ws} {attrs}")


# Winograd computes the same sum through transforms whose entries reach 5 (B^T) and 8
# (A^T) in F(4, 3), so float32 rounding errors of the transformed tiles are amplified
# before they cancel: measured ~1e-6 of the output's largest magnitude for F(2, 3) and
# ~1e-5 for F(4, 3) at 256 channels. The bounds below (relative to max |y|) leave a
# factor ~10 of margin; the direct algorithms stay near 1e-7.
WINOGRAD_TOL = {"winograd_f2": 1e-5, "winograd_f4": 1e-4}


@pytest.mark.parametrize("alg", sorted(WINOGRAD_TOL))
@pytest.mark.parametrize(("xs", "ws", "attrs"), WINOGRAD)
def test_winograd_error_within_bound(alg, xs, ws, attrs):
    x, w, b = f32(*xs), f32(*ws), f32(ws[0])
    got, step = forced("Conv", alg, [x, w, b], attrs)
    assert step.kernel.algorithm == alg
    ref = run_node("reference", "Conv", [x, w, b], attrs, consts=(1, 2))[0]
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert err <= WINOGRAD_TOL[alg], f"{alg} relative error {err:.2e} on {xs} {ws} {attrs}"


def test_forced_algorithm_that_does_not_apply_is_ignored():
    x, w = f32(1, 3, 9, 9), f32(4, 3, 3, 3)
    got, step = forced("Conv", "winograd_f4", [x, w], {"strides": [2, 2]}, consts=(1,))
    assert not step.kernel.algorithm.startswith("winograd")
    ref = run_node("reference", "Conv", [x, w], {"strides": [2, 2]}, consts=(1,))[0]
    assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_forced_by_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_ALGORITHM", "Conv=winograd_f2")
    sess, _ = session("Conv", [f32(1, 3, 8, 8), f32(4, 3, 3, 3)], {}, consts=(1,))
    assert sess.plan.steps[0].kernel.algorithm == "winograd_f2"


def test_matmul_and_gemm_algorithms_match_reference(gemm_alg):  # (each GEMM candidate)
    alg = gemm_alg
    a, b = f32(2, 3, 17), f32(17, 5)
    got, step = forced("MatMul", alg, [a, b], {}, consts=(1,))
    assert step.kernel.algorithm == f"{alg}_flat"
    ref = run_node("reference", "MatMul", [a, b], {}, consts=(1,))[0]
    assert_close(got, ref, rtol=1e-5, atol=1e-5)
    a2, b2, c2 = f32(7, 5), f32(3, 5), f32(3)
    attrs = {"transB": 1, "alpha": 0.5, "beta": 2.0}
    got, step = forced("Gemm", alg, [a2, b2, c2], attrs)
    assert step.kernel.algorithm == alg
    ref = run_node("reference", "Gemm", [a2, b2, c2], attrs, consts=(1, 2))[0]
    assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_matmul_algorithms_read_a_transposed_weight_in_place(gemm_alg):
    """B = Transpose(W) folds to a column-major view of W, not a copy (GPT-2's tied
    lm_head; passes/cleanup/fold.py): every GEMM candidate reads it so, odd sizes."""
    a, w = f32(2, 19, 17), f32(37, 17)
    model = graph_model(
        [
            helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["a", "wt"], ["out0"]),
        ],
        [("a", [2, 19, 17])],
        [("out0", [2, 19, 37])],
        {"w": w},
    )
    with autotune.settings(force={"MatMul": gemm_alg}):
        sess = wb.Session(model, "x86", level=1)
    (step,) = sess.plan.steps
    wt = step.node.inputs[1].const
    assert wt.flags.f_contiguous and not wt.flags.c_contiguous
    assert np.shares_memory(wt, model.graph.initializers["w"].const)
    assert step.kernel.algorithm == f"{gemm_alg}_flat"
    want = wb.Session(model, "reference").run({"a": a})["out0"]
    assert_close(sess.run({"a": a})["out0"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["Gelu", "Relu"])
def test_fused_matmul_epilogue_on_each_part_matches_reference(gemm_alg, act):
    """FusedMatMul's epilogue (bias, activation) runs on each part's block of the output
    right after its product, by rows or by columns: every element once, also where the
    output is the planner's buffer."""
    alg = gemm_alg
    a, b, bias = f32(2, 19, 17), f32(17, 37), f32(37)
    attrs = {"activation": act}
    with autotune.settings(force={"MatMul": alg}):
        model, feeds = node_model(
            "FusedMatMul", [a, b, bias], attrs, domain="workbench", consts=(1, 2)
        )
        sess = wb.Session(wb.load(model, check=False), "x86")
    (step,) = sess.plan.steps
    assert step.kernel.algorithm == f"{alg}+epilogue"
    want = wb.Session(wb.load(model, check=False), "reference").run(feeds)["out0"]
    assert_close(sess.run(feeds)["out0"], want, rtol=1e-5, atol=1e-6)
    buf = np.full(want.shape, np.nan, np.float32)
    (got,) = step.run(a, b, bias, out=(buf,))
    assert got is buf
    assert_close(buf, want, rtol=1e-5, atol=1e-6)


@needs_native
@pytest.mark.parametrize("k, n", [(17, 37), (37, 5), (3, 1), (40, 70)])
def test_a_single_row_takes_the_gemv_kernel_and_matches_reference(k, n):
    """One row (a classifier's): the output columns split over numba's threads, four at a
    time and the rest one by one, K in vectors of 16 and a tail. A Gemm with transB reads
    its (N, K) weight as it is (alpha folded in that order), by default for one row; for a
    MatMul's (K, N) weight gemv would hold a transposed copy, so there it is measured (not
    these small ones)."""
    x, w, c = f32(1, k), f32(n, k), f32(n)
    attrs = {"transB": 1, "alpha": 0.5, "beta": 2.0}
    sess, feeds = session("Gemm", [x, w, c], attrs)
    (step,) = sess.plan.steps
    assert step.kernel.algorithm == "gemv"  # (the default for one row: not measured)
    ref = run_node("reference", "Gemm", [x, w, c], attrs, consts=(1, 2))[0]
    assert_close(sess.run(feeds)["out0"], ref, rtol=1e-5, atol=1e-5)
    a, b = f32(1, 1, k), f32(k, n)
    sess, _ = session("MatMul", [a, b], {}, consts=(1,))  # (gemv would copy B: measured)
    want = "gemv_flat" if n == 1 else "gemm_flat"  # (a (K, 1) B is its own transpose)
    assert sess.plan.steps[0].kernel.algorithm == want
    got, step = forced("MatMul", "gemv", [a, b], {}, consts=(1,))
    assert step.kernel.algorithm == "gemv_flat"
    assert_close(
        got, run_node("reference", "MatMul", [a, b], {}, consts=(1,))[0], rtol=1e-5, atol=1e-5
    )


@needs_native
def test_gemv_reads_a_linear_layers_weight_in_place_and_runs_the_epilogue():
    from workbench.engine.backends.x86 import ops_gemm
    from workbench.engine.backends.x86.ops_fused_conv import Epilogue

    w = f32(37, 19)  # (N, K): a Linear layer's weight, B = w.T
    fn = ops_gemm._gemm_builders(w.T, rows=1)["gemv"]()
    assert fn.held() == 0
    copy = ops_gemm._gemm_builders(np.ascontiguousarray(w.T), rows=1)["gemv"]()
    assert copy.held() == w.nbytes
    x, bias = f32(1, 19), f32(37)
    out = np.full((1, 37), np.nan, np.float32)
    fn.bind(x, out, Epilogue(bias, np.zeros(0, np.float32), (1, np.float32(0), np.float32(0))))()
    assert_close(out, np.maximum(x @ w.T + bias, 0), rtol=1e-5, atol=1e-5)
    assert "gemv" not in ops_gemm._gemm_builders(w.T, rows=2)  # (one row only)


def test_fused_exact_gelu_is_accurate_over_the_whole_range():
    """The epilogue's exact Gelu (float32 erfc with -x^2/2 in two parts, one vectorized
    pass) against x/2 erfc(-x / sqrt 2) in float64, through a FusedMatMul by [[1]]: within
    8 float32 ulp from -15 to 15, the negative tail included (where 1 + erf would cancel),
    and NaN / inf as the formula gives them."""
    x = np.linspace(-15.0, 15.0, 30001, dtype=np.float32)
    x = np.concatenate([x, [np.nan, np.inf, -np.inf, 0.0, 1e-30, -1e-30]]).astype(np.float32)
    a, one, zero = x.reshape(-1, 1), np.ones((1, 1), np.float32), np.zeros(1, np.float32)
    model, feeds = node_model(
        "FusedMatMul", [a, one, zero], {"activation": "Gelu"}, domain="workbench", consts=(1, 2)
    )
    got = wb.Session(wb.load(model, check=False), "x86").run(feeds)["out0"].reshape(-1)
    finite = np.isfinite(x)
    exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x[finite].tolist()])
    normal = np.abs(exact) >= np.finfo(np.float32).tiny
    ulps = np.abs(got[finite] - exact)[normal] / np.spacing(
        np.abs(exact[normal]).astype(np.float32)
    )
    assert ulps.max() <= 8, f"{ulps.max():.1f} ulp at x = {x[finite][normal][ulps.argmax()]}"
    assert np.isnan(got[-6]) and got[-5] == np.inf and np.isnan(got[-4])  # as the formula


def test_fused_conv_shows_the_selected_algorithm():
    x, w, b = f32(1, 4, 6, 6), f32(5, 4, 3, 3), f32(5)
    attrs = {"pads": [1, 1, 1, 1], "activation": "Relu"}
    with autotune.settings(force={"Conv": "winograd_f2"}):
        model, feeds = node_model("FusedConv", [x, w, b], attrs, domain="workbench", consts=(1, 2))
        sess = wb.Session(wb.load(model, check=False), "x86")
    (step,) = sess.plan.steps
    assert step.kernel.algorithm == "winograd_f2+epilogue"
    ref = run_node("reference", "Conv", [x, w, b], {"pads": [1, 1, 1, 1]}, consts=(1, 2))[0]
    assert_close(sess.run(feeds)["out0"], np.maximum(ref, 0), rtol=1e-4, atol=1e-5)


def fused_conv_session(alg, inputs, attrs):
    """A FusedConv (W, B constant) with the Conv algorithm `alg` forced and the output's
    shape declared, as the fusion pass leaves it in a model: the conv then runs the
    epilogue on its blocks (`post`), which it cannot without a static shape for Z."""
    from onnx import TensorProto, helper

    with autotune.settings(force={"Conv": alg}):
        model, feeds = node_model("FusedConv", inputs, attrs, domain="workbench", consts=(1, 2))
        shape = inputs[3].shape
        model.graph.output[0].CopyFrom(
            helper.make_tensor_value_info("out0", TensorProto.FLOAT, shape)
        )
        sess = wb.Session(wb.load(model, check=False), "x86")
    return sess, feeds


@pytest.mark.parametrize(("xs", "ws", "attrs"), DEPTHWISE_1[:2])
def test_fused_conv_epilogue_on_the_channels_last_depthwise(xs, ws, attrs):
    """depthwise_nhwc runs the fused epilogue (bias, residual, activation) on each block of
    channels as it transposes them back: every channel of every image once."""
    x, w, b = f32(*xs), f32(*ws), f32(ws[0])
    ref = run_node("reference", "Conv", [x, w, b], attrs, consts=(1, 2))[0]
    z = f32(*ref.shape)
    fused = {**attrs, "activation": "Relu"}
    sess, feeds = fused_conv_session("depthwise_nhwc", [x, w, b, z], fused)
    (step,) = sess.plan.steps
    assert step.kernel.algorithm == "depthwise_nhwc+epilogue"
    assert_close(sess.run(feeds)["out0"], np.maximum(ref + z, 0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("alg", sorted(WINOGRAD_TOL))
@pytest.mark.parametrize(
    ("xs", "ws", "attrs"),
    [
        ((2, 5, 13, 11), (19, 5, 3, 3), {"pads": [1, 1, 1, 1]}),  # tile rows past the edge
        ((1, 17, 10, 9), (6, 17, 3, 3), {"pads": [0, 1, 2, 0]}),
    ],
)
def test_fused_conv_epilogue_on_winograd_tile_rows(alg, xs, ws, attrs):
    """Winograd runs the fused epilogue (bias, residual, activation) on each part's rows
    of output tiles as they are written: every output position of every image once, the
    last tile row cropped."""
    x, w, b = f32(*xs), f32(*ws), f32(ws[0])
    ref = run_node("reference", "Conv", [x, w, b], attrs, consts=(1, 2))[0]
    z = f32(*ref.shape)
    fused = {**attrs, "activation": "Relu"}
    sess, feeds = fused_conv_session(alg, [x, w, b, z], fused)
    (step,) = sess.plan.steps
    assert step.kernel.algorithm == f"{alg}+epilogue"
    want = np.maximum(ref + z, 0)
    got = sess.run(feeds)["out0"]
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= WINOGRAD_TOL[alg], f"{alg} relative error {err:.2e} on {xs} {ws} {attrs}"


def test_small_depthwise_planes_default_to_channels_last():
    """Below MIN_FLOPS nothing is measured: the heuristic picks channels-last for a small
    plane with one channel per group, the NCHW kernel for a large one or a multiplier."""
    from workbench.engine.backends.x86.ops_conv import _ConvGeom

    def default(xs, ws, group):
        return _ConvGeom(xs, ws, {"pads": [1, 1, 1, 1]}, group).algorithm

    assert default((1, 960, 7, 7), (960, 1, 3, 3), 960) == "depthwise_nhwc"
    assert default((1, 32, 112, 112), (32, 1, 3, 3), 32) == "depthwise"
    assert default((1, 192, 28, 28), (192, 1, 3, 3), 192) == "depthwise"
    assert default((1, 8, 7, 7), (16, 1, 3, 3), 8) == "depthwise"  # two outputs per input


# large enough to be measured (autotune.MIN_FLOPS), small enough to be quick
BIG = ((1, 32, 20, 20), (32, 32, 3, 3), {"pads": [1, 1, 1, 1]})


def test_selection_stops_measuring_when_the_process_budget_is_spent(monkeypatch):
    xs, ws, attrs = BIG
    monkeypatch.setitem(autotune.stats, "seconds", autotune.PROCESS_BUDGET_S)
    before = autotune.stats["measured"]
    sess, _ = session("Conv", [f32(*xs), f32(*ws)], attrs, consts=(1,))
    run = sess.plan.steps[0].run
    assert run.choice.source == "budget" and autotune.stats["measured"] == before
    assert sess.plan.steps[0].kernel.algorithm == run.choice.algorithm  # the default
    autotune.reset_budget()
    sess, _ = session("Conv", [f32(*xs), f32(*ws)], attrs, consts=(1,))
    assert sess.plan.steps[0].run.choice.source == "measured"


def test_the_budget_counts_timed_calls_not_warm_ups(monkeypatch):
    """A candidate's first call compiles its kernels on a machine whose numba cache is
    empty: it is not measuring, and must not spend the budget other nodes need."""
    calls = []

    def slow_first():
        def fn(x):
            calls.append(x)
            if len(calls) == 1:
                time.sleep(0.3)  # (the warm-up: a JIT compile)

        return fn

    monkeypatch.setattr(autotune, "PROCESS_BUDGET_S", 0.2)
    autotune.reset_budget()
    fast = {"a": slow_first, "b": lambda: lambda x: None}
    key = autotune.cache_key("Test", ["warm-up", time.time()], {})
    _, _, choice = autotune.select("Test", key, fast, "a", lambda: (1,))
    assert choice.source == "measured" and len(calls) > 1
    assert autotune.stats["seconds"] < 0.2  # the 0.3 s warm-up not counted
    key2 = autotune.cache_key("Test", ["warm-up 2", time.time()], {})
    assert autotune.select("Test", key2, fast, "a", lambda: (1,))[2].source == "measured"


def test_each_timed_call_follows_a_parallel_loop_as_in_a_model(monkeypatch):
    """In a model the kernel before a node's has just run its parts on numba's threads,
    which then spin; a candidate on the Python pool shares the cores with them. So every
    timed call (not the warm-ups) comes right after such a loop (`_previous_kernel`)."""
    events = []
    monkeypatch.setattr(autotune, "_previous_kernel", lambda: lambda: events.append("loop"))

    def candidate(name):
        def fn(x):
            events.append(name)
            time.sleep(0.002)  # (alike: both within FINAL_RATIO, measured again in turns)

        return lambda: fn

    key = autotune.cache_key("Test", ["after a loop", time.time()], {})
    autotune.select("Test", key, {"a": candidate("a"), "b": candidate("b")}, "a", lambda: (1,))
    calls = [i for i, e in enumerate(events) if e != "loop"]
    after_loop = [i for i in calls if i > 0 and events[i - 1] == "loop"]
    # warm-ups: one per candidate measured, one per finalist measured again (both here)
    assert len(calls) - len(after_loop) == 4 and len(after_loop) >= 2 * autotune.REPS
    assert events.count("loop") == len(after_loop)


def test_the_loop_before_a_timed_call_runs_on_numbas_threads():  # (2 threads: conftest)
    from workbench.engine.backends.x86 import _native

    before = autotune._previous_kernel()
    assert before is (_native.spin_up if _native.available() else autotune._nothing)
    before()  # (runs: a parallel loop of next to no work)


def test_a_choice_measured_while_the_host_is_busy_is_used_not_stored(monkeypatch):
    """A probe slower than BUSY_RATIO x the least this machine has shown (kept with the
    choices) says the host is busy: the choice is used, the next compile measures again."""
    probe = {"seconds": 1e-3}
    monkeypatch.setattr(autotune, "BUSY_RATIO", 1.6)  # (2 ms: busy; 1.2: not)
    monkeypatch.setattr(autotune, "_probe", lambda: probe["seconds"])
    fast = {"a": lambda: lambda x: None, "b": lambda: lambda x: time.sleep(0.001)}
    key = autotune.cache_key("Test", ["busy", time.time()], {})
    assert not autotune.host_busy()  # (the first probe is the least so far)
    probe["seconds"] = 2e-3
    _, _, choice = autotune.select("Test", key, fast, "b", lambda: (1,))
    assert (choice.algorithm, choice.source) == ("a", "measured, busy")
    assert autotune.stats["busy"] >= 1
    probe["seconds"] = 1.2e-3  # (within the ratio)
    assert autotune.select("Test", key, fast, "b", lambda: (1,))[2].source == "measured"
    assert autotune.select("Test", key, fast, "b", lambda: (1,))[2].source == "cache"
    probe["seconds"] = 0.5e-3  # a faster probe is the new least: 1 ms is busy now
    assert not autotune.host_busy()
    probe["seconds"] = 1e-3
    assert autotune.host_busy()


def test_the_probe_times_a_loop_on_this_thread():
    from workbench.engine.backends.x86 import _native

    seconds = autotune._probe()
    assert seconds is None if not _native.available() else 0 < seconds < 0.1


def test_openblas_on_the_pool_is_not_measured_where_mkl_runs_on_numbas_threads(monkeypatch):
    """Timed alone the pool's OpenBLAS GEMMs won now and then; in models they ran at
    about twice that (ops_gemm._contenders). A single row, or one forced, keeps them."""
    from workbench.engine.backends.x86 import _native, ops_gemm

    b = f32(256, 256)
    everything = ops_gemm._gemm_builders(b, rows=64)
    flops = 2.0 * 64 * 256 * 256
    offered = ops_gemm._contenders(everything, 64, flops, "MatMul")
    if not (_mkl.available() and _native.available()):
        assert offered == everything
        return
    assert set(offered) == set(everything) - set(ops_gemm.POOL_GEMMS) and offered
    assert ops_gemm._contenders(everything, 1, flops / 64, "MatMul") == everything
    assert ops_gemm._contenders(everything, 64, autotune.MIN_FLOPS / 2, "MatMul") == everything
    monkeypatch.setenv("WORKBENCH_ALGORITHM", "MatMul=gemm_bt")
    assert ops_gemm._contenders(everything, 64, flops, "MatMul") == everything
    monkeypatch.delenv("WORKBENCH_ALGORITHM")
    sess, _ = session("MatMul", [f32(64, 256), b], {}, consts=(1,))
    assert sess.plan.steps[0].run.algorithm not in {f"{n}_flat" for n in ops_gemm.POOL_GEMMS}
    assert set(sess.plan.steps[0].run.candidates) == set(offered)


def test_a_store_drops_the_choices_of_other_cache_versions():
    """Keys of another CACHE_VERSION are never read again: a store leaves them out."""
    path = autotune.cache_path()
    old = json.loads(autotune.cache_key("Test", ["old"], {}))
    old[5] = autotune.CACHE_VERSION - 1
    stale = json.dumps(old, sort_keys=True, default=str)
    path.write_text(json.dumps({stale: {"algorithm": "a"}, "not json": {}}))
    key = autotune.cache_key("Test", ["new", time.time()], {})
    autotune.select(
        "Test", key, {"a": lambda: lambda x: None, "b": lambda: lambda x: None}, "a", lambda: (1,)
    )
    stored = json.loads(path.read_text())
    assert key in stored and stale not in stored and "not json" not in stored


def test_selection_measures_once_then_hits_the_disk_cache():
    xs, ws, attrs = BIG
    w = f32(*ws)
    before = dict(autotune.stats)
    sess, _ = session("Conv", [f32(*xs), w], attrs, consts=(1,))
    run = sess.plan.steps[0].run
    assert autotune.stats["measured"] == before["measured"] + 1
    assert run.choice.source == "measured"
    want = {"im2col_gemm", "im2col_gemm_t", "winograd_f2", "winograd_f4"}
    assert set(run.candidates) == want | ({"im2col_gemm_mkl"} if _mkl.available() else set())
    assert all(ms > 0 for ms in run.candidates.values())
    # the fastest, or one within MEMORY_SLACK of it that holds less memory
    chosen = sess.plan.steps[0].kernel.algorithm
    assert chosen == autotune.pick(run.candidates, run.candidates_mib)
    fastest = min(run.candidates.values())
    assert run.candidates[chosen] <= fastest * (1 + autotune.MEMORY_SLACK)
    # Winograd holds its transformed weights ((m+2)^2 / 9 times the weight's 36 KiB), im2col none
    assert run.candidates_mib["winograd_f2"] == pytest.approx(16 * 32 * 32 * 4 / 2**20, rel=1e-2)
    assert run.candidates_mib["im2col_gemm"] == 0
    assert autotune.cache_path().exists()

    autotune.clear_memory()  # a new process: only the file remains
    sess2, _ = session("Conv", [f32(*xs), w], attrs, consts=(1,))
    run2 = sess2.plan.steps[0].run
    assert autotune.stats["measured"] == before["measured"] + 1  # nothing measured
    assert autotune.stats["cache_hits"] == before["cache_hits"] + 1
    assert run2.choice.source == "cache" and run2.algorithm == run.algorithm
    assert run2.candidates == run.candidates  # the times measured then, for the profiler
    assert run2.candidates_mib == run.candidates_mib

    session("Conv", [f32(1, 32, 21, 20), w], attrs, consts=(1,))  # another shape: a miss
    assert autotune.stats["measured"] == before["measured"] + 2


def test_pick_prefers_less_memory_only_within_the_slack(monkeypatch):
    monkeypatch.setattr(autotune, "MEMORY_SLACK", 0.05)
    ms = {"packed": 1.00, "plain": 1.04, "other": 1.20}
    mib = {"packed": 9.0, "plain": 0.0, "other": 0.0}
    assert autotune.pick(ms, mib) == "plain"  # 4% slower, no copy of its own
    assert autotune.pick({**ms, "plain": 1.06}, mib) == "packed"  # 6%: the copy buys speed
    assert autotune.pick(ms, {}) == "packed"  # nothing held anywhere: the fastest
    # two packs of one weight, a few KiB apart: the faster (MEMORY_SAVING is not met)
    assert autotune.pick(ms, {"packed": 4.02, "plain": 4.01, "other": 0.0}) == "packed"
    assert autotune.pick(ms, {"packed": 4.02, "plain": 3.5, "other": 9.0}) == "plain"
    monkeypatch.setattr(autotune, "MEMORY_SLACK", 0.0)
    assert autotune.pick(ms, mib) == "packed"


def test_a_slow_spell_in_one_turn_is_undone_by_measuring_again_side_by_side(monkeypatch):
    """The host slows down while the faster candidate has its turn: alone it looks slower
    (2.8 ms against 2); measured again in turns with the other, once the spell is over, it
    is faster (1 ms) and wins. With no second measuring (FINAL_RATIO 1: only the fastest
    of the first turns goes on) the spell would decide."""
    import time

    spell = [True]

    def sleeper(ms):
        def build():
            def fn(x, out):
                time.sleep(ms() / 1e3)

            return fn

        return build

    builders = {"plain": sleeper(lambda: 2.0), "packed": sleeper(lambda: 2.8 if spell[0] else 1.0)}
    args = lambda: (np.ones(4, np.float32), np.empty(4, np.float32))  # noqa: E731
    confirm = autotune.confirm

    def spell_ends(*a):
        spell[0] = False
        return confirm(*a)

    monkeypatch.setattr(autotune, "confirm", spell_ends)
    key = autotune.cache_key("Test", [[4]], {})
    alg, _, choice = autotune.select("Test", key, builders, "plain", args, flops=1e9)
    assert alg == "packed" and choice.source == "measured"
    assert choice.candidates["packed"] < choice.candidates["plain"]

    spell[0] = True
    monkeypatch.setattr(autotune, "FINAL_RATIO", 1.0)
    key = autotune.cache_key("Test", [[5]], {})
    assert autotune.select("Test", key, builders, "plain", args, flops=1e9)[0] == "plain"


def test_finalists_are_the_near_fastest_that_fit_in_memory_together(monkeypatch):
    monkeypatch.setattr(autotune, "FINAL_RATIO", 1.5)
    monkeypatch.setattr(autotune, "FINAL_MIB", 256.0)
    ms = {"c": 1.6, "a": 1.0, "b": 1.4}
    assert autotune._finalists(ms, {}) == ["a", "b"]  # c is 1.6x the fastest
    assert autotune._finalists(ms, {"a": 200.0, "b": 100.0}) == ["a"]  # 300 MiB together
    assert autotune._finalists(ms, {"a": 300.0}) == ["a"]  # the fastest, whatever it holds


def test_a_streamed_weight_is_charged_its_read_from_memory(monkeypatch):
    """Two candidates doing the same work; one says it streams 2 MB of weights, which at
    1 GB/s it cannot read in less than 2 ms, whatever its timing hot in cache: it loses,
    and the read's time is kept with the choice (and in the cache, for the profiler)."""
    monkeypatch.setattr(autotune, "_BANDWIDTH", [1e9])

    def builder(nbytes: int):
        def build():
            def fn(x, out):
                np.copyto(out, x)

            fn.streamed = lambda: nbytes
            return fn

        return build

    builders = {"cold": builder(2_000_000), "hot": builder(0)}
    key = autotune.cache_key("Test", [[64]], {})
    args = lambda: (np.ones(64, np.float32), np.empty(64, np.float32))  # noqa: E731
    alg, _, choice = autotune.select("Test", key, builders, "cold", args, flops=1e9)
    assert alg == "hot" and choice.source == "measured"
    assert choice.cold == {"cold": pytest.approx(2.0)}
    assert choice.candidates["cold"] >= 2.0 > choice.candidates["hot"]
    autotune.clear_memory()
    _, _, again = autotune.select("Test", key, builders, "cold", args, flops=1e9)
    assert again.source == "cache" and again.cold == choice.cold


@needs_mkl
def test_a_product_split_by_rows_streams_its_weight_once_per_part(monkeypatch):
    """Each part of a product split by A's rows reads all of B (the same lines); split by
    B's columns or depth, each thread reads its share. Hot in cache the two tie
    (ResNet-50's 7x7 512 -> 2048, 0.474 against 0.475 ms); in the model, B cold, the rows
    split took 0.84-0.87 ms, the columns 0.50-0.58. (2 threads: conftest.)"""
    from workbench.engine.backends.x86.ops_gemm import _gemm_builders

    rows, k, n = 49, 512, 512
    builders = _gemm_builders(f32(k, n), rows=rows)
    x2, o2 = f32(rows, k), np.empty((rows, n), np.float32)
    read = {}
    for name in ("gemm", "gemm_cols", "mkl_packed", "mkl_packed_cols", "mkl_packed_k"):
        fn = builders[name]()
        fn(x2, o2)
        read[name] = autotune.streamed(fn)
    weight = 4 * k * n
    assert read["gemm"] == 2 * weight and read["gemm_cols"] == weight // 2
    assert read["mkl_packed"] == pytest.approx(2 * weight, rel=0.1)
    assert read["mkl_packed_cols"] == pytest.approx(weight / 2, rel=0.1)
    assert read["mkl_packed_k"] == pytest.approx(weight / 2, rel=0.1)
    # so where memory is slow, selection takes the column or depth split
    monkeypatch.setattr(autotune, "_BANDWIDTH", [weight / 0.05])  # B in 50 ms: slower than all
    monkeypatch.setattr(autotune, "MEMORY_SLACK", 0.0)
    key = autotune.cache_key("Test", [[rows, k, n]], {})
    mk = lambda: (x2, o2)  # noqa: E731
    alg, _, choice = autotune.select("Test", key, builders, "gemm", mk, flops=1e9)
    assert choice.cold["mkl_packed"] == pytest.approx(4 * choice.cold["mkl_packed_cols"], rel=0.1)
    assert alg not in ("gemm", "gemm_t", "gemm_bt", "mkl_packed", "mkl_packed_padded")


def test_a_single_row_on_two_threads_is_charged_half_its_weights_read(monkeypatch):
    """A classifier's one row: the gemv kernel splits the weight's columns over the
    threads, OpenBLAS reads all of it on one (ResNet-50's 2048 -> 1000: 0.67 ms in the
    model, onnxruntime 0.35); charged alike, the two tied and the first listed won."""
    from workbench.engine.backends.x86.ops_gemm import _gemm_builders

    k, n = 512, 1024
    bt = f32(n, k)
    builders = _gemm_builders(bt.T, rows=1)
    x2, o2 = f32(1, k), np.empty((1, n), np.float32)
    read = {}
    for name in ("gemm", "gemv"):
        fn = builders[name]()
        fn(x2, o2)
        read[name] = autotune.streamed(fn)
    assert read == {"gemm": 4 * k * n, "gemv": 2 * k * n}


def test_memory_bandwidth_is_measured_once():
    autotune._BANDWIDTH.clear()
    first = autotune.bandwidth()
    assert 1e8 < first < 1e12  # bytes per second: between 0.1 and 1000 GB/s
    assert autotune.bandwidth() == first


@pytest.mark.skipif(not _mkl.available(), reason="the mkl extra is not installed")
def test_mkl_packs_count_the_pages_they_fill():
    """A pack reserves megabytes (cblas_sgemm_pack_get_size) but fills fewer; `held` counts
    the filled pages. Laid out for one row MKL pads the columns to 512 + 128 (384 -> 640:
    `mkl_packed_padded`), for more rows it fills about the weight (`mkl_packed`, and each
    column range of `mkl_packed_cols`), which is what the memory rule weighs."""
    from workbench.engine.backends.x86 import ops_gemm

    b = f32(384, 384)
    builders = ops_gemm._gemm_builders(b, rows=256)
    whole, padded = builders["mkl_packed"](), builders["mkl_packed_padded"]()
    assert b.nbytes <= autotune.held(whole) < 1.1 * b.nbytes < _mkl.PackedB(b).nbytes
    assert autotune.held(padded) > 1.6 * b.nbytes
    halves = builders["mkl_packed_cols"]()
    assert autotune.held(halves) == 0  # packed on the first call, per column range
    x = f32(256, 384)
    saved = _threads.current()
    _threads.apply(2)  # two column ranges, each packed alone
    try:
        with _parallel.always_split():
            for fn in (whole, padded, halves):
                out = np.full((256, 384), np.nan, np.float32)
                fn(x, out)
                np.testing.assert_allclose(out, x @ b, rtol=1e-4, atol=1e-3)
    finally:
        _threads.apply(saved)
    assert b.nbytes <= autotune.held(halves) < 1.1 * b.nbytes
    assert autotune.held(builders["gemm_bt"]()) == b.nbytes
    # Gemm's transB: B is a view of the initializer, and gemm_bt's copy is the initializer
    assert autotune.held(ops_gemm._gemm_builders(b.T)["gemm_bt"]()) == 0
    assert autotune.held(builders["gemm"]()) == 0
    # one row: the padded layout is the only one MKL has, offered once
    assert "mkl_packed_padded" not in ops_gemm._gemm_builders(b, rows=1)


@pytest.mark.skipif(not _mkl.available(), reason="the mkl extra is not installed")
def test_a_weight_made_for_the_product_is_held_only_where_read():
    """A conv's reordered weight (`_gemm_builders(bm, source)`): the candidates reading it
    per call hold it and say so; the packed ones keep only their packs (a range packed
    later is packed from a fresh copy), which together weigh about the weight."""
    import gc
    import weakref

    from workbench.engine.backends.x86 import ops_gemm

    w = f32(384, 384)
    made = []

    def source() -> np.ndarray:
        made.append(1)
        return w.copy()

    bm = source()
    alive = weakref.ref(bm)
    builders = ops_gemm._gemm_builders(bm, source, rows=64)
    plain, packed = builders["gemm"](), builders["mkl_packed"]()
    cols, depth = builders["mkl_packed_cols"](), builders["mkl_packed_k"]()
    assert autotune.held(plain) == w.nbytes
    assert autotune.held(packed) == _mkl.PackedB(w, 2).resident()
    del plain, builders, bm
    gc.collect()
    assert alive() is None  # the packed candidates kept no copy of their own
    x = f32(64, 384)
    saved = _threads.current()
    _threads.apply(2)  # two ranges each: packed on the first call, from source()
    try:
        with _parallel.always_split():
            for fn in (packed, cols, depth):
                out = np.full((64, 384), np.nan, np.float32)
                fn(x, out)
                assert_close(out, x @ w, rtol=1e-4, atol=1e-3)
    finally:
        _threads.apply(saved)
    assert len(made) == 3  # bm, then one copy per split candidate's first call
    for fn in (packed, cols, depth):
        assert w.nbytes <= autotune.held(fn) < 1.1 * w.nbytes


@pytest.mark.parametrize("how", ["settings", "env"])
def test_selection_disabled_takes_the_heuristic(how, monkeypatch):
    xs, ws, attrs = BIG
    before = autotune.stats["measured"]
    if how == "env":
        monkeypatch.setenv("WORKBENCH_AUTOTUNE", "0")
        sess, _ = session("Conv", [f32(*xs), f32(*ws)], attrs, consts=(1,))
    else:
        with autotune.settings(enabled=False):
            sess, _ = session("Conv", [f32(*xs), f32(*ws)], attrs, consts=(1,))
    run = sess.plan.steps[0].run
    assert run.choice.source == "disabled" and run.algorithm == "im2col_gemm"
    assert autotune.stats["measured"] == before


def test_selection_on_first_call_shows_in_the_plan():
    xs, ws, attrs = BIG
    x, w = f32(*xs), f32(*ws)
    with autotune.settings(force={"Conv": "winograd_f4"}):
        sess, feeds = session("Conv", [x, w], attrs, consts=(1,), symbolic=True)
        assert sess.plan.steps[0].kernel.algorithm == "im2col_gemm"  # not chosen yet
        got = sess.run(feeds)["out0"]
    assert sess.kernels()[0]["algorithm"] == "winograd_f4"
    ref = run_node("reference", "Conv", [x, w], attrs, consts=(1,))[0]
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) <= WINOGRAD_TOL["winograd_f4"]


def test_thread_setting_reaches_blas_and_numba(monkeypatch):
    import numba

    saved = _threads.current()
    try:
        assert _threads.apply(1) == 1
        assert _threads.blas_threads() == 1 and numba.get_num_threads() == 1
        assert _threads.info()["source"] == "argument" and _parallel.threads() == 1
        if _threads.usable_cpus() >= 2 and numba.config.NUMBA_NUM_THREADS >= 2:
            _threads.apply(2)
            # the kernels split their own work over 2 threads; BLAS runs one per call
            assert _threads.blas_threads() == 1 and numba.get_num_threads() == 2
            assert _parallel.threads() == 2
        monkeypatch.setenv("WORKBENCH_THREADS", "3")
        assert _threads.choose() == (3, "WORKBENCH_THREADS")
        monkeypatch.delenv("WORKBENCH_THREADS")
        monkeypatch.setattr("os.getloadavg", lambda: (1000.0, 1000.0, 1000.0))
        assert _threads.choose() == (1, "busy")
        monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
        assert _threads.choose() == (_threads.usable_cpus(), "cpus")
    finally:
        _threads.apply(saved)
