"""The worker protocol: one message is a JSON header plus named arrays as raw `.npy` bytes.

Arrays never travel pickled: numpy 1.x and 2.x pickles do not load in each other, and a
pickle from a worker is code the notebook would run. `.npy` (np.save / np.load with
allow_pickle=False) is numpy's stable format, readable by every version on both sides.

    frame   := b"WBM1" u64(len(body)) body
    body    := u32(len(header)) header_json blob*
    header  := {"op": ..., ..., "arrays": [[name, offset, length] | [name, null, 0], ...]}

`offset` counts from the first blob; a null offset is an absent value (None). The same
body travels through pipes (the local worker) and as one `bytes` object through Dask.
"""

from __future__ import annotations

import io
import json
import os
import select
import struct
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import WorkbenchError

MAGIC = b"WBM1"
VERSION = 1  # bumped when a request or reply changes shape; checked by `hello`


class ProtocolError(WorkbenchError):
    """A malformed message, or a peer that closed the stream mid-message."""


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def encode(header: Mapping[str, Any], arrays: Mapping[str, Any] | None = None) -> bytes:
    """The body of a message: `header` (JSON-able) and `arrays` (name -> ndarray or None)."""
    index, blobs, offset = [], [], 0
    for name, a in (arrays or {}).items():
        if a is None:
            index.append([name, None, 0])
            continue
        if not isinstance(a, np.ndarray | np.generic):
            raise ProtocolError(f"{name!r} is a {type(a).__name__}, not a numpy array")
        if a.dtype == object:
            raise ProtocolError(f"{name!r} has dtype object: only plain arrays travel")
        blob = _npy(a)
        index.append([name, offset, len(blob)])
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps({**header, "arrays": index}).encode()
    return b"".join([struct.pack("<I", len(head)), head, *blobs])


def decode(body: bytes | memoryview) -> tuple[dict[str, Any], dict[str, np.ndarray | None]]:
    """(header, arrays) of a body made by `encode`."""
    view = memoryview(body)
    try:
        (n,) = struct.unpack_from("<I", view, 0)
        header = json.loads(bytes(view[4 : 4 + n]))
        base = 4 + n
        arrays: dict[str, np.ndarray | None] = {}
        for name, off, length in header.pop("arrays", []):
            if off is None:
                arrays[name] = None
                continue
            blob = view[base + off : base + off + length]
            arrays[name] = np.load(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, struct.error, KeyError, TypeError) as e:
        raise ProtocolError(f"malformed worker message: {type(e).__name__}: {e}") from None
    return header, arrays


def frame(body: bytes) -> bytes:
    return MAGIC + struct.pack("<Q", len(body)) + body


# -- pipes with deadlines --------------------------------------------------------------------


class Timeout(Exception):
    """The deadline passed before a whole message was read or written."""


def _wait(fd: int, write: bool, deadline: float | None) -> None:
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise Timeout
    r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], left)
    if not (r or w):
        raise Timeout


def write_frame(fd: int, body: bytes, deadline: float | None = None) -> None:
    """Write one frame to a file descriptor, giving up at `deadline` (time.monotonic)."""
    data = memoryview(frame(body))
    while data:
        _wait(fd, True, deadline)
        n = os.write(fd, data[: 1 << 20])
        data = data[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        _wait(fd, False, deadline)
        chunk = os.read(fd, min(n - got, 1 << 22))
        if not chunk:
            raise EOFError(f"stream closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None) -> bytes:
    """One frame's body from a file descriptor; EOFError when the peer closed the stream."""
    head = _read_exact(fd, 12, deadline)
    if head[:4] != MAGIC:
        raise ProtocolError(f"not a workbench worker message (starts with {head[:4]!r})")
    (n,) = struct.unpack("<Q", head[4:])
    return _read_exact(fd, n, deadline)


__all__ = ["VERSION", "ProtocolError", "decode", "encode", "read_frame", "write_frame"]
