"""Helpers for checking kernels and backends: one-node models and tolerant comparisons.

from workbench.testing import run_node, assert_close
(y,) = run_node("x86", "Relu", [x])
(ref,) = run_node("reference", "Relu", [x])
assert_close(y, ref)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .engine import Session, load


def node_model(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    *,
    n_outputs: int = 1,
    opset: int = 17,
    domain: str = "",
    consts: Sequence[int] = (),
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A model with one node; inputs at positions in `consts` become initializers.

    Returns the model and the feeds for its runtime inputs. None leaves an optional
    input out.
    """
    names, graph_inputs, inits, feeds = [], [], [], {}
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        x = np.asarray(x)
        if i in consts:
            inits.append(numpy_helper.from_array(x, name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(x.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, x.shape))
            feeds[name] = x
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, domain=domain or None, **(attrs or {}))
    graph = helper.make_graph(
        [node],
        f"{op_type}_test",
        graph_inputs,
        [helper.make_empty_tensor_value_info(o) for o in outs],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset if not domain else 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, opset))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    return model, feeds


def graph_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple],
    outputs: Sequence[tuple] = (("y", None),),
    inits: Any = (),
    opset: int = 17,
) -> Any:
    """A loaded `Model` from `onnx.helper` nodes. `inputs`/`outputs` are (name, shape) or
    (name, shape, elem type) with float32 the default; `inits` maps (or pairs) names to arrays."""

    def info(spec: tuple) -> onnx.ValueInfoProto:
        name, shape, *elem = spec
        return helper.make_tensor_value_info(
            name, elem[0] if elem else onnx.TensorProto.FLOAT, shape
        )

    graph = helper.make_graph(
        list(nodes),
        "g",
        [info(s) for s in inputs],
        [info(s) for s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in dict(inits).items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return load(proto)


def assert_same_outputs(
    before: Any,
    after: Any,
    feeds: dict[str, np.ndarray],
    backend: str,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Any:
    """Models `before` and `after` (e.g. an optimization's two sides) give the same outputs on
    `backend` within fp32 tolerance (`assert_close`); returns the `after` session."""
    after_sess = Session(after, backend)
    want = Session(before, backend).run(feeds)
    got = after_sess.run(feeds)
    for name in want:
        assert_close(got[name], want[name], rtol=rtol, atol=atol, err_msg=f"{backend} {name}")
    return after_sess


def op_names(model: Any) -> list[str]:
    """Op types in graph order, custom domains as `domain.Op` (e.g. `workbench.FusedConv`)."""
    return [f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in model.graph]


def rejection_reasons(result: Any, rule: str) -> list[str]:
    """The reasons an optimization recorded for candidates `rule` refused."""
    return [r.reason for r in result.rejected if r.rule == rule]


def run_node(
    backend: str,
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    *,
    n_outputs: int = 1,
    opset: int = 17,
    domain: str = "",
    consts: Sequence[int] = (),
    precision: str | None = None,
    expect_native: bool = False,
) -> list[np.ndarray]:
    """Run one node on `backend`; with `expect_native`, fail if it fell back to reference."""
    model, feeds = node_model(
        op_type, inputs, attrs, n_outputs=n_outputs, opset=opset, domain=domain, consts=consts
    )
    sess = Session(load(model, check=False), backend, precision=precision)
    if expect_native and sess.plan.fallbacks:
        raise AssertionError(f"{op_type} fell back to reference on {backend}")
    out = sess.run(feeds)
    return [out[f"out{i}"] for i in range(n_outputs)]


def assert_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    scale: bool = True,
    err_msg: str = "",
) -> None:
    """assert_allclose with `atol` relative to the expected tensor's max magnitude (when
    `scale`), the tolerance engines use for fp32 comparisons; dtypes and shapes must match."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {err_msg}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype} {err_msg}"
    if actual.dtype.kind not in "fc":
        np.testing.assert_array_equal(actual, expected, err_msg=err_msg)
        return
    mag = float(np.max(np.abs(expected))) if expected.size and scale else 1.0
    mag = mag if np.isfinite(mag) and mag > 0 else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * mag, err_msg=err_msg)
