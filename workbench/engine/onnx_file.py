"""Reading an ONNX file so that its weights are in memory once, not three times.

`onnx.load` reads the file's bytes (one copy of the weights), parses them into a
ModelProto (a second), and turning each initializer's `raw_data` into a numpy array makes
a third: loading BERT-base's 436 MB peaked at 949 MB of RSS before any kernel ran.
Here the file is memory-mapped and its protobuf walked (wire format: ModelProto field 7
is the graph, GraphProto field 5 an initializer, TensorProto field 9 its raw_data) to
find where each large initializer's bytes lie; the model is parsed with those bytes left
out, and each is then read from the file straight into an array of its own (`readinto`,
no mapping kept, so the file's pages are the page cache's, not the process's). The
walk touches only the pages holding headers and graph structure.

Anything the walk does not expect (groups, a truncated varint, a length past the end)
makes it give up: the caller then parses the file the ordinary way, which names the
problem in its own words.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from onnx import TensorProto

# Raw data smaller than this stays in the proto: shape inference reads small constants
# (Reshape's shape), and reading many tiny tensors one by one gains nothing.
READ_SEPARATELY_BYTES = 64 * 1024

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_DATA_TYPE, _TENSOR_RAW_DATA, _TENSOR_DATA_LOCATION = 2, 9, 14


class _Malformed(Exception):
    """The bytes are not the protobuf the walk expects; parse them the ordinary way."""


@dataclass(frozen=True)
class Span:
    """Where an initializer's raw_data lies in the file."""

    offset: int
    nbytes: int


def _varint(mm: mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        byte = mm[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(mm: mmap.mmap, pos: int, end: int):
    """(field number, wire type, field start, value start, value end) of each field."""
    while pos < end:
        start = pos
        key, pos = _varint(mm, pos, end)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, stop = _varint(mm, pos, end)
        elif wire == _FIXED64:
            stop = pos + 8
        elif wire == _FIXED32:
            stop = pos + 4
        elif wire == _BYTES:
            length, pos = _varint(mm, pos, end)
            stop = pos + length
        else:  # groups (deprecated) and invalid wire types
            raise _Malformed
        if field == 0 or stop > end:
            raise _Malformed
        yield field, wire, start, pos, stop
        pos = stop


def _message(key_start: int, key_end: int, body: bytes, mm: mmap.mmap) -> bytes:
    """A length-delimited field again: its key as it was, the new length, the new body."""
    return mm[key_start:key_end] + _encode_varint(len(body)) + body


def _key_end(mm: mmap.mmap, start: int) -> int:
    return _varint(mm, start, len(mm))[1]


def _tensor(mm: mmap.mmap, pos: int, end: int, types: Collection[int]) -> tuple[bytes, Span | None]:
    """The TensorProto's bytes, with its raw_data left out when it is large and of one of
    `types` (element types numpy lays out as the file does)."""
    raw: tuple[int, int, int] | None = None  # (field start, value start, value end)
    data_type, external = 0, False
    for field, wire, start, vstart, vend in _fields(mm, pos, end):
        if field == _TENSOR_RAW_DATA and wire == _BYTES:
            raw = (start, vstart, vend)  # the last occurrence wins, as in a parser
        elif field == _TENSOR_DATA_TYPE and wire == _VARINT:
            data_type = _varint(mm, vstart, vend)[0]
        elif field == _TENSOR_DATA_LOCATION and wire == _VARINT:
            external = _varint(mm, vstart, vend)[0] == TensorProto.EXTERNAL
    if raw is None or external or raw[2] - raw[1] < READ_SEPARATELY_BYTES or data_type not in types:
        return mm[pos:end], None
    out = bytearray()
    for field, wire, start, _, vend in _fields(mm, pos, end):
        if not (field == _TENSOR_RAW_DATA and wire == _BYTES):
            out += mm[start:vend]
    return bytes(out), Span(raw[1], raw[2] - raw[1])


def _graph(
    mm: mmap.mmap, pos: int, end: int, types: Collection[int]
) -> tuple[bytes, list[Span | None]]:
    out, spans = bytearray(), []
    for field, wire, start, vstart, vend in _fields(mm, pos, end):
        if field == _GRAPH_INITIALIZER and wire == _BYTES:
            body, span = _tensor(mm, vstart, vend, types)
            spans.append(span)
            out += _message(start, _key_end(mm, start), body, mm) if span else mm[start:vend]
        else:
            out += mm[start:vend]
    return bytes(out), spans


def light_model_bytes(path: Path, types: Collection[int]) -> tuple[bytes, list[Span | None]] | None:
    """The file's bytes less the raw_data of its large initializers of element `types`,
    and for each initializer of the main graph, in order, where its raw_data lies (None: it
    was kept). None when the file is empty or not a protobuf this walk understands."""
    with open(path, "rb") as f:
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return None
    try:
        out, spans, graphs = bytearray(), [], 0
        for field, wire, start, vstart, vend in _fields(mm, 0, len(mm)):
            if field == _MODEL_GRAPH and wire == _BYTES:
                graphs += 1
                body, spans = _graph(mm, vstart, vend, types)
                out += _message(start, _key_end(mm, start), body, mm)
            else:
                out += mm[start:vend]
        # Two graph fields would be merged by a parser; leave that to it.
        return (bytes(out), spans) if graphs == 1 else None
    except _Malformed:
        return None
    finally:
        mm.close()


def read_into(path: Path, span: Span, out: memoryview) -> None:
    """Read `span` of the file into `out` (bytes, len == span.nbytes)."""
    with open(path, "rb", buffering=0) as f:
        f.seek(span.offset)
        done = 0
        while done < span.nbytes:
            n = f.readinto(out[done:])
            if not n:
                raise OSError(f"the file ended {span.nbytes - done} bytes early")
            done += n


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read in chunks (the whole file is never in memory at once)."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


__all__ = ["READ_SEPARATELY_BYTES", "Span", "light_model_bytes", "read_into", "sha256_of"]
