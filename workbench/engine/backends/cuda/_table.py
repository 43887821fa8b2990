"""The cuda backend's kernel table; every `ops_*.py` module here registers into it, and the
helpers its factories share."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import KernelTable

kernels = KernelTable()


def float_dtype(precision: str) -> np.dtype:
    """The dtype floats are stored in under `precision` (tf32 stores fp32)."""
    return np.dtype(np.float16 if precision == "fp16" else np.float32)


def const_of(node: Any, i: int) -> np.ndarray | None:
    """Input i's constant value (an initializer), or None when it is computed at run time."""
    if i >= len(node.inputs) or node.inputs[i] is None:
        return None
    c = node.inputs[i].const
    return None if c is None else np.asarray(c)
