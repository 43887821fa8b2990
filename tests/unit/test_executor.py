"""Sessions: compile once, run many times, keep intermediates, fall back, fp64."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.testing import assert_close


def _mlp(hidden: int = 8) -> wb.Model:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, hidden)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
        helper.make_node("Tanh", ["hb"], ["t"], name="tanh"),
        helper.make_node("ReduceMax", ["t"], ["y"], axes=[-1], keepdims=1, name="max"),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[w, b],
    )
    return wb.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


def test_symbolic_batch_is_fixed_by_each_run():
    model = _mlp()
    assert model.graph.inputs[0].shape == ("batch", 4)
    sess = wb.Session(model, "x86")
    for batch in (1, 3):
        x = np.ones((batch, 4), np.float32)
        assert sess.run({"x": x})["y"].shape == (batch, 1)


def test_keep_records_every_intermediate_and_matches_onnxruntime():
    model = _mlp()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    sess = wb.Session(model, "x86")
    out = sess.run({"x": x}, keep=True)
    assert set(sess.intermediates) == {"x", "h", "hb", "t", "y"}
    want = ort.InferenceSession(wb.to_onnx(model).SerializeToString()).run(None, {"x": x})[0]
    assert_close(out["y"], want)
    assert_close(
        sess.intermediates["t"],
        np.max(sess.intermediates["t"], -1, keepdims=True) * 0 + sess.intermediates["t"],
    )


def test_without_keep_intermediates_are_released():
    sess = wb.Session(_mlp(), "reference")
    freed = [s for step in sess.plan.steps for s in step.free]
    names = {sess.plan.values[s].name for s in freed}
    assert {"h", "hb", "t"} <= names
    assert "y" not in names  # an output is never released


def test_fp64_reference_returns_float64_close_to_fp32():
    model = _mlp()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    y64 = wb.Session(model, "reference", precision="fp64").run({"x": x})["y"]
    y32 = wb.Session(model, "reference").run({"x": x})["y"]
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    assert_close(y32, y64.astype(np.float32), rtol=1e-5)


def test_unknown_precision_and_output_are_clear_errors():
    with pytest.raises(wb.WorkbenchError, match=r"no precision 'fp8'.*fp32"):
        wb.Session(_mlp(), "x86", precision="fp8")
    sess = wb.Session(_mlp(), "x86")
    with pytest.raises(wb.FeedError, match="unknown output 'z'"):
        sess.run({"x": np.ones((1, 4), np.float32)}, outputs=["z"])


def test_kernels_table_names_backend_and_fallbacks():
    sess = wb.Session(_mlp(), "x86")
    rows = sess.kernels()
    assert [r["op"] for r in rows] == ["MatMul", "Add", "Tanh", "ReduceMax"]
    assert all(r["backend"] in ("x86", "reference") for r in rows)
    assert all(r["fallback"] == (r["backend"] == "reference") for r in rows)
    assert len(sess.plan.fallbacks) == sum(r["fallback"] for r in rows)


def test_sequences_go_in_and_come_out_as_lists():
    seq_type = helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, None)
    )
    nodes = [
        helper.make_node("SequenceInsert", ["s", "x"], ["s2"]),
        helper.make_node("SequenceLength", ["s2"], ["n"]),
    ]
    g = helper.make_graph(
        nodes,
        "seq",
        [
            helper.make_value_info("s", seq_type),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
        ],
        [helper.make_value_info("s2", seq_type), helper.make_tensor_value_info("n", 7, [])],
    )
    model = wb.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.array([1.0, 2.0], np.float32)
    out = wb.Session(model, "x86").run({"s": [x * 0], "x": x})
    assert isinstance(out["s2"], list) and len(out["s2"]) == 2
    np.testing.assert_array_equal(out["s2"][1], x)
    assert int(out["n"]) == 2
