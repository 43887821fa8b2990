"""The cuda backend's plan: copies as steps and profile rows, fallbacks with copies, a tiny
zoo model end to end, and the reason it is unavailable without a GPU or the simulator."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from onnx import helper

import workbench as wb
from workbench.testing import assert_close, graph_model


def _model():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("CumSum", ["r", "axis"], ["y"]),  # no cuda kernel: a fallback
    ]
    inits = {"w": np.ones((4, 3), np.float32), "axis": np.array(1, np.int64)}
    return graph_model(nodes, [("x", [2, 4])], [("y", [2, 3])], inits)


def test_copies_are_plan_steps_around_fallbacks():
    sess = wb.Session(_model(), "cuda")
    ops = [(k["op"], k["backend"], k["fallback"]) for k in sess.kernels()]
    assert ops == [
        ("CopyToDevice", "cuda", False),
        ("MatMul", "cuda", False),
        ("Relu", "cuda", False),
        ("CopyToHost", "cuda", False),
        ("CumSum", "reference", True),
        ("CopyToDevice", "cuda", False),
        ("CopyToHost", "cuda", False),
    ]
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    want = wb.Session(_model(), "reference").run({"x": x})["y"]
    assert_close(sess.run({"x": x})["y"], want)


def test_profile_shows_copy_rows_and_precision():
    prof = wb.profile(_model(), backend="cuda", repeat=1, warmup=1, level=0, save=False)
    k = prof.kernels
    copies = k[k.op.isin(["CopyToDevice", "CopyToHost"])]
    assert len(copies) == 4 and copies.transfer.all()
    assert prof.meta["precision"] == "fp32"
    from workbench.engine.backends import get_backend

    meta = get_backend("cuda").profile_meta()
    assert meta["timing"].startswith("perf_counter") and "simulator" in meta["device"]


def test_tiny_zoo_model_matches_reference():
    from workbench import zoo

    model = wb.load(zoo.get("tiny_resnet"))
    sess = wb.Session(model, "cuda", level=2)
    feeds = sess.random_feeds({"batch": 1})
    want = wb.Session(model, "reference").run(feeds)
    for _ in range(2):  # the second run is in the device arena the first one planned
        got = sess.run(feeds)
        for name in want:
            assert_close(got[name], want[name], rtol=1e-3, atol=1e-4)
    mem = sess.memory
    assert mem.arena is not None and mem.arena.nbytes == mem.arena_bytes > 0
    assert mem.copies == [] and not sess.plan.fallbacks  # every kernel writes its own output


def test_cuda_unavailable_without_device_says_why():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = "import workbench as wb; print([str(b) for b in wb.backends() if b.name == 'cuda'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = out.stdout.strip()
    assert "cuda" in line
    if "native" not in line:  # on a GPU machine cuda is native: nothing to explain
        assert "unavailable: no CUDA driver or GPU found" in line, line
