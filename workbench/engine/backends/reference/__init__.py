"""`reference`: the living definition of every op, in numpy, and the ground truth of diffs.

Our own kernels (ops_*.py) come first; anything else runs through onnx.reference.
With precision="fp64" every float tensor is computed and returned in float64.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
from onnx import TensorProto

from ..base import Backend, CompileContext, Kernel
from ._table import kernels
from .onnx_ref import onnx_reference_kernel, onnx_reference_supports

for _m in pkgutil.iter_modules(__path__):
    if _m.name.startswith("ops_"):
        importlib.import_module(f"{__name__}.{_m.name}")

_LOW_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))
_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)


def _widen(run):
    def wide(*args):
        return tuple(
            o.astype(np.float64) if isinstance(o, np.ndarray) and o.dtype in _LOW_FLOATS else o
            for o in run(*args)
        )

    return wide


class ReferenceBackend(Backend):
    name = "reference"
    device = "cpu"
    precisions = ("fp32", "fp64")
    dtypes = frozenset({"float16", "float32", "float64"})
    description = "ONNX semantics in numpy; onnx.reference for ops without a kernel of our own"

    def __init__(self) -> None:
        super().__init__()
        self.kernels = kernels

    def supports(self, domain: str, op_type: str, opset: int) -> bool:
        return super().supports(domain, op_type, opset) or onnx_reference_supports(
            domain, op_type, opset
        )

    def compile(self, node, ctx: CompileContext) -> Kernel | None:
        kernel = super().compile(node, ctx)
        if kernel is None:
            run = onnx_reference_kernel(node, ctx)
            if run is None:
                return None
            kernel = Kernel(run, self.name, node.op_type, "onnx.reference", source="onnx.reference")
        if ctx.precision == "fp64":
            if node.op_type in ("Cast", "CastLike") and node.domain == "":
                to = node.attrs.get("to")
                if node.op_type == "CastLike" or to in _FLOAT_TYPES:
                    # a cast to a narrower float would undo fp64: keep the value in float64
                    kernel.run = _cast_fp64(kernel.run)
            kernel.run = _widen(kernel.run)
        return kernel


def _cast_fp64(run):
    def cast(x, *like):
        if x.dtype.kind in "biuf" and (not like or like[0].dtype.kind == "f"):
            return (x.astype(np.float64),)
        return run(x, *like)

    return cast


BACKEND = ReferenceBackend()
