"""x86 LSTM and Resize against the reference backend.

LSTM: directions, layouts, biases, initial states, peepholes, per-batch sequence_lens
(checked against reference runs on each truncated sequence) and the attributes it
declines. Resize: every mode x coordinate transformation on scales and sizes, nearest
rounding modes, axes, keep_aspect_ratio_policy, antialias, exclude_outside, opset 10's
semantics, runtime scales, the algorithm chosen and the memory guard."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import workbench as wb
from workbench.errors import AllocationError
from workbench.testing import assert_close, node_model, run_node

rng = np.random.default_rng(5)


def f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def session(op, inputs, attrs, *, consts=(), opset=17, n_outputs=1) -> wb.Session:
    model, _ = node_model(op, inputs, attrs, consts=consts, opset=opset, n_outputs=n_outputs)
    return wb.Session(wb.load(model, check=False), "x86")


def algorithm(*args, **kw) -> str:
    (step,) = session(*args, **kw).plan.steps
    assert not step.kernel.fallback
    return getattr(step.kernel.run, "algorithm", step.kernel.algorithm)


# -- LSTM -------------------------------------------------------------------------------------
def lstm_inputs(t, b, i, h, dirs, *, layout=0, bias=True, init=False, peep=False, lens=None):
    state = (lambda: f32(b, dirs, h)) if layout else (lambda: f32(dirs, b, h))
    ins = [
        f32(b, t, i) if layout else f32(t, b, i),
        f32(dirs, 4 * h, i, scale=0.5),
        f32(dirs, 4 * h, h, scale=0.5),
        f32(dirs, 8 * h, scale=0.5) if bias else None,
        lens,
        state() if init else None,
        state() if init else None,
        f32(dirs, 3 * h, scale=0.5) if peep else None,
    ]
    while ins[-1] is None:
        ins.pop()
    return ins


LSTM_CASES = [
    ("forward", 0, dict(bias=True)),
    ("forward", 0, dict(bias=False, init=True)),
    ("reverse", 0, dict(init=True, peep=True)),
    ("bidirectional", 0, dict(init=True, peep=True)),
    ("bidirectional", 1, dict(init=True, bias=False)),
    ("forward", 1, dict(peep=True)),
]


@pytest.mark.parametrize(("direction", "layout", "kw"), LSTM_CASES)
@pytest.mark.parametrize("consts", [(1, 2, 3, 7), ()], ids=["const", "runtime"])
def test_lstm(direction, layout, kw, consts):
    dirs = 2 if direction == "bidirectional" else 1
    ins = lstm_inputs(4, 3, 5, 7, dirs, layout=layout, **kw)
    attrs = {"hidden_size": 7, "direction": direction}
    if layout:
        attrs["layout"] = 1
    got = run_node("x86", "LSTM", ins, attrs, n_outputs=3, consts=consts, expect_native=True)
    ref = run_node("reference", "LSTM", ins, attrs, n_outputs=3, consts=consts)
    for g, r in zip(got, ref, strict=True):
        assert_close(g, r, rtol=1e-4, atol=1e-5)
    assert algorithm("LSTM", ins, attrs, consts=consts, n_outputs=3) == "gemm_recurrent_loop"


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_sequence_lens(direction):
    """Each batch entry must equal an LSTM run over its own truncated sequence, with zeros
    in Y past its end (onnx.reference ignores sequence_lens, so it is run per entry)."""
    t, b, i, h = 5, 3, 2, 4
    dirs = 2 if direction == "bidirectional" else 1
    lens = np.array([5, 2, 3], np.int32)
    x, w, r, bias, _, h0, c0 = lstm_inputs(t, b, i, h, dirs, init=True, lens=lens)
    attrs = {"hidden_size": h, "direction": direction}
    y, yh, yc = run_node(
        "x86", "LSTM", [x, w, r, bias, lens, h0, c0], attrs, n_outputs=3, expect_native=True
    )
    for k, n in enumerate(lens):
        one = [x[:n, k : k + 1], w, r, bias, None, h0[:, k : k + 1], c0[:, k : k + 1]]
        ry, ryh, ryc = run_node("reference", "LSTM", one, attrs, n_outputs=3)
        assert_close(y[:n, :, k : k + 1], ry, rtol=1e-4, atol=1e-5)
        assert not y[n:, :, k].any()
        assert_close(yh[:, k : k + 1], ryh, rtol=1e-4, atol=1e-5)
        assert_close(yc[:, k : k + 1], ryc, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "extra",
    [
        {"activations": ["Sigmoid", "Relu", "Tanh"]},
        {"clip": 3.0},
        {"input_forget": 1},
    ],
)
def test_lstm_declines_to_reference(extra):
    ins = lstm_inputs(3, 2, 4, 5, 1)
    assert session("LSTM", ins, {"hidden_size": 5, **extra}, n_outputs=3).plan.fallbacks


def test_lstm_default_activations_spelled_out_run_natively():
    ins = lstm_inputs(3, 2, 4, 5, 1)
    attrs = {"hidden_size": 5, "activations": ["Sigmoid", "Tanh", "Tanh"]}
    assert not session("LSTM", ins, attrs, n_outputs=3).plan.fallbacks


# -- Resize -----------------------------------------------------------------------------------
def resize_inputs(x, *, scales=None, sizes=None, roi=None):
    ins = [x, np.array(roi if roi is not None else [], np.float32)]
    ins.append(np.array(scales if scales is not None else [], np.float32))
    if sizes is not None:
        ins.append(np.array(sizes, np.int64))
    return ins


def check_resize(x, attrs, *, opset=13, consts=(1, 2, 3), **kw):
    ins = resize_inputs(x, **kw)
    (got,) = run_node("x86", "Resize", ins, attrs, opset=opset, consts=consts, expect_native=True)
    (ref,) = run_node("reference", "Resize", ins, attrs, opset=opset, consts=consts)
    assert_close(got, ref, rtol=1e-5, atol=1e-6, err_msg=str(attrs))
    return got


COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize"]
ROI = [0, 0, 0.1, 0.2, 1, 1, 0.8, 1.1]
NOT_LARGER = {"keep_aspect_ratio_policy": "not_larger"}
NOT_SMALLER = {"keep_aspect_ratio_policy": "not_smaller"}


@pytest.mark.parametrize(
    ("mode", "coord"), list(itertools.product(["nearest", "linear", "cubic"], COORDS))
)
def test_resize_modes_and_coordinates(mode, coord):
    x = f32(2, 3, 5, 7)
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    roi = ROI if coord == "tf_crop_and_resize" else None
    if roi is not None:
        attrs["extrapolation_value"] = 3.0
    for scales in ([1, 1, 1.7, 0.6], [1, 1, 0.5, 2.5]):
        check_resize(x, attrs, scales=scales, roi=roi)
    check_resize(x, attrs, sizes=[2, 3, 8, 3], roi=roi)
    expect = "nearest_gather" if mode == "nearest" else "separable_hw"
    ins = resize_inputs(x, scales=[1, 1, 1.7, 0.6], roi=roi)
    assert algorithm("Resize", ins, attrs, consts=(1, 2), opset=13) == expect


@pytest.mark.parametrize("nearest", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_resize_nearest_modes(nearest):
    x = f32(2, 3, 5, 7)
    for coord in ("half_pixel", "asymmetric", "align_corners"):
        attrs = {
            "mode": "nearest",
            "nearest_mode": nearest,
            "coordinate_transformation_mode": coord,
        }
        check_resize(x, attrs, scales=[1, 1, 1.7, 0.6])
        check_resize(x, attrs, scales=[1, 1, 2.0, 0.5])


@pytest.mark.parametrize(
    ("xs", "attrs", "kw", "opset", "alg"),
    [
        ((2, 3, 5, 7), {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5},
         dict(scales=[1, 1, 1.7, 0.6]), 13, "separable_hw"),
        ((3, 5, 7), {"mode": "linear"}, dict(scales=[1, 1.7, 0.6]), 13, "separable_generic"),
        ((3, 5, 7), {"mode": "cubic"}, dict(scales=[1.5, 1.7, 0.6]), 13, "separable_generic"),
        ((2, 3, 5, 7), {"mode": "linear"}, dict(scales=[1, 2, 1.7, 0.6]), 13, "separable_generic"),
        ((2, 3, 4, 5, 6), {"mode": "nearest"}, dict(scales=[1, 1, 2, 0.5, 1.5]), 13,
         "nearest_gather"),
        ((2, 3, 5, 7), {"mode": "linear", "antialias": 1}, dict(scales=[1, 1, 0.6, 0.35]), 18,
         "separable_hw"),
        ((2, 3, 5, 7), {"mode": "cubic", "antialias": 1}, dict(scales=[1, 1, 0.6, 0.35]), 18,
         "separable_hw"),
        ((2, 3, 5, 7), {"mode": "linear", "axes": [3, 2]}, dict(scales=[0.6, 1.5]), 18,
         "separable_hw"),
        ((2, 3, 5, 7), {"mode": "nearest", "axes": [2, 3], **NOT_LARGER}, dict(sizes=[8, 8]), 18,
         "nearest_gather"),
        ((2, 3, 5, 7), {"mode": "linear", "axes": [2, 3], **NOT_SMALLER}, dict(sizes=[8, 8]), 18,
         "separable_hw"),
        ((2, 3, 5, 7), {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"},
         dict(scales=[1, 1, 1.7, 0.6]), 19, "separable_hw"),
    ],
)  # fmt: skip
def test_resize_variants(xs, attrs, kw, opset, alg):
    x = f32(*xs)
    check_resize(x, attrs, opset=opset, **kw)
    consts = (1, 2, 3)
    assert algorithm("Resize", resize_inputs(x, **kw), attrs, consts=consts, opset=opset) == alg


def test_resize_runtime_scales_and_sizes():
    x = f32(2, 3, 5, 7)
    check_resize(x, {"mode": "linear"}, scales=[1, 1, 1.7, 0.6], consts=())
    check_resize(x, {"mode": "nearest"}, sizes=[2, 3, 8, 3], consts=())


@pytest.mark.parametrize("scales", [[1, 1, 1.7, 0.6], [1, 1, 2, 3], [1, 1, 0.5, 0.6]])
def test_resize_opset10(scales):
    """Opset 10: (X, scales), asymmetric coordinates; nearest rounds down when upsampling
    an axis and up when downsampling it."""
    x = f32(2, 3, 5, 7)
    s = np.array(scales, np.float32)
    for mode in ("nearest", "linear"):
        (got,) = run_node("x86", "Resize", [x, s], {"mode": mode}, opset=10, consts=(1,),
                          expect_native=True)  # fmt: skip
        (want,) = run_node("reference", "Resize", [x, s], {"mode": mode}, opset=10, consts=(1,))
        assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_resize_tf_half_pixel_for_nearest():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nearest"}
    ins = resize_inputs(x, scales=[1, 1, 1, 2])
    (y,) = run_node("x86", "Resize", ins, {**attrs, "nearest_mode": "floor"}, opset=11)
    np.testing.assert_array_equal(y.ravel(), [0, 0, 1, 1, 2, 2, 3, 3])


def test_resize_nearest_antialias_declined():
    ins = resize_inputs(f32(1, 1, 4, 4), scales=[1, 1, 0.5, 0.5])
    attrs = {"mode": "nearest", "antialias": 1}
    assert session("Resize", ins, attrs, consts=(1, 2), opset=18).plan.fallbacks


def test_resize_absurd_scales_refused():
    ins = resize_inputs(f32(1, 1, 8, 8), scales=[1, 1, 1e6, 1e6])
    with pytest.raises(AllocationError):
        run_node("x86", "Resize", ins, {"mode": "linear"}, consts=(1, 2))
