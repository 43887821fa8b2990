"""The reference backend's own pools, ConvTranspose and Resize-10/Upsample, checked against
onnxruntime as an independent third opinion, and against expectations worked out from
the spec by hand where onnxruntime departs from it or where a small example says more.

What onnx.reference (which these kernels replace) gets wrong: GlobalMaxPool reduces axes
1..2 of anything but a 4-D input; grouped ConvTranspose is right only with one output
channel per group; MaxPool/AveragePool with SAME_LOWER and stride > 1 size the output with
floor and pad at the end, and with ceil_mode shift their windows once the extra padding
reaches 2; Resize at opset 10 reads its scales as roi and fails; Upsample runs only
nearest with whole-number scales.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from workbench.engine.backends.reference import BACKEND
from workbench.testing import assert_close, node_model, run_node

rng = np.random.default_rng(11)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def ort_run(op, inputs, attrs=None, *, opset=17, n_outputs=1, consts=()):
    model, feeds = node_model(op, inputs, attrs, opset=opset, n_outputs=n_outputs, consts=consts)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def ref_run(op, inputs, attrs=None, *, opset=17, n_outputs=1, consts=(), precision=None):
    return run_node(
        "reference",
        op,
        inputs,
        attrs,
        opset=opset,
        n_outputs=n_outputs,
        consts=consts,
        precision=precision,
    )


def agree(op, inputs, attrs=None, *, rtol=1e-5, atol=1e-6, **kw):
    """The reference and onnxruntime give the same outputs; returns the reference's."""
    got, want = ref_run(op, inputs, attrs, **kw), ort_run(op, inputs, attrs, **kw)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, rtol=rtol, atol=atol, err_msg=f"{op} {attrs}")
    return got


@pytest.mark.parametrize(
    ("op", "opset", "module"),
    [
        ("MaxPool", 1, "ops_pool"),
        ("MaxPool", 12, "ops_pool"),
        ("AveragePool", 19, "ops_pool"),
        ("GlobalMaxPool", 17, "ops_pool"),
        ("GlobalAveragePool", 17, "ops_pool"),
        ("ConvTranspose", 17, "ops_convtranspose"),
        ("Resize", 10, "ops_resize"),
        ("Upsample", 9, "ops_resize"),
    ],
)
def test_own_kernel_serves_the_op(op, opset, module):
    spec = BACKEND.kernels.lookup("", op, opset)
    assert spec is not None and f".reference.{module}." in spec.source


def test_resize_11_and_later_stay_with_onnx_reference():
    assert BACKEND.kernels.lookup("", "Resize", 11) is None
    assert BACKEND.kernels.lookup("", "Resize", 19) is None


# -- global pools ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 5, 4), (1, 2, 3, 4, 5)])
def test_global_pools(op, shape):
    x = f32(*shape)
    (y,) = agree(op, [x])
    axes = tuple(range(2, x.ndim))
    want = x.max(axes, keepdims=True) if op == "GlobalMaxPool" else x.mean(axes, keepdims=True)
    assert y.shape == shape[:2] + (1,) * (len(shape) - 2)
    assert_close(y, want)


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
def test_global_pools_6d_and_float16(op):
    # onnxruntime refuses 4 spatial axes ("Unsupported pooling size"): numpy decides
    x = f32(2, 3, 2, 3, 2, 3)
    (y,) = ref_run(op, [x])
    axes = (2, 3, 4, 5)
    assert_close(
        y, x.max(axes, keepdims=True) if op == "GlobalMaxPool" else x.mean(axes, keepdims=True)
    )
    h = f32(2, 3, 5, 4).astype(np.float16)
    (yh,) = agree(op, [h], rtol=1e-3, atol=1e-3)
    assert yh.dtype == np.float16


# -- MaxPool / AveragePool ------------------------------------------------------------------
K3S2P1 = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
# (op, x shape, attrs, opset, output spatial shape worked out from the spec)
POOL_CASES = [
    # SAME_* with stride 2: out = ceil(in / s); SAME_LOWER puts the odd pad first
    ("MaxPool", (2, 3, 9), {"kernel_shape": [4], "strides": [2], "auto_pad": "SAME_LOWER"},
     12, (5,)),
    ("MaxPool", (1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 2],
                               "auto_pad": "SAME_LOWER"}, 12, (4, 4)),
    ("MaxPool", (1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 3],
                               "auto_pad": "SAME_UPPER"}, 12, (4, 3)),
    ("MaxPool", (1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 2],
                                  "auto_pad": "SAME_LOWER"}, 12, (3, 3, 4)),
    ("AveragePool", (1, 2, 7, 8), {"kernel_shape": [3, 4], "strides": [2, 2],
                                   "auto_pad": "SAME_LOWER"}, 11, (4, 4)),
    ("AveragePool", (1, 2, 7, 8), {"kernel_shape": [3, 4], "strides": [2, 2],
                                   "auto_pad": "SAME_LOWER", "count_include_pad": 1}, 11, (4, 4)),
    ("AveragePool", (1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 2],
                                      "auto_pad": "SAME_UPPER", "count_include_pad": 1}, 11,
     (3, 3, 4)),
    ("AveragePool", (2, 3, 9), {"kernel_shape": [4], "strides": [2], "auto_pad": "SAME_LOWER",
                                "count_include_pad": 1}, 11, (5,)),
    # ceil_mode with extra padding of 2 and more past the end
    ("MaxPool", (2, 3, 9), {"kernel_shape": [4], "strides": [4], "ceil_mode": 1}, 12, (3,)),
    ("AveragePool", (2, 3, 9), {"kernel_shape": [4], "strides": [4], "ceil_mode": 1}, 11, (3,)),
    ("AveragePool", (2, 3, 9), {"kernel_shape": [4], "strides": [4], "ceil_mode": 1,
                                "pads": [1, 1], "count_include_pad": 1}, 11, (3,)),
    ("MaxPool", (1, 2, 10, 11), {"kernel_shape": [3, 3], "strides": [5, 4], "ceil_mode": 1,
                                 "pads": [2, 0, 2, 1]}, 12, (3, 3)),
    ("AveragePool", (1, 2, 11, 7), {"kernel_shape": [5, 3], "strides": [4, 3], "ceil_mode": 1,
                                    "pads": [1, 0, 2, 1]}, 11, (3, 3)),
    ("AveragePool", (1, 2, 11, 7), {"kernel_shape": [5, 3], "strides": [4, 3], "ceil_mode": 1,
                                    "pads": [1, 0, 2, 1], "count_include_pad": 1}, 11, (3, 3)),
    # ceil_mode's last window would start in the right padding: dropped
    ("MaxPool", (1, 2, 8), {"kernel_shape": [2], "strides": [5], "ceil_mode": 1}, 12, (2,)),
    ("AveragePool", (1, 2, 5), {"kernel_shape": [3], "strides": [3], "pads": [0, 2],
                                "ceil_mode": 1, "count_include_pad": 1}, 11, (2,)),
    # dilations (MaxPool from opset 10, AveragePool from 19)
    ("MaxPool", (1, 2, 9, 8), {"kernel_shape": [3, 2], "dilations": [2, 3], "strides": [2, 1],
                               "pads": [2, 1, 1, 1]}, 12, (4, 7)),
    ("MaxPool", (1, 2, 9, 8), {"kernel_shape": [3, 2], "dilations": [2, 3], "strides": [3, 2],
                               "pads": [1, 0, 1, 1], "ceil_mode": 1}, 12, (3, 4)),
    ("MaxPool", (1, 2, 7, 6, 5), {"kernel_shape": [2, 2, 2], "dilations": [2, 1, 2],
                                  "strides": [1, 2, 1]}, 12, (5, 3, 3)),
    ("AveragePool", (1, 2, 9, 8), {"kernel_shape": [3, 3], "dilations": [2, 2], "strides": [2, 2],
                                   "pads": [1, 1, 2, 2], "ceil_mode": 1,
                                   "count_include_pad": 1}, 19, (5, 4)),
    ("AveragePool", (2, 3, 11), {"kernel_shape": [3], "dilations": [3], "strides": [2],
                                 "pads": [2, 2]}, 19, (5,)),
    # VALID: pads of zero; with ceil_mode as onnx's shape inference sizes it (see ops_pool)
    ("MaxPool", (1, 2, 7), {"kernel_shape": [3], "strides": [3], "auto_pad": "VALID",
                            "ceil_mode": 1}, 12, (3,)),
    ("AveragePool", (1, 2, 8, 7), {"kernel_shape": [3, 2], "strides": [3, 2],
                                   "auto_pad": "VALID"}, 11, (2, 3)),
    # older opsets
    ("MaxPool", (2, 3, 7, 6), K3S2P1, 1, (4, 3)),
    ("MaxPool", (2, 3, 7, 6), K3S2P1, 8, (4, 3)),
    ("AveragePool", (2, 3, 7, 6), {**K3S2P1, "count_include_pad": 1}, 7, (4, 3)),
]  # fmt: skip


@pytest.mark.parametrize(("op", "xs", "attrs", "opset", "out"), POOL_CASES)
def test_pool(op, xs, attrs, opset, out):
    x = f32(*xs)
    (y,) = agree(op, [x], attrs, opset=opset)
    assert y.shape == (*xs[:2], *out)


def test_same_lower_pads_first_and_ceil_mode_keeps_its_windows():
    """Hand-worked from the spec, the two cases onnx.reference got wrong."""
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    k2s2 = {"kernel_shape": [2], "strides": [2]}
    # out = ceil(5 / 2) = 3 and one pad: SAME_LOWER reads [-, 1] [2, 3] [4, 5],
    # SAME_UPPER [1, 2] [3, 4] [5, -]
    (lo,) = ref_run("MaxPool", [x], {**k2s2, "auto_pad": "SAME_LOWER"})
    (up,) = ref_run("MaxPool", [x], {**k2s2, "auto_pad": "SAME_UPPER"})
    np.testing.assert_array_equal(lo.ravel(), [1, 3, 5])
    np.testing.assert_array_equal(up.ravel(), [2, 4, 5])
    (avg_lo,) = ref_run("AveragePool", [x], {**k2s2, "auto_pad": "SAME_LOWER"})
    np.testing.assert_allclose(avg_lo.ravel(), [1, 2.5, 4.5])
    # ceil_mode, 9 values, kernel 4, stride 4: windows [0..3] [4..7] [8 + 3 extra pads]
    x9 = np.arange(9, dtype=np.float32).reshape(1, 1, 9)
    k4 = {"kernel_shape": [4], "strides": [4], "ceil_mode": 1}
    (mx,) = ref_run("MaxPool", [x9], k4)
    np.testing.assert_array_equal(mx.ravel(), [3, 7, 8])
    for include in (0, 1):  # the ceil-mode room is never counted, not even with count_include_pad
        (av,) = ref_run("AveragePool", [x9], {**k4, "count_include_pad": include})
        np.testing.assert_allclose(av.ravel(), [1.5, 5.5, 8])
    # with a declared pad of 1 at each end it is: [p 0 1 2] [3 4 5 6] [7 8 p +1 extra]
    (av,) = ref_run("AveragePool", [x9], {**k4, "pads": [1, 1], "count_include_pad": 1})
    np.testing.assert_allclose(av.ravel(), [3 / 4, 18 / 4, 15 / 3])


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_same_pads_cover_the_dilated_kernel(op, auto_pad):
    """onnxruntime sizes SAME pads from the undilated kernel, so with dilations its output
    is smaller than ceil(in / stride), against the spec and ONNX's own shape inference.
    Expected: onnxruntime on the same pool with the spec's pads written out."""
    x = f32(1, 2, 9, 8)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "dilations": [2, 2], "auto_pad": auto_pad}
    (y,) = ref_run(op, [x], attrs, opset=19)
    # out (5, 4); dilated kernel (5, 5); total pad (4 * 2 + 5 - 9, 3 * 2 + 5 - 8) = (4, 3)
    pads = [2, 1, 2, 2] if auto_pad == "SAME_UPPER" else [2, 2, 2, 1]
    explicit = {k: v for k, v in attrs.items() if k != "auto_pad"} | {"pads": pads}
    (want,) = ort_run(op, [x], explicit, opset=19)
    assert y.shape == (1, 2, 5, 4)
    assert_close(y, want)


INDICES_CASES = [
    ((2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "dilations": [2]}),
    ((2, 3, 9, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((2, 3, 9, 8), {"kernel_shape": [3, 2], "strides": [3, 2], "pads": [1, 0, 1, 1],
                    "ceil_mode": 1}),
    ((1, 2, 9, 8), {"kernel_shape": [2, 2], "strides": [2, 1], "dilations": [3, 2],
                    "pads": [1, 1, 1, 1]}),
    ((1, 2, 5, 4, 6), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2],
                       "pads": [1, 1, 0, 0, 1, 1]}),
]  # fmt: skip


@pytest.mark.parametrize(("xs", "attrs"), INDICES_CASES)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_indices(xs, attrs, storage_order):
    x = f32(*xs)
    attrs = {**attrs, "storage_order": storage_order}
    y, idx = agree("MaxPool", [x], attrs, opset=12, n_outputs=2)
    assert idx.dtype == np.int64
    # the index points at the maximum: row-major over everything, or N, C row-major and
    # the spatial axes column-major
    spatial = int(np.prod(xs[2:]))
    nc, pos = np.divmod(idx, spatial)
    where = np.unravel_index(pos, xs[2:], order="F" if storage_order else "C")
    picked = x.reshape(-1, *xs[2:])[(nc, *where)]
    np.testing.assert_array_equal(picked, y)


def test_maxpool_integers_never_pick_the_padding():
    x = rng.integers(-128, 127, (2, 3, 6, 7)).astype(np.int8)
    x[0, 0, :2, :2] = -128  # ties with the padding value at the corner window
    y, idx = agree("MaxPool", [x], K3S2P1, opset=12, n_outputs=2)
    assert y.dtype == np.int8
    np.testing.assert_array_equal(np.take(x, idx), y)
    u = rng.integers(0, 255, (2, 3, 6, 7)).astype(np.uint8)
    agree("MaxPool", [u], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
          opset=12)  # fmt: skip


def test_maxpool_window_of_padding_alone():
    # pads as large as the kernel (onnxruntime refuses them; the spec allows any pad):
    # the outer windows see no element, their max is -inf and their index -1
    x = np.array([[[3.0, 1.0, 2.0]]], np.float32)
    y, idx = ref_run("MaxPool", [x], {"kernel_shape": [1], "pads": [1, 1]}, n_outputs=2)
    np.testing.assert_array_equal(y.ravel(), [-np.inf, 3, 1, 2, -np.inf])
    np.testing.assert_array_equal(idx.ravel(), [-1, 0, 1, 2, -1])
    (avg,) = ref_run("AveragePool", [x], {"kernel_shape": [2], "pads": [0, 2], "strides": [2]})
    np.testing.assert_allclose(avg.ravel(), [2, 2])  # [3 1] [2 p]: the pad is not counted


def test_pools_float16():
    x = f32(2, 3, 7, 6).astype(np.float16)
    for op in ("MaxPool", "AveragePool"):
        (y,) = agree(op, [x], K3S2P1, rtol=1e-3, atol=1e-3)
        assert y.dtype == np.float16


# -- ConvTranspose --------------------------------------------------------------------------
# (x shape, w shape, attrs, output spatial shape worked out from the spec)
CONVT_CASES = [
    ((2, 4, 4, 5), (4, 3, 3, 3), {"group": 2, "strides": [2, 1]}, (9, 7)),
    ((2, 6, 3, 4), (6, 2, 3, 2), {"group": 3, "strides": [2, 3], "pads": [1, 0, 0, 1],
                                  "output_padding": [1, 2]}, (7, 12)),
    ((1, 4, 3, 4), (4, 2, 2, 3), {"group": 2, "strides": [3, 2], "dilations": [2, 1],
                                  "output_padding": [1, 0]}, (10, 9)),
    ((2, 4, 5), (4, 3, 4), {"group": 2, "strides": [3], "pads": [2, 1],
                            "output_padding": [2]}, (15,)),
    ((1, 4, 3, 2, 3), (4, 2, 2, 3, 2), {"group": 2, "strides": [2, 1, 2],
                                        "output_padding": [1, 0, 1],
                                        "pads": [0, 1, 1, 1, 0, 0]}, (6, 3, 6)),
    ((1, 6, 3, 4), (6, 2, 3, 3), {"group": 3, "strides": [2, 2], "auto_pad": "SAME_UPPER"},
     (6, 8)),
    ((1, 6, 3, 4), (6, 2, 3, 3), {"group": 3, "strides": [2, 2], "auto_pad": "SAME_LOWER"},
     (6, 8)),
    ((1, 6, 3, 4), (6, 2, 3, 3), {"group": 3, "strides": [2, 2], "auto_pad": "SAME_UPPER",
                                  "output_padding": [1, 1]}, (6, 8)),
    ((1, 4, 3, 4), (4, 2, 2, 3), {"group": 2, "strides": [2, 2], "auto_pad": "VALID"}, (6, 9)),
    # output_shape: odd total padding (full 7 x 9), the larger half first
    ((1, 4, 3, 4), (4, 2, 3, 3), {"group": 2, "strides": [2, 2], "output_shape": [6, 8]},
     (6, 8)),
    ((1, 4, 3, 4), (4, 2, 3, 3), {"group": 2, "strides": [2, 2], "output_shape": [4, 9],
                                  "auto_pad": "SAME_UPPER"}, (4, 9)),
    ((1, 4, 3, 4), (4, 2, 3, 3), {"group": 2, "strides": [2, 2], "output_shape": [8, 10]},
     (8, 10)),  # one past `full`: appended at the end, bias alone
    # a kernel shorter than the stride: SAME pads cannot go negative, out = full
    ((1, 2, 4), (2, 3, 1), {"strides": [3], "auto_pad": "SAME_UPPER"}, (10,)),
]  # fmt: skip


@pytest.mark.parametrize(("xs", "ws", "attrs", "out"), CONVT_CASES)
@pytest.mark.parametrize("consts", [(1, 2), ()], ids=["const", "runtime"])
def test_conv_transpose(xs, ws, attrs, out, consts):
    x, w = f32(*xs), f32(*ws)
    b = f32(ws[1] * attrs.get("group", 1))
    (y,) = agree("ConvTranspose", [x, w, b], attrs, consts=consts, rtol=1e-4, atol=1e-5)
    assert y.shape == (xs[0], b.size, *out)
    (nb,) = agree("ConvTranspose", [x, w], attrs, consts=consts[:1], rtol=1e-4, atol=1e-5)
    assert_close(nb + b.reshape(1, -1, *([1] * len(out))), y, rtol=1e-5, atol=1e-5)


def test_conv_transpose_groups_are_independent_convolutions():
    """Grouped = the per-group ungrouped transposes side by side, 3 outputs per group."""
    x, w, b = f32(2, 6, 4, 3), f32(6, 3, 3, 2), f32(9)
    attrs = {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1]}
    (y,) = ref_run("ConvTranspose", [x, w, b], {**attrs, "group": 3}, consts=(1, 2))
    parts = [
        ref_run("ConvTranspose", [x[:, 2 * g : 2 * g + 2], w[2 * g : 2 * g + 2],
                                  b[3 * g : 3 * g + 3]], attrs, consts=(1, 2))[0]
        for g in range(3)
    ]  # fmt: skip
    assert_close(y, np.concatenate(parts, axis=1))


def test_conv_transpose_output_shape_pads_by_the_spec_formula():
    """Hand-worked: x = 1..5, kernel of ones (3), stride 2, bias 0.5 gives the full output
    [1.5 1.5 3.5 2.5 5.5 3.5 7.5 4.5 9.5 5.5 5.5] (11); output_shape crops total = 11 - out,
    the larger half first (NOTSET) or last (SAME_UPPER)."""
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    w, b = np.ones((1, 1, 3), np.float32), np.array([0.5], np.float32)
    full = np.array([1.5, 1.5, 3.5, 2.5, 5.5, 3.5, 7.5, 4.5, 9.5, 5.5, 5.5], np.float32)
    for attrs, want in [
        ({"output_shape": [11]}, full),
        ({"output_shape": [10]}, full[1:]),
        ({"output_shape": [8]}, full[2:-1]),
        ({"output_shape": [8], "auto_pad": "SAME_UPPER"}, full[1:-2]),
        ({"output_shape": [12]}, np.append(full, 0.5)),
        ({"auto_pad": "SAME_LOWER"}, full[1:]),  # out = 5 * 2
        ({"auto_pad": "SAME_UPPER"}, full[:-1]),
        ({"pads": [2, 3]}, full[2:-3]),
        ({"output_padding": [1]}, np.append(full, 0.5)),
    ]:
        (y,) = ref_run("ConvTranspose", [x, w, b], {"strides": [2], **attrs}, consts=(1, 2))
        np.testing.assert_allclose(y.ravel(), want, err_msg=str(attrs))


# -- Resize-10 and Upsample -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize(
    "scales", [[1, 1, 2, 3], [1, 1, 1.5, 2.5], [1, 1, 0.6, 0.35], [1, 1, 0.75, 1.7]]
)
@pytest.mark.parametrize("consts", [(1,), ()], ids=["const", "runtime"])
def test_resize_10(mode, scales, consts):
    x = f32(2, 3, 5, 7)
    s = np.array(scales, np.float32)
    (y,) = agree("Resize", [x, s], {"mode": mode}, opset=10, consts=consts)
    assert y.shape == tuple(int(np.floor(n * float(k))) for n, k in zip(x.shape, s))


@pytest.mark.parametrize(
    ("xs", "scales"), [((3, 5), [1.5, 0.6]), ((2, 3, 4, 5, 6), [1, 2, 0.5, 1.5, 0.75])]
)
def test_resize_10_nearest_any_rank(xs, scales):
    agree("Resize", [f32(*xs), np.array(scales, np.float32)], {"mode": "nearest"}, opset=10,
          consts=(1,))  # fmt: skip
    x8 = rng.integers(0, 255, xs).astype(np.uint8)
    (y8,) = agree("Resize", [x8, np.array(scales, np.float32)], {"mode": "nearest"}, opset=10)
    assert y8.dtype == np.uint8


def test_resize_10_published_cases():
    """The opset-10 node tests onnx 1.5 published with Resize-10. The downsampling nearest
    one reads input 1.67 as index 2: nearest rounds down on upsampled axes and up on
    downsampled ones, not plain floor (see ops_resize)."""
    up = np.array([[[[1, 2], [3, 4]]]], np.float32)
    down = np.array([[[[1, 2, 3, 4], [5, 6, 7, 8]]]], np.float32)
    cases = [
        ("nearest", up, [1, 1, 2, 3],
         [[1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4], [3, 3, 3, 4, 4, 4]]),
        ("nearest", down, [1, 1, 0.6, 0.6], [[1, 3]]),
        ("linear", up, [1, 1, 2, 2], [[1, 1.5, 2, 2], [2, 2.5, 3, 3], [3, 3.5, 4, 4],
                                      [3, 3.5, 4, 4]]),
        ("linear", down, [1, 1, 0.6, 0.6], [[1, 2.66666651]]),
    ]  # fmt: skip
    for mode, x, scales, want in cases:
        s = np.array(scales, np.float32)
        (y,) = ref_run("Resize", [x, s], {"mode": mode}, opset=10, consts=(1,))
        np.testing.assert_allclose(y[0, 0], want, rtol=1e-6, err_msg=f"{mode} {scales}")


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize(
    "scales", [[1.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.5, 2.5], [1.0, 1.0, 1.0, 1.3]]
)
def test_upsample(mode, scales):
    x = f32(1, 2, 3, 4)
    agree("Upsample", [x, np.array(scales, np.float32)], {"mode": mode}, opset=9, consts=(1,))
    agree("Upsample", [x], {"mode": mode, "scales": scales}, opset=7)


# -- fp64 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "inputs", "attrs", "opset"),
    [
        ("MaxPool", [f32(1, 2, 7, 6)], {**K3S2P1, "ceil_mode": 1}, 12),
        ("AveragePool", [f32(1, 2, 7, 6)], {**K3S2P1, "count_include_pad": 1}, 11),
        ("GlobalAveragePool", [f32(1, 2, 3, 4, 5)], {}, 17),
        ("ConvTranspose", [f32(1, 4, 3, 4), f32(4, 2, 3, 3)], {"group": 2, "strides": [2, 2]}, 17),
        ("Resize", [f32(1, 2, 3, 4), np.array([1, 1, 1.5, 0.5], np.float32)], {"mode": "linear"},
         10),
    ],
)  # fmt: skip
def test_fp64_precision(op, inputs, attrs, opset):
    (y32,) = ref_run(op, inputs, attrs, opset=opset)
    (y64,) = ref_run(op, inputs, attrs, opset=opset, precision="fp64")
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    assert_close(y64.astype(np.float32), y32, rtol=1e-5, atol=1e-6)
