"""The IR: producer/consumer links, editing, topological order, subgraphs, round trips."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.engine.ir import Graph, Node, Value


def _chain() -> tuple[Graph, list[Node]]:
    g = Graph("chain")
    x = g.add_input(Value("x", TensorProto.FLOAT, (2, 3)))
    a = Node("Relu", [x], [Value("a")], name="relu")
    b = Node("Neg", [a.outputs[0]], [Value("b")], name="neg")
    c = Node("Add", [a.outputs[0], b.outputs[0]], [Value("c")], name="add")
    for n in (a, b, c):
        g.append(n)
    g.outputs.append(c.outputs[0])
    return g, [a, b, c]


def test_links_between_values_and_nodes():
    g, (relu, neg, add) = _chain()
    a = relu.outputs[0]
    assert a.producer is relu and a.index == 0
    assert a.uses == [(neg, 0), (add, 0)]
    assert a.consumers() == [neg, add]
    assert g.values()["b"] is neg.outputs[0]


def test_replace_all_uses_and_safe_remove():
    g, (relu, neg, add) = _chain()
    with pytest.raises(ValueError, match="still used"):
        g.remove(neg)
    g.replace_all_uses_with(neg.outputs[0], relu.outputs[0])
    assert add.inputs == [relu.outputs[0], relu.outputs[0]]
    g.remove(neg)
    assert [n.name for n in g] == ["relu", "add"]
    assert (neg, 0) not in relu.outputs[0].uses


def test_insert_before_and_topological_sort():
    g, (relu, neg, add) = _chain()
    g.nodes = [add, neg, relu]  # scrambled
    g.topological_sort()
    assert [n.name for n in g] == ["relu", "neg", "add"]
    extra = Node("Abs", [relu.outputs[0]], [Value("d")], name="abs")
    g.insert_before(neg, extra)
    assert [n.name for n in g] == ["relu", "abs", "neg", "add"]


def test_cycle_is_reported():
    g, (relu, _, add) = _chain()
    relu.set_input(0, add.outputs[0])
    with pytest.raises(ValueError, match="cycle"):
        g.topological_sort()


def _if_model() -> onnx.ModelProto:
    """y = If(sum(x) > 0, then: x * w (w from the outer scope), else: -x)."""
    then = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="if"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[
            numpy_helper.from_array(np.full((2, 3), 3.0, np.float32), "w"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_subgraph_captures_are_outer_values():
    model = wb.load(_if_model())
    node = model.graph.nodes[-1]
    then = node.attrs["then_branch"]
    assert isinstance(then, Graph) and then.parent is model.graph
    captured = {v.name for v in node.implicit_inputs()}
    assert captured == {"x", "w"}
    assert then.nodes[0].inputs[1] is model.graph.initializers["w"]


@pytest.mark.parametrize("backend", ["reference", "x86"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_if_runs_both_branches(backend, sign):
    model = wb.load(_if_model())
    x = sign * np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    y = wb.Session(model, backend).run({"x": x})["y"]
    np.testing.assert_array_equal(y, x * 3 if sign > 0 else -x)


def test_round_trip_passes_checker_and_gives_same_outputs():
    proto = _if_model()
    back = wb.to_onnx(wb.load(proto))
    onnx.checker.check_model(back)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 1
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})
    got = ort.InferenceSession(back.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], want[0])
    assert [n.op_type for n in back.graph.node] == [n.op_type for n in proto.graph.node]


def test_round_trip_of_zoo_model_keeps_names_and_outputs():
    from workbench import zoo

    proto = zoo.get("tiny_bert")
    model = wb.load(proto)
    back = wb.to_onnx(model)
    onnx.checker.check_model(back, full_check=True)
    assert [n.name for n in back.graph.node] == [n.name for n in proto.graph.node]
    feeds = wb.Session(model, "reference").random_feeds()
    want = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)
    got = ort.InferenceSession(back.SerializeToString()).run(None, feeds)
    np.testing.assert_array_equal(got[0], want[0])


def test_loop_runs_natively():
    """A Loop accumulating x into a state and a scan output, 4 iterations."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["acc_out"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("scan", TensorProto.FLOAT, [2]),
        ],
    )
    g = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "acc0"], ["acc", "scans"], body=body)],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [
            helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("scans", TensorProto.FLOAT, [None, 2]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(4, np.int64), "n"),
            numpy_helper.from_array(np.zeros(2, np.float32), "acc0"),
        ],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.array([1.0, 2.0], np.float32)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})
    sess = wb.Session(wb.load(proto), "x86")
    assert sess.plan.steps[0].kernel.algorithm == "subgraph"
    out = sess.run({"x": x})
    np.testing.assert_array_equal(out["acc"], want[0])
    np.testing.assert_array_equal(out["scans"], want[1])


def test_clone_is_independent_but_shares_weights():
    model = wb.load(_if_model())
    copy = model.clone()
    g, c = model.graph, copy.graph
    assert [n.name for n in c] == [n.name for n in g]
    assert all(a is not b for a, b in zip(c.nodes, g.nodes))
    assert c.initializers["w"] is not g.initializers["w"]
    assert c.initializers["w"].const is g.initializers["w"].const  # weights are shared
    # subgraph captures point at the clone's own values
    then = c.nodes[-1].attrs["then_branch"]
    assert then.nodes[0].inputs[1] is c.initializers["w"]
    assert then.nodes[0].inputs[0] is c.inputs[0]
    c.remove(c.nodes[-1], safe=False)
    assert len(g.nodes) == 3 and len(c.nodes) == 2
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(
        wb.Session(model.clone(), "x86").run({"x": x})["y"],
        wb.Session(model, "x86").run({"x": x})["y"],
    )
