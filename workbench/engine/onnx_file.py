"""Reading an ONNX file with its weights in memory once, not three times (file bytes, parsed
proto, arrays: BERT-base's 436 MB peaked at 949 MiB): the file is memory-mapped and its
protobuf walked (ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto.raw_data = 9),
the model parsed without the large raw_data, and each read from the file into its array.
What the walk does not expect gives None: the caller parses the file whole, for its error."""

from __future__ import annotations

import hashlib
import mmap
import os
import weakref
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

import numpy as np
from onnx import TensorProto

from ..errors import ModelLoadError
from .ir import Deferred

# Raw data smaller than this stays in the proto: shape inference reads small constants
# (Reshape's shape), and reading many tiny tensors one by one gains nothing.
READ_SEPARATELY_BYTES = 64 * 1024

_VARINT, _BYTES, _FIXED_SIZE = 0, 2, {1: 8, 5: 4}  # wire types (fixed64, fixed32: bytes)
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_DATA_TYPE, _TENSOR_RAW_DATA, _TENSOR_DATA_LOCATION = 2, 9, 14


class Span(NamedTuple):
    """Where an initializer's raw_data lies: which file, from where, how many bytes."""

    path: Path
    offset: int
    nbytes: int


def _varint(mm: mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError  # not the protobuf the walk expects
        byte = mm[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(mm: mmap.mmap, pos: int, end: int):
    """(field number, wire type, field start, key end, value start, value end) of each."""
    while pos < end:
        start = pos
        key, pos = _varint(mm, pos, end)
        key_end = pos
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, stop = _varint(mm, pos, end)
        elif wire in _FIXED_SIZE:
            stop = pos + _FIXED_SIZE[wire]
        elif wire == _BYTES:
            length, pos = _varint(mm, pos, end)
            stop = pos + length
        else:  # groups (deprecated) and invalid wire types
            raise ValueError
        if field == 0 or stop > end:
            raise ValueError
        yield field, wire, start, key_end, pos, stop
        pos = stop


def _rewrite(mm: mmap.mmap, pos: int, end: int, field: int, inner) -> bytes:
    """The message's bytes with each length-delimited `field`'s body replaced by
    `inner(value start, value end)`, or kept where that gives None."""
    out = bytearray()
    for f, wire, start, key_end, vstart, vend in _fields(mm, pos, end):
        body = inner(vstart, vend) if f == field and wire == _BYTES else None
        out += (
            mm[start:vend] if body is None else mm[start:key_end] + _varint_bytes(len(body)) + body
        )
    return bytes(out)


def _tensor(mm: mmap.mmap, pos: int, end: int, types: Collection[int], path: Path):
    """The TensorProto's bytes, less its raw_data when that is large and of element `types`."""
    raw: tuple[int, int, int] | None = None  # (field start, value start, value end)
    data_type, external = 0, False
    for field, wire, start, _, vstart, vend in _fields(mm, pos, end):
        if field == _TENSOR_RAW_DATA and wire == _BYTES:
            raw = (start, vstart, vend)  # the last occurrence wins, as in a parser
        elif field == _TENSOR_DATA_TYPE and wire == _VARINT:
            data_type = _varint(mm, vstart, vend)[0]
        elif field == _TENSOR_DATA_LOCATION and wire == _VARINT:
            external = _varint(mm, vstart, vend)[0] == TensorProto.EXTERNAL
    if raw is None or external or raw[2] - raw[1] < READ_SEPARATELY_BYTES or data_type not in types:
        return mm[pos:end], None
    # (an earlier raw_data, were there two, would be parsed and then not used)
    return mm[pos : raw[0]] + mm[raw[2] : end], Span(path, raw[1], raw[2] - raw[1])


def light_model_bytes(path: Path, types: Collection[int]) -> tuple[bytes, list[Span | None]] | None:
    """The file's bytes less the raw_data of its large initializers of element `types`,
    and for each initializer of the main graph, in order, where its raw_data lies (None: it
    was kept). None when the file is empty or not a protobuf this walk understands."""
    with open(path, "rb") as f:
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return None
    spans: list[Span | None] = []  # (two graph fields, merged by a parser, keep their order)

    def tensor(pos: int, end: int) -> bytes | None:
        body, span = _tensor(mm, pos, end, types, path)
        spans.append(span)
        return body if span else None

    def graph(pos: int, end: int) -> bytes:
        return _rewrite(mm, pos, end, _GRAPH_INITIALIZER, tensor)

    try:
        return _rewrite(mm, 0, len(mm), _MODEL_GRAPH, graph), spans
    except ValueError:  # not the protobuf the walk expects
        return None
    finally:
        mm.close()


def read_into(span: Span, out: memoryview) -> None:
    """Read `span` of its file into `out` (bytes, len == span.nbytes)."""
    with open(span.path, "rb", buffering=0) as f:
        f.seek(span.offset)
        while out.nbytes:  # (one read returns at most 2 GiB)
            n = f.readinto(out)
            if not n:
                raise OSError(f"the file ended {out.nbytes} bytes early")
            out = out[n:]


class FileConst(Deferred):
    """An initializer's data left in its file, read when needed (see ir.Deferred). The
    file's size and mtime at load are checked before each read, so a file rewritten since
    is an error that says so, not other weights."""

    __slots__ = ("__weakref__", "kept", "label", "name", "span", "stamp")

    def __init__(self, span: Span, shape: tuple[int, ...], dtype: np.dtype, name: str, label: str):
        super().__init__(shape, dtype.newbyteorder("<"))
        self.span, self.name, self.label = span, name, label
        self.stamp = _stamp(span.path)
        self.kept: np.ndarray | None = None  # read for good (see keep_in_memory)
        _LEFT_IN.setdefault(os.path.realpath(span.path), weakref.WeakSet()).add(self)

    def load(self) -> np.ndarray:
        return self.kept if self.kept is not None else super().load()

    def make(self) -> np.ndarray:
        where = f"{self.label}: tensor {self.name!r}"
        try:
            if _stamp(self.span.path) != self.stamp:
                raise ModelLoadError(
                    f"{where}: the file changed since the model was loaded (its weights are "
                    "read from it when needed): load it again"
                )
            arr = np.empty(self.shape, self.dtype)
            read_into(self.span, memoryview(arr.reshape(-1)).cast("B"))
        except OSError as e:
            raise ModelLoadError(f"{where}: cannot read it from the file: {e}") from None
        return arr


# file -> the FileConsts still alive that read from it (of every model loaded from it)
_LEFT_IN: dict[str, weakref.WeakSet] = {}


def keep_in_memory(path: str | os.PathLike) -> None:
    """Read every weight still left in the file at `path` into memory for good: called
    before that file is written over (`save` to the path a model was loaded from), so the
    models loaded from it keep working."""
    for const in list(_LEFT_IN.pop(os.path.realpath(path), ())):
        const.kept = const.load()


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read in chunks (the whole file is never in memory at once)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = [
    "READ_SEPARATELY_BYTES",
    "FileConst",
    "Span",
    "keep_in_memory",
    "light_model_bytes",
    "read_into",
    "sha256_of",
]
