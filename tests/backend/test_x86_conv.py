"""x86 Conv and ConvTranspose against the reference backend: every algorithm (1x1 GEMM,
im2col, grouped, depthwise, generic N-d), padding modes, strides, dilations, odd channel
counts and image sizes, batch > 1, constant and runtime weights; plus the algorithm each
node dispatches to, dtype fallbacks and shape errors."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from workbench.engine.backends.base import CompileContext
from workbench.engine.backends.x86 import BACKEND
from workbench.engine.ir import Node, Value
from workbench.errors import AllocationError, KernelError
from workbench.testing import assert_close, node_model, run_node

rng = np.random.default_rng(7)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def check(op, inputs, attrs, *, consts=(1, 2), rtol=1e-4, atol=1e-5):
    got = run_node("x86", op, inputs, attrs, consts=consts, expect_native=True)
    ref = run_node("reference", op, inputs, attrs, consts=consts)
    assert_close(got[0], ref[0], rtol=rtol, atol=atol, err_msg=f"{op} {attrs}")
    return got[0]


def algorithm(op, inputs, attrs, consts=(1, 2)) -> str:
    model, _ = node_model(op, inputs, attrs, consts=consts)
    sess = wb.Session(wb.load(model, check=False), "x86")
    (step,) = sess.plan.steps
    assert not step.kernel.fallback
    return getattr(step.kernel.run, "algorithm", step.kernel.algorithm)


# (x shape, w shape, attrs, expected algorithm)
CONV_CASES = [
    ((1, 3, 7, 9), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}, "im2col_gemm"),
    ((2, 5, 8, 7), (6, 5, 3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1]}, "im2col_gemm"),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 0, 3]}, "im2col_gemm"),
    ((1, 3, 9, 8), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, "im2col_gemm"),
    ((1, 3, 9, 8), (4, 3, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, "im2col_gemm"),
    ((1, 3, 9, 8), (4, 3, 2, 4), {"auto_pad": "VALID", "strides": [1, 2]}, "im2col_gemm"),
    ((2, 12, 5, 6), (7, 12, 1, 1), {}, "gemm_1x1"),
    ((2, 12, 5, 6), (8, 3, 1, 1), {"group": 4}, "gemm_1x1"),
    ((1, 12, 7, 6), (7, 12, 1, 1), {"strides": [2, 2]}, "im2col_gemm"),
    ((2, 6, 9, 9), (10, 3, 3, 3), {"group": 2, "dilations": [2, 1], "pads": [2, 1, 2, 1]},
     "grouped_im2col_gemm"),
    ((2, 6, 9, 8), (6, 1, 3, 3), {"group": 6, "strides": [2, 2], "pads": [1, 1, 1, 1]},
     "depthwise_nhwc"),  # small planes, one channel per group: channels-last
    ((1, 5, 10, 7), (5, 1, 5, 3), {"group": 5, "dilations": [2, 2], "auto_pad": "SAME_LOWER"},
     "depthwise_nhwc"),
    ((1, 4, 15, 14), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}, "depthwise"),
    ((2, 3, 9, 8), (6, 1, 3, 3), {"group": 3, "pads": [0, 1, 2, 0]}, "depthwise"),  # x2 mult
    ((2, 5, 11), (3, 5, 4), {"strides": [2], "pads": [1, 2], "dilations": [2]}, "im2col_gemm"),
    ((2, 4, 11), (4, 1, 3), {"group": 4, "auto_pad": "SAME_UPPER"}, "depthwise_nhwc"),
    ((1, 2, 5, 5, 4), (3, 2, 3, 3, 2), {"pads": [1, 0, 1, 1, 0, 0]}, "generic"),
]  # fmt: skip


@pytest.mark.parametrize(("xs", "ws", "attrs", "alg"), CONV_CASES)
def test_conv_matches_reference(xs, ws, attrs, alg):
    x, w, b = f32(*xs), f32(*ws), f32(ws[0])
    y = check("Conv", [x, w, b], attrs)
    assert y.dtype == np.float32
    assert algorithm("Conv", [x, w, b], attrs) == alg


@pytest.mark.parametrize("consts", [(), (1,)], ids=["runtime_weights", "const_no_bias"])
def test_conv_runtime_weights_and_no_bias(consts):
    x, w = f32(2, 4, 6, 5), f32(3, 4, 3, 3)
    check("Conv", [x, w], {"pads": [1, 1, 1, 1]}, consts=consts)
    x, w, b = f32(2, 6, 6, 5), f32(6, 1, 3, 3), f32(6)
    check("Conv", [x, w, b], {"group": 6}, consts=consts)


def test_conv_same_lower_differs_from_upper():
    x, w = f32(1, 2, 6, 6), f32(2, 2, 2, 2)
    lo = check("Conv", [x, w], {"auto_pad": "SAME_LOWER"}, consts=(1,))
    up = check("Conv", [x, w], {"auto_pad": "SAME_UPPER"}, consts=(1,))
    assert lo.shape == up.shape == (1, 2, 6, 6)
    assert not np.allclose(lo, up)


def test_conv_algorithm_auto_without_static_weight():
    x, w = f32(1, 4, 6, 5), f32(3, 4, 1, 1)
    model, _ = node_model("Conv", [x, w], {}, consts=())
    # no shape inference for the weight: the factory cannot know the kernel statically
    model.graph.input[1].type.tensor_type.ClearField("shape")
    sess = wb.Session(wb.load(model, check=False), "x86")
    assert sess.plan.steps[0].kernel.run.algorithm in ("auto", "gemm_1x1")
    out = sess.run({"in0": x, "in1": w})["out0"]
    assert_close(out, run_node("reference", "Conv", [x, w])[0])


def test_conv_float64_runs_on_reference():
    x, w = f32(1, 2, 5, 5).astype(np.float64), f32(3, 2, 3, 3).astype(np.float64)
    model, feeds = node_model("Conv", [x, w], {}, consts=(1,))
    sess = wb.Session(wb.load(model, check=False), "x86")
    assert sess.plan.fallbacks  # declined at compile time: the dtype is known
    assert sess.run(feeds)["out0"].dtype == np.float64


def _untyped_node(op: str, n_inputs: int, attrs: dict) -> Node:
    ins = [Value(f"i{k}") for k in range(n_inputs)]
    return Node(op, ins, [Value("y")], attrs)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_conv_runtime_float64_stays_float64(op):
    """dtype unknown when compiling: a float64 call computes generically in float64."""
    node = _untyped_node(op, 3, {"pads": [1, 0, 1, 0]})
    run = BACKEND.kernels.lookup("", op, 17).factory(node, CompileContext(BACKEND, 17, "fp32"))
    x, w, b = (a.astype(np.float64) for a in (f32(2, 4, 5, 6), f32(4, 4, 3, 3), f32(4)))
    (y,) = run(x, w, b)
    (y32,) = run(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32))
    assert y.dtype == np.float64 and y32.dtype == np.float32
    assert_close(y.astype(np.float32), y32, rtol=1e-4, atol=1e-5)


def test_conv_bad_shapes_raise_kernel_error():
    x, w = f32(1, 4, 6, 6), f32(3, 5, 3, 3)
    model, feeds = node_model("Conv", [x, w], {}, consts=())
    sess = wb.Session(wb.load(model, check=False), "x86")
    with pytest.raises(KernelError, match="channels"):
        sess.run(feeds)


# -- ConvTranspose ----------------------------------------------------------------------------
CONVT_CASES = [
    ((1, 3, 4, 5), (3, 2, 3, 3), {}),
    ((2, 3, 4, 5), (3, 4, 3, 2), {"strides": [2, 3], "pads": [1, 0, 0, 1],
                                  "output_padding": [1, 2]}),
    ((2, 3, 4, 5), (3, 4, 3, 3), {"strides": [2, 2], "dilations": [2, 1]}),
    ((1, 3, 4, 5), (3, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 4, 5), (3, 2, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 3, 4, 5), (3, 2, 3, 3), {"output_shape": [10, 12], "strides": [2, 2]}),
    ((2, 3, 7), (3, 2, 4), {"strides": [3], "pads": [1, 2], "output_padding": [1]}),
    ((1, 2, 3, 4, 3), (2, 2, 3, 2, 2), {"strides": [2, 1, 2], "pads": [1, 0, 0, 0, 1, 1]}),
]  # fmt: skip


@pytest.mark.parametrize(("xs", "ws", "attrs"), CONVT_CASES)
@pytest.mark.parametrize("consts", [(1, 2), ()], ids=["const", "runtime"])
def test_conv_transpose_matches_reference(xs, ws, attrs, consts):
    x, w, b = f32(*xs), f32(*ws), f32(ws[1])
    check("ConvTranspose", [x, w, b], attrs, consts=consts)
    expect = "generic" if len(xs) > 4 else "gemm_col2im"
    assert algorithm("ConvTranspose", [x, w, b], attrs, consts) == expect


@pytest.mark.parametrize(
    ("xs", "ws", "attrs"),
    [
        ((2, 4, 4, 5), (4, 3, 3, 3), {"group": 2, "strides": [2, 1]}),
        ((2, 4, 4, 5), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ],
)
def test_conv_transpose_groups(xs, ws, attrs):
    x, w, b = f32(*xs), f32(*ws), f32(ws[1] * attrs["group"])
    check("ConvTranspose", [x, w, b], attrs)


def test_conv_transpose_absurd_output_shape_refused():
    x, w = f32(1, 1, 2, 2), f32(1, 1, 2, 2)
    with pytest.raises(AllocationError):
        run_node("x86", "ConvTranspose", [x, w], {"output_shape": [1 << 20, 1 << 20]}, consts=(1,))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_conv_transpose_same_with_kernel_shorter_than_stride(auto_pad):
    # total padding would be negative: the output is the natural size, not in * stride
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    w = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    attrs = {"strides": [3, 3], "auto_pad": auto_pad}
    (got,) = run_node("x86", "ConvTranspose", [x, w], attrs, consts=[1], expect_native=True)
    (want,) = run_node("reference", "ConvTranspose", [x, w], attrs, consts=[1])
    assert got.shape == want.shape == (1, 3, 11, 14)
    assert_close(got, want)
