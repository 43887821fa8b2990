"""The level-1 cleanups: constant and shape folding, Identity/Dropout elimination, common
subexpressions, dead code.

For each: a graph made for it, how many changes fire, outputs before and after equal on
`reference` and `x86` (fp32 tolerance), a candidate the pass must refuse with its recorded
reason, and the fate of the original nodes ("folded into constant X", "eliminated",
"merged into Y").
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.engine.passes import optimize
from workbench.engine.passes.cleanup import cse, dead_code, eliminate, fold
from workbench.testing import assert_close, graph_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64
BACKENDS = ("reference", "x86")
RNG = np.random.default_rng(0)


_model = graph_model  # shared with the other pass tests


def _const(name: str, value) -> object:
    return helper.make_node(
        "Constant", [], [name], name=name, value=numpy_helper.from_array(np.asarray(value))
    )


def _run(passes, model: wb.Model, **kw):
    return optimize(model, level=1, passes=passes, strict=True, **kw)


def _same_outputs(result, feeds: dict[str, np.ndarray]) -> None:
    for backend in BACKENDS:
        before = wb.Session(result.before, backend).run(feeds)
        after = wb.Session(result.after, backend).run(feeds)
        assert after.keys() == before.keys()
        for name in before:
            assert_close(after[name], before[name], err_msg=f"{name} on {backend}")


def _ops(model: wb.Model) -> list[str]:
    return [n.op_type for n in model.graph]


# -- constant folding ---------------------------------------------------------------------------


def test_constant_chain_folds_into_one_initializer_that_remembers_its_nodes():
    model = _model(
        [
            _const("c1", np.float32([1.0, 2.0, 3.0])),
            _const("c2", np.float32(2.0)),
            helper.make_node("Mul", ["c1", "c2"], ["scaled"], name="scale"),
            helper.make_node("Add", ["scaled", "w"], ["bias"], name="shift"),
            helper.make_node("Add", ["x", "bias"], ["y"], name="out"),
        ],
        [("x", [2, 3])],
        [("y", [2, 3])],
        {"w": np.float32([0.5, 0.5, 0.5])},
    )
    result = _run([*fold.PASSES, *dead_code.PASSES], model)
    assert _ops(result.after) == ["Add"]
    folded = [c for c in result.changes if c.kind == "folded"]
    assert len(folded) == 4  # two Constants, Mul, Add
    bias = result.after.graph.initializers["bias"]
    np.testing.assert_array_equal(bias.const, np.float32([2.5, 4.5, 6.5]))
    assert bias.meta["origin"] == ("shift", "scale", "c1", "c2")
    fates = result.fates()
    for name in ("c1", "c2", "scale", "shift"):
        assert fates[name].kind == "folded" and fates[name].into == "bias", name
    assert fates["out"].kind == "kept"
    assert set(result.after.graph.initializers) == {"bias"}  # spent constants and w are gone
    _same_outputs(result, {"x": RNG.standard_normal((2, 3)).astype(np.float32)})


def test_random_ops_and_overridable_initializers_do_not_fold():
    model = _model(
        [
            helper.make_node("RandomNormal", [], ["noise"], name="noise", shape=[3]),
            helper.make_node("Mul", ["noise", "zero"], ["z"], name="zeroed"),
            helper.make_node("Add", ["x", "z"], ["a"], name="add"),
            helper.make_node("Neg", ["k"], ["nk"], name="neg_default"),
            helper.make_node("Add", ["a", "nk"], ["y"], name="out"),
        ],
        [("x", [3]), ("k", [3])],  # k is also an initializer: a default the caller may override
        [("y", [3])],
        {"zero": np.float32(0.0), "k": np.float32([1.0, 2.0, 3.0])},
    )
    result = _run(fold.PASSES, model)
    assert not result.changes
    assert [(r.nodes, r.reason) for r in result.rejected] == [
        (("noise",), "RandomNormal is random: each run draws new values")
    ]
    feeds = {"x": np.ones(3, np.float32), "k": np.float32([5.0, 6.0, 7.0])}
    _same_outputs(result, feeds)


def test_size_limit_refuses_created_data_but_folds_a_transposed_weight(monkeypatch):
    monkeypatch.setattr(fold, "MAX_FOLD_BYTES", 1024)
    model = _model(
        [
            helper.make_node("Expand", ["one", "big"], ["ones"], name="expand"),
            helper.make_node("Transpose", ["w"], ["wt"], name="transpose", perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt"], ["h"], name="matmul"),
            helper.make_node("Add", ["h", "ones"], ["y"], name="out"),
        ],
        [("x", [20, 40])],
        [("y", [20, 50])],
        {
            "one": np.float32([1.0]),
            "big": np.array([20, 50], np.int64),
            "w": RNG.standard_normal((50, 40)).astype(np.float32),  # 8000 bytes
        },
    )
    result = _run(fold.PASSES, model)
    assert [c.removed for c in result.changes] == [("transpose",)]
    assert result.after.graph.initializers["wt"].const.shape == (40, 50)
    # a transposed weight stays a view of the weight: GEMMs read either order
    wt = result.after.graph.initializers["wt"].const
    assert wt.flags.f_contiguous and np.shares_memory(wt, model.graph.initializers["w"].const)
    (refusal,) = result.rejected
    assert refusal.nodes == ("expand",)
    assert refusal.reason == (
        "the result would be 3.9 KiB, over the 1.0 KiB limit and more than its inputs' "
        "20 bytes: folding would store data the node creates at run time"
    )
    _same_outputs(result, {"x": RNG.standard_normal((20, 40)).astype(np.float32)})


def test_shape_of_static_dims_folds_and_the_reshape_target_becomes_constant():
    # the dynamic-axes export pattern: Shape -> Gather -> Unsqueeze -> Concat -> Reshape
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["shape"], name="shape"),
            helper.make_node("Gather", ["shape", "i0"], ["d0"], name="gather", axis=0),
            helper.make_node("Unsqueeze", ["d0", "axes"], ["d0_1"], name="unsqueeze"),
            helper.make_node("Concat", ["d0_1", "minus1"], ["target"], name="concat", axis=0),
            helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
            helper.make_node("Shape", ["s"], ["s_shape"], name="shape_symbolic"),
            helper.make_node("Gather", ["s_shape", "i1"], ["s1"], name="gather_static", axis=0),
            helper.make_node("Gather", ["s_shape", "i0"], ["s0"], name="gather_symbolic", axis=0),
            helper.make_node("Size", ["x"], ["n"], name="size"),
            helper.make_node("Cast", ["n"], ["n_f"], name="cast", to=F),
            helper.make_node("Mul", ["flat", "n_f"], ["y"], name="out"),
        ],
        [("x", [2, 3, 4]), ("s", ["batch", 5])],
        [("y", [2, 12]), ("s1", [], I64), ("s0", [], I64)],
        {
            "i0": np.array(0, np.int64),
            "i1": np.array(1, np.int64),
            "axes": np.array([0], np.int64),
            "minus1": np.array([-1], np.int64),
        },
    )
    result = _run([*fold.PASSES, *dead_code.PASSES], model)
    rules = {c.removed[0]: c.rule for c in result.changes if c.kind == "folded"}
    assert rules == {
        "shape": "shape",
        "gather": "constant",
        "unsqueeze": "constant",
        "concat": "constant",
        "size": "shape",
        "cast": "constant",
    }
    # s1 would fold (dim 1 of s is 5) but it is a graph output; dim 0 of s is 'batch'
    assert sorted(_ops(result.after)) == ["Gather", "Gather", "Mul", "Reshape", "Shape"]
    target = result.after.graph.initializers["target"]
    np.testing.assert_array_equal(target.const, [2, -1])
    assert set(target.meta["origin"]) == {"concat", "unsqueeze", "gather", "shape"}
    assert result.fate("shape").into == "target"
    feeds = {
        "x": RNG.standard_normal((2, 3, 4)).astype(np.float32),
        "s": np.zeros((3, 5), np.float32),
    }
    _same_outputs(result, feeds)


def test_gather_of_shape_folds_when_the_picked_dims_are_known():
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["shape"], name="shape"),
            helper.make_node("Gather", ["shape", "i"], ["hidden"], name="gather", axis=0),
            helper.make_node("Cast", ["hidden"], ["hf"], name="cast", to=F),
            helper.make_node("Div", ["x", "hf"], ["y"], name="out"),
        ],
        [("x", ["batch", 8])],
        [("y", ["batch", 8])],
        {"i": np.array(1, np.int64)},
    )
    result = _run([*fold.PASSES, *dead_code.PASSES], model)
    assert _ops(result.after) == ["Div"]
    assert result.fate("gather").kind == "folded" and result.fate("shape").kind == "eliminated"
    _same_outputs(result, {"x": RNG.standard_normal((3, 8)).astype(np.float32)})


# -- Identity and Dropout elimination -----------------------------------------------------------


def test_identities_go_and_graph_outputs_keep_their_names():
    model = _model(
        [
            helper.make_node("Identity", ["x"], ["x1"], name="id_mid"),
            helper.make_node("Relu", ["x1"], ["r"], name="relu"),
            helper.make_node("Dropout", ["r"], ["d"], name="dropout", ratio=0.5),
            helper.make_node("Cast", ["d"], ["c"], name="noop_cast", to=F),
            helper.make_node("Identity", ["c"], ["y"], name="id_out"),
            helper.make_node("Identity", ["x"], ["passthrough"], name="id_input"),
        ],
        [("x", [4])],
        [("y", [4]), ("passthrough", [4])],
        opset=11,
    )
    result = _run(eliminate.PASSES, model)
    assert _ops(result.after) == ["Relu", "Identity"]
    assert [c.rule for c in result.changes] == ["identity", "dropout", "noop_cast", "identity"]
    relu = result.after.graph.nodes[0]
    assert relu.inputs[0].name == "x" and relu.outputs[0].name == "y"  # took the output name
    assert [o.name for o in result.after.graph.outputs] == ["y", "passthrough"]
    (refusal,) = result.rejected
    assert refusal.nodes == ("id_input",)
    assert refusal.reason == (
        "output 'passthrough' is a graph output and input 'x' is a graph input: "
        "both names must stay"
    )
    assert result.fate("id_mid").kind == "eliminated" and result.fate("id_input").kind == "kept"
    _same_outputs(result, {"x": np.float32([-1.0, 0.0, 2.0, -3.0])})


def test_dropout_whose_mask_is_read_or_training_mode_is_unknown_stays():
    model = _model(
        [
            helper.make_node("Dropout", ["x"], ["a", "mask"], name="with_mask"),
            helper.make_node("Cast", ["mask"], ["m"], name="cast", to=F),
            helper.make_node("Dropout", ["x", "", "train"], ["b"], name="train_input"),
            helper.make_node("Add", ["a", "m"], ["s"], name="add"),
            helper.make_node("Add", ["s", "b"], ["y"], name="out"),
        ],
        [("x", [4]), ("train", [], TensorProto.BOOL)],
        [("y", [4])],
    )
    result = _run(eliminate.PASSES, model)
    assert not result.changes
    assert {r.nodes[0]: r.reason for r in result.rejected} == {
        "with_mask": "its mask output 'mask' is read",
        "train_input": "training_mode is not a constant: a training run would draw a mask",
    }


# -- common subexpressions ----------------------------------------------------------------------


def test_duplicate_chains_merge_and_say_into_what():
    model = _model(
        [
            helper.make_node("Unsqueeze", ["x", "axes_a"], ["ua"], name="unsq_a"),
            helper.make_node("Unsqueeze", ["x", "axes_b"], ["ub"], name="unsq_b"),  # same axes
            helper.make_node("Relu", ["ua"], ["ra"], name="relu_a"),
            helper.make_node("Relu", ["ub"], ["rb"], name="relu_b"),
            helper.make_node("RandomUniformLike", ["ra"], ["na"], name="rand_a"),
            helper.make_node("RandomUniformLike", ["ra"], ["nb"], name="rand_b"),
            helper.make_node("Sub", ["na", "nb"], ["noise"], name="noise"),
            helper.make_node("Mul", ["noise", "zero"], ["nothing"], name="zeroed"),
            helper.make_node("Add", ["ra", "rb"], ["s"], name="add"),
            helper.make_node("Add", ["s", "nothing"], ["y"], name="out"),
        ],
        [("x", [3])],
        [("y", [1, 3])],
        {
            "axes_a": np.array([0], np.int64),
            "axes_b": np.array([0], np.int64),
            "zero": np.float32(0.0),
        },
    )
    result = _run(cse.PASSES, model)
    merged = {c.removed[0]: c.detail for c in result.changes}
    assert merged == {"unsq_b": "unsq_a", "relu_b": "relu_a"}  # random draws never merge
    assert result.fate("relu_b").kind == "merged" and result.fate("relu_b").into == "relu_a"
    add = next(n for n in result.after.graph if n.name == "add")
    assert add.inputs[0] is add.inputs[1]
    _same_outputs(result, {"x": np.float32([-1.0, 0.5, 2.0])})


def test_a_duplicate_whose_output_is_a_graph_output_is_not_merged():
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="first"),
            helper.make_node("Relu", ["x"], ["b"], name="second"),
        ],
        [("x", [3])],
        [("a", [3]), ("b", [3])],
    )
    result = _run(cse.PASSES, model)
    assert not result.changes
    assert [(r.nodes, r.reason) for r in result.rejected] == [
        (("first", "second"), "output 'b' is a graph output")
    ]


# -- dead code ----------------------------------------------------------------------------------


def test_dead_nodes_and_unused_initializers_are_removed():
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="live"),
            helper.make_node("Mul", ["x", "w"], ["unused"], name="dead_mul"),
            helper.make_node("Exp", ["unused"], ["also_unused"], name="dead_exp"),
        ],
        [("x", [3])],
        [("r", [3])],
        {"w": np.float32([1.0, 2.0, 3.0]), "never": np.float32(1.0)},
    )
    result = _run(dead_code.PASSES, model)
    assert _ops(result.after) == ["Relu"]
    assert not result.after.graph.initializers
    assert [c.removed for c in result.changes] == [("dead_exp",), ("dead_mul",)]
    assert result.fate("dead_mul").kind == "eliminated"
    assert str(result.fate("dead_exp")) == "eliminated as dead"
    _same_outputs(result, {"x": np.float32([-1.0, 0.5, 2.0])})


def test_values_read_inside_a_subgraph_stay_alive():
    then = helper.make_graph(
        [helper.make_node("Neg", ["outer"], ["t"], name="neg")],
        "then",
        [],
        [helper.make_tensor_value_info("t", F, [3])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"], name="keep_x")],
        "else",
        [],
        [helper.make_tensor_value_info("e", F, [3])],
    )
    model = _model(
        [
            helper.make_node("Exp", ["x"], ["outer"], name="read_in_branch"),
            helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=other),
        ],
        [("x", [3]), ("cond", [], TensorProto.BOOL)],
        [("y", [3])],
    )
    result = _run(dead_code.PASSES, model)
    assert not result.changes and _ops(result.after) == ["Exp", "If"]
    for cond in (True, False):
        _same_outputs(result, {"x": np.float32([1.0, 2.0, 3.0]), "cond": np.array(cond)})


def test_level_1_runs_the_cleanups_in_order():
    names = [p.name for p in fold.PASSES + eliminate.PASSES + cse.PASSES + dead_code.PASSES]
    model = _model(
        [helper.make_node("Identity", ["x"], ["y"], name="id")], [("x", [3])], [("y", [3])]
    )
    assert optimize(model, level=1).timings.keys() >= set(names)
    assert not set(optimize(model, level=0).timings) & set(names)


@pytest.mark.parametrize("opset", [7, 13])
def test_old_dropout_opsets_are_inference(opset):
    model = _model(
        [
            helper.make_node("Dropout", ["x"], ["d"], name="dropout"),
            helper.make_node("Relu", ["d"], ["y"], name="relu"),
        ],
        [("x", [3])],
        [("y", [3])],
        opset=opset,
    )
    result = _run(eliminate.PASSES, model)
    assert _ops(result.after) == ["Relu"]
    _same_outputs(result, {"x": np.float32([-1.0, 0.5, 2.0])})
