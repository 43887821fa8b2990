"""x86 Gemm, MatMul and the pools against the reference backend: transposes, alpha/beta,
bias broadcasts and the opset-6 `broadcast` attribute; batched and 1-D MatMul; max and
average pools with pads, strides, dilations, ceil_mode, auto_pad, count_include_pad and
MaxPool's Indices; global pools; and which algorithm each node dispatches to."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from workbench.errors import KernelError
from workbench.testing import assert_close, node_model, run_node

rng = np.random.default_rng(3)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def check(op, inputs, attrs=None, *, consts=(), opset=17, n_outputs=1, rtol=1e-5, atol=1e-6):
    kw = dict(consts=consts, opset=opset, n_outputs=n_outputs)
    got = run_node("x86", op, inputs, attrs, expect_native=True, **kw)
    ref = run_node("reference", op, inputs, attrs, **kw)
    for g, r in zip(got, ref, strict=True):
        assert_close(g, r, rtol=rtol, atol=atol, err_msg=f"{op} {attrs}")
    return got


def algorithm(op, inputs, attrs=None, consts=(), opset=17, n_outputs=1) -> str:
    model, _ = node_model(op, inputs, attrs, consts=consts, opset=opset, n_outputs=n_outputs)
    (step,) = wb.Session(wb.load(model, check=False), "x86").plan.steps
    assert not step.kernel.fallback
    return getattr(step.kernel.run, "algorithm", step.kernel.algorithm)


# -- Gemm / MatMul ----------------------------------------------------------------------------
GEMM_CASES = [
    ([(5, 7), (7, 3), (3,)], {}, 17),
    ([(7, 5), (3, 7), (5, 3)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, 17),
    ([(5, 7), (7, 3), (5, 1)], {"alpha": 1.5}, 17),
    ([(5, 7), (7, 3), (1,)], {"beta": 0.0}, 17),
    ([(5, 7), (3, 7)], {"transB": 1}, 13),
    ([(5, 7), (7, 3), (5, 3)], {"broadcast": 1, "beta": 0.5}, 6),
    ([(6, 5), (6, 3), (3,)], {"transA": 1, "broadcast": 1}, 6),
]


@pytest.mark.parametrize(("shapes", "attrs", "opset"), GEMM_CASES)
@pytest.mark.parametrize("consts", [(), (1, 2)], ids=["runtime", "const"])
def test_gemm(shapes, attrs, opset, consts):
    inputs = [f32(*s) for s in shapes]
    (y,) = check("Gemm", inputs, attrs, consts=consts, opset=opset)
    assert y.dtype == np.float32
    assert algorithm("Gemm", inputs, attrs, consts, opset) == "gemm"


MATMUL_CASES = [
    [(2, 3, 5, 7), (7, 3)],
    [(2, 3, 5, 7), (3, 7, 4)],
    [(1, 5, 7), (4, 7, 2)],
    [(7,), (7, 4)],
    [(3, 5, 7), (7,)],
    [(7,), (7,)],
]


@pytest.mark.parametrize("shapes", MATMUL_CASES)
@pytest.mark.parametrize("consts", [(), (1,)], ids=["runtime", "const"])
def test_matmul(shapes, consts):
    inputs = [f32(*s) for s in shapes]
    check("MatMul", inputs, consts=consts)
    flat = consts and len(shapes[1]) == 2
    assert algorithm("MatMul", inputs, consts=consts) == ("gemm_flat" if flat else "batched_gemm")


def test_matmul_mismatch_raises_kernel_error():
    model, feeds = node_model("MatMul", [f32(2, 3), f32(4, 5)])
    with pytest.raises(KernelError):
        wb.Session(wb.load(model, check=False), "x86").run(feeds)


def test_gemm_float64_declined():
    model, _ = node_model("Gemm", [f32(2, 3).astype(np.float64), f32(3, 2).astype(np.float64)])
    assert wb.Session(wb.load(model, check=False), "x86").plan.fallbacks


# -- pools ------------------------------------------------------------------------------------
K3S2P1 = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
POOL_CASES = [
    ("MaxPool", (2, 3, 9, 8), K3S2P1, 17),
    ("MaxPool", (2, 5, 9, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "ceil_mode": 1}, 17),
    ("MaxPool", (1, 3, 9, 8), {"kernel_shape": [3, 3], "dilations": [2, 1],
                               "pads": [2, 1, 1, 0]}, 17),
    ("MaxPool", (1, 3, 9, 8), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER",
                               "strides": [2, 2]}, 17),
    ("MaxPool", (1, 3, 9, 8), {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"}, 17),
    ("MaxPool", (2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, 17),
    ("MaxPool", (1, 2, 5, 4, 6), {"kernel_shape": [3, 2, 3], "strides": [2, 1, 2]}, 17),
    ("AveragePool", (2, 3, 9, 8), K3S2P1, 17),
    ("AveragePool", (2, 3, 9, 8), {**K3S2P1, "count_include_pad": 1}, 17),
    ("AveragePool", (1, 3, 9, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "ceil_mode": 1,
                                   "pads": [1, 0, 1, 1]}, 17),
    ("AveragePool", (1, 3, 9, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "ceil_mode": 1,
                                   "pads": [1, 0, 1, 1], "count_include_pad": 1}, 17),
    ("AveragePool", (1, 3, 9, 8), {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER",
                                   "strides": [2, 2], "count_include_pad": 1}, 17),
    ("AveragePool", (1, 3, 9, 8), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER",
                                   "strides": [2, 2]}, 17),
    ("AveragePool", (1, 3, 9, 8), {"kernel_shape": [3, 3], "dilations": [2, 2],
                                   "pads": [1, 1, 1, 1], "strides": [1, 2]}, 19),
    ("AveragePool", (2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, 17),
    ("AveragePool", (1, 2, 5, 4, 6), {"kernel_shape": [3, 2, 3], "strides": [2, 1, 2],
                                      "pads": [1, 0, 1, 1, 1, 0], "count_include_pad": 1}, 17),
]  # fmt: skip


@pytest.mark.parametrize(("op", "xs", "attrs", "opset"), POOL_CASES)
def test_pool(op, xs, attrs, opset):
    x = f32(*xs)
    check(op, [x], attrs, opset=opset)
    expect = "generic" if len(xs) > 4 else "window_loop"
    assert algorithm(op, [x], attrs, opset=opset) == expect


@pytest.mark.parametrize(
    "attrs",
    [
        K3S2P1,
        {"kernel_shape": [2, 3], "strides": [2, 2], "storage_order": 1},
        {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2], "dilations": [2, 2]},
        {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
    ],
)
def test_maxpool_indices(attrs):
    x = f32(2, 3, 9, 8) if len(attrs["kernel_shape"]) == 2 else f32(2, 3, 11)
    y, idx = check("MaxPool", [x], attrs, n_outputs=2)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(np.take(x, idx) if not attrs.get("storage_order") else y, y)


def test_maxpool_indices_3d_declined():
    model, _ = node_model("MaxPool", [f32(1, 1, 4, 4, 4)], {"kernel_shape": [2, 2, 2]}, n_outputs=2)
    assert wb.Session(wb.load(model, check=False), "x86").plan.fallbacks


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("xs", [(2, 3, 5, 4), (2, 3, 7), (1, 2, 3, 4, 5)])
def test_global_pools(op, xs):
    x = f32(*xs)
    (y,) = check(op, [x])
    assert y.shape == xs[:2] + (1,) * (len(xs) - 2)
    assert algorithm(op, [x]) == "reduce"


def test_pool_rank_mismatch_raises_kernel_error():
    model, feeds = node_model("AveragePool", [f32(1, 2, 5)], {"kernel_shape": [2, 2]})
    with pytest.raises(KernelError, match="rank"):
        wb.Session(wb.load(model, check=False), "x86").run(feeds)


@pytest.mark.parametrize(
    "attrs",
    [
        K3S2P1,
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [2, 3], "strides": [3, 2]},
    ],
    ids=["stride-2", "stride-1", "stride-3x2"],
)
def test_maxpool_nan_and_integers_as_reference(attrs):
    """A NaN in a window is that window's max (and its index the first NaN's), as in the
    reference; integer inputs go through the same loops (strided ones via a padded line)."""
    x = f32(2, 3, 9, 8)
    x[0, 0, 3, 3] = x[1, 2, 0, 0] = x[1, 2, 0, 1] = np.nan
    for n in (1, 2):
        got = run_node("x86", "MaxPool", [x], attrs, n_outputs=n)
        want = run_node("reference", "MaxPool", [x], attrs, n_outputs=n)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert np.isnan(got[0]).any()
    for dtype in (np.int8, np.uint8):
        xi = rng.integers(0, 100, (2, 3, 9, 8)).astype(dtype)
        (got,) = run_node("x86", "MaxPool", [xi], attrs, opset=12)
        (want,) = run_node("reference", "MaxPool", [xi], attrs, opset=12)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
