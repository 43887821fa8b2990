"""Reference Resize at opset 10 (inputs X, scales; attribute mode = nearest | linear) and
Upsample 7-9, which means the same.

onnx.reference only knows Resize 11+, whose second input is `roi`: it reads opset 10's
scales as roi, finds no scales and fails. Opset 10 has no coordinate or rounding
attributes; what it means is fixed by its spec and the conformance tests published with
it (onnx 1.5, opset 10):

  output size    floor(in * scale) per axis
  coordinates    asymmetric: output index y reads input coordinate x = y / scale
  nearest        floor(x) on an axis that is upsampled (scale >= 1), ceil(x) on one that
                 is downsampled: onnx 1.5's test_resize_downsample_nearest expects [[1, 3]]
                 from [[1, 2, 3, 4], [5, 6, 7, 8]] at scale 0.6 (x = 1.67 reads index 2),
                 which plain floor cannot give, and its upsampling test needs floor.
                 onnxruntime implements exactly this rule for opset 10.
  linear         (multi)linear interpolation between floor(x) and floor(x) + 1, both
                 clamped to the input: onnx 1.5's test_resize_downsample_linear expects
                 [[1, 2.6666665]] there.

Both modes are separable, so the axes are resized one after the other (coordinates and
linear weights in float64, from the scale's own value; the result in X's dtype).
"""

from __future__ import annotations

import math

import numpy as np

from ._table import kernels


def _resize_axis(x: np.ndarray, axis: int, scale: float, mode: str) -> np.ndarray:
    n_in = x.shape[axis]
    n_out = math.floor(n_in * scale)
    coord = np.arange(n_out, dtype=np.float64) / scale
    if mode == "nearest":
        idx = np.ceil(coord) if scale < 1 else np.floor(coord)
        return np.take(x, np.clip(idx, 0, n_in - 1).astype(np.int64), axis=axis)
    lo = np.clip(np.floor(coord), 0, n_in - 1).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = n_out
    frac = np.clip(coord - lo, 0.0, 1.0).reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def resize_by_scales(x: np.ndarray, scales, mode: str) -> np.ndarray:
    scales = np.asarray(scales, dtype=np.float64).reshape(-1)
    if scales.size != x.ndim:
        raise ValueError(f"Resize: {scales.size} scales for a rank-{x.ndim} input")
    if (scales <= 0).any():
        raise ValueError(f"Resize: scales must be positive, got {scales.tolist()}")
    y = x
    for axis, scale in enumerate(scales.tolist()):
        if scale != 1.0:
            y = _resize_axis(y, axis, scale, mode)
    return y.astype(x.dtype, copy=False)


@kernels.register("Resize", since=10, until=10)
def resize_10(node, ctx):
    mode = node.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        return None

    def run(x, scales):
        return (resize_by_scales(x, scales, mode),)

    return run


@kernels.register("Upsample", since=7, until=9)
def upsample(node, ctx):
    """Upsample 7-9, Resize-10's predecessor with scales >= 1 (an attribute before opset 9).
    onnx.reference runs only nearest with whole-number scales."""
    mode = node.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        return None
    fixed = node.attrs.get("scales") if ctx.opset < 9 else None

    def run(x, scales=None):
        return (resize_by_scales(x, fixed if fixed is not None else scales, mode),)

    return run
