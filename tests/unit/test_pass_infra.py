"""Pass infrastructure: rules, rejections with reasons, provenance both ways, the manager."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench.engine.ir import Node
from workbench.engine.passes import (
    FunctionPass,
    Match,
    PassContext,
    PassError,
    PassManager,
    PassResult,
    Rule,
    RulePass,
    optimize,
)
from workbench.engine.passes.rules import like, producer


class NegNeg(Rule):
    """Neg(Neg(x)) -> Identity(x); refused when the inner Neg is named 'keep'."""

    name = "neg_neg"
    anchor = ("Neg",)

    def pattern(self, node, ctx):
        inner = producer(node.inputs[0], "Neg")
        return Match([inner, node], {"x": inner.inputs[0]}) if inner else None

    def check(self, match, ctx):
        return "inner Neg is marked keep" if match.nodes[0].name == "keep" else None

    def rewrite(self, match, ctx):
        return [Node("Identity", [match.values["x"]], [like(match.outputs[0])], name="id")]


def _model(inner_name: str = "n1", extra_use: bool = False) -> wb.Model:
    nodes = [
        helper.make_node("Neg", ["x"], ["a"], name=inner_name),
        helper.make_node("Neg", ["a"], ["b"], name="n2"),
        helper.make_node("Relu", ["b"], ["y"], name="relu"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])]
    if extra_use:
        nodes.append(helper.make_node("Abs", ["a"], ["z"], name="abs"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [3]))
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])], outputs
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return wb.load(proto)


PASS = RulePass("toy_fusions", [NegNeg()], level=2)


def test_rule_fires_keeps_value_names_and_records_provenance():
    model = _model()
    result = optimize(model, passes=[PASS], strict=True)
    assert [n.op_type for n in result.after.graph] == ["Identity", "Relu"]
    assert [n.op_type for n in model.graph] == ["Neg", "Neg", "Relu"]  # before is untouched
    assert result.after.graph.nodes[1].inputs[0].name == "b"  # the fused node took over 'b'
    assert len(result.changes) == 1 and result.changes[0].origin == ("n1", "n2")
    assert result.origin("id") == ("n1", "n2")
    fates = result.fates()
    assert fates["n1"].kind == "fused" and fates["n1"].into == "id"
    assert fates["relu"].kind == "kept"
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    before = wb.Session(model, "x86").run({"x": x})["y"]
    after = wb.Session(result.after, "x86").run({"x": x})["y"]
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_model(inner_name="keep"), "inner Neg is marked keep"),
        (_model(extra_use=True), "Neg output 'a' has a second consumer (Abs 'abs')"),
    ],
)
def test_refused_candidates_say_why(model, reason):
    result = optimize(model, passes=[PASS], strict=True)
    assert not result.changes
    assert [r.reason for r in result.rejected] == [reason]
    assert result.rejected[0].rule == "neg_neg"


def test_level_and_disabled_passes_are_respected():
    assert not optimize(_model(), level=1, passes=[PASS]).changes
    assert not optimize(_model(), passes=[PASS], disabled=["toy_fusions"]).changes
    assert optimize(_model(), level=2, passes=[PASS]).changes


def _boom(graph, ctx):
    """Raises after editing the graph, as a buggy pass might."""
    graph.nodes[0].op_type = "Broken"
    raise RuntimeError("rule exploded on node n1")


def test_a_failing_pass_leaves_the_graph_as_before_and_names_itself():
    ok = FunctionPass("cleanup_ok", lambda g, c: PassResult(g, False), level=1)
    bad = FunctionPass("buggy", _boom, level=1, order=60)
    expected = r"pass 'buggy' failed.*exploded.*run before it: cleanup_ok"
    with pytest.raises(PassError, match=expected):
        PassManager([ok, bad], PassContext(level=1), strict=True).run(_model().graph.clone())
    with pytest.warns(UserWarning, match="buggy"):
        result = optimize(_model(), level=1, passes=[ok, bad])
    assert [n.op_type for n in result.after.graph] == ["Neg", "Neg", "Relu"]
    assert result.failures and "buggy" in result.failures[0].error


def test_timing_instrument_records_each_pass():
    result = optimize(_model(), passes=[PASS])
    assert set(result.timings) == {"toy_fusions"} and result.timings["toy_fusions"] >= 0
