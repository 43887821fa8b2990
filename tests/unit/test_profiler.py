"""The profiler: per-kernel tables, FLOPs by hand, timing accounting, traces, the run store, CLI.

Timing is never asserted fast or slow here; what is asserted is accounting: every kernel's
stamps lie inside its run, so per run the kernels' sum never exceeds the end-to-end time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

import workbench as wb
from workbench import zoo
from workbench.cli import main
from workbench.engine.ir import Node, Value
from workbench.profiler import Profile, machine, profile, runs
from workbench.profiler.flops import Spec, node_bytes, node_flops
from workbench.profiler.store import load_run, runs_root, save_run
from workbench.testing import node_model

FAST = {"repeat": 3, "warmup": 1, "progress": False}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Runs in a fresh store; the machine's roofline measured small (and cached) in tmp."""
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    real_peak, real_bw = machine.measure_peak_gflops, machine.measure_bandwidth_gbps
    monkeypatch.setattr(machine, "measure_peak_gflops", lambda: real_peak(n=128, trials=1))
    monkeypatch.setattr(machine, "measure_bandwidth_gbps", lambda: real_bw(mib=2, trials=1))


def _load_unchecked(proto: onnx.ModelProto) -> wb.Model:
    # single fused-op models: onnx's checker cannot type their outputs
    return wb.load(proto, check=False)


def _fused_domain_ready() -> None:
    from workbench.engine.passes.optimize import all_passes

    all_passes()  # imports the fusion modules, which register the workbench ops' schemas


# -- the kernel table --------------------------------------------------------------------------


def test_kernel_table_columns_and_types():
    prof = profile("tiny_resnet", level=0, **FAST)
    sess = wb.Session(wb.load(zoo.get("tiny_resnet")), "x86")
    k = prof.kernels
    assert len(k) == len(sess.plan.steps)
    expected = {
        "kernel": "i",
        "node": "O",
        "op": "O",
        "backend": "O",
        "algorithm": "O",
        "fallback": "b",
        "transfer": "b",
        "origin": "O",
        "n_origin": "i",
        "in_shapes": "O",
        "out_shapes": "O",
        "median_ms": "f",
        "min_ms": "f",
        "max_ms": "f",
        "std_ms": "f",
        "pct": "f",
        "flops": "f",
        "bytes": "i",
        "gflop_s": "f",
        "gb_s": "f",
        "intensity": "f",
    }
    for col, kind in expected.items():
        assert col in k.columns, col
        got = k[col].dtype.kind
        assert got == kind or (kind == "O" and pd.api.types.is_string_dtype(k[col])), (col, got)
    assert list(k["node"]) == [s.node.name for s in sess.plan.steps]
    assert (k["min_ms"] <= k["median_ms"]).all() and (k["median_ms"] <= k["max_ms"]).all()
    assert k["pct"].sum() == pytest.approx(100.0)
    assert not k["fallback"].any() and not k["transfer"].any()
    assert (k["origin"] == k["node"]).all()  # level 0: every kernel is its own ONNX node
    conv = k[k["op"] == "Conv"].iloc[0]
    assert conv["algorithm"] == sess.plan.steps[int(conv["kernel"])].kernel.algorithm
    assert conv["in_shapes"].startswith("1x3x32x32, ")
    # gflop_s and intensity follow from the other columns
    rate = conv["flops"] / (conv["median_ms"] / 1e3) / 1e9
    assert conv["gflop_s"] == pytest.approx(rate)
    assert conv["intensity"] == pytest.approx(conv["flops"] / conv["bytes"])
    # per-op view adds up to the kernel table
    by = prof.by_op()
    assert by["kernels"].sum() == len(k)
    assert by["median_ms"].sum() == pytest.approx(k["median_ms"].sum())
    assert by.loc["Conv", "flops"] == pytest.approx(k.loc[k.op == "Conv", "flops"].sum())
    text = prof.summary()
    assert "tiny_resnet on x86" in text and "GFLOP" in text and str(prof.path) in text
    assert "tiny_resnet" in repr(prof)


def test_provenance_after_fusion():
    prof = profile("tiny_resnet", level=2, **FAST)
    before = wb.load(zoo.get("tiny_resnet"))
    names = {n.name for n in before.graph.nodes}
    origins = [o for cell in prof.kernels["origin"] for o in cell.split(", ")]
    assert set(origins) <= names  # every kernel names original ONNX nodes
    fused = prof.kernels[prof.kernels["n_origin"] > 1]
    if len(fused):  # the fusion passes are there: a fused kernel stands for several nodes
        assert (fused["domain"] == "workbench").any()


def test_profile_accepts_a_session_and_feeds():
    sess = wb.Session(wb.load(zoo.get("tiny_resnet")), "x86")
    feeds = sess.random_feeds(seed=3)
    prof = profile(sess, inputs=feeds, **FAST)
    assert prof.meta["level"] == 0 and prof.meta["backend"] == "x86"
    assert prof.meta["inputs"]["input"]["shape"] == [1, 3, 32, 32]
    # torch.fx style: the numbers are on the session's nodes too
    assert "median_ms" in sess.plan.steps[0].node.meta["prof"]
    if getattr(sess, "memory", None) is not None:  # the session plans an arena: it is reported
        assert prof.meta["memory"]["arena_bytes"] == sess.memory.arena_bytes > 0
        assert "memory: arena" in prof.summary()


# -- FLOPs by hand -----------------------------------------------------------------------------


def _flops_of_single(proto: onnx.ModelProto, feeds=None) -> tuple[float, int]:
    model = _load_unchecked(proto)
    prof = profile(model, inputs=feeds, level=0, save=False, **FAST)
    assert len(prof.kernels) == 1
    row = prof.kernels.iloc[0]
    return row["flops"], int(row["bytes"])


def _f32(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_flops_conv_groups_strides():
    # X [1,4,9,9], W [6,2,3,3], group 2, stride 2, pad 1 -> Y [1,6,5,5] = 150 outputs,
    # each a dot product over 2 channels x 3x3 = 18 MACs; the bias adds 1 per output
    attrs = {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    proto, feeds = node_model("Conv", [_f32(1, 4, 9, 9), _f32(6, 2, 3, 3), _f32(6)], attrs)
    flops, nbytes = _flops_of_single(proto, feeds)
    assert flops == 2 * 150 * 18 + 150
    assert nbytes == 4 * (4 * 81 + 6 * 18 + 6 + 150)


def test_flops_matmul_batched():
    # [2,3,4,5] @ [2,3,5,6] -> [2,3,4,6]: 144 outputs x K=5
    proto, feeds = node_model("MatMul", [_f32(2, 3, 4, 5), _f32(2, 3, 5, 6)])
    assert _flops_of_single(proto, feeds)[0] == 2 * 144 * 5


def test_flops_gemm_trans_a_with_bias():
    # A [5,3] transposed: M=3, K=5; B [5,4]: N=4; C adds 1 per output
    proto, feeds = node_model("Gemm", [_f32(5, 3), _f32(5, 4), _f32(4)], {"transA": 1})
    flops, nbytes = _flops_of_single(proto, feeds)
    assert flops == 2 * 3 * 4 * 5 + 12
    assert nbytes == 4 * (15 + 20 + 4 + 12)


def test_flops_fused_conv():
    _fused_domain_ready()
    attrs = {
        "group": 2,
        "strides": [2, 2],
        "pads": [1, 1, 1, 1],
        "kernel_shape": [3, 3],
        "activation": "Relu",
    }
    ins = [_f32(1, 4, 9, 9), _f32(6, 2, 3, 3), _f32(6), _f32(1, 6, 5, 5)]
    proto, feeds = node_model("FusedConv", ins, attrs, domain="workbench", opset=1, consts=(1, 2))
    # the conv's 2 x MACs, then bias, residual and Relu: 3 per output
    assert _flops_of_single(proto, feeds)[0] == 2 * 150 * 18 + 3 * 150


def test_flops_attention():
    _fused_domain_ready()
    # Q [1,4,8], K and V [1,6,8], 2 heads of 4: scores 1*2*4*6 = 48
    ins = [_f32(1, 4, 8), _f32(1, 6, 8), _f32(1, 6, 8), np.zeros((1, 1, 4, 6), np.float32)]
    proto, feeds = node_model(
        "Attention", ins, {"num_heads": 2, "scale": 0.5}, domain="workbench", opset=1
    )
    qk = pv = 2 * 48 * 4  # per head: 4x6 scores, each a dot product over head_dim 4
    assert _flops_of_single(proto, feeds)[0] == qk + pv + 48 * (1 + 1 + 5)  # scale, mask, softmax


def test_flops_rules_without_a_run():
    def node(op, domain="", **attrs):
        return Node(op, [], [Value("y")], attrs, domain=domain)

    x = Spec((2, 8, 16), "float32", 2 * 8 * 16 * 4)
    assert node_flops(node("Relu"), [x], [x]) == 256
    assert node_flops(node("Reshape"), [x, None], [x]) == 0
    assert node_flops(node("Softmax"), [x], [x]) == 5 * 256
    # LayerNorm over 16 with scale and bias: 7 per element, 2 per row (16 rows)
    g = Spec((16,), "float32", 64)
    assert node_flops(node("LayerNorm", "workbench"), [x, g, g], [x]) == 7 * 256 + 2 * 16
    assert node_flops(node("Gelu", "workbench", approximate="tanh"), [x], [x]) == 8 * 256
    prog = ["t0 = Mul(x0, 0.5)", "t1 = Cast(t0, to=1)", "t2 = Relu(t1)"]
    assert node_flops(node("FusedElementwise", "workbench", program=prog), [x], [x]) == 2 * 256
    assert math.isnan(node_flops(node("NoSuchOp"), [x], [x]))
    assert node_bytes([x, None, g], [x]) == 2 * x.nbytes + g.nbytes


# -- timing accounting -------------------------------------------------------------------------


def test_kernel_times_account_for_each_run():
    prof = profile("tiny_resnet", level=0, repeat=5, warmup=1, progress=False)
    r = prof.runs
    n = len(prof.kernels)
    assert prof.stamps.shape == (5, n + 1) and prof.bounds.shape == (5, 2)
    assert (np.diff(prof.stamps, axis=1) >= 0).all()
    # the stamps of every run lie inside that run: kernels <= end-to-end, overhead >= 0
    assert (prof.stamps[:, 0] >= prof.bounds[:, 0]).all()
    assert (prof.stamps[:, -1] <= prof.bounds[:, 1]).all()
    assert (r["kernels_ms"] <= r["e2e_ms"]).all() and (r["overhead_ms"] >= 0).all()
    per_run = prof.kernel_times().sum(axis=1) * 1e3
    np.testing.assert_allclose(per_run, r["kernels_ms"], rtol=1e-9)
    assert prof.overhead_ms >= 0
    # a generous bound, not a speed claim: the loop around the kernels is small
    assert (r["kernels_ms"] / r["e2e_ms"]).median() > 0.5
    s = prof.meta["summary"]
    assert s["latency_ms"] == pytest.approx(prof.latency_ms)
    assert s["n_kernels"] == n and s["repeat"] == 5


def test_missing_symbolic_dim_is_a_feed_error(conv_model):
    model = wb.load(conv_model())  # input [batch_size, 3, 8, 8], no default for batch_size
    with pytest.raises(wb.FeedError, match="batch_size"):
        profile(model, **FAST)
    prof = profile(model, dims={"batch_size": 2}, **FAST)
    assert prof.kernels.iloc[0]["in_shapes"].startswith("2x3x8x8")
    assert prof.meta["dims"] == {"batch_size": 2}


# -- chrome trace ------------------------------------------------------------------------------


def _with_fallback() -> onnx.ModelProto:
    """Relu -> (an op x86 lacks, run by reference) -> Relu."""
    x86 = wb.get_backend("x86")
    op = next(o for o in ("Hardmax", "Det") if not x86.supports("", o, 17))
    shape = [3, 4] if op == "Hardmax" else [2, 3, 3]
    out_shape = shape if op == "Hardmax" else [2]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu0"),
        helper.make_node(op, ["a"], ["b"], name="odd"),
        helper.make_node("Relu", ["b"], ["y"], name="relu1"),
    ]
    graph = helper.make_graph(
        nodes,
        "fallback",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_chrome_trace_one_event_per_kernel_per_run(tmp_path):
    prof = profile(_with_fallback(), repeat=4, warmup=1, level=0, progress=False)
    k = prof.kernels
    assert k["fallback"].tolist() == [False, True, False]
    assert k["backend"].tolist() == ["x86", "reference", "x86"]
    path = prof.to_chrome_trace(tmp_path / "trace.json")
    doc = json.loads(Path(path).read_text())
    events = doc["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == len(k) * 4
    per_kernel = pd.Series([(e["args"]["run"], e["args"]["kernel"]) for e in complete])
    assert not per_kernel.duplicated().any()
    tracks = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert sorted(tracks.values()) == ["reference", "x86"]  # one track per backend
    for e in complete:
        assert tracks[e["tid"]] == k.loc[e["args"]["kernel"], "backend"]
        assert e["dur"] >= 0 and e["ts"] >= 0 and e["pid"] == 1
        assert {"op", "node", "inputs", "outputs", "origin"} <= set(e["args"])
    # durations are the kernel times, in microseconds
    durs = [e["dur"] for e in complete if e["args"]["run"] == 2]
    np.testing.assert_allclose(durs, prof.kernel_times()[2] * 1e6, atol=1e-3)


# -- the run store -----------------------------------------------------------------------------


def test_store_round_trip_and_listing():
    prof = profile("tiny_resnet", level=0, **FAST)
    assert prof.path is not None and prof.path.parent == runs_root()
    assert prof.path.name.endswith(prof.path.name.rsplit("-", 1)[1])
    back = Profile.load(prof.path)
    pd.testing.assert_frame_equal(back.kernels, prof.kernels, check_exact=True)
    pd.testing.assert_frame_equal(back.runs, prof.runs, check_exact=True)
    np.testing.assert_array_equal(back.stamps, prof.stamps)
    np.testing.assert_array_equal(back.bounds, prof.bounds)
    assert back.summary() == prof.summary()
    assert Profile.load(prof.path.name.rsplit("-", 1)[1]).path == prof.path  # by id
    meta = back.meta
    assert meta["backend"] == "x86" and meta["kind"] == "profile"
    assert len(meta["model_hash"]) == 64
    assert {"workbench", "numpy", "onnx", "numba", "python"} <= set(meta["versions"])
    assert meta["machine"]["cpu"] and meta["machine"]["peak_gflops"] > 0
    listed = runs()
    assert listed["path"].tolist() == [str(prof.path)]
    row = listed.iloc[0]
    assert row["kind"] == "profile" and row["model"] == "tiny_resnet" and row["backend"] == "x86"
    assert row["latency_ms"] == pytest.approx(prof.latency_ms)
    assert prof.save() == prof.path  # saving again writes nothing new
    assert len(runs()) == 1


def test_store_tables_keep_dtypes_and_index():
    df = pd.DataFrame(
        {
            "name": ["a", "", "123"],
            "n": [1, 2, 3],
            "x": [0.1, np.nan, 1e-300],
            "ok": [True, False, True],
        }
    )
    indexed = df.set_index("name")
    clash = df.assign(n=[7, 8, 9])  # "by name" and "by_name" slug alike: two files still
    tables = {"t": df, "by name": indexed, "by_name": clash}
    arrays = {"a": np.arange(6.0).reshape(2, 3)}
    path = save_run("compare", "toy model/1", {"backend": "x86"}, tables, arrays)
    meta, got, got_arrays = load_run(path)
    pd.testing.assert_frame_equal(got["t"], df, check_exact=True)
    pd.testing.assert_frame_equal(got["by name"], indexed, check_exact=True)
    pd.testing.assert_frame_equal(got["by_name"], clash, check_exact=True)
    np.testing.assert_array_equal(got_arrays["a"], arrays["a"])
    assert meta["model"] == "toy model/1" and "/" not in path.name
    assert runs(kind="compare")["path"].tolist() == [str(path)]
    assert runs(kind="profile").empty


def test_store_write_is_atomic():
    good = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(wb.WorkbenchError, match="not a pandas DataFrame"):
        save_run("profile", "m", {}, {"good": good, "bad": [1, 2]})
    with pytest.raises(ValueError):  # an object array cannot be saved without pickle
        save_run("profile", "m", {}, {"good": good}, {"x": np.array([object()])})
    assert list(runs_root().iterdir()) == []  # no run, no temporary folder
    assert runs().empty


# -- machine -----------------------------------------------------------------------------------


def test_machine_info_measured_once_and_cached(monkeypatch):
    info = machine.machine_info()
    assert info["cpu"] and info["threads"] >= 1 and info["logical_cpus"] >= 1
    assert info["peak_gflops"] > 0 and info["mem_gbps"] > 0

    def boom(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(machine, "measure_peak_gflops", boom)
    monkeypatch.setattr(machine, "measure_bandwidth_gbps", boom)
    again = machine.machine_info()
    assert again["peak_gflops"] == info["peak_gflops"] and again["mem_gbps"] == info["mem_gbps"]
    # measuring again on a busy moment never lowers the peak the machine has shown
    monkeypatch.setattr(machine, "measure_peak_gflops", lambda: info["peak_gflops"] / 2)
    monkeypatch.setattr(machine, "measure_bandwidth_gbps", lambda: info["mem_gbps"] * 2)
    fresh = machine.machine_info(refresh=True)
    assert fresh["peak_gflops"] == info["peak_gflops"]
    assert fresh["mem_gbps"] == round(info["mem_gbps"] * 2, 2)
    assert machine.machine_info(measure=False)["mem_gbps"] == fresh["mem_gbps"]


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_profile_prints_and_saves(capsys):
    rc = main(["profile", "tiny_resnet", "--repeat", "2", "--warmup", "1", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "tiny_resnet on x86" in out and "median_ms" in out
    saved = [line for line in out.splitlines() if line.startswith("run saved in ")]
    folder = Path(saved[0].removeprefix("run saved in "))
    assert (folder / "meta.json").is_file()
    assert runs()["path"].tolist() == [str(folder)]
    assert Profile.load(folder).meta["repeat"] == 2


# -- full size ---------------------------------------------------------------------------------


def _conv_gemm_flops(proto: onnx.ModelProto) -> float:
    """2 x MACs of every Conv and Gemm, from onnx's own shape inference (not ours)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for d in proto.graph.input[0].type.tensor_type.shape.dim:
        if d.dim_param:
            d.dim_value = 1
    inferred = shape_inference.infer_shapes(proto)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.output]
    }
    weights = {t.name: numpy_helper.to_array(t).shape for t in proto.graph.initializer}
    total = 0
    for n in proto.graph.node:
        if n.op_type == "Conv":
            total += math.prod(shapes[n.output[0]]) * math.prod(weights[n.input[1]][1:])
        elif n.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            k = weights[n.input[1]][1 if attrs.get("transB", 0) else 0]
            total += math.prod(shapes[n.output[0]]) * k
    return 2.0 * total


@pytest.mark.slow
def test_resnet50_flops_and_accounting():
    proto = zoo.get("resnet50")
    expected = _conv_gemm_flops(proto)
    assert expected == pytest.approx(8.18e9, rel=1e-3)
    prof = profile(wb.load(proto), level=2, repeat=20, warmup=2, progress=False)
    assert prof.flops == pytest.approx(expected, rel=0.01)
    # the time inside kernels accounts for each run, and the kernels' medians for the median
    assert prof.runs["kernels_ms"].median() == pytest.approx(prof.latency_ms, rel=0.10)
    assert prof.kernels_ms == pytest.approx(prof.latency_ms, rel=0.10)


def test_profile_records_the_peak_rss_of_its_runs():
    import workbench as wb

    prof = wb.profile("tiny_resnet", repeat=2, warmup=1, save=False, progress=False)
    assert prof.meta["peak_rss_bytes"] > 10 * 2**20  # a Python process with numpy is larger
    assert "peak RSS" in prof.summary()
