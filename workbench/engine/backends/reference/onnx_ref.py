"""Run any node with `onnx.reference`, the ONNX project's own evaluator.

Each node becomes a one-node model (its subgraphs' captured outer values become extra
graph inputs) evaluated by `ReferenceEvaluator`. This is the reference backend's
catch-all and every other backend's fallback for ops it does not implement.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

from ..base import CompileContext, KernelFn

if TYPE_CHECKING:
    from ...ir import Node, Value

_SPECIAL_DOMAINS = ("", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview", "experimental")


# Ops whose onnx.reference implementation imports an optional package when it runs.
_NEEDS_PACKAGE = {("", "ImageDecoder"): "PIL"}


def onnx_reference_supports(domain: str, op_type: str, opset: int, functions=()) -> bool:
    """Whether onnx.reference has an implementation of the op at this opset."""
    if any(f.domain == domain and f.name == op_type for f in functions):
        return True
    if domain not in _SPECIAL_DOMAINS:
        return False
    package = _NEEDS_PACKAGE.get((domain, op_type))
    if package is not None and importlib.util.find_spec(package) is None:
        return False  # would only fail when run: say "unsupported" when compiling instead
    try:
        if domain == "":
            from onnx.reference.ops import load_op
        elif domain == "ai.onnx.ml":
            from onnx.reference.ops.aionnxml import load_op
        elif domain == "ai.onnx.preview.training":
            from onnx.reference.ops.aionnx_preview_training import load_op
        elif domain == "ai.onnx.preview":
            from onnx.reference.ops.aionnx_preview import load_op
        else:
            from onnx.reference.ops.experimental import load_op
        load_op(domain, op_type, opset)
        return True
    except onnx.reference.op_run.RuntimeContextError:
        return True  # implemented as a function that needs input types: still supported
    except Exception:
        # An op defined by a function body (Mish, HardSwish, MeanVarianceNormalization at
        # recent opsets) has no class; `load_op` refuses it without an evaluator, but
        # ReferenceEvaluator expands the body itself.
        return _defined_by_function(domain, op_type, opset)


def _defined_by_function(domain: str, op_type: str, opset: int) -> bool:
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except Exception:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


_NARROW_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


def _value_info(v: Value, wide: bool = False) -> onnx.ValueInfoProto:
    if v.type_proto is not None:
        return helper.make_value_info(v.name, v.type_proto)
    if v.elem_type:
        # fp64 feeds float64 where the model says float/float16: declare it so, or function
        # bodies expanded from the declared types carry float32 constants (MVN's epsilon)
        elem = onnx.TensorProto.DOUBLE if wide and v.elem_type in _NARROW_FLOATS else v.elem_type
        return helper.make_tensor_value_info(v.name, elem, None)
    return helper.make_empty_tensor_value_info(v.name)


def onnx_reference_kernel(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Kernel factory wrapping onnx.reference for `node`, or None if it has no implementation."""
    from ...onnx_io import _attr_to_proto

    if not onnx_reference_supports(node.domain, node.op_type, ctx.opset, ctx.functions):
        return None
    declared = [v for v in node.inputs]
    captured = node.implicit_inputs()
    wide = ctx.precision == "fp64"
    infos = []
    seen: set[str] = set()
    for v in [*declared, *captured]:
        if v is not None and v.name not in seen:
            seen.add(v.name)
            infos.append(_value_info(v, wide))
    proto = helper.make_node(
        node.op_type,
        [v.name if v is not None else "" for v in declared],
        [v.name for v in node.outputs],
        name=node.name or None,
        domain=node.domain or None,
    )
    for k, val in node.attrs.items():
        proto.attribute.append(_attr_to_proto(k, val, node.attr_types.get(k)))
    outs = [
        helper.make_empty_tensor_value_info(v.name) if not v.elem_type else _value_info(v)
        for v in node.outputs
        if v.name
    ]
    graph = helper.make_graph([proto], f"node_{node.name or node.op_type}", infos, outs)
    opsets = dict(ctx.opsets)
    opsets.setdefault(node.domain, ctx.opset)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        functions=list(ctx.functions),
    )
    from onnx.reference import ReferenceEvaluator

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = ReferenceEvaluator(model)
    except Exception:
        return None
    in_names = [v.name if v is not None else None for v in declared] + [v.name for v in captured]
    out_names = [v.name for v in node.outputs]
    wanted = [n for n in out_names if n]

    def run(*args):
        feeds = {n: a for n, a in zip(in_names, args, strict=False) if n is not None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = evaluator.run(wanted, feeds)
        got = dict(zip(wanted, res, strict=True))
        return tuple(_as_array(got.get(n)) if n else None for n in out_names)

    return run


def _as_array(x):
    # onnx.reference sometimes returns numpy scalars; downstream code wants arrays
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x
