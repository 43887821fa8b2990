"""The inference engine: IR, ONNX I/O, backends, plans and the executor."""

from .backends import get_backend
from .executor import Session, run_model
from .ir import Graph, Node, Value
from .model import Model
from .onnx_io import load, save, to_onnx

__all__ = [
    "Graph",
    "Model",
    "Node",
    "Session",
    "Value",
    "get_backend",
    "load",
    "run_model",
    "save",
    "to_onnx",
]
