"""ONNX <-> IR: `load` (path, bytes or ModelProto -> Model) and `to_onnx` (back again).

Loading checks the model with `onnx.checker`, infers shapes with
`onnx.shape_inference` (on a copy stripped of large weights, so a 500 MB model
is not serialized twice), and memory-maps external data instead of reading it. A
file's own large initializers are read once, straight into their arrays (onnx_file.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import ChainMap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from ..errors import ExternalDataError, ModelLoadError
from . import onnx_file
from .ir import Graph, Node, Value, np_dtype
from .memory_guard import check_size
from .model import Model
from .passes.fused_ops import register_schemas

# Tensors above this size are not sent through shape inference (it only needs their dims).
_STRIP_BYTES = 1024

# Element types whose raw bytes are laid out exactly as numpy lays them out.
_PLAIN_TYPES = {
    TensorProto.FLOAT,
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.UINT16,
    TensorProto.UINT32,
    TensorProto.UINT64,
    TensorProto.BOOL,
}

# Element types packed several to a byte: their raw_data length is not count * itemsize.
_SUB_BYTE_TYPES = {
    getattr(TensorProto, n)
    for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
    if hasattr(TensorProto, n)
}

# Where a tensor without raw_data keeps its values, and how many per element.
_TYPED_FIELD = {
    TensorProto.FLOAT: ("float_data", 1),
    TensorProto.DOUBLE: ("double_data", 1),
    TensorProto.COMPLEX64: ("float_data", 2),
    TensorProto.COMPLEX128: ("double_data", 2),
    TensorProto.INT64: ("int64_data", 1),
    TensorProto.UINT32: ("uint64_data", 1),
    TensorProto.UINT64: ("uint64_data", 1),
    TensorProto.STRING: ("string_data", 1),
    **{
        t: ("int32_data", 1)
        for t in (
            TensorProto.INT32,
            TensorProto.INT16,
            TensorProto.INT8,
            TensorProto.UINT16,
            TensorProto.UINT8,
            TensorProto.BOOL,
            TensorProto.FLOAT16,
            TensorProto.BFLOAT16,
        )
    },
}


# -- loading ---------------------------------------------------------------------------------


def load(
    source: str | os.PathLike | bytes | onnx.ModelProto,
    *,
    base_dir: str | os.PathLike | None = None,
    check: bool = True,
) -> Model:
    """Load an ONNX model from a path, serialized bytes or a `ModelProto`.

    `base_dir` is where external data files are looked up when `source` is not a
    path (for a path it is the model's own folder).
    """
    path: Path | None = None
    spans: list[onnx_file.Span | None] = []
    if isinstance(source, onnx.ModelProto):
        proto, label, digest = source, "<ModelProto>", ""
    elif isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        proto, label = _parse(raw, "<bytes>"), "<bytes>"
        digest = hashlib.sha256(raw).hexdigest()
        del raw
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise ModelLoadError(f"{label}: no such file")
        if not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file"
            raise ModelLoadError(f"{label}: {what}, not an ONNX file")
        proto, spans, digest = _read_file(path, label)
        base_dir = path.parent
    else:
        raise ModelLoadError(
            f"cannot load a model from a {type(source).__name__}: "
            "give a path, bytes or an onnx.ModelProto"
        )
    base = Path(base_dir) if base_dir is not None else None
    try:
        return _from_proto(proto, label, base, check, path, digest, spans)
    except UnicodeDecodeError as e:
        # proto2 strings are not validated when parsed; a corrupt file shows up here, when a
        # name is first read (by us or inside the checker's error message).
        raise ModelLoadError(
            f"{label}: a name or string in the model is not valid UTF-8 (corrupt file?): {e}"
        ) from None


def _from_proto(
    proto: onnx.ModelProto,
    label: str,
    base: Path | None,
    check: bool,
    path: Path | None,
    digest: str,
    spans: list[onnx_file.Span | None],
) -> Model:
    if not proto.HasField("graph") or (proto.ir_version == 0 and not proto.graph.node):
        raise ModelLoadError(f"{label}: not an ONNX model (no graph and no IR version)")
    # Initializers whose bytes are still in the file (see onnx_file), by name.
    in_file = {t.name: s for t, s in zip(proto.graph.initializer, spans) if s is not None}
    light = _strip_weights(proto, set(in_file))
    register_schemas(o.domain for o in light.opset_import)  # (before onnx checks it)
    if check:
        try:
            onnx.checker.check_model(light)
        except onnx.checker.ValidationError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            raise ModelLoadError(f"{label}: fails the ONNX checker: {first}") from None
    types = _inferred_types(light, label)
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in proto.opset_import}
    ctx = _Ctx(label=label, base_dir=base, types=types, originals={})
    ctx.in_file = in_file
    _collect_initializers(proto.graph, ctx.originals)
    graph = _graph_from_proto(proto.graph, {}, ctx, parent=None)
    return Model(
        graph=graph,
        opset_imports=opsets,
        ir_version=proto.ir_version,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        model_version=proto.model_version,
        domain=proto.domain,
        doc_string=proto.doc_string,
        metadata={p.key: p.value for p in proto.metadata_props},
        functions=list(proto.functions),
        path=path,
        sha256=digest,
    )


def _read_file(path: Path, label: str) -> tuple[onnx.ModelProto, list, str]:
    """(proto, where its large initializers' bytes lie in the file, the file's SHA-256).
    The proto is parsed without those bytes (`_graph_from_proto` reads each into its
    array); a file the walk does not understand is read and parsed whole."""
    proto = onnx.ModelProto()
    try:
        light = onnx_file.light_model_bytes(path, _PLAIN_TYPES)
        with contextlib.suppress(DecodeError, RuntimeError, ValueError):  # (parsed whole below)
            if light is not None:
                proto.ParseFromString(light[0])
                if len(light[1]) == len(proto.graph.initializer):
                    return proto, light[1], onnx_file.sha256_of(path)
        raw = path.read_bytes()
    except OSError as e:  # permissions, a file vanishing, I/O errors
        raise ModelLoadError(f"{label}: cannot read the file: {e.strerror or e}") from None
    return _parse(raw, label), [], hashlib.sha256(raw).hexdigest()


def _parse(raw: bytes, label: str) -> onnx.ModelProto:
    if not raw:
        raise ModelLoadError(f"{label}: the file is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(
            f"{label}: not a valid ONNX protobuf ({len(raw)} bytes{_sniff(raw)}): {e}"
        ) from None
    return proto


def _sniff(raw: bytes) -> str:
    """What a file that is not a protobuf looks like, for the error message."""
    if raw[:4] == b"PK\x03\x04":
        return "; a zip archive, e.g. a PyTorch checkpoint: export it with torch.onnx.export"
    head = raw[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut in two at the 4 KiB mark
            return "; truncated or corrupt?"
        text = head[: e.start].decode("utf-8")
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "; it looks like a text file"
    return "; truncated or corrupt?"


class _Ctx:
    def __init__(self, label: str, base_dir: Path | None, types: dict, originals: dict) -> None:
        self.label = label
        self.base_dir = base_dir
        self.types = types  # value name -> TypeProto, after shape inference
        self.originals = originals  # initializer name -> original TensorProto (with data)
        self.in_file: dict[str, onnx_file.Span] = {}  # raw_data left in the file, by name
        self.names: set[str] = set()  # node names taken so far, subgraphs included


def _collect_initializers(g: onnx.GraphProto, out: dict) -> None:
    for t in g.initializer:
        out.setdefault(t.name, t)
    for n in g.node:
        for a in n.attribute:
            for sub in [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs):
                _collect_initializers(sub, out)


def _strip_weights(proto: onnx.ModelProto, in_file: set[str]) -> onnx.ModelProto:
    """A copy of `proto` whose large initializers are replaced by typed graph inputs.

    The checker and shape inference serialize the whole model; they need the weights'
    dims, not their bytes (the bytes are checked against the dims when converted).
    Small initializers stay, since shape inference reads their values (Reshape shapes).
    """
    light = onnx.ModelProto()
    _copy_fields(proto, light, skip="graph")
    graph = proto.graph
    _copy_fields(graph, light.graph, skip="initializer")
    declared = {vi.name for vi in graph.input}
    for t in graph.initializer:
        big = t.ByteSize() > _STRIP_BYTES or t.name in in_file  # (in_file: no bytes here)
        if big or t.data_location == TensorProto.EXTERNAL:
            # A typed graph input stands in for the weight: same name, type and dims.
            if t.name not in declared:
                light.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
        else:
            light.graph.initializer.add().CopyFrom(t)
    return light


def _copy_fields(src, dst, skip: str) -> None:
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _inferred_types(light: onnx.ModelProto, label: str) -> dict[str, onnx.TypeProto]:
    """Run ONNX shape inference on the weight-stripped model; return name -> TypeProto."""
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception as e:  # inference is advisory: the executor finds real shapes anyway
        import warnings

        warnings.warn(f"{label}: shape inference failed ({e}); continuing without it", stacklevel=3)
        inferred = light
    types: dict[str, onnx.TypeProto] = {}
    _gather_types(inferred.graph, types)
    return types


def _gather_types(g: onnx.GraphProto, out: dict) -> None:
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.WhichOneof("value") is not None:
            out[vi.name] = vi.type
    for n in g.node:
        for a in n.attribute:
            for sub in [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs):
                _gather_types(sub, out)


def _shape_of(tp: onnx.TypeProto | None) -> tuple[int, Any, Any]:
    """(elem_type, shape, non-tensor type) of a TypeProto."""
    if tp is None:
        return 0, None, None
    if tp.WhichOneof("value") != "tensor_type":
        return 0, None, tp
    tt = tp.tensor_type
    if not tt.HasField("shape"):
        return tt.elem_type, None, None
    dims: list[Any] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tt.elem_type, tuple(dims), None


def _new_value(name: str, ctx: _Ctx, declared: onnx.TypeProto | None = None) -> Value:
    elem, shape, other = _shape_of(ctx.types.get(name) or declared)
    if declared is not None and declared.WhichOneof("value") == "tensor_type" and elem == 0:
        elem = declared.tensor_type.elem_type
    return Value(name, elem, shape, type_proto=other)


def tensor_to_array(
    t: TensorProto, base_dir: Path | None, label: str = "", span: onnx_file.Span | None = None
) -> np.ndarray | onnx_file.FileConst:
    """TensorProto -> numpy, memory-mapping external data or viewing raw bytes in place; or,
    where onnx_file left them in the file (`span`, an onnx_file.Span), a FileConst that
    reads them when needed."""
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{label}: tensor {t.name!r} has a negative dim in {list(dims)}")
    count = _numel(dims)  # Python ints: dims claiming exabytes must not wrap around to 0
    dtype = np_dtype(t.data_type)
    if t.data_location == TensorProto.EXTERNAL:
        return _external_array(t, dims, count, dtype, base_dir, label)
    if span is not None:  # (one of _PLAIN_TYPES: onnx_file leaves out only those)
        return _array_from_file(t, dims, dtype, span, label)
    if t.HasField("raw_data") and dtype is not None and t.data_type not in _SUB_BYTE_TYPES:
        raw = t.raw_data
        expected = count * dtype.itemsize
        _check_nbytes(t, len(raw), expected, label)
        if t.data_type in _PLAIN_TYPES:
            return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(dims)
    elif t.data_type in _TYPED_FIELD:
        # Typed fields (float_data, ...) are checked before numpy expands them, so a tensor
        # whose dims claim terabytes but which holds 4 values is a load error, not an OOM.
        field, per_element = _TYPED_FIELD[t.data_type]
        have = len(getattr(t, field))
        if have != count * per_element:
            raise ModelLoadError(
                f"{label}: tensor {t.name!r} has {have} values in {field} but dims "
                f"{list(dims)} need {count * per_element}"
            )
    if dtype is not None:
        check_size(dims, dtype, f"{label}: tensor {t.name!r}")
    try:
        return numpy_helper.to_array(t)
    except Exception as e:
        raise ModelLoadError(f"{label}: cannot read tensor {t.name!r}: {e}") from None


def _check_nbytes(t: TensorProto, have: int, expected: int, label: str) -> None:
    if have != expected:
        dims, dtype = list(t.dims), np_dtype(t.data_type)
        raise ModelLoadError(
            f"{label}: tensor {t.name!r} has {have} bytes of data but dims {dims} "
            f"of {dtype} need {expected}"
        )


def _array_from_file(t: TensorProto, dims: tuple, dtype: np.dtype, span, label: str):
    """Raw data onnx_file left in the file: read from there when first needed."""
    _check_nbytes(t, span.nbytes, _numel(dims) * dtype.itemsize, label)
    check_size(dims, dtype, f"{label}: tensor {t.name!r}")
    try:
        return onnx_file.FileConst(span, dims, dtype, t.name, label)
    except OSError as e:
        raise ModelLoadError(f"{label}: cannot read tensor {t.name!r}: {e}") from None


def _numel(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _external_int(info: dict[str, str], key: str, where: str) -> int | None:
    if key not in info:
        return None
    try:
        value = int(info[key])
    except ValueError:
        value = -1
    if value < 0:
        raise ExternalDataError(f"{where}: {key} {info[key]!r} is not a non-negative integer")
    return value


def _external_array(
    t: TensorProto,
    dims: tuple[int, ...],
    count: int,
    dtype: np.dtype | None,
    base_dir: Path | None,
    label: str,
) -> np.ndarray:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    where = f"{label}: tensor {t.name!r} (external data location {loc!r})"
    if not loc:
        raise ExternalDataError(f"{where}: no location given")
    if "\0" in loc:
        raise ExternalDataError(f"{where}: the location contains a NUL byte, refused")
    if os.path.isabs(loc) or Path(loc).is_absolute() or loc.startswith(("/", "\\")):
        raise ExternalDataError(f"{where}: absolute locations are refused")
    if ".." in Path(loc).parts:
        raise ExternalDataError(f"{where}: locations leaving the model's folder ('..') are refused")
    if base_dir is None:
        raise ExternalDataError(f"{where}: the model was not loaded from a file; pass base_dir=")
    file = (base_dir / loc).resolve()
    if not file.is_relative_to(base_dir.resolve()):
        raise ExternalDataError(f"{where}: resolves outside the model's folder, refused")
    if not file.is_file():
        raise ExternalDataError(f"{where}: file {file} not found")
    if dtype is None or t.data_type not in _PLAIN_TYPES:
        raise ExternalDataError(f"{where}: element type {t.data_type} is not supported externally")
    offset = _external_int(info, "offset", where) or 0
    length = _external_int(info, "length", where)
    nbytes = count * dtype.itemsize
    if length is not None and length != nbytes:
        raise ExternalDataError(
            f"{where}: length {length} does not match dims {list(dims)} of {dtype} ({nbytes} bytes)"
        )
    size = file.stat().st_size
    if offset + nbytes > size:
        raise ExternalDataError(
            f"{where}: needs bytes {offset}..{offset + nbytes} but {file.name} has {size}"
        )
    if count == 0:
        return np.empty(dims, dtype)
    # Read-only memory map: weights stay in the page cache, shared, never copied.
    return np.memmap(file, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=dims)


def _graph_from_proto(
    gp: onnx.GraphProto, outer: dict[str, Value] | ChainMap, ctx: _Ctx, parent: Graph | None
) -> Graph:
    g = Graph(gp.name or "graph", parent=parent)
    g.doc_string = gp.doc_string
    local: dict[str, Value] = {}
    scope = ChainMap(local, outer)
    for t in gp.initializer:
        original = ctx.originals.get(t.name, t)
        arr = tensor_to_array(original, ctx.base_dir, ctx.label, ctx.in_file.get(t.name))
        v = _new_value(t.name, ctx)
        v.elem_type, v.shape, v._const = original.data_type, tuple(arr.shape), arr
        local[t.name] = g.add_initializer(v)
    for vi in gp.input:
        if vi.name in local:  # an input with a default (initializer of the same name)
            v = local[vi.name]
            g.add_input(v)
            continue
        local[vi.name] = g.add_input(_new_value(vi.name, ctx, vi.type))
    for np_ in gp.node:
        inputs: list[Value | None] = []
        for name in np_.input:
            if not name:
                inputs.append(None)
                continue
            if name not in scope:
                raise ModelLoadError(
                    f"{ctx.label}: node {np_.name or np_.op_type!r} ({np_.op_type}) reads "
                    f"{name!r}, which nothing before it defines"
                )
            inputs.append(scope[name])
        attrs, attr_types = _attrs_from_proto(np_, scope, ctx, g)
        outputs = [_new_value(name, ctx) for name in np_.output]
        node = Node(
            np_.op_type,
            inputs,
            outputs,
            attrs,
            name=np_.name,
            domain=np_.domain if np_.domain != "ai.onnx" else "",
            attr_types=attr_types,
        )
        node.doc_string = np_.doc_string
        node.name = _unique_name(node, ctx.names)
        node.meta["origin"] = (node.name,)  # provenance: the ONNX nodes this node stands for
        g.append(node)
        for v in outputs:
            if v.name:
                local[v.name] = v
    for vi in gp.output:
        if vi.name not in scope:
            raise ModelLoadError(f"{ctx.label}: graph output {vi.name!r} is never produced")
        v = scope[vi.name]
        if not v.elem_type and vi.type.WhichOneof("value") == "tensor_type":
            v.elem_type, shape, _ = _shape_of(vi.type)
            v.shape = v.shape or shape
        g.outputs.append(v)
    for vi in gp.value_info:
        if vi.name in local:
            g.value_info[vi.name] = local[vi.name]
    return g


def _unique_name(node: Node, taken: set[str]) -> str:
    """The node's own name, or `<op>_<n>` when it has none (or a duplicate): provenance and
    profiles refer to nodes by name, so every node gets one that is unique in the model."""
    name = node.name or f"{node.op_type}_{len(taken)}"
    base, k = name, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _attrs_from_proto(
    np_: onnx.NodeProto, scope: ChainMap, ctx: _Ctx, g: Graph
) -> tuple[dict[str, Any], dict[str, int]]:
    attrs: dict[str, Any] = {}
    types: dict[str, int] = {}
    for a in np_.attribute:
        types[a.name] = a.type
        if a.ref_attr_name:
            attrs[a.name] = a  # only inside functions; kept verbatim
        elif a.type == AttributeProto.GRAPH:
            attrs[a.name] = _graph_from_proto(a.g, scope, ctx, parent=g)
        elif a.type == AttributeProto.GRAPHS:
            attrs[a.name] = [_graph_from_proto(s, scope, ctx, parent=g) for s in a.graphs]
        elif a.type == AttributeProto.TENSOR:
            attrs[a.name] = tensor_to_array(a.t, ctx.base_dir, ctx.label)
        elif a.type == AttributeProto.TENSORS:
            attrs[a.name] = [tensor_to_array(t, ctx.base_dir, ctx.label) for t in a.tensors]
        elif a.type == AttributeProto.STRING:
            attrs[a.name] = a.s.decode("utf-8", errors="replace")
        elif a.type == AttributeProto.STRINGS:
            attrs[a.name] = [s.decode("utf-8", errors="replace") for s in a.strings]
        else:
            attrs[a.name] = helper.get_attribute_value(a)
    return attrs, types


# -- back to ONNX ----------------------------------------------------------------------------


def _type_proto(v: Value) -> onnx.TypeProto | None:
    if v.type_proto is not None:
        return v.type_proto
    if not v.elem_type:
        return None
    shape = None if v.shape is None else [d if d is not None else None for d in v.shape]
    return helper.make_tensor_type_proto(v.elem_type, shape)


def _value_info(v: Value) -> onnx.ValueInfoProto:
    tp = _type_proto(v)
    if tp is None:
        return helper.make_empty_tensor_value_info(v.name)
    return helper.make_value_info(v.name, tp)


def _attr_to_proto(name: str, value: Any, attr_type: int | None) -> AttributeProto:
    if isinstance(value, AttributeProto):
        return value
    if isinstance(value, Graph):
        return helper.make_attribute(name, graph_to_proto(value), attr_type=AttributeProto.GRAPH)
    if isinstance(value, list) and value and isinstance(value[0], Graph):
        return helper.make_attribute(name, [graph_to_proto(s) for s in value])
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(np.asarray(value)))
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        return helper.make_attribute(name, [numpy_helper.from_array(t) for t in value])
    return helper.make_attribute(name, value, attr_type=attr_type or None)


def graph_to_proto(g: Graph) -> onnx.GraphProto:
    nodes = []
    for n in g.nodes:
        proto = helper.make_node(
            n.op_type,
            [v.name if v is not None else "" for v in n.inputs],
            [v.name for v in n.outputs],
            name=n.name or None,
            domain=n.domain or None,
            doc_string=n.doc_string or None,
        )
        for k, val in n.attrs.items():
            proto.attribute.append(_attr_to_proto(k, val, n.attr_types.get(k)))
        nodes.append(proto)
    inits = []
    for v in g.initializers.values():
        t = numpy_helper.from_array(np.ascontiguousarray(v.const), v.name)
        if v.elem_type and t.data_type != v.elem_type:  # e.g. bfloat16 stored as uint16
            t = helper.make_tensor(v.name, v.elem_type, v.const.shape, v.const.tobytes(), raw=True)
        inits.append(t)
    infos = [
        _value_info(v)
        for n in g.nodes
        for v in n.outputs
        if v.name and (v.elem_type or v.type_proto is not None) and v not in g.outputs
    ]
    gp = helper.make_graph(
        nodes,
        g.name,
        [_value_info(v) for v in g.inputs],
        [_value_info(v) for v in g.outputs],
        initializer=inits,
        value_info=infos,
        doc_string=g.doc_string or None,
    )
    return gp


def to_onnx(obj: Model | Graph, *, opset_imports: dict[str, int] | None = None) -> onnx.ModelProto:
    """Export a Model (or a bare Graph with `opset_imports`) to a checked `ModelProto`."""
    if isinstance(obj, Graph):
        if opset_imports is None:
            raise ValueError("to_onnx(graph) needs opset_imports= (or pass the Model)")
        model = Model(graph=obj, opset_imports=dict(opset_imports))
    else:
        model = obj
    opsets = dict(model.opset_imports)
    if opset_imports:
        opsets.update(opset_imports)
    for n in model.graph.walk():  # every domain used must be imported (custom ones at 1)
        opsets.setdefault(n.domain, 1)
    register_schemas(opsets)  # (onnx then checks our ops as theirs)
    proto = helper.make_model(
        graph_to_proto(model.graph),
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        ir_version=model.ir_version or onnx.IR_VERSION,
        producer_name=model.producer_name or "workbench",
        producer_version=model.producer_version,
        doc_string=model.doc_string,
        functions=model.functions,
    )
    proto.model_version = model.model_version
    proto.domain = model.domain
    for k, v in model.metadata.items():
        proto.metadata_props.add(key=k, value=v)
    return proto


def save(
    model: Model | onnx.ModelProto, path: str | os.PathLike, *, external_data: bool = False
) -> Path:
    """Write a model to `path`; with `external_data`, weights go to `<name>.data` beside it."""
    proto = to_onnx(model) if isinstance(model, Model) else model
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_file.keep_in_memory(path)  # (weights of models loaded from it are read from it)
    if external_data:
        onnx.save_model(
            proto,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(proto, path)
    return path


__all__ = ["load", "save", "tensor_to_array", "to_onnx"]
