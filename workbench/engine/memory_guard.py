"""Refuse tensors that cannot fit before numpy tries (and the kernel OOM-kills the notebook)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import AllocationError


def available_bytes() -> int:
    """Memory the OS says a new allocation can get now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def nbytes_of(shape: Sequence[int], dtype: np.dtype | type) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * np.dtype(dtype).itemsize


def check_size(shape: Sequence[int], dtype: np.dtype | type, what: str) -> None:
    """Raise `AllocationError` if a tensor of `shape` x `dtype` exceeds available memory."""
    if any(int(d) < 0 for d in shape):
        raise AllocationError(f"{what}: negative dimension in shape {list(shape)}")
    need = nbytes_of(shape, dtype)
    if need <= 64 << 20:  # small tensors: not worth a look at /proc
        return
    have = available_bytes()
    if need > have:
        raise AllocationError(
            f"{what}: shape {list(shape)} of {np.dtype(dtype)} needs {need / 2**30:.1f} GiB, "
            f"but only {have / 2**30:.1f} GiB is available; refused before allocating"
        )


# -- outputs sized by input *values* ----------------------------------------------------------
#
# A few bytes of shape tensor can ask ConstantOfShape, Expand, Tile, Range, Pad, OneHot or
# Resize for terabytes. Kernels of our own call `check_size` themselves; `guard_kernel` puts
# the same check in front of any kernel (onnx.reference's included) for these ops, computing
# the output size from the inputs alone, before the kernel allocates.

Predicted = tuple[list[int], np.dtype] | None


def _ints(a: object) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _broadcast(a: Sequence[int], b: Sequence[int]) -> list[int]:
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + list(a)
    b = [1] * (n - len(b)) + list(b)
    # a mismatch is the kernel's error to report; the larger dim bounds the size anyway
    return [max(x, y) for x, y in zip(a, b, strict=True)]


def _constant_of_shape(attrs: dict, args: tuple) -> Predicted:
    value = attrs.get("value")
    dtype = np.asarray(value).dtype if value is not None else np.dtype(np.float32)
    return _ints(args[0]), dtype


def _expand(attrs: dict, args: tuple) -> Predicted:
    x, shape = args[0], args[1]
    return _broadcast(x.shape, _ints(shape)), x.dtype


def _tile(attrs: dict, args: tuple) -> Predicted:
    x, reps = args[0], _ints(args[1])
    if len(reps) != x.ndim:
        return None
    return [d * r for d, r in zip(x.shape, reps, strict=True)], x.dtype


def _range(attrs: dict, args: tuple) -> Predicted:
    start, limit, delta = (np.asarray(a).reshape(-1)[0].item() for a in args[:3])
    if delta == 0:
        return None
    return [max(math.ceil((limit - start) / delta), 0)], np.asarray(args[0]).dtype


def _pad(attrs: dict, args: tuple) -> Predicted:
    x = args[0]
    if len(args) > 1 and args[1] is not None:
        pads = _ints(args[1])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else None
    else:  # before opset 11 the pads were an attribute
        pads = _ints(attrs.get("pads", attrs.get("paddings", [])))
        axes = None
    axes = list(range(x.ndim)) if axes is None else [a % max(x.ndim, 1) for a in axes]
    if len(pads) != 2 * len(axes):
        return None
    out = list(x.shape)
    for i, a in enumerate(axes):
        out[a] += pads[i] + pads[len(axes) + i]
    return out, x.dtype


def _one_hot(attrs: dict, args: tuple) -> Predicted:
    indices, depth, values = args[0], args[1], args[2]
    axis = int(attrs.get("axis", -1))
    out = list(np.shape(indices))
    axis = axis if axis >= 0 else len(out) + 1 + axis
    out.insert(axis, int(np.asarray(depth).reshape(-1)[0]))
    return out, np.asarray(values).dtype


def _resize(attrs: dict, args: tuple) -> Predicted:
    x = args[0]
    if len(args) == 2:  # Upsample, and Resize-10: (X, scales)
        scales, sizes = args[1], None
    elif len(args) == 1:  # Upsample before opset 9: scales as an attribute
        scales, sizes = attrs.get("scales"), None
    else:
        scales = args[2] if len(args) > 2 else None
        sizes = args[3] if len(args) > 3 else None
    axes = attrs.get("axes")
    axes = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in axes]
    out = list(x.shape)
    if sizes is not None and np.size(sizes):
        for a, s in zip(axes, _ints(sizes), strict=False):
            out[a] = s
    elif scales is not None and np.size(scales):
        for a, s in zip(axes, np.asarray(scales, dtype=np.float64).reshape(-1), strict=False):
            out[a] = math.floor(out[a] * float(s))
    else:
        return None
    return out, x.dtype


def _random(attrs: dict, args: tuple) -> Predicted:
    from onnx import helper

    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(attrs.get("dtype", 1))))
    return _ints(attrs.get("shape", [])), dtype


_PREDICT = {
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Tile": _tile,
    "Range": _range,
    "Pad": _pad,
    "OneHot": _one_hot,
    "Resize": _resize,
    "Upsample": _resize,
    "RandomNormal": _random,
    "RandomUniform": _random,
}


def predicted_output(op_type: str, attrs: dict, args: Sequence) -> Predicted:
    """(shape, dtype) of the output of a value-sized op, from its inputs; None if unknown."""
    predict = _PREDICT.get(op_type)
    if predict is None:
        return None
    try:
        return predict(attrs, tuple(args))
    except Exception:  # malformed inputs: the kernel reports them with its own error
        return None


def guard_kernel(node: Any, run: Callable[..., Any]) -> Callable[..., Any]:
    """`run`, checked by `check_size` before each call when `node`'s output size comes from
    its input values (ConstantOfShape, Expand, Tile, Range, Pad, OneHot, Resize, ...).

    Other nodes get `run` back unchanged, so wrapping every kernel costs nothing.
    """
    if node.domain not in ("", "ai.onnx") or node.op_type not in _PREDICT:
        return run
    op_type, attrs = node.op_type, node.attrs
    what = f"node {node.name or '(unnamed)'!r} ({op_type}) output"

    def guarded(*args: Any) -> Any:
        out = predicted_output(op_type, attrs, args)
        if out is not None and all(d >= 0 for d in out[0]):
            check_size(out[0], out[1], what)
        return run(*args)

    guarded.__wrapped__ = run  # type: ignore[attr-defined]
    return guarded
