"""Reference kernels for ops where onnx.reference is wrong or missing (found by conformance).

Optional*     onnx.reference wraps every optional value in a one-item list, so an
              optional sequence comes out as a sequence of sequences and an empty
              Optional() as [None], which OptionalHasElement calls present. Here an
              optional is what the engine holds everywhere else: the value, or None.
Scatter       opsets 9-10, deprecated for ScatterElements; onnx.reference dropped it.
"""

from __future__ import annotations

import numpy as np

from ._table import kernels


@kernels.register("Optional", since=15)
def optional(node, ctx):
    def run(x=None):
        return (x,)

    return run


@kernels.register("OptionalHasElement", since=15)
def optional_has_element(node, ctx):
    def run(x=None):
        return (np.array(x is not None),)

    return run


@kernels.register("OptionalGetElement", since=15)
def optional_get_element(node, ctx):
    def run(x):
        # opset 18 also accepts a plain tensor or sequence: it passes through
        if x is None:
            raise ValueError("OptionalGetElement: the optional input holds no value")
        return (x,)

    return run


def scatter_elements(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, axis: int):
    """data with data[..., indices[i, j, ...], ...] = updates[i, j, ...] along `axis`."""
    axis = axis % data.ndim
    idx = indices.astype(np.int64)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    where = list(np.indices(idx.shape, sparse=True))
    where[axis] = idx
    out = data.copy()
    out[tuple(where)] = updates
    return out


@kernels.register("Scatter", since=9, until=10)
def scatter(node, ctx):
    axis = int(node.attrs.get("axis", 0))

    def run(data, indices, updates):
        return (scatter_elements(data, indices, updates, axis),)

    return run
