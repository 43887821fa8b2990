"""Every cuda kernel against `reference` on tiny shapes (the simulator runs each thread in
Python), fp16 within fp16 tolerance, tf32 rounding, and the plan's copy steps."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.testing import assert_close, run_node

R = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


X = f32(2, 3, 4)
IMG = f32(1, 4, 5, 5)
Q = f32(1, 4, 8)
CASES = [
    ("Relu", [X], {}, ""),
    ("Tanh", [X], {}, ""),
    ("Sigmoid", [X], {}, ""),
    ("Exp", [X], {}, ""),
    ("Erf", [X], {}, ""),
    ("LeakyRelu", [X], {"alpha": 0.2}, ""),
    ("HardSwish", [X], {}, ""),
    ("Softplus", [X], {}, ""),
    ("Add", [X, f32(4)], {}, ""),
    ("Mul", [X, f32(3, 1)], {}, ""),
    ("Div", [X, np.abs(f32(1, 4)) + 1], {}, ""),
    ("Sub", [f32(3, 1), f32(1, 4)], {}, ""),
    ("Pow", [np.abs(X) + 0.5, np.float32(2.0)], {}, ""),
    ("Max", [X, f32(4), f32(3, 4)], {}, ""),
    ("Mean", [X, f32(4)], {}, ""),
    ("Less", [X, f32(4)], {}, ""),
    ("Where", [X > 0, X, f32(4)], {}, ""),
    ("Clip", [X, np.float32(-0.5), np.float32(0.5)], {}, ""),
    ("Cast", [X], {"to": 7}, ""),
    ("Gelu", [X], {"approximate": "tanh"}, "workbench"),
    ("Gelu", [X], {}, "workbench"),
    ("Softmax", [X], {"axis": 1}, ""),
    ("LogSoftmax", [X], {}, ""),
    ("MatMul", [X, f32(4, 5)], {}, ""),
    ("MatMul", [f32(2, 1, 3, 4), f32(3, 4, 2)], {}, ""),
    ("Gemm", [f32(4, 3), f32(5, 4), f32(5)], {"transA": 1, "transB": 1, "alpha": 0.5}, ""),
    ("Conv", [IMG, f32(6, 2, 3, 3), f32(6)], {"pads": [1, 1, 1, 1], "group": 2}, ""),
    ("Conv", [IMG, f32(4, 1, 3, 3)], {"pads": [1, 0, 1, 0], "group": 4, "strides": [2, 1]}, ""),
    ("Conv", [f32(1, 3, 7), f32(2, 3, 3)], {"dilations": [2]}, ""),
    ("MaxPool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, ""),
    ("AveragePool", [IMG], {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]}, ""),
    ("GlobalAveragePool", [IMG], {}, ""),
    ("ReduceMean", [X], {"axes": [1, 2], "keepdims": 0}, ""),
    ("ReduceMax", [X], {"axes": [0]}, ""),
    ("LayerNormalization", [X, f32(4), f32(4)], {"axis": -1}, ""),
    ("Transpose", [X], {"perm": [2, 0, 1]}, ""),
    ("Concat", [X, f32(2, 1, 4)], {"axis": 1}, ""),
    ("Flatten", [IMG], {"axis": 2}, ""),
    ("FusedElementwise", [X, f32(4)],
     {"program": ["t0 = Mul(x0, x1)", "t1 = Add(t0, 0.5)", "t2 = Tanh(t1)"]}, "workbench"),
    ("FusedMatMul", [X, f32(4, 5), f32(5)], {"activation": "GeluTanh"}, "workbench"),
    ("FusedGemm", [f32(3, 4), f32(4, 5), f32(5)], {"activation": "LeakyRelu",
                                                   "activation_params": [0.1]}, "workbench"),
    ("FusedConv", [IMG, f32(4, 4, 1, 1), f32(4), IMG], {"activation": "Relu"}, "workbench"),
    ("FusedConv", [IMG, f32(4, 1, 3, 3), f32(4)],
     {"group": 4, "pads": [1, 1, 1, 1], "activation": "Clip", "activation_params": [0.0, 0.5]},
     "workbench"),
    ("LayerNorm", [X, f32(4)], {"axis": -1, "epsilon": 1e-5}, "workbench"),
    ("Attention", [Q, f32(1, 4, 8), f32(1, 4, 8), f32(1, 1, 4, 4)], {"num_heads": 2,
                                                                     "scale": 0.35}, "workbench"),
    ("Attention", [Q, f32(1, 4, 8), f32(1, 4, 8)], {"num_heads": 2, "scale": 0.35,
                                                    "causal": 1}, "workbench"),
]  # fmt: skip


def _id(case: tuple) -> str:
    return f"{case[3] + '.' if case[3] else ''}{case[0]}-{len(case[1][0].shape)}d"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_kernel_matches_reference(case):
    op, ins, attrs, domain = case
    (got,) = run_node("cuda", op, ins, attrs, domain=domain, expect_native=True)
    (want,) = run_node("reference", op, ins, attrs, domain=domain)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert_close(got, want, rtol=1e-4, atol=1e-5, err_msg=op)


SHAPE_CASES = [
    ("Reshape", [X, np.array([4, -1], np.int64)], {}, [1]),
    ("Unsqueeze", [X, np.array([0, 3], np.int64)], {}, [1]),
    ("Squeeze", [f32(2, 1, 4), np.array([1], np.int64)], {}, [1]),
    ("Slice", [X, np.array([0, 1], np.int64), np.array([2, 4], np.int64),
               np.array([0, 2], np.int64), np.array([1, 2], np.int64)], {}, [1, 2, 3, 4]),
    ("Gather", [X, np.array([[2, 0], [-1, 1]], np.int64)], {"axis": 1}, [1]),
    ("Expand", [f32(3, 1), np.array([2, 3, 4], np.int64)], {}, [1]),
    ("BatchNormalization", [IMG, f32(4), f32(4), f32(4), np.abs(f32(4)) + 0.5], {},
     [1, 2, 3, 4]),
]  # fmt: skip


@pytest.mark.parametrize("case", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_kernel_with_constant_inputs_matches_reference(case):
    op, ins, attrs, consts = case
    (got,) = run_node("cuda", op, ins, attrs, consts=consts, expect_native=True)
    (want,) = run_node("reference", op, ins, attrs, consts=consts)
    assert_close(got, want, rtol=1e-4, atol=1e-5, err_msg=op)


FP16 = ["Tanh", "Add", "Softmax", "MatMul", "Conv", "LayerNormalization", "ReduceMean"]


@pytest.mark.parametrize("op", FP16)
def test_fp16_within_half_precision(op):
    op, ins, attrs, domain = next(c for c in CASES if c[0] == op)
    (got,) = run_node("cuda", op, ins, attrs, domain=domain, precision="fp16")
    (want,) = run_node("reference", op, ins, attrs, domain=domain)
    assert got.dtype == np.float16  # fp16 storage all the way to the output
    # fp16 rounding of inputs, weights and the result: ~3 ulp of half on O(1) values
    assert_close(got.astype(np.float32), want, rtol=5e-3, atol=5e-3, err_msg=op)


def test_tf32_rounds_gemm_operands_like_tensor_cores():
    a, b = f32(8, 16), f32(16, 8)
    (got,) = run_node("cuda", "MatMul", [a, b], precision="tf32")
    from workbench.engine.backends.cuda._gemm import tf32_round_host

    want = tf32_round_host(a).astype(np.float64) @ tf32_round_host(b).astype(np.float64)
    assert_close(got, want.astype(np.float32), rtol=1e-5, atol=1e-5)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(got - exact).max() > 1e-5  # the tf32 error is really there
