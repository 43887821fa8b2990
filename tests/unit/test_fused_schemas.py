"""The fused ops' ONNX schemas are registered only where a model of their domain meets
onnx (fused_ops.register_schemas): registering needs onnx.reference imported first, 12 MiB
of modules that an optimized session on x86 has no other use for, while an exported or
reloaded fused graph still passes onnx.checker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import workbench as wb

SCRIPT = textwrap.dedent(
    """
    import sys
    import onnx
    import workbench as wb
    from workbench import zoo

    for name in ("tiny_gpt2", "tiny_bert"):
        sess = wb.Session(wb.load(zoo.get(name)), "x86", level=3)
        sess.run(sess.random_feeds())
        assert "workbench" in {n.domain for n in sess.model.graph.walk()}, name
    print("after sessions:", "onnx.reference" in sys.modules)
    onnx.checker.check_model(wb.to_onnx(sess.model))  # (registers them: the domain is used)
    print("after export:", "onnx.reference" in sys.modules)
    """
)


def _env(tmp_path) -> dict[str, str]:
    """This process's environment (its NUMBA_CACHE_DIR: the kernels compiled already) with
    an algorithm cache of the test's own."""
    return {**os.environ, "WORKBENCH_CACHE": str(tmp_path)}


def test_an_optimized_session_does_not_import_onnx_reference_an_export_does(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "after sessions: False" in out.stdout
    assert "after export: True" in out.stdout


def test_a_saved_fused_model_loads_and_checks_in_a_fresh_process(tmp_path):
    from workbench import zoo

    sess = wb.Session(wb.load(zoo.get("tiny_bert")), "reference", level=3)
    path = tmp_path / "fused.onnx"
    wb.save(sess.model, path)
    script = f"import workbench as wb; wb.load({str(path)!r}, check=True); print('ok')"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_env(tmp_path)
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize(
    "attr",
    [
        ("value", helper.make_tensor("v", onnx.TensorProto.FLOAT, [2, 3], list(range(6)))),
        ("value_float", 1.5),
        ("value_floats", [1.0, 2.5]),
        ("value_int", 7),
        ("value_ints", [3, -1]),
    ],
)
def test_reference_constant_matches_onnx_reference(attr):
    node = helper.make_node("Constant", [], ["y"], **dict([attr]))
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", 0, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    want = ReferenceEvaluator(model).run(None, {})[0]
    sess = wb.Session(wb.load(model, check=False), "reference")
    assert sess.kernels()[0]["source"] != "onnx.reference"
    got = sess.run({})["y"]
    assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("perm", [None, [1, 0, 2], [2, 0, 1]])
def test_reference_transpose_matches_onnx_reference(perm):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    kw = {} if perm is None else {"perm": perm}
    node = helper.make_node("Transpose", ["x"], ["y"], **kw)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None] * 3)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    sess = wb.Session(wb.load(model), "reference")
    assert sess.kernels()[0]["source"] != "onnx.reference"
    assert np.array_equal(sess.run({"x": x})["y"], want)
