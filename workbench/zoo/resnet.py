"""torchvision ResNets, unfused: Conv (no bias) -> BatchNormalization -> Relu.

That is what ``torch.onnx.export`` writes for an eval-mode model with
``training=TrainingMode.PRESERVE``; the default export folds each BN into its
Conv, which is exactly the rewrite the workbench's passes should get to do.

Node and parameter names follow torchvision's module tree
(``/layer1/layer1.0/conv1/Conv``, ``layer1.0.bn1.running_var``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import onnx
from onnx import TensorProto

from ._builder import RESIDUAL_GAMMA, Dim, GraphBuilder, check_opset, symbolic_dims

BlockKind = Literal["basic", "bottleneck"]
EXPANSION = {"basic": 1, "bottleneck": 4}


def _conv_bn(
    b: GraphBuilder,
    x: str,
    cin: int,
    cout: int,
    kernel: int,
    stride: int,
    index: int,
    *,
    last: bool = False,
) -> str:
    """``conv{index}`` then ``bn{index}``, as named inside torchvision blocks.

    The ``last`` pair of a residual branch feeds the Add, not a ReLU.
    """
    with b.scope(f"conv{index}"):
        x = b.conv(x, cin, cout, kernel, stride=stride, gain=1.0 if last else 2.0)
    with b.scope(f"bn{index}"):
        return b.batchnorm(x, cout, gamma=RESIDUAL_GAMMA if last else 1.0)


def _relu(b: GraphBuilder, x: str) -> str:
    with b.scope("relu"):
        return b.op("Relu", x)


def _block(b: GraphBuilder, x: str, kind: BlockKind, cin: int, width: int, stride: int) -> str:
    """BasicBlock or Bottleneck (v1.5: the stride sits on the 3x3 conv)."""
    cout = width * EXPANSION[kind]
    if kind == "basic":
        out = _relu(b, _conv_bn(b, x, cin, width, 3, stride, 1))
        out = _conv_bn(b, out, width, cout, 3, 1, 2, last=True)
    else:
        out = _relu(b, _conv_bn(b, x, cin, width, 1, 1, 1))
        out = _relu(b, _conv_bn(b, out, width, width, 3, stride, 2))
        out = _conv_bn(b, out, width, cout, 1, 1, 3, last=True)
    identity = x
    if stride != 1 or cin != cout:
        with b.scope("downsample"):
            with b.child(0):
                identity = b.conv(x, cin, cout, 1, stride=stride, gain=1.0)
            with b.child(1):
                identity = b.batchnorm(identity, cout)
    return _relu(b, b.op("Add", out, identity))


def _resnet(
    kind: BlockKind,
    blocks: Sequence[int],
    widths: Sequence[int],
    batch: Dim,
    image: int,
    num_classes: int,
    opset: int,
    seed: int,
    arch: str,
) -> onnx.ModelProto:
    check_opset(opset, 9, arch)
    if len(blocks) != len(widths):
        raise ValueError(f"blocks {tuple(blocks)} and widths {tuple(widths)} differ in length")
    b = GraphBuilder(arch, opset=opset, seed=seed)
    x = b.input("input", TensorProto.FLOAT, [batch, 3, image, image])

    stem = widths[0]
    with b.scope("conv1"):
        x = b.conv(x, 3, stem, 7, stride=2)
    with b.scope("bn1"):
        x = b.batchnorm(x, stem)
    x = _relu(b, x)
    with b.scope("maxpool"):
        x = b.op(
            "MaxPool",
            x,
            ceil_mode=0,
            dilations=[1, 1],
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
        )

    channels = stem
    for stage, (count, width) in enumerate(zip(blocks, widths, strict=True), start=1):
        layer = f"layer{stage}"
        with b.scope(layer):
            for i in range(count):
                stride = 2 if stage > 1 and i == 0 else 1
                with b.child(i):
                    x = _block(b, x, kind, channels, width, stride)
                channels = width * EXPANSION[kind]

    # adaptive_avg_pool2d((1, 1)) exports as GlobalAveragePool, torch.flatten(x, 1) as Flatten.
    with b.scope("avgpool"):
        x = b.op("GlobalAveragePool", x)
    x = b.op("Flatten", x, axis=1)
    with b.scope("fc"):
        b.gemm(x, channels, num_classes, out="output")
    b.output("output", TensorProto.FLOAT, [batch, num_classes])

    doc = (
        f"{arch}: torchvision ResNet ({kind} blocks {tuple(blocks)}, widths {tuple(widths)}), "
        f"unfused Conv/BatchNormalization/Relu, {image}x{image} input"
    )
    return b.build(doc=doc, dims=symbolic_dims((batch, 1)))


def resnet18(
    batch: Dim = "batch",
    image: int = 224,
    num_classes: int = 1000,
    opset: int = 17,
    *,
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: Sequence[int] = (2, 2, 2, 2),
    seed: int = 0,
    name: str = "resnet18",
) -> onnx.ModelProto:
    """ResNet-18 (basic blocks, ~11.7M parameters).

    Input ``input`` [batch, 3, image, image] -> ``output`` [batch, num_classes].
    ``widths``/``blocks`` shrink or deepen it (the stem uses ``widths[0]``).
    """
    return _resnet("basic", blocks, widths, batch, image, num_classes, opset, seed, name)


def resnet50(
    batch: Dim = "batch",
    image: int = 224,
    num_classes: int = 1000,
    opset: int = 17,
    *,
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: Sequence[int] = (3, 4, 6, 3),
    seed: int = 0,
    name: str = "resnet50",
) -> onnx.ModelProto:
    """ResNet-50 (bottleneck blocks, expansion 4, ~25.6M parameters).

    Input ``input`` [batch, 3, image, image] -> ``output`` [batch, num_classes].
    """
    return _resnet("bottleneck", blocks, widths, batch, image, num_classes, opset, seed, name)


def tiny_resnet(**kwargs: Any) -> onnx.ModelProto:
    """resnet18-shaped: one basic block per stage, 8..64 channels, 32x32 input, 10 classes."""
    tiny = {"image": 32, "num_classes": 10, "widths": (8, 16, 32, 64), "blocks": (1, 1, 1, 1)}
    return resnet18(**{**tiny, "name": "tiny_resnet", **kwargs})
