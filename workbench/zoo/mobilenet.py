"""torchvision MobileNetV2, unfused (see resnet.py for why):
Conv -> BatchNormalization -> Clip(0, 6) for every ReLU6, depthwise 3x3 convs
with ``group == channels``, linear 1x1 projections, and residual Adds where a
block keeps stride 1 and its channel count.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto

from ._builder import RESIDUAL_GAMMA, Dim, GraphBuilder, check_opset, symbolic_dims

# torchvision's inverted_residual_setting: expand ratio t, channels c, repeats n, stride s.
SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, losing at most 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn_relu6(
    b: GraphBuilder, x: str, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
) -> str:
    """torchvision's Conv2dNormActivation: children 0 (Conv), 1 (BN), 2 (ReLU6).

    Call inside the scope of the Conv2dNormActivation itself (e.g. ``features.0``).
    """
    with b.child(0):
        x = b.conv(x, cin, cout, kernel, stride=stride, groups=groups)
    with b.child(1):
        x = b.batchnorm(x, cout)
    with b.child(2):
        # ReLU6 exports as Clip with min/max as inputs (opset >= 11).
        return b.op("Clip", x, b.const(0.0), b.const(6.0))


def _inverted_residual(
    b: GraphBuilder, x: str, cin: int, cout: int, stride: int, expand: int
) -> str:
    hidden = round(cin * expand)
    with b.scope("conv"):
        out, index = x, 0
        if expand != 1:
            with b.child(index):
                out = _conv_bn_relu6(b, out, cin, hidden, 1)
            index += 1
        with b.child(index):
            out = _conv_bn_relu6(b, out, hidden, hidden, 3, stride, groups=hidden)
        with b.child(index + 1):
            out = b.conv(out, hidden, cout, 1, gain=1.0)
        with b.child(index + 2):
            out = b.batchnorm(out, cout, gamma=RESIDUAL_GAMMA)
    if stride == 1 and cin == cout:
        return b.op("Add", x, out)
    return out


def mobilenet_v2(
    batch: Dim = "batch",
    image: int = 224,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    opset: int = 17,
    *,
    seed: int = 0,
    name: str = "mobilenet_v2",
) -> onnx.ModelProto:
    """MobileNetV2 (~3.5M parameters at width 1.0).

    Input ``input`` [batch, 3, image, image] -> ``output`` [batch, num_classes].
    ``width_mult`` scales every channel count as torchvision does (rounded to
    multiples of 8); the last conv keeps 1280 channels for ``width_mult <= 1``.
    """
    check_opset(opset, 11, f"{name} (Clip with min/max inputs)")
    b = GraphBuilder(name, opset=opset, seed=seed)
    x = b.input("input", TensorProto.FLOAT, [batch, 3, image, image])

    channels = make_divisible(32 * width_mult)
    last_channels = make_divisible(1280 * max(1.0, width_mult))
    index = 0
    with b.scope("features"):
        with b.child(0):
            x = _conv_bn_relu6(b, x, 3, channels, 3, stride=2)
        for expand, c, repeats, first_stride in SETTINGS:
            cout = make_divisible(c * width_mult)
            for i in range(repeats):
                index += 1
                with b.child(index):
                    x = _inverted_residual(
                        b, x, channels, cout, first_stride if i == 0 else 1, expand
                    )
                channels = cout
        index += 1
        with b.child(index):
            x = _conv_bn_relu6(b, x, channels, last_channels, 1)

    x = b.op("GlobalAveragePool", x)
    x = b.op("Flatten", x, axis=1)
    # classifier = Sequential(Dropout, Linear); Dropout vanishes in eval export.
    with b.scope("classifier"), b.child(1):
        b.gemm(x, last_channels, num_classes, out="output")
    b.output("output", TensorProto.FLOAT, [batch, num_classes])

    doc = (
        f"{name}: torchvision MobileNetV2 (width_mult {width_mult}), unfused "
        f"Conv/BatchNormalization/Clip, {image}x{image} input"
    )
    return b.build(doc=doc, dims=symbolic_dims((batch, 1)))


def tiny_mobilenet_v2(**kwargs: Any) -> onnx.ModelProto:
    """MobileNetV2 at width 0.25 on 32x32 input with 10 classes: all 17 blocks, few channels."""
    tiny = {"image": 32, "num_classes": 10, "width_mult": 0.25}
    return mobilenet_v2(**{**tiny, "name": "tiny_mobilenet_v2", **kwargs})
