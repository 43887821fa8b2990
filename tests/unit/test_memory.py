"""The memory planner and the arena run: offsets never collide, in-place reuse happens only
when the input is dead, and the executor's buffers really are the planned ones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench import zoo
from workbench.engine.memory import MemoryPlan, PeakRSS, assign_offsets, lower_bound
from workbench.testing import assert_close, node_model

TINY = ["tiny_resnet", "tiny_mobilenet_v2", "tiny_bert", "tiny_gpt2"]
FULL = ["resnet18", "resnet50", "mobilenet_v2", "bert_6l", "bert", "gpt2"]


# -- the planner on hand-made lifetimes ---------------------------------------------------------
def collisions(sizes, firsts, lasts, offsets) -> list[tuple[int, int]]:
    """Every pair alive at a common step whose byte ranges overlap: O(n^2), obviously right."""
    bad = []
    for a, b in itertools.combinations(range(len(sizes)), 2):
        alive_together = firsts[a] <= lasts[b] and firsts[b] <= lasts[a]
        disjoint = offsets[a] + sizes[a] <= offsets[b] or offsets[b] + sizes[b] <= offsets[a]
        if alive_together and not disjoint and sizes[a] and sizes[b]:
            bad.append((a, b))
    return bad


def test_lower_bound_counts_a_step_inputs_and_outputs_together():
    # a: steps 0-1, b: 1-2, c: 3 only; at step 1, a (read) and b (written) coexist
    assert lower_bound([4, 8, 2], [0, 1, 3], [1, 2, 3]) == 12
    assert lower_bound([5], [2], [2]) == 5
    assert lower_bound([], [], []) == 0


def test_a_chain_ping_pongs_between_two_blocks():
    sizes, firsts, lasts = [64] * 6, [0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]
    offsets, total = assign_offsets(sizes, firsts, lasts)
    assert total == 128 == lower_bound(sizes, firsts, lasts)
    assert not collisions(sizes, firsts, lasts, offsets)
    assert offsets[0] == offsets[2] == offsets[4] != offsets[1]


@pytest.mark.parametrize("seed", range(20))
def test_random_lifetimes_never_collide_and_stay_near_the_bound(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    sizes = [int(s) * 64 for s in rng.integers(0, 50, n)]
    firsts = [int(f) for f in rng.integers(0, 40, n)]
    lasts = [f + int(d) for f, d in zip(firsts, rng.integers(0, 12, n))]
    offsets, total = assign_offsets(sizes, firsts, lasts)
    assert not collisions(sizes, firsts, lasts, offsets)
    assert all(o % 64 == 0 for o in offsets)  # sizes are multiples of 64: so are offsets
    assert total == max((o + s for o, s in zip(offsets, sizes)), default=0)
    assert lower_bound(sizes, firsts, lasts) <= total


def _model(nodes, inputs, outputs, inits=()) -> wb.Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return wb.load(proto)


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _plan_values(mp: MemoryPlan) -> dict:
    return {v.name: v for v in mp.values}


def test_inplace_reuse_when_the_input_dies_and_not_when_it_is_read_later():
    n = helper.make_node
    model = _model(
        [
            n("Exp", ["x"], ["a"]),
            n("Relu", ["a"], ["b"]),  # a is read again by the Add: b needs its own block
            n("Add", ["a", "b"], ["c"]),  # a and b both die here: c takes one of them
            n("Tanh", ["c"], ["d"]),  # c dies here: d takes c's block
            n("ReduceSum", ["d"], ["y"], keepdims=1),
        ],
        [_f("x", ["n", 8])],
        [_f("y", [1, 1])],
    )
    sess = wb.Session(model, "x86")
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    mp = sess.memory_plan({"x": x})
    v = _plan_values(mp)
    assert v["b"].kind == "arena" and v["b"].offset != v["a"].offset
    assert v["c"].kind == "inplace" and v["c"].aliased_to == "a" and v["c"].offset == v["a"].offset
    assert v["d"].kind == "inplace" and v["d"].aliased_to == "c" and v["d"].offset == v["a"].offset
    assert v["y"].kind == "dynamic" and "graph output" in v["y"].why
    assert mp.arena_bytes == mp.lower_bound_bytes == 2 * 4 * 8 * 4
    env = _arena_env(sess, {"x": x})
    _assert_env_matches_plan(sess, env)
    want = np.tanh(np.exp(x) + np.maximum(np.exp(x), 0)).sum(keepdims=True)
    assert_close(sess.run({"x": x})["y"], want.reshape(1, 1))


def test_a_view_shares_its_input_block_and_keeps_it_alive():
    n = helper.make_node
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [8, 4])
    model = _model(
        [
            n("Exp", ["x"], ["a"]),
            n("Reshape", ["a", "shape"], ["r"]),  # a view of a
            n("Neg", ["x"], ["m"]),
            n("MatMul", ["r", "m"], ["p"]),  # r read here: a's block lives until now
            n("Relu", ["p"], ["y"]),
        ],
        [_f("x", [4, 8])],
        [_f("y", [8, 8])],
        [shape],
    )
    sess = wb.Session(model, "x86")
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    mp = sess.memory_plan({"x": x})
    v = _plan_values(mp)
    assert v["r"].kind == "view" and v["r"].aliased_to == "a" and v["r"].offset == v["a"].offset
    buffer = mp.buffers[v["a"].buffer]
    assert buffer.last == 3 and {"a", "r"} <= set(buffer.values)
    assert v["m"].offset != v["a"].offset  # m is alive with a's block: not on top of it
    _assert_env_matches_plan(sess, _arena_env(sess, {"x": x}))
    assert_close(sess.run({"x": x})["y"], np.maximum(np.exp(x).reshape(8, 4) @ -x, 0))


# -- the arena run on the zoo -------------------------------------------------------------------
def _arena_env(sess: wb.Session, feeds: dict) -> list:
    """An env after a run in the arena (the first run of a signature only records it)."""
    sess.run(feeds)
    return sess.execute(sess.prepare(feeds))


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _assert_env_matches_plan(sess: wb.Session, env: list) -> None:
    """Every planned value's array is a view of the arena at its planned offset, and no two
    buffers alive at a common step overlap."""
    mp = sess.memory
    assert mp is not None and mp.arena is not None
    base = _address(mp.arena)
    placed = [v for v in mp.values if v.offset is not None]
    assert placed
    for v in placed:
        a = env[v.slot]
        assert isinstance(a, np.ndarray), v.name
        assert a.shape == v.shape and a.dtype.str == v.dtype, v.name
        assert _address(a) - base == v.offset, (v.name, v.kind)
        if a.nbytes:
            assert np.shares_memory(a, mp.arena), v.name
    for v in mp.dynamic:
        a = env[v.slot]
        assert a is None or not isinstance(a, np.ndarray) or not np.shares_memory(a, mp.arena)
    b = mp.buffers
    spans = ([x.nbytes for x in b], [x.first for x in b], [x.last for x in b])
    assert not collisions(*spans, [x.offset for x in b])
    assert max(x.offset + x.nbytes for x in b) <= mp.arena_bytes


def _check_model(name: str, *, dims: dict | None = None) -> MemoryPlan:
    model = wb.load(zoo.get(name))
    sess = wb.Session(model, "x86")
    feeds = sess.random_feeds(dims)
    plain = wb.Session(model, "x86", arena=False).run(feeds)
    first = sess.run(feeds)  # records the shapes
    env = sess.execute(sess.prepare(feeds))  # runs in the arena
    _assert_env_matches_plan(sess, env)
    mp = sess.memory
    assert mp.lower_bound_bytes > 0
    assert mp.arena_bytes <= 1.1 * mp.lower_bound_bytes, mp.summary()
    second = sess.run(feeds)
    for out in plain:
        np.testing.assert_array_equal(first[out], plain[out])
        np.testing.assert_array_equal(second[out], plain[out])
    return mp


@pytest.mark.parametrize("name", TINY)
def test_tiny_zoo_runs_in_its_planned_arena(name):
    mp = _check_model(name)
    model = wb.load(zoo.get(name))
    ref = wb.Session(model, "reference")
    feeds = ref.random_feeds()
    want = ref.run(feeds)
    sess = wb.Session(model, "x86")
    for _ in range(2):
        got = sess.run(feeds)
        for out in want:
            assert_close(got[out], want[out], atol=1e-4, err_msg=out)
    assert mp.timeline and max(t.live_bytes for t in mp.timeline) == mp.lower_bound_bytes
    assert mp.weight_bytes > 0 and mp.input_bytes > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_zoo_runs_in_its_planned_arena(name):
    _check_model(name)


def test_two_batch_sizes_on_one_session_and_outputs_survive_later_runs():
    model = wb.load(zoo.get("tiny_bert"))
    sess = wb.Session(model, "x86")
    ref = wb.Session(model, "reference")
    runs = []
    for batch in (1, 2, 1, 2, 2, 1):
        feeds = sess.random_feeds({"batch": batch, "sequence": 8}, seed=batch)
        got = sess.run(feeds)
        runs.append((got, {k: v.copy() for k, v in got.items()}))
        want = ref.run(feeds)
        for out in want:
            assert got[out].shape[0] == batch
            assert_close(got[out], want[out], atol=1e-4)
    for got, snapshot in runs:  # what earlier runs handed out was never written again
        for out in got:
            np.testing.assert_array_equal(got[out], snapshot[out])
    assert len(sess._plans) == 2


def test_keep_runs_without_the_arena_so_intermediates_stay():
    model = wb.load(zoo.get("tiny_resnet"))
    sess = wb.Session(model, "x86")
    feeds = sess.random_feeds()
    sess.run(feeds)
    sess.run(feeds)  # the arena exists from this run on
    sess.run(feeds, keep=True)
    kept = {k: v.copy() for k, v in sess.intermediates.items()}
    mp = sess.memory
    assert mp is not None and mp.arena is not None
    for k, v in sess.intermediates.items():
        assert not np.shares_memory(v, mp.arena), k
    sess.run(sess.random_feeds(seed=3))  # an arena run with other data
    for k, v in sess.intermediates.items():
        np.testing.assert_array_equal(v, kept[k])


def test_a_data_dependent_shape_is_replanned_as_dynamic():
    n = helper.make_node
    model = _model(
        [
            n("Relu", ["x"], ["r"]),
            n("NonZero", ["r"], ["nz"]),  # [1, count of positives]: varies with the data
            n("Transpose", ["nz"], ["t"]),
            n("Cast", ["t"], ["c"], to=TensorProto.FLOAT),
            n("ReduceSum", ["c"], ["s"], keepdims=0),
            n("Add", ["s", "x"], ["y"]),
        ],
        [_f("x", [6])],
        [_f("y", [6])],
    )
    sess = wb.Session(model, "x86")
    rng = np.random.default_rng(2)
    for positives in (2, 2, 4, 1, 1, 5):
        x = -np.abs(rng.standard_normal(6)).astype(np.float32)
        x[:positives] *= -1
        want = np.float32(np.arange(positives).sum()) + x
        assert_close(sess.run({"x": x})["y"], want)
    v = _plan_values(sess.memory)
    assert sess.memory.varying
    assert v["nz"].kind == "dynamic" and "data-dependent" in v["nz"].why
    assert v["t"].kind == "dynamic" and v["s"].kind == "dynamic"  # computed from nz
    assert v["r"].kind == "arena"
    _assert_env_matches_plan(sess, sess.execute(sess.prepare({"x": x})))


def test_memory_plan_of_shapes_and_its_report():
    model = wb.load(zoo.get("tiny_bert"))
    sess = wb.Session(model, "x86")
    assert sess.memory is None
    shapes = {name: (2, 16) for name in ("input_ids", "attention_mask", "token_type_ids")}
    mp = sess.memory_plan(shapes=shapes)
    assert mp is sess.memory
    assert mp.recorded.signature[0][0] == (2, 16)
    assert sess.memory_plan(shapes=shapes) is mp  # planned once per signature
    frame = mp.frame()
    assert len(frame) == len(mp.values) and {"name", "offset", "nbytes", "first"} <= set(frame)
    assert "arena" in mp.summary() and "lower bound" in repr(mp)
    names = {v.name for v in mp.values if v.offset is not None}
    assert set().union(*(t.live for t in mp.timeline)) == names
    plain = wb.Session(model, "x86", arena=False)
    with pytest.raises(wb.WorkbenchError, match="no memory plan"):
        plain.memory_plan(shapes=shapes)
    assert plain.memory is None


def test_peak_rss_of_a_block():
    with PeakRSS() as m:
        big = np.ones(64 << 20, np.uint8)  # 64 MiB, every page touched
        del big
    assert m.peak_bytes >= m.start_bytes
    if m.reset:
        assert m.peak_bytes - m.start_bytes >= 60 << 20


# -- the kernels' destination-passing form ----------------------------------------------------
rng = np.random.default_rng(0)
F = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
M = rng.standard_normal((4, 6)).astype(np.float32)
V = rng.standard_normal(6).astype(np.float32)
I = rng.integers(-5, 5, (3, 4)).astype(np.int64)
B = rng.random((3, 4)) > 0.5
W3 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
W6 = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)  # grouped: 2 per group of 3
T = rng.standard_normal((300, 64)).astype(np.float32)  # an embedding table
S = np.float32(1.5).reshape(())

# (op, inputs, attrs, n_outputs, consts, opset)
CASES = [
    ("Add", [M, V], {}, 1, (), 17),
    ("Sub", [V, M], {}, 1, (1,), 17),
    ("Mul", [S, S], {}, 1, (), 17),
    ("Div", [I, I[:1] + 7], {}, 1, (), 17),
    ("Div", [M, V], {}, 1, (), 17),
    ("Pow", [M, np.float32(2.0).reshape(())], {}, 1, (1,), 17),
    ("Pow", [np.abs(M), np.float32(0.5).reshape(())], {}, 1, (1,), 17),
    ("Pow", [M, np.float32(3.0).reshape(())], {}, 1, (), 17),
    ("Exp", [M], {}, 1, (), 17),
    ("Abs", [I], {}, 1, (), 17),
    ("Greater", [M, V], {}, 1, (), 17),
    ("And", [B, B.T[:1].T], {}, 1, (), 17),
    ("Not", [B], {}, 1, (), 17),
    ("Where", [B, I, np.int64(7).reshape(())], {}, 1, (), 17),
    ("Relu", [M], {}, 1, (), 17),
    ("LeakyRelu", [M], {"alpha": 0.1}, 1, (), 17),
    ("PRelu", [M, V], {}, 1, (), 17),
    ("PRelu", [V, M], {}, 1, (), 17),
    ("Clip", [M, np.float32(-0.5), np.float32(0.5)], {}, 1, (1, 2), 17),
    ("Clip", [M, np.float32(-0.5), np.float32(0.5)], {}, 1, (), 17),
    ("Clip", [M], {}, 1, (), 17),
    ("Clip", [M], {"min": -0.2}, 1, (), 6),
    ("Sigmoid", [M], {}, 1, (), 17),
    ("Sigmoid", [S], {}, 1, (), 17),
    ("Tanh", [M], {}, 1, (), 17),
    ("HardSigmoid", [M], {}, 1, (), 17),
    ("HardSwish", [M], {}, 1, (), 17),
    ("Erf", [M], {}, 1, (), 17),
    ("Gelu", [M], {}, 1, (), 20),
    ("Gelu", [M], {"approximate": "tanh"}, 1, (), 20),
    ("Elu", [M], {}, 1, (), 17),
    ("Softplus", [M], {}, 1, (), 17),
    ("Mish", [M], {}, 1, (), 18),
    ("Softmax", [F], {"axis": 1}, 1, (), 11),
    ("Softmax", [F], {}, 1, (), 17),
    ("LogSoftmax", [F], {"axis": 2}, 1, (), 17),
    ("BatchNormalization", [F, *(np.abs(V[:3]) + 0.5 for _ in range(4))], {}, 1, (1, 2, 3, 4), 15),
    ("LayerNormalization", [F, V[:5], V[1:]], {}, 3, (1, 2), 17),
    ("LayerNormalization", [F, V[:5]], {"axis": 1}, 1, (), 17),
    ("InstanceNormalization", [F, V[:3], V[3:]], {}, 1, (1, 2), 17),
    ("Gemm", [M, M.copy(), V[:4]], {"alpha": 0.5, "transB": 1}, 1, (1, 2), 17),
    ("Gemm", [M.T.copy(), M.T.copy(), V[:1]], {"transA": 1, "beta": 2.0}, 1, (), 17),
    ("MatMul", [F[0], M[:, :5].T.copy()], {}, 1, (1,), 17),
    ("MatMul", [F, F], {}, 1, (), 17),
    ("MatMul", [V, V], {}, 1, (), 17),
    ("Conv", [F, W3], {"pads": [1, 1, 1, 1], "strides": [2, 1]}, 1, (1,), 17),
    ("Conv", [F, W6, V], {"group": 3, "pads": [1, 1, 1, 1]}, 1, (), 17),
    ("Conv", [F, W3[:3, :1]], {"group": 3}, 1, (1,), 17),
    ("Conv", [F, W3[:, :, :1, :1]], {}, 1, (1,), 17),
    ("ConvTranspose", [F, W3.transpose(1, 0, 2, 3).copy()], {"strides": [2, 2]}, 1, (1,), 17),
    ("MaxPool", [F], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 2, (), 17),
    ("AveragePool", [F], {"kernel_shape": [2, 2], "strides": [2, 2]}, 1, (), 17),
    ("GlobalAveragePool", [F], {}, 1, (), 17),
    ("GlobalMaxPool", [F], {}, 1, (), 17),
    ("ReduceMean", [F], {"axes": [-1], "keepdims": 1}, 1, (), 17),
    ("ReduceSum", [I, np.array([0])], {"keepdims": 0}, 1, (1,), 17),
    ("ReduceMax", [F, np.array([1, 2])], {}, 1, (1,), 18),
    ("ReduceProd", [M], {"axes": [0]}, 1, (), 17),
    ("Transpose", [F], {"perm": [0, 2, 3, 1]}, 1, (), 17),
    ("Concat", [M, M, M], {"axis": 0}, 1, (), 17),
    ("Split", [M, np.array([2, 4])], {"axis": 1}, 2, (1,), 17),
    ("Slice", [F, np.array([1]), np.array([4]), np.array([3])], {}, 1, (1, 2, 3), 17),
    ("Gather", [M, np.int64(2).reshape(())], {"axis": 1}, 1, (), 17),
    ("Gather", [M, I[:2] % 4], {}, 1, (), 17),
    ("Gather", [T, rng.integers(-300, 300, (2, 200))], {}, 1, (), 17),  # > 64 KiB out
    ("Cast", [M], {"to": TensorProto.INT32}, 1, (), 17),
    ("CastLike", [I, M[:1, :1]], {}, 1, (), 17),
    ("Shape", [F], {"start": 1}, 1, (), 17),
    ("Constant", [], {"value": helper.make_tensor("v", TensorProto.FLOAT, [2], [1, 2])}, 1, (), 17),
]


def _garbage_like(a: np.ndarray) -> np.ndarray:
    g = np.empty_like(a)
    g.reshape(-1).view(np.uint8).fill(
        0xAB
    )  # no kernel output looks like this: unwritten bytes show
    return g


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_kernels_write_into_out_and_in_place(case):
    op, inputs, attrs, n_out, consts, opset = case
    model, feeds = node_model(op, inputs, attrs, n_outputs=n_out, consts=consts, opset=opset)
    sess = wb.Session(wb.load(model, check=False), "x86")
    (step,) = sess.plan.steps
    assert step.writes_out and not step.kernel.fallback, f"{op} does not write into out"
    env = sess.prepare(feeds)
    args = [env[i] for i in step.inputs]
    fresh = step.run(*args)
    out = tuple(_garbage_like(np.asarray(r)) for r in fresh)
    got = step.run(*args, out=out)
    for r, o, g in zip(fresh, out, got):
        assert g is o
        np.testing.assert_array_equal(o, r)
    partial = (out[0], *(None,) * (len(out) - 1))  # the others it allocates itself
    got = step.run(*args, out=partial)
    assert got[0] is out[0] and all(np.array_equal(g, r) for g, r in zip(got, fresh))
    for j in step.inplace:
        a = args[j]
        if a.shape != fresh[0].shape or a.dtype != fresh[0].dtype:
            continue
        mine = list(args)
        mine[j] = a.copy()
        got = step.run(*mine, out=(mine[j], *(None,) * (len(out) - 1)))
        assert got[0] is mine[j]
        np.testing.assert_array_equal(got[0], fresh[0], err_msg=f"{op} in place over input {j}")


def test_gather_into_out_still_refuses_an_index_out_of_range():
    table = np.zeros((300, 64), np.float32)
    model, feeds = node_model("Gather", [table, np.array([[1, -300, 300]] * 200)])
    sess = wb.Session(wb.load(model, check=False), "x86")
    (step,) = sess.plan.steps
    env = sess.prepare(feeds)
    out = (np.empty((200, 3, 64), np.float32),)
    with pytest.raises(IndexError, match="index 300 is out of bounds for axis 0 with size 300"):
        step.run(*[env[i] for i in step.inputs], out=out)


def test_if_and_loop_outputs_in_the_arena():
    """An If that returns an outer value in one branch (a view) and a fresh one in the
    other, and a Loop whose stacked output grows with the trip count (data-dependent)."""
    n, f = helper.make_node, _f
    then_g = helper.make_graph([n("Identity", ["a"], ["t"])], "then", [], [f("t", [3])])
    else_g = helper.make_graph([n("Neg", ["a"], ["e"])], "else", [], [f("e", [3])])
    body = helper.make_graph(
        [n("Add", ["v_in", "a"], ["v_out"]), n("Mul", ["v_in", "a"], ["scan"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            f("v_in", [3]),
        ],
        [
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            f("v_out", [3]),
            f("scan", [3]),
        ],
    )
    model = _model(
        [
            n("Exp", ["x"], ["a"]),
            n("If", ["cond"], ["c"], then_branch=then_g, else_branch=else_g),
            n("Relu", ["c"], ["r"]),
            n("Loop", ["trips", "", "r"], ["v", "stack"], body=body),
            n("ReduceSum", ["stack"], ["s"], keepdims=0),
            n("Add", ["v", "s"], ["y"]),
        ],
        [
            _f("x", [3]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("trips", TensorProto.INT64, []),
        ],
        [_f("y", [3])],
    )
    sess = wb.Session(model, "x86")
    x = np.array([0.5, -1.0, 2.0], np.float32)
    a = np.exp(x)
    for cond, trips in [(True, 2), (True, 2), (False, 2), (True, 3), (False, 1), (True, 1)]:
        v, rows = np.maximum(a if cond else -a, 0), []
        for _ in range(trips):
            rows.append(v * a)
            v = v + a
        want = v + np.sum(rows)
        feeds = {"x": x, "cond": np.array(cond), "trips": np.array(trips, np.int64)}
        assert_close(sess.run(feeds)["y"], want.astype(np.float32))
    v = _plan_values(sess.memory)
    assert v["stack"].kind == "dynamic" and "data-dependent" in v["stack"].why
    assert v["a"].kind == "arena"
    _assert_env_matches_plan(sess, sess.execute(sess.prepare(feeds)))
