"""Small pieces of ONNX semantics that every backend's kernels share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def conv_pads(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int] | None,
    auto_pad: str = "NOTSET",
) -> list[int]:
    """Explicit pads [x1_begin, x2_begin, ..., x1_end, x2_end, ...] for Conv/Pool.

    SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the beginning; both make
    the output size ceil(in / stride).
    """
    n = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            out = -(-in_spatial[i] // strides[i])
            span = (kernel[i] - 1) * dilations[i] + 1
            total = max((out - 1) * strides[i] + span - in_spatial[i], 0)
            small, big = total // 2, total - total // 2
            if auto_pad == "SAME_UPPER":
                begin.append(small)
                end.append(big)
            else:
                begin.append(big)
                end.append(small)
        return begin + end
    if auto_pad == "VALID" or not pads:
        return [0] * (2 * n)
    return [int(p) for p in pads]


def conv_out_size(size: int, k: int, stride: int, dilation: int, pb: int, pe: int) -> int:
    return (size + pb + pe - ((k - 1) * dilation + 1)) // stride + 1


def constant_value(attrs: Mapping[str, Any]) -> np.ndarray | None:
    """The tensor a Constant node's attributes hold; None for a sparse one."""
    if "value" in attrs:
        return np.asarray(attrs["value"])
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32)):
        if name in attrs:
            return np.array(attrs[name], dtype=dtype)
    for name in ("value_int", "value_ints"):
        if name in attrs:
            return np.array(attrs[name], dtype=np.int64)
    if "value_string" in attrs:
        return np.array(attrs["value_string"], dtype=object)
    if "value_strings" in attrs:
        return np.array(list(attrs["value_strings"]), dtype=object)
    return None
