"""x86 elementwise and reduction kernels against the reference backend: broadcasting,
integer and bool dtypes, the opsets where semantics changed, and the dtypes they return."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.testing import assert_close, run_node

rng = np.random.default_rng(0)


def f32(*shape: int, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return rng.uniform(lo, hi, shape).astype(np.float32)


def check(op, inputs, attrs=None, *, opset=17, consts=(), n_outputs=1, rtol=1e-5, atol=1e-6):
    """Run on x86 (no fallback allowed) and on reference; outputs must match in dtype,
    shape and value, and be real arrays (never numpy scalars)."""
    kw = dict(opset=opset, consts=consts, n_outputs=n_outputs)
    got = run_node("x86", op, inputs, attrs, expect_native=True, **kw)
    ref = run_node("reference", op, inputs, attrs, **kw)
    for g, r in zip(got, ref, strict=True):
        assert type(g) is np.ndarray, f"{op} returned {type(g).__name__}"
        assert_close(g, r, rtol=rtol, atol=atol, err_msg=op)
    return got


BROADCAST = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)), ((5,), ())]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow"])
@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
def test_binary_float32_broadcast(op, shapes):
    a = f32(*shapes[0], lo=0.5, hi=2.0)
    b = f32(*shapes[1], lo=0.5, hi=2.0)
    (y,) = check(op, [a, b])
    assert y.dtype == np.float32


@pytest.mark.parametrize(
    ("op", "dtype"),
    [
        ("Add", np.int64),
        ("Sub", np.int32),
        ("Mul", np.uint8),
        ("Mul", np.int8),
        ("Div", np.int32),
        ("Div", np.int64),
        ("Div", np.uint16),
        ("Pow", np.int64),
    ],
)
def test_binary_integers(op, dtype):
    info = np.iinfo(dtype)
    lo, hi = (max(info.min, -9), min(info.max, 9)) if op != "Pow" else (0, 5)
    a = rng.integers(lo, hi, (3, 4)).astype(dtype)
    b = rng.integers(max(lo, 1) if op == "Div" else lo, hi, (4,)).astype(dtype)
    if op == "Div" and info.min < 0:
        b[::2] = -b[::2]  # truncation toward zero with mixed signs
    (y,) = check(op, [a, b])
    assert y.dtype == dtype


def test_int_div_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 0, -1], np.int64)
    b = np.array([2, 2, -2, -2, 3, 5], np.int64)
    (y,) = run_node("x86", "Div", [a, b], expect_native=True)
    np.testing.assert_array_equal(y, [3, -3, -3, 3, 0, 0])


@pytest.mark.parametrize("exponent", [2.0, 0.5, 3.0, -1.0])
def test_pow_constant_exponent(exponent):
    x = f32(2, 3, lo=0.1, hi=3.0)
    (y,) = check("Pow", [x, np.array(exponent, np.float32)], consts=[1])
    assert y.dtype == np.float32


def test_pow_mixed_types():
    x = f32(3, 4, lo=0.1, hi=2.0)
    (y,) = check("Pow", [x, np.array([2, 3, 1, 0], np.int64)], opset=15)
    assert y.dtype == np.float32
    (y,) = check("Pow", [np.arange(4, dtype=np.int32), np.array(2.0, np.float32)], opset=15)
    assert y.dtype == np.int32


def test_legacy_broadcast_axis():
    """Opset 6 Add with broadcast=1, axis=1: B lines up with A's dims from axis 1."""
    a, b = f32(2, 3, 4), f32(3)
    (y,) = run_node("x86", "Add", [a, b], {"broadcast": 1, "axis": 1}, opset=6, expect_native=True)
    assert_close(y, a + b[:, None])
    c = f32(2)
    (y,) = run_node("x86", "Less", [a, c], {"broadcast": 1, "axis": 0}, opset=6, expect_native=True)
    np.testing.assert_array_equal(y, a < c[:, None, None])
    (y,) = run_node("x86", "Mul", [a, f32(4)], {"broadcast": 1}, opset=6, expect_native=True)
    assert y.shape == (2, 3, 4)


@pytest.mark.parametrize("op", ["Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal"])
def test_unary_float32(op):
    (y,) = check(op, [f32(3, 5, lo=0.1, hi=3.0)])
    assert y.dtype == np.float32


@pytest.mark.parametrize("op", ["Neg", "Abs"])
def test_unary_int(op):
    check(op, [rng.integers(-50, 50, (4, 3)).astype(np.int32)])


def test_scalars_stay_arrays():
    for op in ("Add", "Mul", "Greater"):
        (y,) = check(op, [np.array(2.0, np.float32), np.array(3.0, np.float32)])
        assert y.shape == ()
    (y,) = check("Exp", [np.array(1.0, np.float32)])
    assert y.shape == ()


@pytest.mark.parametrize("op", ["Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_compare(op, dtype):
    a = rng.integers(0, 3, (2, 3, 4)).astype(dtype)
    b = rng.integers(0, 3, (3, 1)).astype(dtype)
    (y,) = check(op, [a, b], opset=16)
    assert y.dtype == np.bool_


def test_equal_strings_and_bools():
    a = np.array(["a", "b", "c"], dtype=object)
    b = np.array(["a", "x", "c"], dtype=object)
    (y,) = run_node("x86", "Equal", [a, b], opset=19, expect_native=True)
    np.testing.assert_array_equal(y, [True, False, True])
    check("Equal", [np.array([True, False]), np.array([[True], [False]])], opset=13)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op):
    a = rng.integers(0, 2, (3, 4)).astype(bool)
    b = rng.integers(0, 2, (4,)).astype(bool)
    check(op, [a, b])


def test_not():
    check("Not", [rng.integers(0, 2, (3, 4)).astype(bool)])


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_where(dtype):
    cond = rng.integers(0, 2, (3, 1)).astype(bool)
    x = rng.integers(-5, 5, (3, 4)).astype(dtype)
    y = rng.integers(-5, 5, (4,)).astype(dtype)
    (out,) = check("Where", [cond, x, y])
    assert out.dtype == dtype


@pytest.mark.parametrize("op", ["Min", "Max", "Sum", "Mean"])
def test_variadic(op):
    check(op, [f32(2, 3, 4), f32(3, 1), f32(4)])
    check(op, [f32(3, 4)])  # one input: a copy
    check(op, [f32(3, 4), f32(3, 4)], opset=6)
    (y,) = check(op, [f32(), f32(), f32()])
    assert y.shape == ()


@pytest.mark.parametrize("op", ["Min", "Max"])
def test_min_max_int(op):
    check(op, [rng.integers(-9, 9, (3, 4)).astype(np.int32), np.array([0], np.int32)])


def test_identity_and_dropout():
    x = f32(3, 4)
    check("Identity", [x])
    check("Dropout", [x], {"ratio": 0.3}, opset=10)
    _, mask = check("Dropout", [x], opset=13, n_outputs=2)
    assert mask.dtype == np.bool_ and mask.all()
    _, mask = check("Dropout", [x, np.array(0.2, np.float32)], opset=13, n_outputs=2, consts=[1])
    assert mask.all()
    t = np.array(False)
    check("Dropout", [x, np.array(0.2, np.float32), t], opset=13, consts=[1, 2])


def test_dropout_training_falls_back():
    x = f32(3, 4)
    with pytest.raises(AssertionError, match="fell back"):
        run_node("x86", "Dropout", [x, None, np.array(True)], opset=13, expect_native=True)


# -- reductions ----------------------------------------------------------------------------

REDUCE = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
]


def _reduce(op, x, axes, keepdims, opset, noop=None, const=True):
    """Axes as an attribute before the opset that made them an input (ReduceSum: 13)."""
    attrs = {"keepdims": keepdims}
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    if not as_input:
        if axes is not None:
            attrs["axes"] = axes
        return check(op, [x], attrs, opset=opset, rtol=1e-4)
    inputs = [x, None if axes is None else np.array(axes, np.int64)]
    return check(op, inputs, attrs, opset=opset, consts=[1] if const else [], rtol=1e-4)


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize(("axes", "keepdims"), [([-1], 1), ([0, 2], 0), (None, 0), (None, 1)])
def test_reduce(op, opset, axes, keepdims):
    x = f32(2, 3, 4, lo=0.2, hi=1.5)
    (y,) = _reduce(op, x, axes, keepdims, opset)
    assert y.dtype == np.float32


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize(
    ("shape", "axes", "keepdims"),
    [
        ((1, 7, 7, 37), [1, 2], 1),  # a channels-last global average pool, odd channels
        ((2, 5, 3, 4, 3), [1, 2], 0),  # adjacent axes in the middle, a batch of 2
        ((3, 4, 5), [0, 1], 1),  # the leading axes
        ((3, 4, 5), [1, 2], 0),  # the trailing axes: numpy's own reduction
    ],
)
def test_reduce_over_adjacent_axes(op, shape, axes, keepdims):
    """Adjacent axes of a contiguous float input are one compiled sum over the middle of
    (before, reduced, after) (ops_reduce._sum_middle); an integer input keeps numpy's own."""
    (y,) = _reduce(op, f32(*shape), axes, keepdims, 13)
    _reduce(op, f32(*shape).astype(np.float64), axes, keepdims, 13)
    want = np.sum if op == "ReduceSum" else np.mean
    assert y.shape == want(np.zeros(shape), axis=tuple(axes), keepdims=bool(keepdims)).shape
    x = np.arange(np.prod(shape), dtype=np.int32).reshape(shape) % 7
    _reduce(op, x, axes, keepdims, 13)


@pytest.mark.parametrize(("op", "opset"), [("ReduceSum", 11), ("ReduceSum", 13)])
def test_reduce_sum_opsets(op, opset):
    _reduce(op, f32(3, 4, 2), [1], 1, opset)
    _reduce(op, f32(3, 4, 2), [-2, 0], 0, opset)


@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_opsets(opset):
    _reduce("ReduceMean", f32(3, 4, 2), [1, -1], 0, opset)
    if opset == 18:
        _reduce("ReduceMean", f32(3, 4, 2), [1], 1, opset, const=False)


@pytest.mark.parametrize(("op", "opset"), [("ReduceSum", 13), ("ReduceMax", 18)])
def test_reduce_empty_axes(op, opset):
    x = f32(3, 4)
    empty = np.zeros(0, np.int64)
    (y,) = check(op, [x, empty], {"noop_with_empty_axes": 1}, opset=opset, consts=[1])
    assert_close(y, x)
    (y,) = check(op, [x, empty], {"noop_with_empty_axes": 0}, opset=opset, consts=[1])
    assert y.shape == (1, 1)
    (y,) = check(op, [x], {"noop_with_empty_axes": 1, "keepdims": 0}, opset=opset)
    assert y.shape == (3, 4)


def test_reduce_integer_and_bool():
    xi = rng.integers(-9, 9, (3, 4)).astype(np.int64)
    (y,) = check("ReduceSum", [xi, np.array([1], np.int64)], opset=13, consts=[1])
    assert y.dtype == np.int64
    (y,) = check("ReduceProd", [xi.astype(np.int32)], {"axes": [0]}, opset=13)
    assert y.dtype == np.int32
    xb = rng.integers(0, 2, (3, 4)).astype(bool)
    for op in ("ReduceMax", "ReduceMin"):
        (y,) = check(op, [xb, np.array([1], np.int64)], opset=20, consts=[1])
        assert y.dtype == np.bool_


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceSum", "ReduceLogSumExp"])
def test_reduce_empty_set(op):
    x = np.zeros((2, 0, 3), np.float32)
    (y,) = check(op, [x, np.array([1], np.int64)], {"keepdims": 1}, opset=18, consts=[1])
    assert y.shape == (2, 1, 3)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize(("axis", "keepdims", "last"), [(0, 1, 0), (-1, 0, 0), (1, 1, 1)])
def test_arg_extremes(op, axis, keepdims, last):
    x = rng.integers(0, 3, (3, 4, 2)).astype(np.float32)  # ties: first vs last index
    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": last}
    (y,) = check(op, [x], attrs, opset=13)
    assert y.dtype == np.int64
    check(op, [x.astype(np.int32)], attrs, opset=13)
