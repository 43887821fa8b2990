"""Kernel calls bound once per arena (backends/base.py `bind`, `MemoryPlan.calls`): which
steps are bound, that a bound step reads its inputs anew on every run (outputs equal to
unbound runs on changing feeds, every thread split taken), that a new thread count binds
again, and where a kernel refuses to bind (a copied input, a fresh output, a bias given at
run time)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import workbench as wb
from workbench.engine.backends.x86 import autotune
from workbench.testing import assert_close

rng = np.random.default_rng(23)
pytestmark = pytest.mark.usefixtures("split_and_select")


def f32(*shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def graph_model(
    nodes: list, inputs: list, outputs: list, inits: dict, shapes: tuple = ()
) -> wb.Model:
    """A model of `nodes` (workbench ops among them), inputs, outputs and the `shapes` of
    intermediates (name, shape): the channels-last kernels read their input's shape."""

    def info(name: str, shape: list[int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)

    graph = helper.make_graph(
        nodes,
        "g",
        [info(*v) for v in inputs],
        [info(*v) for v in outputs],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()],
        value_info=[info(*v) for v in shapes],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("workbench", 1)]
    return wb.load(helper.make_model(graph, opset_imports=opsets, ir_version=8), check=False)


def _conv(name: str, ins: list[str], out: str, **attrs) -> object:
    return helper.make_node("FusedConvNHWC", ins, [out], name=name, domain="workbench", **attrs)


def _chain() -> wb.Model:
    """Channels-last convs of each kind between two plain ops (so that every conv reads and
    writes arena buffers): a 3x3 stride-2 conv (windows + GEMM), a depthwise one with a
    Clip, a 1x1 with the first conv's output as residual, then a MatMul with a bias."""
    c, m = 5, 12
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="in_relu"),
        _conv("stem", ["a", "w1", "b1"], "s", strides=[2, 2], pads=[1, 1, 1, 1]),
        _conv(
            "dw",
            ["s", "w2", "b2"],
            "d",
            group=m,
            pads=[1, 1, 1, 1],
            activation="Clip",
            activation_params=[0.0, 6.0],
        ),
        _conv("pw", ["d", "w3", "b3", "s"], "p", activation="Relu"),
        helper.make_node("FusedMatMul", ["p", "wm", "bm"], ["q"], name="mm", domain="workbench"),
        helper.make_node("Relu", ["q"], ["y"], name="out_relu"),
    ]
    inits = {
        "w1": f32(m, c, 3, 3), "b1": f32(m), "w2": f32(m, 1, 3, 3), "b2": f32(m),
        "w3": f32(m, m, 1, 1), "b3": f32(m), "wm": f32(m, 7), "bm": f32(7),
    }  # fmt: skip
    shapes = [("a", [1, 11, 9, c])] + [(v, [1, 6, 5, m]) for v in "sdp"] + [("q", [1, 6, 5, 7])]
    return graph_model(nodes, [("x", [1, 11, 9, c])], [("y", [1, 6, 5, 7])], inits, shapes)


def _bound_ops(sess: wb.Session) -> list[str]:
    calls = sess.memory.calls(sess.backend.binding_token())
    return [step.node.name for (step, *_), call in zip(sess.memory.program(), calls) if call]


def test_bound_steps_read_their_inputs_anew_on_every_run():
    model = _chain()
    sess = wb.Session(model, "x86", level=0)
    ref = wb.Session(model, "reference", level=0)
    assert not sess.plan.fallbacks
    feeds = [{"x": f32(1, 11, 9, 5)} for _ in range(4)]
    sess.run(feeds[0])  # records the shapes; the next run binds
    for f in feeds + feeds[::-1]:
        assert_close(sess.run(f)["y"], ref.run(f)["y"], rtol=1e-4, atol=1e-5)
    # the convs and the product read only arena buffers and constants; the ops reading the
    # feed or writing the graph output do not
    assert _bound_ops(sess) == ["stem", "dw", "pw", "mm"]


def test_bound_convs_share_their_windows_buffer():
    """Two windows + GEMM convs bound to one arena take their windows from the arena's
    one work buffer (`BindScratch`), which the larger asks for; they run one after
    another, so each run on new feeds still matches the reference."""
    c, m = 5, 6
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="in_relu"),
        _conv("c1", ["a", "w1", "b1"], "s", strides=[2, 2], pads=[1, 1, 1, 1]),
        _conv("c2", ["s", "w2", "b2"], "t", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["t"], ["y"], name="out_relu"),
    ]
    inits = {"w1": f32(m, c, 3, 3), "b1": f32(m), "w2": f32(m, m, 3, 3), "b2": f32(m)}
    shapes = [("a", [1, 11, 9, c]), ("s", [1, 6, 5, m]), ("t", [1, 3, 3, m])]
    model = graph_model(nodes, [("x", [1, 11, 9, c])], [("y", [1, 3, 3, m])], inits, shapes)
    sess = wb.Session(model, "x86", level=0)
    ref = wb.Session(model, "reference", level=0)
    feeds = [{"x": f32(1, 11, 9, 5)} for _ in range(3)]
    sess.run(feeds[0])  # records the shapes; the next run binds
    for f in feeds + feeds[::-1]:
        assert_close(sess.run(f)["y"], ref.run(f)["y"], rtol=1e-4, atol=1e-5)
    assert _bound_ops(sess) == ["c1", "c2"]
    (buf,) = sess.memory.scratch._bufs.values()
    assert buf.size == 6 * 5 * 3 * 3 * c  # c1's windows: 30 pixels x 45 (c2's: 9 x 54)


def test_each_gemm_algorithm_binds(gemm_alg):
    model = _chain()
    with autotune.settings(force={"MatMul": gemm_alg}):
        sess = wb.Session(model, "x86", level=0)
    ref = wb.Session(model, "reference", level=0)
    for seed in range(3):
        f = {"x": f32(1, 11, 9, 5) + seed}
        assert_close(sess.run(f)["y"], ref.run(f)["y"], rtol=1e-4, atol=1e-5)
    assert "pw" in _bound_ops(sess) and "mm" in _bound_ops(sess)


def test_a_new_thread_count_binds_again():
    from workbench import _threads

    model = _chain()
    sess = wb.Session(model, "x86", level=0)
    f = {"x": f32(1, 11, 9, 5)}
    want = wb.Session(model, "reference", level=0).run(f)["y"]
    sess.run(f)
    sess.run(f)
    memory = sess.memory
    before = list(memory.calls(sess.backend.binding_token()))
    _threads.apply(1)  # (the fixture restores the count)
    assert_close(sess.run(f)["y"], want, rtol=1e-4, atol=1e-5)
    after = memory.calls(sess.backend.binding_token())
    assert sess.memory is memory and after is not before
    assert [bool(c) for c in after] == [bool(c) for c in before]
    assert all(a is not b for a, b in zip(after, before) if a)


def test_kernels_refuse_to_bind_where_the_call_would_not_see_the_next_values():
    model = _chain()
    sess = wb.Session(model, "x86", level=0)
    pw = next(s for s in sess.plan.steps if s.node.name == "pw")
    x, w, b, z = f32(1, 6, 5, 12), f32(12, 12, 1, 1), f32(12), f32(1, 6, 5, 12)
    out = np.empty((1, 6, 5, 12), np.float32)
    assert pw.run.bind(x, w, b, z, out=(out,)) is not None
    # a strided input is copied per call, a missing buffer allocated per call
    xt = np.transpose(f32(1, 5, 6, 12), (0, 2, 1, 3))
    assert pw.run.bind(xt, w, b, z, out=(out,)) is None
    assert pw.run.bind(x, w, b, z, out=None) is None
    assert pw.run.bind(x, w, b, z[:, :, :, :1], out=(out,)) is None  # broadcast residual


def test_a_bias_given_at_run_time_is_not_bound():
    """B as a graph input: the kernel copies it per call, so its call stays unbound."""
    c, m = 4, 6
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="in_relu"),
        helper.make_node("Relu", ["bias"], ["bb"], name="bias_relu"),
        _conv("pw", ["a", "w", "bb"], "p"),
        helper.make_node("Relu", ["p"], ["y"], name="out_relu"),
    ]
    model = graph_model(
        nodes,
        [("x", [1, 3, 4, c]), ("bias", [m])],
        [("y", [1, 3, 4, m])],
        {"w": f32(m, c, 1, 1)},
        [("a", [1, 3, 4, c]), ("bb", [m]), ("p", [1, 3, 4, m])],
    )
    sess = wb.Session(model, "x86", level=0)
    ref = wb.Session(model, "reference", level=0)
    for _ in range(3):
        f = {"x": f32(1, 3, 4, c), "bias": f32(m)}
        assert_close(sess.run(f)["y"], ref.run(f)["y"], rtol=1e-4, atol=1e-5)
    assert _bound_ops(sess) == []


def test_a_classifier_tail_binds_its_pool_and_single_row_product():
    """The channels-last global average pool (a ReduceMean over H, W: `_sum_call`) and the
    classifier's one-row Gemm (gemv.py) between two plain ops bind, and read anew on each
    run; a mean into a fresh output, or into a strided one, does not bind."""
    c, n = 37, 19
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="in_relu"),
        helper.make_node("ReduceMean", ["a"], ["m"], name="pool", axes=[1, 2], keepdims=0),
        helper.make_node("Gemm", ["m", "w", "b"], ["g"], name="fc", transB=1),
        helper.make_node("Relu", ["g"], ["y"], name="out_relu"),
    ]
    inits = {"w": f32(n, c), "b": f32(n)}
    shapes = [("a", [1, 7, 5, c]), ("m", [1, c]), ("g", [1, n])]
    model = graph_model(nodes, [("x", [1, 7, 5, c])], [("y", [1, n])], inits, shapes)
    sess = wb.Session(model, "x86", level=0)
    ref = wb.Session(model, "reference", level=0)
    feeds = [{"x": f32(1, 7, 5, c)} for _ in range(3)]
    sess.run(feeds[0])  # records the shapes; the next run binds
    for f in feeds + feeds[::-1]:
        assert_close(sess.run(f)["y"], ref.run(f)["y"], rtol=1e-5, atol=1e-5)
    assert _bound_ops(sess) == ["pool", "fc"]
    pool = next(s for s in sess.plan.steps if s.node.name == "pool")
    x, out = f32(1, 7, 5, c), np.empty((1, c), np.float32)
    assert pool.run.bind(x, out=(out,)) is not None
    assert pool.run.bind(x, out=None) is None
    assert pool.run.bind(x, out=(np.empty((1, 2 * c), np.float32)[:, ::2],)) is None
