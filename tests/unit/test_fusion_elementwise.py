"""Elementwise fusion and Transpose/Reshape simplification, their kernels, and the zoo guard.

- `FusedElementwise`: every op of a program on x86 (one generated numba loop) against the
  reference backend's program interpreter, which is checked against the plain ONNX op;
  broadcasting layouts; machine code reused by a second process.
- The `elementwise` pass: what fuses (tanh-GELU, mask arithmetic), outputs before and after
  equal, fates, and the reasons for refused producers.
- The `transpose_reshape` rules: merged and cancelled pairs, and a refused one.
- Every tiny zoo model: outputs at opt level 1 and 2 equal level 0's on reference and x86
  within fp32 tolerance. An optimization that changes a model's result fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench import zoo
from workbench.engine.backends.reference.ops_fused_elementwise import OPS, parse_program
from workbench.engine.passes import optimize
from workbench.engine.passes.fusion import elementwise, transpose_reshape
from workbench.testing import assert_close, graph_model, node_model, run_node

F, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
BACKENDS = ("reference", "x86")
RNG = np.random.default_rng(0)


def _rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _fused(program: list[str], inputs: list[np.ndarray], backend: str) -> np.ndarray:
    (y,) = run_node(
        backend,
        "FusedElementwise",
        inputs,
        {"program": program},
        domain="workbench",
        opset=1,
        expect_native=True,
    )
    return y


# -- the kernels --------------------------------------------------------------------------------

# per op: a program using it, its inputs, and the same computation as one plain ONNX node
# (op, inputs, attrs, positions of constant inputs); non-default attributes on purpose
_X = _rand(2, 3, 5, scale=2.0)
_POS = np.abs(_X) + np.float32(0.1)
_Y = _rand(3, 1)
_ATTRS = {
    "LeakyRelu": {"alpha": 0.3},
    "ThresholdedRelu": {"alpha": 0.5},
    "Elu": {"alpha": 0.7},
    "Celu": {"alpha": 1.5},
    "Selu": {"alpha": 1.5, "gamma": 1.2},
    "HardSigmoid": {"alpha": 0.3, "beta": 0.4},
}
_POSITIVE = {"Log", "Sqrt", "Pow"}


def _case(op: str):
    x = _POS if op in _POSITIVE else _X
    if op == "Cast":
        ints = RNG.integers(-5, 5, (2, 3, 5))
        return ["t0 = Cast(x0, to=1)"], [ints], ("Cast", [ints], {"to": F}, ())
    if op == "Where":
        cond = RNG.random((3, 5)) > 0.5
        prog = ["t0 = Where(x0, x1, -2.5)"]
        return prog, [cond, x], ("Where", [cond, x, np.float32(-2.5)], {}, (2,))
    if op == "Clip":
        prog = ["t0 = Clip(x0, -1.0, 0.5)"]
        return prog, [x], ("Clip", [x, np.float32(-1.0), np.float32(0.5)], {}, (1, 2))
    if op == "Pow":
        return ["t0 = Pow(x0, 2.5)"], [x], ("Pow", [x, np.float32(2.5)], {}, (1,))
    if OPS[op].arity == 2:
        return [f"t0 = {op}(x0, x1)"], [x, _Y], (op, [x, _Y], {}, ())
    attrs = _ATTRS.get(op, {})
    text = "".join(f", {k}={v}" for k, v in attrs.items())
    return [f"t0 = {op}(x0{text})"], [x], (op, [x], attrs, ())


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_program_op_matches_the_onnx_op_and_x86_matches_reference(op):
    program, inputs, (onnx_op, onnx_inputs, attrs, consts) = _case(op)
    ref = _fused(program, inputs, "reference")
    (plain,) = run_node("reference", onnx_op, onnx_inputs, attrs, consts=consts)
    assert_close(ref, plain, err_msg=f"reference program vs ONNX {op}")
    assert_close(_fused(program, inputs, "x86"), ref, err_msg=f"x86 vs reference {op}")


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.uint8, np.bool_])
def test_cast_reads_other_dtypes(dtype):
    # float16 has no numba type: the x86 wrapper widens it first (exactly)
    x = (RNG.standard_normal((3, 4)) * 3).astype(dtype)
    program = ["t0 = Cast(x0, to=1)", "t1 = Mul(t0, x1)"]
    y = _rand(4)
    assert_close(_fused(program, [x, y], "x86"), _fused(program, [x, y], "reference"))
    assert_close(_fused(program, [x, y], "reference"), x.astype(np.float32) * y)


def test_tanh_and_exp_keep_float32_accuracy_over_their_whole_range():
    # the x86 kernel's own exp/tanh polynomials: within 2 float32 ulp of float64 math
    x = np.concatenate([np.linspace(-30, 30, 100_001), np.geomspace(1e-8, 1, 1000)])
    x = np.concatenate([x, -x]).astype(np.float32)
    for op, exact in (("Tanh", np.tanh), ("Exp", np.exp), ("Sigmoid", None)):
        got = _fused([f"t0 = {op}(x0)"], [x], "x86")
        want = (
            (1 / (1 + np.exp(-x.astype(np.float64))))
            if exact is None
            else exact(x.astype(np.float64))
        )
        with np.errstate(over="ignore"):
            want = want.astype(np.float32)
        finite = np.isfinite(want) & (want != 0)
        ulp = np.abs(got[finite].view(np.int32).astype(np.int64) - want[finite].view(np.int32))
        assert ulp.max() <= 2, (op, x[finite][ulp.argmax()])
        assert np.array_equal(got[~finite], want[~finite]), op


GELU_TANH = [
    "t0 = Pow(x0, 3.0)",
    "t1 = Mul(0.044715, t0)",
    "t2 = Add(x0, t1)",
    "t3 = Mul(0.7978846, t2)",
    "t4 = Tanh(t3)",
    "t5 = Add(1.0, t4)",
    "t6 = Mul(x1, t5)",
]


@pytest.mark.parametrize(
    ("shapes", "what"),
    [
        ([(4, 16), (4, 16)], "same shape: one flat loop"),
        ([(2, 3, 8), (8,)], "bias along the last axis"),
        ([(2, 3, 8), (2, 3, 1)], "one value per row"),
        ([(2, 1, 3, 1, 2, 1), (1, 2, 1, 3, 1, 2)], "six unmergeable dims: materialized first"),
        ([(), ()], "0-d"),
        ([(0, 3), (3,)], "empty"),
    ],
)
def test_broadcast_layouts(shapes, what):
    inputs = [_rand(*s) for s in shapes]
    want = _fused(GELU_TANH, inputs, "reference")
    got = _fused(GELU_TANH, inputs, "x86")
    assert got.shape == np.broadcast_shapes(*shapes), what
    assert_close(got, want, err_msg=what)


def test_writes_into_a_given_buffer_even_over_its_own_input():
    from workbench.engine.backends.x86.ops_fused_elementwise import fused_elementwise

    model = wb.load(
        node_model(
            "FusedElementwise",
            [_rand(4, 8), _rand(8)],
            {"program": GELU_TANH},
            domain="workbench",
            opset=1,
        )[0],
        check=False,
    )
    run = fused_elementwise(model.graph.nodes[0], None)
    assert run.writes_out and run.inplace == (0, 1)
    x, h = _rand(4, 8), _rand(8)
    want = _fused(GELU_TANH, [x, h], "reference")
    buf = np.empty((4, 8), np.float32)
    (y,) = run(x, h, out=(buf,))
    assert y is buf
    assert_close(y, want)
    (y,) = run(x, h, out=(x,))  # the planner hands over a dying input's memory
    assert y is x
    assert_close(y, want)


@pytest.mark.parametrize(
    ("program", "message"),
    [
        (["t0 = Relu(x0)", "t2 = Neg(t0)"], "instruction 1 't2 = Neg(t0)': instruction 1 must"),
        (["t0 = Frobnicate(x0)"], "unknown op 'Frobnicate'"),
        (["t0 = Add(x0)"], "Add takes 2 operands, got 1"),
        (["t0 = Neg(t1)"], "t1 is not defined before it is read"),
        (["t0 = Neg(x3)"], "x3 is beyond the node's 1 inputs"),
        (["t0 = LeakyRelu(x0, beta=1)"], "LeakyRelu has no attribute 'beta'"),
        (["t0 = Cast(x0, to=7)"], "only casts to float32"),
        (["t0 = Mul(x0, two)"], "'two' is not a number"),
        ([], "the program is empty"),
    ],
)
def test_bad_programs_are_refused_naming_the_instruction(program, message):
    with pytest.raises(wb.WorkbenchError, match=r"^FusedElementwise: .*" + re.escape(message)):
        parse_program(program, n_inputs=1)


_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from workbench.testing import run_node
    prog = ["t0 = Mul(x0, 1.5)", "t1 = Tanh(t0)", "t2 = Add(t1, x1)"]
    x = np.ones((3, 4), np.float32)
    run_node("x86", "FusedElementwise", [x, x], {"program": prog}, domain="workbench", opset=1)
    hits = misses = 0
    for name, mod in list(sys.modules.items()):
        if name.startswith("workbench_fused_"):
            hits += sum(mod.kernel.stats.cache_hits.values())
            misses += sum(mod.kernel.stats.cache_misses.values())
    print(json.dumps({"hits": hits, "misses": misses}))
    """
)


def test_a_second_process_reuses_the_generated_kernel(tmp_path):
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "nb")}

    def probe() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = probe()
    assert first["misses"] > 0
    (module,) = (tmp_path / "fused").glob("fused_*.py")
    assert "def kernel(" in module.read_text()
    second = probe()
    assert second == {"hits": second["hits"], "misses": 0} and second["hits"] > 0


# -- the elementwise pass -----------------------------------------------------------------------


_model = graph_model  # shared with the other pass tests


def _same_outputs(result, feeds) -> None:
    for backend in BACKENDS:
        sess = wb.Session(result.after, backend)
        assert not sess.plan.fallbacks, [s.node.name for s in sess.plan.fallbacks]
        before = wb.Session(result.before, backend).run(feeds)
        after = sess.run(feeds)
        for name in before:
            assert_close(after[name], before[name], err_msg=f"{name} on {backend}")


def _node(op, ins, out, name, **attrs):
    return helper.make_node(op, ins, [out], name=name, **attrs)


def _gelu_tanh_model() -> wb.Model:
    """gpt2's gelu_new as its exporter writes it, between two MatMuls."""
    s = {
        "half": np.float32(0.5),
        "three": np.float32(3.0),
        "cubic": np.float32(0.044715),
        "scale": np.float32(np.sqrt(2 / np.pi)),
        "one": np.float32(1.0),
        "w": _rand(8, 8, scale=0.3),
    }
    nodes = [
        _node("MatMul", ["x", "w"], "h", "fc"),
        _node("Mul", ["half", "h"], "half_h", "mul_half"),
        _node("Pow", ["h", "three"], "cube", "pow"),
        _node("Mul", ["cubic", "cube"], "c1", "mul_cubic"),
        _node("Add", ["h", "c1"], "inner", "add_inner"),
        _node("Mul", ["scale", "inner"], "scaled", "mul_scale"),
        _node("Tanh", ["scaled"], "t", "tanh"),
        _node("Add", ["one", "t"], "t1", "add_one"),
        _node("Mul", ["half_h", "t1"], "g", "mul_out"),
        _node("MatMul", ["g", "w"], "y", "proj"),
    ]
    return _model(nodes, [("x", ["batch", 8])], [("y", ["batch", 8])], s)


def test_tanh_gelu_becomes_one_fused_loop_and_every_node_knows_it():
    result = optimize(_gelu_tanh_model(), passes=elementwise.PASSES, strict=True)
    assert [n.op_type for n in result.after.graph] == ["MatMul", "FusedElementwise", "MatMul"]
    (change,) = result.changes
    fused = result.after.graph.nodes[1]
    assert fused.domain == "workbench" and fused.outputs[0].name == "g"
    assert [v.name for v in fused.inputs] == ["h"]
    assert fused.attrs["program"] == [
        "t0 = Mul(0.5, x0)",
        "t1 = Pow(x0, 3.0)",
        "t2 = Mul(0.044715, t1)",
        "t3 = Add(x0, t2)",
        "t4 = Mul(0.7978846, t3)",
        "t5 = Tanh(t4)",
        "t6 = Add(1.0, t5)",
        "t7 = Mul(t0, t6)",
    ]
    members = ("mul_half", "pow", "mul_cubic", "add_inner", "mul_scale", "tanh", "add_one")
    assert change.removed == (*members, "mul_out")
    for name in (*members, "mul_out"):
        fate = result.fate(name)
        assert (fate.kind, fate.into) == ("fused", fused.name), name
    assert result.fate("fc").kind == "kept"
    _same_outputs(result, {"x": _rand(3, 8, scale=2.0)})
    # and back through ONNX: the fused op passes the checker and runs the same
    again = wb.load(wb.to_onnx(result.after))
    out = wb.Session(again, "x86").run({"x": np.ones((2, 8), np.float32)})
    want = wb.Session(result.before, "x86").run({"x": np.ones((2, 8), np.float32)})
    assert_close(out["y"], want["y"])


def test_attention_mask_arithmetic_fuses_with_its_cast():
    nodes = [
        _node("Unsqueeze", ["mask", "axes"], "m4", "unsqueeze"),
        _node("Cast", ["m4"], "mf", "cast", to=F),
        _node("Sub", ["one", "mf"], "inv", "sub"),
        _node("Mul", ["inv", "big"], "bias", "mul"),
        _node("Add", ["scores", "bias"], "y", "add_mask"),
        _node("Add", ["scores", "bias"], "y2", "add_mask_again"),  # bias read twice
    ]
    model = _model(
        nodes,
        [("mask", ["batch", 6], I64), ("scores", ["batch", 2, 6, 6])],
        [("y", ["batch", 2, 6, 6]), ("y2", ["batch", 2, 6, 6])],
        {"axes": np.array([1, 2], np.int64), "one": np.float32(1.0), "big": np.float32(-1e4)},
    )
    result = optimize(model, passes=elementwise.PASSES, strict=True)
    (change,) = result.changes
    assert change.removed == ("cast", "sub", "mul")
    assert change.detail == "t0 = Cast(x0, to=1); t1 = Sub(1.0, t0); t2 = Mul(t1, -10000.0)"
    feeds = {"mask": RNG.integers(0, 2, (2, 6)), "scores": _rand(2, 2, 6, 6)}
    _same_outputs(result, feeds)
    # an int64 and a float32 input: the exported node still passes the checker
    again = wb.Session(wb.load(wb.to_onnx(result.after)), "x86").run(feeds)
    assert_close(again["y"], wb.Session(model, "reference").run(feeds)["y"])


def test_refused_producers_say_why():
    nodes = [
        _node("Add", ["x", "p"], "a", "add"),
        _node("Pow", ["a", "e"], "pw", "pow_runtime_exponent"),  # e is a graph input
        _node("ReduceMean", ["x"], "mean", "mean", axes=[-1]),
        _node("Sqrt", ["mean"], "std", "sqrt"),  # [B, 1], read by Div at [B, 4]
        _node("Div", ["pw", "std"], "d", "div"),
        _node("ReduceSum", ["d"], "side", "side"),  # d is read outside the group
        _node("Exp", ["d"], "ex", "exp"),
        _node("Neg", ["ex"], "n", "neg"),
        _node("Abs", ["ex"], "ab", "abs"),  # ex read twice, both inside: a DAG fuses
        _node("Add", ["n", "ab"], "y", "out"),
    ]
    model = _model(
        nodes,
        [("x", ["batch", 4]), ("e", [])],
        [("y", ["batch", 4]), ("side", [1, 1])],
        {"p": np.float32(1.0)},
    )
    result = optimize(model, passes=elementwise.PASSES, strict=True)
    assert [c.removed for c in result.changes] == [("exp", "neg", "abs", "out")]
    assert result.changes[0].detail == (
        "t0 = Exp(x0); t1 = Neg(t0); t2 = Abs(t0); t3 = Add(t1, t2)"
    )
    reasons = {r.nodes: r.reason for r in result.rejected}
    assert reasons == {
        ("div", "exp"): "Div output 'd' is also read by ReduceSum 'side'",
        ("pow_runtime_exponent", "div"): "Pow exponent is not a constant scalar",
        ("sqrt", "div"): (
            "broadcast would change the shape of the chain's main input: Sqrt gives "
            "['batch', 1], the chain computes ['batch', 4]"
        ),
        ("add", "pow_runtime_exponent"): "Pow exponent is not a constant scalar",
    }
    _same_outputs(result, {"x": _rand(3, 4), "e": np.float32(2.0)})


def test_a_scalar_that_would_set_the_rank_is_refused():
    nodes = [_node("Add", ["x", "c"], "a", "add"), _node("Relu", ["a"], "y", "relu")]
    model = _model(nodes, [("x", [3])], [("y", [1, 3])], {"c": np.ones((1, 1), np.float32)})
    result = optimize(model, passes=elementwise.PASSES, strict=True)
    assert not result.changes
    assert [r.reason for r in result.rejected] == [
        "the inputs span [3], not the result's [1, 3]: a scalar constant sets the result's rank"
    ]


def test_no_fusion_for_a_backend_without_the_kernel(bare_backend):
    model = _gelu_tanh_model()
    result = optimize(model, backend=bare_backend, passes=elementwise.PASSES, strict=True)
    assert not result.changes
    assert [r.reason for r in result.rejected] == ["backend 'bare' has no FusedElementwise kernel"]


# -- Transpose / Reshape ------------------------------------------------------------------------

LAYOUT = transpose_reshape.PASSES


def test_transpose_pairs_merge_or_cancel():
    nodes = [
        _node("Transpose", ["x"], "a", "t1", perm=[0, 2, 1]),
        _node("Transpose", ["a"], "b", "t2", perm=[1, 0, 2]),  # -> one Transpose [2, 0, 1]
        _node("Transpose", ["x"], "c", "t3", perm=[2, 0, 1]),
        _node("Transpose", ["c"], "d", "t4", perm=[1, 2, 0]),  # cancels: d is x
        _node("Transpose", ["x"], "e", "t5", perm=[0, 1, 2]),  # identity
        _node("Add", ["d", "e"], "s", "add"),
        _node("Relu", ["b"], "y1", "relu"),
        _node("Relu", ["s"], "y2", "relu2"),
    ]
    model = _model(nodes, [("x", [2, 3, 4])], [("y1", [3, 2, 4]), ("y2", [2, 3, 4])])
    result = optimize(model, passes=LAYOUT, strict=True)
    assert sorted(n.op_type for n in result.after.graph) == ["Add", "Relu", "Relu", "Transpose"]
    transposes = [n for n in result.after.graph if n.op_type == "Transpose"]
    assert [n.attrs["perm"] for n in transposes] == [[2, 0, 1]]
    add = next(n for n in result.after.graph if n.op_type == "Add")
    assert [v.name for v in add.inputs] == ["x", "x"]
    assert result.fate("t3").kind == "eliminated" and result.fate("t5").kind == "eliminated"
    assert result.fate("t1").kind == "fused" and result.fate("t1").into == transposes[0].name
    _same_outputs(result, {"x": _rand(2, 3, 4)})


def test_a_cancelled_pair_between_graph_input_and_output_keeps_an_identity():
    nodes = [
        _node("Transpose", ["x"], "a", "t1", perm=[1, 0]),
        _node("Transpose", ["a"], "y", "t2", perm=[1, 0]),
    ]
    result = optimize(_model(nodes, [("x", [2, 3])], [("y", [2, 3])]), passes=LAYOUT, strict=True)
    assert [n.op_type for n in result.after.graph] == ["Identity"]
    assert [r.reason for r in result.rejected] == [
        "output 'y' is a graph output and input 'x' is a graph input: both names must stay"
    ]
    _same_outputs(result, {"x": _rand(2, 3)})


def test_reshape_pairs_merge_resolving_zeros():
    nodes = [
        _node("Reshape", ["x", "s1"], "a", "r1"),
        _node("Reshape", ["a", "s2"], "b", "r2"),  # [0, -1]: dim 0 is s1's 6
        _node("Unsqueeze", ["x", "axes"], "u", "unsq"),
        _node("Reshape", ["u", "s3"], "c", "r3"),  # [0, 0, 0, -1]: the Unsqueeze's known dims
        _node("Reshape", ["x", "same"], "d", "r_identity"),
        _node("Relu", ["b"], "y1", "relu1"),
        _node("Relu", ["c"], "y2", "relu2"),
        _node("Relu", ["d"], "y3", "relu3"),
    ]
    inits = {
        "s1": np.array([6, 4], np.int64),
        "s2": np.array([0, -1], np.int64),
        "axes": np.array([0], np.int64),
        "s3": np.array([0, 0, 0, -1], np.int64),
        "same": np.array([2, 3, 4], np.int64),
    }
    model = _model(
        nodes,
        [("x", [2, 3, 4])],
        [("y1", [6, 4]), ("y2", [1, 2, 3, 4]), ("y3", [2, 3, 4])],
        inits,
    )
    result = optimize(model, passes=LAYOUT, strict=True)
    reshapes = {n.outputs[0].name: n for n in result.after.graph if n.op_type == "Reshape"}
    assert set(reshapes) == {"b", "c"}
    assert all(n.inputs[0].name == "x" for n in reshapes.values())
    assert list(reshapes["b"].inputs[1].const) == [6, -1]
    assert list(reshapes["c"].inputs[1].const) == [1, 2, 3, -1]
    assert result.fate("r_identity").kind == "eliminated"
    _same_outputs(result, {"x": _rand(2, 3, 4)})


def test_a_zero_copied_from_an_unknown_dim_is_refused():
    nodes = [
        _node("Flatten", ["x"], "f", "flatten", axis=1),
        _node("Reshape", ["f", "s"], "y", "reshape"),
    ]
    model = _model(
        nodes, [("x", ["batch", 3, 4])], [("y", ["batch", 2, 6])], {"s": np.array([0, 2, 6])}
    )
    result = optimize(model, passes=LAYOUT, strict=True)
    assert not result.changes
    assert [r.reason for r in result.rejected] == [
        "the second Reshape's shape [0, 2, 6] copies dim 0 (a 0) from the Flatten's output, "
        "whose size is not known here"
    ]


# -- the guard: optimized models compute what the originals compute -----------------------------

TINY = [name for name in zoo.names() if name.startswith("tiny_")]


@pytest.fixture(scope="module")
def baselines() -> dict:
    """Per (model, backend): the loaded model, feeds and its level-0 outputs."""
    out = {}
    for name in TINY:
        model = wb.load(zoo.get(name))
        feeds = wb.Session(model, "reference").random_feeds()
        for backend in BACKENDS:
            out[name, backend] = (model, feeds, wb.Session(model, backend).run(feeds))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("name", TINY)
def test_zoo_outputs_are_unchanged_by_optimization(baselines, name, level, backend):
    model, feeds, want = baselines[name, backend]
    result = optimize(model, level=level, backend=backend, strict=True)
    assert len(result.after.graph.nodes) <= len(model.graph.nodes)
    got = wb.Session(result.after, backend).run(feeds)
    for output in want:
        assert_close(got[output], want[output], err_msg=f"{output}\n{result.summary()}")
