"""x86 activation and normalization kernels against the reference backend: float32 in,
float32 out, the opsets where Softmax and Clip changed, and an accurate Erf/Gelu."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.testing import assert_close, run_node

rng = np.random.default_rng(1)


def f32(*shape: int, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    return rng.uniform(lo, hi, shape).astype(np.float32)


def check(op, inputs, attrs=None, *, opset=17, consts=(), n_outputs=1, rtol=1e-5, atol=1e-6):
    kw = dict(opset=opset, consts=consts, n_outputs=n_outputs)
    got = run_node("x86", op, inputs, attrs, expect_native=True, **kw)
    ref = run_node("reference", op, inputs, attrs, **kw)
    for g, r in zip(got, ref, strict=True):
        assert type(g) is np.ndarray, f"{op} returned {type(g).__name__}"
        assert_close(g, r, rtol=rtol, atol=atol, err_msg=op)
    return got


UNARY = [
    ("Relu", {}),
    ("LeakyRelu", {"alpha": 0.1}),
    ("LeakyRelu", {"alpha": 1.5}),
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", {}),
    ("Erf", {}),
    ("Elu", {"alpha": 0.7}),
    ("Selu", {}),
    ("Softplus", {}),
    ("Mish", {}),
]


@pytest.mark.parametrize(("op", "attrs"), UNARY, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("shape", [(2, 3, 5), ()], ids=["3d", "scalar"])
def test_unary_activations(op, attrs, shape):
    (y,) = check(op, [f32(*shape)], attrs, opset=18 if op in ("HardSwish", "Mish") else 17)
    assert y.dtype == np.float32 and y.shape == shape


def test_activations_extremes():
    x = np.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], np.float32)
    for op in ("Sigmoid", "Softplus", "Elu", "Erf", "Tanh"):
        check(op, [x], rtol=1e-5, atol=1e-6)


def test_relu_int():
    (y,) = check("Relu", [rng.integers(-9, 9, (3, 4)).astype(np.int32)], opset=14)
    assert y.dtype == np.int32


def test_prelu_broadcast():
    x, slope = f32(2, 3, 4, 4), f32(3, 1, 1, lo=0.0, hi=0.5)
    check("PRelu", [x, slope])
    check("PRelu", [x, slope], consts=[1])
    check("PRelu", [x, np.array([0.25], np.float32)])


def test_erf_accuracy():
    """float32: within 0.5 ulp + 4e-10 relative of math.erf (so < 1e-7 relative) on a dense
    grid and on random tails; float64: libm's erf itself. NaN stays NaN."""
    grid = np.linspace(-4.5, 4.5, 200_001, dtype=np.float32)
    tiny = np.array([1e-30, -1e-20, 1e-8, 3e-5, 0.0], np.float32)
    x = np.concatenate([grid, tiny, rng.standard_normal(20_000).astype(np.float32) * 3])
    (y,) = run_node("x86", "Erf", [x], expect_native=True)
    exact = np.array([math.erf(v) for v in x.astype(np.float64).tolist()])
    rel = np.abs(y - exact) / np.maximum(np.abs(exact), 1e-38)
    assert y.dtype == np.float32 and rel.max() < 1e-7
    (y,) = run_node("x86", "Erf", [x.astype(np.float64)], expect_native=True)
    assert y.dtype == np.float64 and np.max(np.abs(y - exact)) < 1e-15
    special = np.array([np.nan, np.inf, -np.inf, -0.0], np.float32)
    (y,) = run_node("x86", "Erf", [special], expect_native=True)
    np.testing.assert_array_equal(y, [np.nan, 1.0, -1.0, -0.0])
    assert np.signbit(y[3])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    x = f32(4, 6, lo=-5, hi=5)
    (y,) = check("Gelu", [x], {"approximate": approximate}, opset=20)
    assert y.dtype == np.float32
    if approximate == "none":  # accurate in the negative tail too (erfc, not 1 + erf)
        x = np.array([-12.0, -8.0, -5.0, -1.0, 0.0, 0.5, 3.0], np.float32)
        (y,) = run_node("x86", "Gelu", [x], opset=20, expect_native=True)
        exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.tolist()])
        rel = np.abs(y - exact) / np.maximum(np.abs(exact), 1e-38)
        assert rel.max() < 1e-7


@pytest.mark.parametrize("opset", [6, 13])
def test_clip(opset):
    x = f32(3, 4)
    if opset < 11:
        check("Clip", [x], {"min": -1.0, "max": 0.5}, opset=opset)
        check("Clip", [x], {"max": 0.5}, opset=opset)
        check("Clip", [x], {}, opset=opset)
        return
    lo, hi = np.array(-1.0, np.float32), np.array(0.5, np.float32)
    check("Clip", [x, lo, hi], opset=opset)  # runtime bounds
    check("Clip", [x, lo, hi], opset=opset, consts=[1, 2])
    check("Clip", [x, None, hi], opset=opset, consts=[2])
    check("Clip", [x, lo], opset=opset)
    check("Clip", [x, hi, lo], opset=opset)  # min > max: everything is max
    xi = rng.integers(-100, 100, (3, 4)).astype(np.int8)
    (y,) = check("Clip", [xi, np.array(-5, np.int8), np.array(7, np.int8)], opset=opset)
    assert y.dtype == np.int8


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_softmax(op, opset, axis):
    """Opset 11 flattens to 2-D at axis (default 1); 13 normalizes along axis (default -1).

    onnx.reference (so the reference backend) ignores the opset-11 flattening, so that
    opset is checked against the spec written out in numpy."""
    x = f32(2, 3, 4, lo=-10, hi=10)
    attrs = {} if axis is None else {"axis": axis}
    if opset >= 13:
        (y,) = check(op, [x], attrs, opset=opset)
        assert y.dtype == np.float32
        return
    (y,) = run_node("x86", op, [x], attrs, opset=opset, expect_native=True)
    a = (1 if axis is None else axis) % x.ndim
    x2 = x.reshape(math.prod(x.shape[:a]), -1).astype(np.float64)
    e = np.exp(x2 - x2.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    want = np.log(want) if op == "LogSoftmax" else want
    assert_close(y, want.reshape(x.shape).astype(np.float32), rtol=1e-5, atol=1e-6)


def test_softmax_wide_rows():
    x = f32(3, 1000, lo=-30, hi=30)
    check("Softmax", [x], opset=13)
    check("LogSoftmax", [x], opset=13, rtol=1e-5, atol=1e-6)
    check("Softmax", [x.astype(np.float64)], opset=13)


# -- normalization -------------------------------------------------------------------------


def _bn_params(c: int):
    return [f32(c), f32(c), f32(c), f32(c, lo=0.5, hi=2.0)]


@pytest.mark.parametrize("opset", [9, 15])
@pytest.mark.parametrize("const", [True, False])
def test_batchnorm(opset, const):
    x = f32(2, 3, 4, 5)
    inputs = [x, *_bn_params(3)]
    (y,) = check(
        "BatchNormalization", inputs, {"epsilon": 1e-3}, opset=opset, consts=[1, 2, 3, 4] * const
    )
    assert y.dtype == np.float32
    check("BatchNormalization", [f32(4, 3), *_bn_params(3)], opset=opset)  # (N, C)


def test_batchnorm_old_opsets_use_running_stats():
    x = f32(2, 3, 4)
    for opset in (6, 7):
        check("BatchNormalization", [x, *_bn_params(3)], {"is_test": 1} if opset == 6 else {})


def test_batchnorm_training_mode_falls_back():
    with pytest.raises(AssertionError, match="fell back"):
        run_node(
            "x86",
            "BatchNormalization",
            [f32(2, 3, 4), *_bn_params(3)],
            {"training_mode": 1},
            opset=15,
            n_outputs=3,
            expect_native=True,
        )


@pytest.mark.parametrize("axis", [-1, 1, 0])
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm(axis, bias):
    x = f32(2, 3, 8)
    scale, b = f32(*x.shape[axis:]), f32(*x.shape[axis:])
    inputs = [x, scale, b] if bias else [x, scale]
    attrs = {"axis": axis, "epsilon": 1e-4}
    y, mean, inv = check("LayerNormalization", inputs, attrs, n_outputs=3, rtol=1e-4, atol=1e-5)
    assert y.dtype == mean.dtype == inv.dtype == np.float32
    check("LayerNormalization", inputs, attrs, consts=[1, 2][: len(inputs) - 1], rtol=1e-4)


def test_layernorm_scale_broadcast():
    x = f32(2, 3, 8)
    check("LayerNormalization", [x, f32(8)], {"axis": 1}, rtol=1e-4, atol=1e-5)
    check("LayerNormalization", [x, f32(1)], {"axis": -1}, rtol=1e-4, atol=1e-5)


def test_instancenorm():
    x = f32(2, 3, 4, 5)
    (y,) = check("InstanceNormalization", [x, f32(3), f32(3)], {"epsilon": 1e-3}, rtol=1e-4)
    assert y.dtype == np.float32
    check("InstanceNormalization", [f32(2, 3, 7), f32(3), f32(3)], consts=[1, 2], rtol=1e-4)
