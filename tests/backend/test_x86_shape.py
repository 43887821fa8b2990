"""x86 shape and data-movement kernels against the reference backend: every dtype moves
exactly, shape inputs as constants and at run time, the opsets where inputs replaced
attributes, no aliasing of inputs where ONNX wants a new tensor, and the allocation guard."""

from __future__ import annotations

import numpy as np
import pytest

import workbench
from workbench.testing import assert_close, run_node

rng = np.random.default_rng(2)
I64 = np.int64


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=I64)


def check(op, inputs, attrs=None, *, opset=17, consts=(), n_outputs=1):
    kw = dict(opset=opset, consts=consts, n_outputs=n_outputs)
    got = run_node("x86", op, inputs, attrs, expect_native=True, **kw)
    ref = run_node("reference", op, inputs, attrs, **kw)
    for g, r in zip(got, ref, strict=True):
        assert type(g) is np.ndarray, f"{op} returned {type(g).__name__}"
        assert_close(g, r, rtol=0, atol=0, err_msg=op)
    return got


def both(op, inputs, attrs=None, *, idx=(1,), **kw):
    """The shape-like inputs at `idx` once as initializers, once fed at run time."""
    check(op, inputs, attrs, consts=idx, **kw)
    return check(op, inputs, attrs, **kw)


DTYPES = [np.float32, np.int64, np.bool_, np.uint8]


@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape(dtype):
    x = rng.integers(0, 2, (2, 3, 4)).astype(dtype)
    both("Reshape", [x, ints(0, -1)])
    both("Reshape", [x, ints(4, 0, 2)])
    both("Reshape", [x, ints(-1)])
    # opset 4 (shape attribute): onnx.reference has no Reshape-1, so against numpy
    (y,) = run_node("x86", "Reshape", [x], {"shape": [4, 0, -1]}, opset=4, expect_native=True)
    assert_close(y, x.reshape(4, 3, 2), rtol=0, atol=0)


def test_reshape_allowzero():
    x = np.zeros((0, 3), np.float32)
    (y,) = check("Reshape", [x, ints(3, 0)], {"allowzero": 1}, opset=14, consts=[1])
    assert y.shape == (3, 0)
    (y,) = check("Reshape", [f32(2, 3), ints(0, 3)], {"allowzero": 0}, opset=14, consts=[1])
    assert y.shape == (2, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_concat(dtype):
    x = rng.integers(0, 2, (2, 3, 4)).astype(dtype)
    (y,) = check("Transpose", [x])
    assert not np.shares_memory(y, x)
    check("Transpose", [x], {"perm": [1, 0, 2]})
    (y,) = check("Transpose", [x], {"perm": [0, 1, 2]})
    assert np.shares_memory(y, x)  # (values in the same order: see the test below)
    check("Concat", [x, x[:, :1], x[:, :2]], {"axis": 1})
    check("Concat", [x, x], {"axis": -1})
    (y,) = check("Concat", [x], {"axis": 0})
    assert not np.shares_memory(y, x)


@pytest.mark.parametrize(
    "shape, perm, in_order",
    [
        ((1, 1, 1, 1280), [0, 3, 1, 2], True),  # NHWC -> NCHW of a 1x1 image: values in order
        ((1, 5, 1, 1), [0, 2, 3, 1], True),
        ((3, 1, 4), [1, 0, 2], True),
        ((1, 3, 1, 2), [0, 3, 2, 1], False),  # sizes 3 and 2 swap: a real transpose
        ((2, 1, 3), None, False),
    ],
)
def test_transpose_that_moves_only_axes_of_size_one(shape, perm, in_order):
    """Values kept in their order make the transpose a reshape: a view of the input, as
    Reshape's is (no copy); a real transpose makes a fresh array."""
    x = f32(*shape)
    (y,) = check("Transpose", [x], {} if perm is None else {"perm": perm})
    assert np.shares_memory(y, x) == in_order


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split(opset):
    x = f32(7, 4)
    n = 3
    if opset < 13:
        check("Split", [x], {"axis": 0, "split": [2, 4, 1]}, opset=opset, n_outputs=n)
        check("Split", [x[:6]], {"axis": 0}, opset=opset, n_outputs=n)
        outs = check("Split", [x], {"axis": -1}, opset=opset, n_outputs=2)
    else:
        both("Split", [x, ints(2, 4, 1)], {"axis": 0}, opset=opset, n_outputs=n)
        outs = check("Split", [x], {"axis": 1}, opset=opset, n_outputs=2)
    assert not any(np.shares_memory(o, x) for o in outs)
    if opset >= 18:  # uneven: ceil-sized chunks, the last one smaller
        outs = check("Split", [x], {"axis": 0, "num_outputs": 3}, opset=opset, n_outputs=3)
        assert [o.shape[0] for o in outs] == [3, 3, 1]


@pytest.mark.parametrize("opset", [9, 13])
def test_slice(opset):
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    big = np.iinfo(np.int64).max
    cases = [  # starts, ends, axes, steps
        ([0, 1], [2, 3], [0, 2], None),
        ([1], [big], [1], None),
        ([-3, 0], [-1, -2], [-1, 0], None),
        ([0], [10], None, None),
    ]
    if opset >= 10:
        cases += [
            ([-1], [-big], [1], [-1]),  # reversed, end clamps to "before the first"
            ([4, 2], [0, 0], [2, 1], [-2, -1]),
            ([0, 3], [3, 0], [0, -1], [2, -3]),
            ([5], [-10], [-1], [-1]),
        ]
    for starts, ends, axes, steps in cases:
        if opset < 10:
            attrs = {"starts": starts, "ends": ends}
            if axes is not None:
                attrs["axes"] = axes
            (y,) = check("Slice", [x], attrs, opset=opset)
        else:
            inputs = [x, ints(*starts), ints(*ends)]
            inputs += [None if axes is None else ints(*axes)]
            inputs += [None if steps is None else ints(*steps)]
            (y,) = both("Slice", inputs, opset=opset, idx=(1, 2, 3, 4))
        assert not np.shares_memory(y, x)


def test_gather():
    x = rng.integers(0, 100, (4, 5, 3)).astype(I64)
    both("Gather", [x, ints(0, -1, 2)], {"axis": 0})
    both("Gather", [x, np.array([[1, -2], [0, 4]], np.int32)], {"axis": 1})
    (y,) = check("Gather", [x, np.array(-1, I64)], {"axis": -1})
    assert y.shape == (4, 5)
    check("Gather", [f32(3, 4), ints(2, 0)], {"axis": 0}, opset=11)


def test_gather_elements():
    x = f32(3, 4)
    check("GatherElements", [x, np.array([[0, -1], [2, 1], [-4, 3]], I64)], {"axis": 1})
    # indices smaller than x off the axis: ONNX allows it, onnx.reference does not
    idx = np.array([[2, -1, 0]], I64)
    (y,) = run_node("x86", "GatherElements", [x, idx], {"axis": 0}, expect_native=True)
    assert_close(y, np.array([[x[2, 0], x[2, 1], x[0, 2]]]), rtol=0, atol=0)
    check("GatherElements", [x.astype(bool), np.array([[1], [0], [2]], np.int32)], {"axis": 1})


def test_expand_tile():
    x = f32(3, 1)
    (y,) = both("Expand", [x, ints(2, 3, 4)])
    assert y.shape == (2, 3, 4) and y.flags.writeable
    both("Expand", [x, ints(1, 1)])  # smaller target: broadcast keeps x's dims
    both("Expand", [rng.integers(0, 2, (1, 2)).astype(bool), ints(3, 1)])
    both("Tile", [f32(2, 3), ints(2, 3)])
    both("Tile", [ints(1, 2, 3), ints(0)])


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    x = f32(1, 3, 1, 4)
    for axes in ([0], [-2, 0], None):
        if opset < 13:
            attrs = {} if axes is None else {"axes": axes}
            check("Squeeze", [x], attrs, opset=opset)
        elif axes is not None:
            both("Squeeze", [x, ints(*axes)], opset=opset)
        else:
            check("Squeeze", [x], opset=opset)
    y = f32(3, 4)
    for axes in ([0], [-1, 1], [0, 3]):
        if opset < 13:
            check("Unsqueeze", [y], {"axes": axes}, opset=opset)
        else:
            both("Unsqueeze", [y, ints(*axes)], opset=opset)
    check("Unsqueeze", [np.array(5, I64)], {"axes": [0]}, opset=11)


def test_flatten_shape_size():
    x = f32(2, 3, 4)
    for axis in (0, 1, -1, 3):
        check("Flatten", [x], {"axis": axis})
    check("Flatten", [x.astype(I64)])
    for attrs in ({}, {"start": 1}, {"end": -1}, {"start": -2, "end": 10}, {"start": 5}):
        (s,) = check("Shape", [x], attrs, opset=15)
        assert s.dtype == I64
    (s,) = check("Size", [x])
    assert s.dtype == I64 and s.shape == ()


CASTS = [
    (np.float32, np.int32),
    (np.float32, np.float16),
    (np.float32, np.float64),
    (np.float32, np.bool_),
    (np.int64, np.float32),
    (np.bool_, np.float32),
    (np.uint8, np.int64),
    (np.float32, np.float32),
]


@pytest.mark.parametrize(("src", "dst"), CASTS, ids=lambda d: np.dtype(d).name)
def test_cast(src, dst):
    from onnx import helper

    x = (rng.standard_normal((3, 4)) * 50).astype(src)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    (y,) = check("Cast", [x], {"to": to})
    assert y.dtype == dst and not np.shares_memory(y, x)
    (y,) = check("CastLike", [x, np.zeros(1, dst)], opset=15)
    assert y.dtype == dst


def test_cast_exotic_falls_back():
    from onnx import TensorProto

    with pytest.raises(AssertionError, match="fell back"):
        run_node("x86", "Cast", [f32(3)], {"to": TensorProto.BFLOAT16}, expect_native=True)


PAD_MODES = [(o, m) for o in (2, 11, 18) for m in ("constant", "reflect", "edge")]


@pytest.mark.parametrize(("opset", "mode"), [*PAD_MODES, (19, "wrap")])
def test_pad(opset, mode):
    x = f32(3, 4)
    pads = [1, 2, 2, 1]
    if opset < 11:
        check("Pad", [x], {"pads": pads, "mode": mode, "value": 1.5}, opset=opset)
        return
    value = np.array(1.5, np.float32)
    both("Pad", [x, ints(*pads), value], {"mode": mode}, idx=(1, 2), opset=opset)
    check("Pad", [x, ints(*pads)], {"mode": mode}, opset=opset)
    if opset >= 18:
        both("Pad", [x, ints(2, 1), value, ints(-1)], {"mode": mode}, idx=(1, 2, 3), opset=opset)


def test_pad_int_and_negative():
    xi = rng.integers(0, 9, (3, 4)).astype(np.int32)
    check("Pad", [xi, ints(0, 1, 1, 0), np.array(7, np.int32)], opset=13, consts=[1])
    # negative pads crop (onnx.reference cannot, so against numpy)
    x = f32(4, 5)
    (y,) = run_node("x86", "Pad", [x, ints(-1, 2, 1, -2)], opset=13, expect_native=True)
    want = np.pad(x[1:, :3], [(0, 1), (2, 0)])
    assert_close(y, want, rtol=0, atol=0)


def test_range():
    for dtype in (np.int32, I64):
        (y,) = check("Range", [np.array(v, dtype) for v in (2, 15, 3)])
        assert y.dtype == dtype
        check("Range", [np.array(v, dtype) for v in (10, 2, -3)])
        check("Range", [np.array(v, dtype) for v in (5, 5, 1)])
    (y,) = check("Range", [np.array(v, np.float32) for v in (0.5, 3.2, 0.25)])
    assert y.dtype == np.float32


def test_constant_of_shape_constant_trilu():
    from onnx import numpy_helper

    (y,) = both("ConstantOfShape", [ints(2, 3)], idx=(0,))
    assert y.dtype == np.float32
    value = numpy_helper.from_array(np.array([7], I64))
    (y,) = check("ConstantOfShape", [ints(4)], {"value": value})
    assert y.dtype == I64
    check("ConstantOfShape", [np.zeros(0, I64)], {"value": value})  # a scalar
    (y,) = check("Constant", [], {"value": numpy_helper.from_array(f32(2, 3))})
    check("Constant", [], {"value_ints": [1, 2, 3]})
    check("Constant", [], {"value_float": 2.5})
    x = f32(2, 4, 5)
    for upper in (0, 1):
        check("Trilu", [x], {"upper": upper}, opset=14)
        both("Trilu", [x, np.array(-1, I64)], {"upper": upper}, opset=14)
        both("Trilu", [x.astype(I64), np.array(2, I64)], {"upper": upper}, opset=14)


@pytest.mark.parametrize(
    ("op", "inputs"),
    [
        ("ConstantOfShape", [ints(1 << 40)]),
        ("Expand", [np.zeros((1, 1), np.float32), ints(1 << 20, 1 << 20)]),
        ("Tile", [np.zeros((2, 2), np.float32), ints(1 << 20, 1 << 20)]),
        ("Range", [np.array(0, I64), np.array(1 << 50, I64), np.array(1, I64)]),
        ("Pad", [np.zeros((2, 2), np.float32), ints(0, 0, 1 << 20, 1 << 20)]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_allocation_guard(op, inputs):
    """A shape tensor asking for terabytes is refused before numpy tries."""
    with pytest.raises(workbench.AllocationError):
        run_node("x86", op, inputs, opset=13, expect_native=True)


def test_a_transpose_declared_in_order_that_is_not_at_run_time_still_transposes():
    """The view is chosen from the input's declared shape; an input of another shape at
    run time (a model whose shapes are wrong) is transposed for real, never reshaped."""
    from workbench.engine.backends.x86.ops_shape import transpose
    from workbench.engine.ir import Node, Value

    node = Node("Transpose", [Value("x", 1, (1, 1, 1, 4))], [Value("y", 1)], {"perm": [0, 3, 1, 2]})
    kernel = transpose(node, None)
    x = f32(1, 1, 1, 4)
    (y,) = kernel(x)
    assert y.shape == (1, 4, 1, 1) and np.shares_memory(y, x)
    x = f32(1, 2, 3, 4)
    (y,) = kernel(x)
    assert_close(y, np.transpose(x, (0, 3, 1, 2)), rtol=0, atol=0)
