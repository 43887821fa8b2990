"""Constant and shape folding: a node whose result is known before any input arrives is
computed once, here, and becomes an initializer under its output's name.

Constant folding: every input is a constant (an initializer no graph input can override,
or the output of a folded node; Constant nodes themselves have no input and fold first),
and the node runs once on the `reference` backend, the definition of every op. Random ops
never fold, nor nodes with subgraphs or a graph output. A result over `MAX_FOLD_BYTES`
folds only when it is no larger than its inputs (a Transpose of a weight: the same bytes
in the layout the consumer wants) and is refused, with the reason, when folding would
create data (Expand, ConstantOfShape, Tile of a small constant into a large one).

Shape folding: `Shape` and `Size` of a value whose dims are all known ints after shape
inference (symbolic dims such as 'batch' never fold), and `Gather(Shape(x), indices)` when
only the picked dims must be known. The Gather/Slice/Concat/Unsqueeze chains that build
Reshape targets from those constants then fold by constant folding.

Each folded node leaves a `Change` of kind "folded" whose `detail` names the constant;
the constant's `meta["origin"]` lists the ONNX nodes it stands for, including those of
folded constants it consumed and that nothing else reads any more.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ....errors import WorkbenchError
from ...backends import get_backend
from ...backends.base import CompileContext
from ...ir import Graph, Node, Value
from ...plan import compile_node
from ..infra import Change, FunctionPass, PassContext, PassResult, Rejection, origin_of

PASS_NAME = "fold_constants"
MAX_FOLD_BYTES = 64 << 20
RANDOM_OPS = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Bernoulli",
        "Multinomial",
    }
)


def is_fixed(v: Value | None, graph: Graph) -> bool:
    """Whether `v` is an initializer that no graph input overrides (its data unread)."""
    return v is not None and v.is_const and not any(v is i for i in graph.inputs)


def constant_of(v: Value | None, graph: Graph) -> np.ndarray | None:
    """The data of `v` if it is fixed: an initializer that no graph input overrides."""
    return v.const if is_fixed(v, graph) else None


def static_dims(v: Value | None) -> tuple[int, ...] | None:
    """`v`'s shape when every dim is a known int (not 'batch', not unknown)."""
    if v is None or v.shape is None or not all(isinstance(d, int) and d >= 0 for d in v.shape):
        return None
    return tuple(v.shape)


# -- shape folding ------------------------------------------------------------------------------


def _shape_slice(node: Node) -> slice:
    # Shape-15 start/end: negative counts from the back, out of range clamps (numpy slicing)
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    return slice(start, None if end is None else int(end))


def shape_result(node: Node, graph: Graph) -> np.ndarray | None:
    """The value of a Shape/Size (or Gather of a Shape) node known from static shapes."""
    if node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is None:
        return None
    x = node.inputs[0]
    if node.op_type in ("Shape", "Size"):
        if x.shape is None:
            return None
        dims = list(x.shape)
        if node.op_type == "Shape":
            dims = dims[_shape_slice(node)]
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            return None
        if node.op_type == "Size":
            return np.array(int(np.prod(dims, dtype=np.int64)), np.int64)
        return np.array(dims, np.int64)
    if node.op_type == "Gather" and len(node.inputs) == 2:
        shape_node = x.producer
        indices = constant_of(node.inputs[1], graph)
        if (
            shape_node is None
            or shape_node.op_type != "Shape"
            or shape_node.domain not in ("", "ai.onnx")
            or indices is None
            or shape_node.inputs[0].shape is None
        ):
            return None
        dims = list(shape_node.inputs[0].shape)[_shape_slice(shape_node)]
        try:
            picked = np.asarray(dims, dtype=object)[np.asarray(indices, np.int64)]
        except IndexError:
            return None  # out of range: let the kernel say so at run time
        flat = np.asarray(picked, dtype=object).reshape(-1).tolist()
        if not all(isinstance(d, int) and d >= 0 for d in flat):
            return None
        return np.array(flat, np.int64).reshape(np.shape(picked))
    return None


# -- constant folding ---------------------------------------------------------------------------


def _refusal(node: Node, graph: Graph) -> str | None:
    """Why `node` must not fold even though its inputs are constant (None: it may)."""
    if node.op_type in RANDOM_OPS:
        return f"{node.op_type} is random: each run draws new values"
    if any(True for _ in node.subgraphs()):
        return f"{node.op_type} has subgraphs"
    for v in node.outputs:
        if any(v is o for o in graph.outputs):
            return f"output {v.name!r} is a graph output"
    return None


def _evaluate(node: Node, graph: Graph, ctx: PassContext) -> tuple[list, str | None]:
    """Run `node` on the reference backend; (outputs, None) or ([], why not)."""
    reference = get_backend("reference", require_available=False)
    opsets = dict(ctx.opsets)
    cctx = CompileContext(reference, ctx.opset, "fp32", opsets)
    estimate = _estimated_bytes(node)
    if estimate is not None and _too_big(estimate, node, graph):
        return [], _size_reason(estimate, node, graph)
    try:
        kernel = compile_node(node, reference, cctx, reference)
        outs = kernel.run(*[constant_of(v, graph) for v in node.inputs])
    except WorkbenchError as e:
        return [], f"evaluation failed: {e}"
    except Exception as e:  # the node would fail the same way at run time: leave it there
        return [], f"evaluation failed: {type(e).__name__}: {e}"
    return list(outs), None


def _estimated_bytes(node: Node) -> int | None:
    total = 0
    for v in node.outputs:
        dims, dtype = static_dims(v), v.dtype
        if dims is None or dtype is None:
            return None
        total += int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    return total


def _input_bytes(node: Node, graph: Graph) -> int:
    return sum(int(c.nbytes) for v in node.inputs if (c := constant_of(v, graph)) is not None)


def _too_big(nbytes: int, node: Node, graph: Graph) -> bool:
    return nbytes > MAX_FOLD_BYTES and nbytes > _input_bytes(node, graph)


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"


def _size_reason(nbytes: int, node: Node, graph: Graph) -> str:
    return (
        f"the result would be {_size(nbytes)}, over the {_size(MAX_FOLD_BYTES)} limit and "
        f"more than its inputs' {_size(_input_bytes(node, graph))}: folding would store "
        "data the node creates at run time"
    )


def _transposed_weight(v: Value, array: np.ndarray) -> bool:
    """`array` is a 2-D transpose, as a view, read only as a GEMM's B: kept so, since GEMMs
    read either order and a copy would be a second weight (GPT-2's lm_head is
    Transpose(wte): 147 MiB). Other readers get C order, as before."""
    return (
        array.ndim == 2
        and array.flags.f_contiguous
        and array.base is not None
        and bool(v.uses)
        and all(
            n.op_type in ("MatMul", "Gemm") and n.domain in ("", "ai.onnx") and i == 1
            for n, i in v.uses
        )
    )


def _as_constant(v: Value, array: np.ndarray, origin: tuple[str, ...], graph: Graph) -> None:
    """Turn the node output `v` into an initializer holding `array` (same Value object,
    so every consumer keeps reading it by identity and by name)."""
    if not array.flags.c_contiguous and not _transposed_weight(v, array):
        array = array.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    v.const = array
    v.producer, v.index = None, 0
    v.shape = tuple(array.shape)
    if v.dtype != array.dtype:
        v.elem_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    v.meta["origin"] = origin
    graph.add_initializer(v)


def fold_constants(graph: Graph, ctx: PassContext) -> PassResult:
    """Constant and shape folding: nodes computable now become initializers."""
    changes: list[Change] = []
    rejected: list[Rejection] = []
    for node in list(graph.nodes):
        if node.graph is not graph:
            continue
        shaped = shape_result(node, graph)
        if shaped is not None:
            if _refusal(node, graph) is not None:
                continue
            outs, rule = [shaped], "shape"
        else:
            if not all(v is None or is_fixed(v, graph) for v in node.inputs):
                continue
            reason = _refusal(node, graph)
            if reason is None:
                outs, reason = _evaluate(node, graph, ctx)
            if reason is None:
                reason = _check_outputs(node, outs, graph)
            if reason is not None:
                rejected.append(Rejection(PASS_NAME, "constant", (node.name,), reason))
                continue
            rule = "constant"
        origin = _take_origins(node, graph)
        produced = [v for v, a in zip(node.outputs, outs, strict=False) if v.name and a is not None]
        graph.remove(node, safe=False)
        for v, a in zip(node.outputs, outs, strict=False):
            if v.name and a is not None:
                _as_constant(v, np.asarray(a), origin, graph)
        names = ", ".join(v.name for v in produced)
        changes.append(Change(PASS_NAME, rule, "folded", (node.name,), (), origin, names))
    return PassResult(graph, bool(changes), changes, rejected)


def _check_outputs(node: Node, outs: list, graph: Graph) -> str | None:
    nbytes = 0
    for v, a in zip(node.outputs, outs, strict=False):
        if not v.name:
            continue
        if not isinstance(a, np.ndarray | np.generic):
            return f"output {v.name!r} is not a tensor (a {type(a).__name__})"
        if v.dtype is not None and np.asarray(a).dtype != v.dtype:
            return f"output {v.name!r} came out {np.asarray(a).dtype}, declared {v.dtype}"
        nbytes += np.asarray(a).nbytes
    if _too_big(nbytes, node, graph):
        return _size_reason(nbytes, node, graph)
    return None


def _take_origins(node: Node, graph: Graph) -> tuple[str, ...]:
    """The node's own origin plus that of folded constants only this node reads: those
    die with it, and the new constant now stands for them."""
    names = list(origin_of([node]))
    for v in node.inputs:
        if v is None or "origin" not in v.meta or not v.is_const:
            continue
        if all(user is node for user, _ in v.uses) and not any(v is o for o in graph.outputs):
            # (popped: dead code then drops the spent constant without a fate of its own)
            names += [n for n in v.meta.pop("origin") if n not in names]
    return tuple(names)


PASSES = [
    FunctionPass(
        PASS_NAME,
        fold_constants,
        level=1,
        order=10,
        description="constant folding on the reference backend, and Shape/Size of static shapes",
    )
]
