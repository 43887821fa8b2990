"""The cuda kernels of the layout, reduction, normalization and host-shape ops against
`reference` on tiny shapes: Pad, Tile, Split, Resize, ArgMax/ArgMin, the Reduce family,
InstanceNormalization, ceil_mode pools, ConvTranspose, Shape, Range, ConstantOfShape."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from workbench.testing import assert_close, run_node

R = np.random.default_rng(2)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


X = f32(2, 3, 4)
IMG = f32(1, 2, 5, 5)
# (op, inputs, attrs, constant input positions, opset)
CASES = [
    ("Pad", [IMG, i64(0, 0, 1, 2, 0, 0, 2, 1), np.float32(0.5)], {}, [1, 2], 17),
    ("Pad", [IMG, i64(0, 0, 2, 1, 0, 0, 1, 2)], {"mode": "reflect"}, [1], 17),
    ("Pad", [IMG, i64(0, 0, 1, 1, 0, 0, 3, 1)], {"mode": "edge"}, [1], 17),
    ("Pad", [X, i64(1, 2), None, i64(-1)], {"mode": "wrap"}, [1, 3], 19),
    ("Tile", [X, i64(1, 2, 3)], {}, [1], 17),
    ("Resize", [IMG, np.zeros(0, np.float32), np.array([1, 1, 2, 1.5], np.float32)],
     {"mode": "nearest"}, [1, 2], 17),
    ("Resize", [IMG, np.zeros(0, np.float32), np.array([1, 1, 1.6, 0.6], np.float32)],
     {"mode": "linear"}, [1, 2], 17),
    ("Resize", [IMG, np.zeros(0, np.float32), np.zeros(0, np.float32), i64(1, 2, 7, 3)],
     {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, [1, 2, 3], 17),
    ("Resize", [IMG, np.zeros(0, np.float32), np.array([1, 1, 2, 2], np.float32)],
     {"mode": "cubic"}, [1, 2], 17),
    ("ArgMax", [X], {"axis": 1}, [], 17),
    ("ArgMin", [X], {"axis": -1, "keepdims": 0, "select_last_index": 1}, [], 17),
    ("ReduceProd", [X], {"axes": [1]}, [], 17),
    ("ReduceL1", [X], {"axes": [0, 2], "keepdims": 0}, [], 17),
    ("ReduceL2", [X], {"axes": [2]}, [], 17),
    ("ReduceSumSquare", [X], {"axes": [1]}, [], 17),
    ("ReduceLogSumExp", [X * 20], {"axes": [2]}, [], 17),
    ("InstanceNormalization", [IMG, f32(2), f32(2)], {"epsilon": 1e-5}, [], 17),
    ("MaxPool", [IMG], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, [], 17),
    ("AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                            "ceil_mode": 1, "count_include_pad": 1}, [], 17),
    ("AveragePool", [f32(1, 2, 6)], {"kernel_shape": [3], "strides": [2], "ceil_mode": 1},
     [], 17),
    ("ConvTranspose", [IMG, f32(2, 3, 3, 3), f32(3)], {"strides": [2, 2], "pads": [1, 0, 1, 1],
                                                      "output_padding": [1, 0]}, [], 17),
    ("ConvTranspose", [f32(1, 4, 5), f32(4, 1, 3)], {"group": 2, "dilations": [2]}, [], 17),
    ("Erf", [X], {}, [], 17),
]  # fmt: skip


def _id(case: tuple) -> str:
    return f"{case[0]}-{'-'.join(f'{k}' for k in case[2])}"[:60]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_kernel_matches_reference(case):
    op, ins, attrs, consts, opset = case
    kw = {"consts": consts, "opset": opset}
    (got,) = run_node("cuda", op, ins, attrs, expect_native=True, **kw)
    (want,) = run_node("reference", op, ins, attrs, **kw)
    assert got.dtype == want.dtype and got.shape == want.shape, op
    assert_close(got, want, rtol=1e-4, atol=1e-5, err_msg=op)


def test_split_into_three():
    outs = run_node("cuda", "Split", [X, i64(1, 3)], {"axis": 2}, n_outputs=2, consts=[1])
    want = run_node("reference", "Split", [X, i64(1, 3)], {"axis": 2}, n_outputs=2, consts=[1])
    for g, w in zip(outs, want):
        assert_close(g, w)
    (a, b, c) = run_node("cuda", "Split", [X], {"axis": 1, "num_outputs": 3}, n_outputs=3,
                         opset=18, expect_native=True)  # fmt: skip
    assert_close(np.concatenate([a, b, c], axis=1), X)


def test_host_shape_ops_run_natively():
    import workbench as wb
    from workbench.testing import graph_model

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["z"],
                         value=helper.make_tensor("v", 1, [1], [1.5])),
        helper.make_node("Range", ["a", "b", "d"], ["r"]),
        helper.make_node("Add", ["z", "x"], ["y"]),
    ]  # fmt: skip
    inits = {"a": np.array(1, np.int64), "b": np.array(9, np.int64), "d": np.array(3, np.int64)}
    model = graph_model(nodes, [("x", [2, 3])], [("y", [2, 3]), ("r", [3], 7)], inits)
    sess = wb.Session(model, "cuda")
    assert not sess.plan.fallbacks
    x = f32(2, 3)
    got = sess.run({"x": x})
    assert_close(got["y"], x + 1.5)
    np.testing.assert_array_equal(got["r"], np.arange(1, 9, 3))
