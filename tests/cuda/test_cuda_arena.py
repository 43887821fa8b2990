"""The memory planner's arena on the cuda backend: one device allocation, every planned
intermediate a view into it written by its kernel (`out=`), host tensors around fallbacks
outside it, outputs unchanged from run to run."""

from __future__ import annotations

import numpy as np
from onnx import helper

import workbench as wb
from workbench.engine.backends.cuda import _launch
from workbench.engine.memory import _address
from workbench.testing import assert_close, graph_model


def _model():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["v"]),  # a view: no memory of its own
        helper.make_node("CumSum", ["v", "axis"], ["c"]),  # no cuda kernel: a fallback
        helper.make_node("Add", ["c", "v"], ["a"]),
        helper.make_node("Softmax", ["a"], ["y"], axis=-1),
    ]
    inits = {
        "w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3),
        "shape": np.array([3, 2], np.int64),
        "axis": np.array(1, np.int64),
    }
    return graph_model(nodes, [("x", [2, 4])], [("y", [3, 2])], inits)


X = np.arange(8, dtype=np.float32).reshape(2, 4) / 4 - 1


def test_arena_is_one_device_allocation_and_kernels_write_into_it():
    sess = wb.Session(_model(), "cuda")
    want = wb.Session(_model(), "reference").run({"x": X})["y"]
    for _ in range(3):  # the first run records shapes; the next ones run in the arena
        assert_close(sess.run({"x": X})["y"], want)
    mem = sess.memory
    assert _launch.is_device(mem.arena) and mem.arena.nbytes == mem.arena_bytes > 0
    assert mem.copies == []  # every planned value is written by its own kernel, no copy-in
    kinds = {v.name: v.kind for v in mem.values}
    assert kinds["h"] == "arena" and kinds["v"] == "view" and kinds["a"] in ("arena", "inplace")
    host = [v for v in mem.values if v.why.startswith("not in the arena")]
    assert {v.name for v in host} == {"c", "CopyToHost(v)"}  # the fallback's host tensors

    env = sess.execute(sess.prepare({"x": X}))
    lo = _address(mem.arena)
    for v in mem.values:
        if v.offset is not None and v.last < len(sess.plan.steps) - 1 and env[v.slot] is None:
            continue  # freed by the run: nothing to check
        if v.offset is not None and env[v.slot] is not None:
            assert _address(env[v.slot]) - lo == v.offset, v.name


def test_profile_reports_the_device_arena_of_the_plan():
    prof = wb.profile(_model(), backend="cuda", repeat=2, warmup=2, level=0, save=False)
    mem = prof.meta["memory"]
    assert mem["arena_bytes"] > 0 and mem["copy_bytes"] == 0
    sess = wb.Session(_model(), "cuda")
    plan = sess.memory_plan({"x": X})
    assert mem["arena_bytes"] == plan.arena_bytes
    assert mem["lower_bound_bytes"] == plan.lower_bound_bytes


def test_fp16_arena_holds_half_tensors():
    sess = wb.Session(_model(), "cuda", precision="fp16")
    want = wb.Session(_model(), "reference").run({"x": X})["y"]
    for _ in range(2):
        got = sess.run({"x": X})["y"]
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), want, rtol=5e-3, atol=5e-3)
    assert {v.dtype for v in sess.memory.values if v.kind == "arena"} == {"<f2"}
