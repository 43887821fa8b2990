"""Standard architectures built as ONNX with seeded random weights, no downloads.

Each builder returns an ``onnx.ModelProto`` shaped like the file
``torch.onnx.export`` writes for the torchvision / HuggingFace model of the
same name: unfused Conv/BatchNormalization, decomposed LayerNorm and GELU,
exporter-style node names (``/layer1/layer1.0/conv1/Conv``) and parameter
names (``layer1.0.conv1.weight``). Every model records default values of its
symbolic dims as JSON in ``metadata_props["workbench.dims"]`` (e.g.
``{"batch": 1, "sequence": 128}``) so tools can make feeds unasked.

    >>> from workbench import zoo
    >>> model = zoo.get("tiny_bert")
    >>> zoo.names()[:3]
    ['bert', 'bert_6l', 'gpt2']
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import onnx

from ._builder import DIMS_KEY
from .bert import bert, bert_6l, tiny_bert
from .gpt2 import gpt2, tiny_gpt2
from .mobilenet import mobilenet_v2, tiny_mobilenet_v2
from .resnet import resnet18, resnet50, tiny_resnet

MODELS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "bert": bert,
    "bert_6l": bert_6l,
    "gpt2": gpt2,
    "tiny_resnet": tiny_resnet,
    "tiny_mobilenet_v2": tiny_mobilenet_v2,
    "tiny_bert": tiny_bert,
    "tiny_gpt2": tiny_gpt2,
}


def names() -> list[str]:
    """Names accepted by :func:`get`, sorted."""
    return sorted(MODELS)


def dims(model: onnx.ModelProto) -> dict[str, int]:
    """Default values of a model's symbolic dims, from ``metadata_props``; ``{}`` if absent."""
    for prop in model.metadata_props:
        if prop.key == DIMS_KEY:
            return dict(json.loads(prop.value))
    return {}


def get(name: str, **kwargs: Any) -> onnx.ModelProto:
    """Build the model registered as ``name``, passing ``kwargs`` to its builder."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown zoo model {name!r}; known models: {', '.join(names())}"
        ) from None
    return builder(**kwargs)


__all__ = [
    "DIMS_KEY",
    "MODELS",
    "bert",
    "bert_6l",
    "dims",
    "get",
    "gpt2",
    "mobilenet_v2",
    "names",
    "resnet18",
    "resnet50",
    "tiny_bert",
    "tiny_gpt2",
    "tiny_mobilenet_v2",
    "tiny_resnet",
]
