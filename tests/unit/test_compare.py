"""Numeric comparison: per-tensor metrics, x86 against the fp64 reference, and a planted
error that `first_divergence` must pin on exactly the node that makes it."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench import zoo
from workbench.engine import backends as registry
from workbench.engine.backends.base import Backend, Kernel, KernelTable
from workbench.engine.ir import Node
from workbench.engine.passes import Match, Rule, RulePass
from workbench.engine.passes.rules import fused_name, like, producer
from workbench.profiler.compare import Comparison, compare
from workbench.profiler.metrics import (
    HIST_EDGES,
    error_histogram,
    tensor_metrics,
    ulp_distance,
)

F32 = np.float32
optimize_module = importlib.import_module("workbench.engine.passes.optimize")


@pytest.fixture(autouse=True)
def run_store(tmp_path, monkeypatch):
    """Every comparison a test saves goes to a fresh store, not the user's cache."""
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def metrics(test, ref, atol=0.0, rtol=0.0, rtols=()):
    return tensor_metrics(np.asarray(test), np.asarray(ref), atol=atol, rtol=rtol, rtols=rtols)


# -- metrics on hand-made arrays --------------------------------------------------------------


def test_ulp_distance_counts_representable_floats():
    one = F32(1.0)
    up = np.nextafter(one, F32(2))
    assert ulp_distance(np.array([up]), np.array([one]))[0] == 1
    assert ulp_distance(np.array([one]), np.array([one]))[0] == 0
    two_up = np.array([np.nextafter(up, F32(2))])
    assert ulp_distance(two_up, np.array([one]))[0] == 2
    # across zero: -0.0 and +0.0 are one point; the two smallest subnormals are 2 apart
    tiny = np.array([np.nextafter(F32(0), F32(1))])
    assert ulp_distance(np.array([F32(-0.0)]), np.array([F32(0.0)]))[0] == 0
    assert ulp_distance(tiny, np.array([F32(0.0)]))[0] == 1
    assert ulp_distance(-tiny, tiny)[0] == 2
    assert ulp_distance(np.array([F32(-1.0)]), np.array([-up]))[0] == 1
    # float16 on its own bits, float64 without overflowing across the whole range
    h = np.float16(1.0)
    assert ulp_distance(np.array([np.nextafter(h, np.float16(2))]), np.array([h]))[0] == 1
    big = np.finfo(np.float64).max
    assert ulp_distance(np.array([-big]), np.array([big]))[0] == pytest.approx(
        2.0**64 - 2.0**53, rel=1e-15
    )
    assert ulp_distance(np.array([np.nextafter(1.0, 2.0)]), np.array([1.0]))[0] == 1


def test_ulp_distance_of_every_float16_is_its_distance_in_sorted_order():
    bits = np.arange(2**16, dtype=np.uint16).view(np.float16)
    line = np.unique(bits[~np.isnan(bits)])  # sorted; -0.0 and +0.0 fall together
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(line), 5000), rng.integers(0, len(line), 5000)
    np.testing.assert_array_equal(ulp_distance(line[i], line[j]), np.abs(i - j))
    assert np.isnan(ulp_distance(np.float16([np.nan]), np.float16([1.0]))[0])


def test_ulps_are_counted_in_the_tested_dtype_after_rounding_the_reference():
    ref = np.array([1.0 + 1e-12, 1.0 + 1e-7])  # float64
    m = metrics(np.array([1.0, 1.0], F32), ref)
    # 1 + 1e-12 rounds to 1.0f (0 ulps); 1 + 1e-7 rounds to the float after 1.0f (1 ulp)
    assert m.max_ulp == 1
    assert m.max_abs == pytest.approx(1e-7)


def test_snr_cosine_and_relative_error():
    ref = np.ones(100)
    m = metrics(ref + 0.1, ref)
    assert m.snr_db == pytest.approx(20.0)  # sum ref^2 = 100, sum err^2 = 1
    assert m.max_abs == pytest.approx(0.1) and m.mean_abs == pytest.approx(0.1)
    assert m.rms == pytest.approx(0.1) and m.max_rel == pytest.approx(0.1)
    assert m.cosine == pytest.approx(1.0)
    exact = metrics(ref, ref)
    assert exact.snr_db == math.inf and exact.max_ulp == 0 and exact.exact == 1.0
    assert metrics([1.0, 0.0], [0.0, 1.0]).cosine == pytest.approx(0.0)
    assert metrics([-1.0, -2.0], [1.0, 2.0]).cosine == pytest.approx(-1.0)
    # relative error skips zero references; the absolute metrics still see them
    z = metrics([0.5, 2.2], [0.0, 2.0])
    assert z.max_rel == pytest.approx(0.1) and z.max_abs == pytest.approx(0.5)


def test_out_of_tolerance_share_and_needed_atol_agree():
    ref = np.array([1.0, 10.0, 100.0, 0.0])
    test = ref + np.array([0.0, 0.05, 0.05, 0.02])
    m = metrics(test, ref, atol=0.01, rtol=1e-3, rtols=(0.0, 1e-3))
    # tolerances: 0.011, 0.02, 0.11, 0.01 -> elements 1 (0.05 > 0.02) and 3 (0.02 > 0.01) fail
    assert m.out_of_tol == pytest.approx(0.5)
    assert m.need_atol[0] == pytest.approx(0.05)  # rtol 0: the largest error
    assert m.need_atol[1] == pytest.approx(0.04)  # rtol 1e-3: 0.05 - 10 * 1e-3
    assert m.exact == pytest.approx(0.25)


def test_nan_and_inf_are_counted_and_mismatches_are_infinite_errors():
    ref = np.array([1.0, np.nan, np.inf, 2.0])
    m = metrics(np.array([1.0, np.nan, np.inf, np.nan], F32), ref, atol=1.0, rtol=1.0)
    assert (m.nan, m.inf, m.mismatch) == (2, 1, 1)
    assert m.max_abs == math.inf and m.snr_db == -math.inf
    assert m.out_of_tol == pytest.approx(0.25) and m.max_ulp == math.inf
    same = metrics(np.array([np.nan, -np.inf]), np.array([np.nan, -np.inf]))
    assert same.max_abs == 0 and same.mismatch == 0 and same.out_of_tol == 0


def test_integer_tensors_compare_exactly():
    ref = np.array([3, 4, 5], np.int64)
    assert metrics(ref.copy(), ref).max_ulp == 0
    off = metrics(np.array([3, 6, 5], np.int64), ref)
    assert off.max_ulp == 2 and off.max_abs == 2 and off.out_of_tol == pytest.approx(1 / 3)


def test_histogram_bins_log10_of_the_error():
    counts = error_histogram(np.array([1e-3, 1e-3, 0.0, 1e-9]))
    assert counts.sum() == 3  # exact zeros are not binned
    bin_of = np.searchsorted(HIST_EDGES, [np.log10(1e-3), -9.0], side="right") - 1
    assert counts[bin_of[0]] == 2 and counts[bin_of[1]] == 1


# -- x86 against the fp64 reference -----------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_resnet", "tiny_bert"])
def test_x86_agrees_with_the_fp64_reference(name, run_store):
    model = wb.load(zoo.get(name))
    c = compare(model, "x86", level=0, progress=False)
    t = c.tensors
    # level 0: one row per named output of every node; all are compared
    sess = wb.Session(model, "x86")
    assert len(t) == sum(1 for s in sess.plan.steps for v in s.node.outputs if v.name)
    assert not t["note"].any(), t.loc[t["note"] != "", ["node", "note"]]
    floats = t[t["dtype"] == "float32"]
    assert len(floats) and (floats["ref_max_abs"] > 0).any()
    assert (floats["local_max_rel"] < 1e-2).all()  # roundoff, not mistakes
    assert (floats["acc_snr_db"] > 80).all() and (floats["local_cosine"] > 0.9999).all()
    assert (t[t["dtype"] == "int64"]["acc_max_abs"] == 0).all()
    assert (t[["acc_out_of_tol", "local_out_of_tol"]] == 0).all().all()
    assert c.first_divergence() is None
    # with no tolerance at all, fp32 roundoff is a divergence
    assert c.first_divergence(atol=0.0, rtol=0.0) is not None
    with pytest.raises(wb.WorkbenchError, match=r"rtol 0\.00037 was not recorded"):
        c.first_divergence(rtol=3.7e-4)
    assert c.meta["precisions"] == {"x86": "fp32"} and c.meta["reference_precision"] == "fp64"
    # saved as soon as it was made, and read back whole
    assert c.path is not None and c.path.parent == run_store
    back = Comparison.load(c.path.name)  # a path, or a run's name in the store
    pd.testing.assert_frame_equal(back.tensors, t, check_dtype=False)
    pd.testing.assert_frame_equal(back.nodes, c.nodes, check_dtype=False)
    for k, a in c.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], a)
    assert back.first_divergence(atol=0.0, rtol=0.0) == c.first_divergence(atol=0.0, rtol=0.0)
    counts, edges = back.histogram(t["value"].iloc[0])
    assert len(counts) == len(edges) - 1
    assert name in c.summary() and "first local divergence" in c.summary()


def test_level_2_compares_fused_nodes_through_their_origin():
    model = wb.load(zoo.get("tiny_bert"))
    c = compare(model, "x86", level=2, progress=False, save=False)
    sess = wb.Session(model, "x86", level=2)
    fused = [s.node for s in sess.plan.steps if len(s.node.meta.get("origin", ())) > 1]
    t = c.tensors
    assert len(t) == sum(1 for s in sess.plan.steps for v in s.node.outputs if v.name)
    assert int((t["origin"].map(len) > 1).sum()) == sum(len(n.outputs) for n in fused)
    assert not t["note"].any() and c.first_divergence() is None
    for node in fused:  # a fused output is compared with its last original node's output
        row = t[t["node"] == node.name].iloc[0]
        assert row["ref_node"] in node.meta["origin"]


# -- a planted error ----------------------------------------------------------------------------


class Perturbed(Backend):
    """Test only: x86's kernels, but one node's outputs come out scaled by `factor`."""

    name = "perturbed"
    description = "x86 with one node perturbed (tests)"

    def __init__(self, target: str = "", factor: float = 1 + 1e-2) -> None:
        super().__init__()
        self.x86 = registry.get_backend("x86")
        self.kernels = self.x86.kernels
        self.extra = KernelTable()  # ops of test-only fusions
        self.target = target
        self.change = lambda y: (y * factor).astype(y.dtype)

    def supports(self, domain, op_type, opset):
        return self.extra.lookup(domain, op_type, opset) is not None or super().supports(
            domain, op_type, opset
        )

    def compile(self, node, ctx):
        spec = self.extra.lookup(node.domain, node.op_type, ctx.opset)
        if spec is not None:
            kernel = Kernel(spec.factory(node, ctx), self.name, node.op_type, source=spec.source)
        else:
            kernel = self.x86.compile(node, ctx)
        if kernel is None:
            return None
        kernel.backend = self.name
        if node.name == self.target:
            run, change = kernel.run, self.change
            kernel.run = lambda *args: tuple(change(y) for y in run(*args))
        return kernel


@pytest.fixture
def perturbed(monkeypatch):
    """A registered `perturbed` backend (removed again after the test)."""
    registry.all_backends()  # discover the real ones first
    backend = Perturbed()
    monkeypatch.setitem(registry._REGISTRY, "perturbed", backend)
    return backend


def _target(model: wb.Model, original: str) -> wb.Node:
    """The node of the level-2 plan that stands for `original` (itself, or a fusion of it)."""
    steps = wb.Session(model, "x86", level=2).plan.steps
    return next(s.node for s in steps if original in s.node.meta.get("origin", (s.node.name,)))


@pytest.mark.parametrize(
    ("name", "original"),
    [
        ("tiny_resnet", "/layer3/layer3.0/conv1/Conv"),
        ("tiny_bert", "/encoder/layer.0/output/dense/MatMul"),
    ],
)
def test_first_divergence_names_the_perturbed_node(name, original, perturbed):
    model = wb.load(zoo.get(name))
    target = _target(model, original)
    perturbed.target = target.name
    c = compare(model, "perturbed", level=2, progress=False, save=False)
    d = c.first_divergence()
    assert d is not None and d.node == target.name
    assert d.origin == tuple(target.meta["origin"]) and original in d.origin
    assert d.local["max_rel"] == pytest.approx(1e-2, rel=1e-2)  # its own error: the 1 %
    assert d.local["out_of_tol"] > 0.2
    assert d.accumulated["max_rel"] == pytest.approx(d.local["max_rel"], rel=1e-2)

    t = c.tensors
    upstream = t[t["topo"] < d.topo]
    down = t[t["node"].isin(d.downstream)]
    assert len(upstream) and len(down)
    # upstream: nothing wrong at all
    assert (upstream[["local_out_of_tol", "acc_out_of_tol"]] == 0).all().all()
    # downstream: every kernel's own error is roundoff, what it shows is inherited
    assert (down["local_out_of_tol"] == 0).all()
    assert (down["acc_max_abs"] > 10 * down["local_max_abs"]).all()
    # along the chain to the outputs the inherited error is out of tolerance throughout
    on_chain = t[t["node"].isin(d.chain[1:])]
    assert d.chain[0] == target.name and len(on_chain) == len(d.chain) - 1
    assert (on_chain["acc_out_of_tol"] > 0).all()
    assert c.nodes.set_index("node").loc[d.chain[-1], "is_output"]
    # nodes after it that it does not reach are untouched
    aside = t[(t["topo"] > d.topo) & ~t["node"].isin([target.name, *d.downstream])]
    assert (aside["acc_out_of_tol"] == 0).all()


class AddRelu(Rule):
    """Relu(Add(a, b)) -> test.compare.AddRelu(a, b): a fusion the test owns."""

    name = "test_add_relu"
    anchor = ("Relu",)

    def pattern(self, node, ctx):
        add = producer(node.inputs[0], "Add")
        return Match([add, node], {"a": add.inputs[0], "b": add.inputs[1]}) if add else None

    def rewrite(self, match, ctx):
        ins = [match.values["a"], match.values["b"]]
        out = [like(match.outputs[0])]
        return [Node("AddRelu", ins, out, name=fused_name(match, "AddRelu"), domain="test.compare")]


def test_a_planted_error_in_a_fused_kernel_names_the_fused_node(perturbed, monkeypatch):
    @perturbed.extra.register("AddRelu", domain="test.compare")
    def add_relu(node, ctx):
        return lambda a, b: (np.maximum(a + b, 0),)

    fusion = RulePass("test_add_relu", [AddRelu()], level=2)
    monkeypatch.setattr(optimize_module, "all_passes", lambda: [fusion])
    model = wb.load(zoo.get("tiny_resnet"))
    optimized = wb.optimize(model, 2, "perturbed").after
    fused = [n for n in optimized.graph if n.op_type == "AddRelu"]
    assert len(fused) == 4  # one per residual block
    perturbed.target = fused[2].name
    c = compare(model, "perturbed", level=2, progress=False, save=False)
    d = c.first_divergence()
    assert d is not None and d.node == fused[2].name and d.op == "AddRelu"
    add, relu = d.origin
    assert add.endswith("/Add") and relu.endswith("/Relu_1")
    assert d.values == [fused[2].outputs[0].name]
    # the Add's output exists only in the reference: it is not compared
    t = c.tensors
    assert len(t) == len(model.graph.nodes) - len(fused)
    assert t.set_index("node").loc[d.node, "ref_node"] == relu
    assert d.local["max_rel"] == pytest.approx(1e-2, rel=1e-3)
    assert str(d).startswith("first local divergence on perturbed")


def test_an_output_of_the_wrong_shape_is_a_divergence(perturbed):
    model = wb.load(zoo.get("tiny_resnet"))
    last = model.graph.nodes[-1]  # the classifier: nothing downstream can trip over it
    perturbed.target, perturbed.change = last.name, lambda y: y[None]
    c = compare(model, "perturbed", level=0, progress=False, save=False)
    d = c.first_divergence()
    assert d is not None and d.node == last.name
    assert "shape [1, 1, 10] but reference [1, 10]" in d.reason
    row = c.tensors.set_index("node").loc[last.name]
    assert row["local_status"] == "shape" and row["acc_status"] == "shape"
    assert np.isnan(row["local_max_abs"])


def test_several_backends_explicit_inputs_and_the_store(conv_model, run_store):
    from workbench.profiler.store import runs

    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(F32)
    c = compare(conv_model(), ["reference", "x86"], inputs={"input": x}, rtols=[2e-4])
    assert c.backends == ["reference", "x86"]
    assert c.meta["precisions"] == {"reference": "fp32", "x86": "fp32"}
    assert c.meta["feeds"] == {"input": ["float32", [2, 3, 8, 8]]}
    t = c.tensors
    assert set(t["backend"]) == {"reference", "x86"} and (t["shape"].map(len) > 0).all()
    for b in c.backends:
        assert c.first_divergence(backend=b) is None
        assert c.first_divergence(rtol=2e-4, backend=b) is None  # an extra rtol, recorded
    with pytest.raises(wb.WorkbenchError, match="not in this comparison"):
        c.first_divergence(backend="cuda")
    listed = runs(kind="compare")
    assert list(listed["path"]) == [str(c.path)] and listed["backend"].iloc[0] == "reference,x86"
    assert "reference (fp32, level 2), x86 (fp32, level 2)" in c.summary()
    assert repr(c).startswith("<Comparison main_graph: reference, x86 vs reference (fp64)")
