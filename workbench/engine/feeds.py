"""Checking the inputs a user gives, and making deterministic ones when they give none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FeedError
from .ir import Graph, Value


def runtime_inputs(graph: Graph) -> list[Value]:
    """Graph inputs a caller must (or may, for those with initializer defaults) feed."""
    return list(graph.inputs)


def _fmt(shape: Any) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_feeds(graph: Graph, feeds: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Validate `feeds` against the graph's inputs; return them as numpy arrays.

    Names, dtypes, ranks and fixed dims must match; a symbolic dim must take one
    value across all inputs that share its name.
    """
    expected = {v.name: v for v in graph.inputs}
    if feeds is not None and not isinstance(feeds, Mapping):
        raise FeedError(
            f"feeds must map input names to arrays, got a {type(feeds).__name__}; "
            f"the model's inputs are: {', '.join(expected) or 'none'}"
        )
    feeds = dict(feeds or {})
    unknown = [k for k in feeds if k not in expected]
    if unknown:
        raise FeedError(
            f"unknown input {unknown[0]!r}; the model's inputs are: {', '.join(expected) or 'none'}"
        )
    missing = [n for n, v in expected.items() if n not in feeds and not v.is_const]
    if missing:
        v = expected[missing[0]]
        raise FeedError(
            f"missing input {v.name!r} (expected {v.dtype} {_fmt(v.shape or [])}); "
            f"given: {', '.join(feeds) or 'nothing'}"
        )
    bound: dict[str, tuple[int, str]] = {}
    out: dict[str, np.ndarray] = {}
    for name, raw in feeds.items():
        v = expected[name]
        if v.type_proto is not None:  # a sequence or optional input: passed as given
            out[name] = raw
            continue
        arr = raw if isinstance(raw, np.ndarray) else np.asarray(raw)
        want = v.dtype
        if want is not None and arr.dtype != want:
            # a list or scalar got numpy's default dtype: say how to give the right one
            hint = "" if isinstance(raw, np.ndarray) else f" (from a {type(raw).__name__})"
            raise FeedError(f"input {name!r}: expected dtype {want}, got {arr.dtype}{hint}")
        if v.shape is not None:
            if arr.ndim != len(v.shape):
                raise FeedError(
                    f"input {name!r}: expected rank {len(v.shape)} {_fmt(v.shape)}, "
                    f"got rank {arr.ndim} {list(arr.shape)}"
                )
            for axis, (d, got) in enumerate(zip(v.shape, arr.shape, strict=True)):
                if isinstance(d, int) and d != got:
                    raise FeedError(
                        f"input {name!r}: dim {axis} must be {d} (shape {_fmt(v.shape)}), "
                        f"got shape {list(arr.shape)}"
                    )
                if isinstance(d, str):
                    if d in bound and bound[d][0] != got:
                        size, where = bound[d]
                        raise FeedError(
                            f"input {name!r}: symbolic dim {d!r} is {got} here but {size} "
                            f"in input {where!r}"
                        )
                    bound.setdefault(d, (got, name))
        out[name] = arr
    return out


def random_feeds(
    graph: Graph,
    dims: Mapping[str, int] | None = None,
    *,
    seed: int = 0,
    defaults: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Deterministic inputs from declared shapes and dtypes.

    Symbolic dims take their values from `dims`, then `defaults` (a model's own
    suggestion); an unknown one is an error naming the input and the dim. Integer
    inputs that index a Gather stay inside the gathered table; inputs named like a
    mask are ones.
    """
    sizes = {**(defaults or {}), **(dims or {})}
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        if v.is_const:
            continue
        if v.shape is None:
            raise FeedError(f"input {v.name!r} has no declared shape: pass the feeds yourself")
        shape = []
        for axis, d in enumerate(v.shape):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str) and d in sizes:
                shape.append(int(sizes[d]))
            else:
                label = repr(d) if d else f"#{axis} (unnamed)"
                raise FeedError(
                    f"input {v.name!r} has symbolic dim {label}: pass a value for it, "
                    f"e.g. dims={{{d or 'name'!r}: 1}}"
                )
        dtype = v.dtype or np.dtype(np.float32)
        out[v.name] = _random_tensor(v, tuple(shape), dtype, rng)
    return out


def _random_tensor(v: Value, shape: tuple, dtype: np.dtype, rng) -> np.ndarray:
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if "mask" in v.name.lower():
        return np.ones(shape, dtype)
    if dtype.kind in "iu":
        high = _gather_bound(v) or 10
        return rng.integers(0, high, shape).astype(dtype)
    raise FeedError(f"input {v.name!r}: cannot make random data of dtype {dtype}")


def _gather_bound(v: Value) -> int | None:
    """If `v` indexes Gathers, the smallest gathered axis size (so indices stay valid)."""
    bounds = []
    for node, i in v.uses:
        if node.op_type == "Gather" and i == 1:
            data = node.inputs[0]
            axis = int(node.attrs.get("axis", 0))
            if data is not None and data.shape and isinstance(data.shape[axis], int):
                bounds.append(data.shape[axis])
    return min(bounds) if bounds else None
