"""The charts of wb.viz (timing, memory, roofline, accuracy) on real Profiles and Comparisons
of a tiny zoo model: every drawn number is checked against the object it came from."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import workbench as wb
from workbench import zoo
from workbench.engine.backends import get_backend
from workbench.profiler.profile import Profile
from workbench.viz._charts_common import annotation_texts
from workbench.viz._style import fmt_bytes
from workbench.viz.memory_view import live_bytes

MODEL = "tiny_bert"
# a plain Add of the level-2 plan; the planted error goes there
PLANTED = "/encoder/layer.0/attention/output/Add"


@pytest.fixture(autouse=True)
def run_store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))


@pytest.fixture(scope="module")
def model():
    return wb.load(zoo.get(MODEL))


@pytest.fixture(scope="module")
def prof(model):
    return wb.profile(model, backend="x86", repeat=3, warmup=0, save=False, progress=False)


@pytest.fixture(scope="module")
def prof_ref(model):
    return wb.profile(model, backend="reference", repeat=2, warmup=0, save=False, progress=False)


@pytest.fixture(scope="module")
def cmp_exact(model):
    """No tolerance at all: fp32 roundoff is a divergence, where the Comparison says."""
    return wb.compare(model, backends=["x86"], save=False, progress=False, atol=0.0, rtol=0.0)


def _copy(p: Profile, **meta) -> Profile:
    return dataclasses.replace(p, meta={**p.meta, **meta}, path=None)


def _f(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def _trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


# -- kernel time ------------------------------------------------------------------------------


def test_kernel_time_by_node_draws_the_medians_and_sums_the_rest(prof, prof_ref):
    fig = wb.viz.kernel_time([prof, prof_ref], by="node", top=5)
    assert [t.name for t in fig.data] == ["x86", "reference"]
    for p, t in zip([prof, prof_ref], fig.data):
        med = p.kernels.set_index("node")["median_ms"]
        bars = dict(zip(t.y, t.x))
        assert len(bars) == 6 and "other" in bars
        shown = [n for n in bars if n != "other"]
        for n in shown:
            assert bars[n] == pytest.approx(med[n])
        assert bars["other"] == pytest.approx(med.drop(shown).sum())
        assert sum(bars.values()) == pytest.approx(p.kernels_ms)
    # ranked by the largest median over both profiles
    best = np.maximum(
        prof.kernels.set_index("node")["median_ms"], prof_ref.kernels.set_index("node")["median_ms"]
    )
    assert list(fig.layout.yaxis.categoryarray[:5]) == best.nlargest(5).index.tolist()
    assert "x86 fp32" in fig.layout.title.text and MODEL in fig.layout.title.text


def test_kernel_time_by_op_and_stacked(prof, prof_ref):
    fig = wb.viz.kernel_time([prof, prof_ref], by="op")
    for p, t in zip([prof, prof_ref], fig.data):
        by_op = p.by_op()["median_ms"]
        assert dict(zip(t.y, t.x)) == pytest.approx(by_op.to_dict())
    stacked = wb.viz.kernel_time([prof, prof_ref], by="op", mode="stack")
    for lane, p in (("x86", prof), ("reference", prof_ref)):
        total = sum(x for t in stacked.data for y, x in zip(t.y, t.x) if y == lane)
        assert total == pytest.approx(p.kernels_ms)


def test_kernel_time_of_an_empty_profile_says_so(prof):
    empty = dataclasses.replace(prof, kernels=prof.kernels.iloc[:0])
    fig = wb.viz.kernel_time(empty)
    assert not fig.data and any("no kernels" in a for a in annotation_texts(fig))
    with pytest.raises(wb.WorkbenchError, match="Profile"):
        wb.viz.kernel_time("resnet18")
    with pytest.raises(wb.WorkbenchError, match="by must be"):
        wb.viz.kernel_time(prof, by="layer")


# -- timeline ---------------------------------------------------------------------------------


def test_timeline_has_a_lane_per_backend_and_the_run_s_stamps(prof, prof_ref):
    fig = wb.viz.timeline([prof, prof_ref], run=1)
    kernels = [t for t in fig.data if t.name in ("x86", "reference")]
    assert [t.name for t in kernels] == ["x86", "reference"]
    for p, t in zip([prof, prof_ref], kernels):
        assert set(t.y) == {p.backend} and len(t.x) == len(p.kernels)
        t0 = p.bounds[1, 0]
        np.testing.assert_allclose(_f(t.base), (p.stamps[1, :-1] - t0) * 1e3)
        np.testing.assert_allclose(_f(t.base) + _f(t.x), (p.stamps[1, 1:] - t0) * 1e3)
        whole = _trace(fig, f"{p.backend}: whole run")
        assert whole.x[0] == pytest.approx((p.bounds[1, 1] - t0) * 1e3)
        assert (_f(t.base) + _f(t.x)).max() <= whole.x[0]
        assert list(t.customdata[:, 0]) == p.kernels["node"].tolist()  # hover: node, op
    # default: each profile's median run
    fig = wb.viz.timeline(prof)
    e2e = prof.bounds[:, 1] - prof.bounds[:, 0]
    r = int(np.argsort(e2e)[(len(e2e) - 1) // 2])
    assert _trace(fig, "x86").base[0] == pytest.approx(
        (prof.stamps[r, 0] - prof.bounds[r, 0]) * 1e3
    )
    with pytest.raises(wb.WorkbenchError, match="out of range"):
        wb.viz.timeline(prof, run=7)


def test_emulated_timing_is_named_in_titles_and_lanes(prof):
    emulated = _copy(prof, backend="arm", emulated=True)
    fig = wb.viz.timeline([prof, emulated])
    assert "arm (emulated timing)" in {t.name for t in fig.data}
    assert "(emulated timing)" in fig.layout.title.text
    assert "(emulated timing)" in wb.viz.kernel_time(emulated).layout.title.text
    # two profiles of one backend still get lanes of their own
    fig = wb.viz.kernel_time([prof, _copy(prof, level=0)])
    assert [t.name for t in fig.data] == ["x86 L2", "x86 L0"]


# -- time ratio -------------------------------------------------------------------------------


def test_time_ratio_per_op_on_a_log_axis_centred_on_one(prof, prof_ref):
    fig = wb.viz.time_ratio(prof, prof_ref, by="op")
    bars = fig.data[0]
    want = prof.by_op()["median_ms"] / prof_ref.by_op()["median_ms"]
    got = dict(zip(bars.y, _f(bars.base) + _f(bars.x)))
    assert got == pytest.approx(want.to_dict())
    lo, hi = fig.layout.xaxis.range
    assert fig.layout.xaxis.type == "log" and lo == pytest.approx(-hi)
    assert max(abs(math.log10(r)) for r in got.values()) <= hi
    # an op only one side has is not drawn, and the note says so
    no_attn = dataclasses.replace(prof_ref, kernels=prof_ref.kernels.query("op != 'Attention'"))
    fig = wb.viz.time_ratio(prof, no_attn)
    assert "Attention" not in fig.data[0].y
    assert any("only in x86: Attention" in a for a in annotation_texts(fig))


# -- memory -----------------------------------------------------------------------------------


def test_memory_of_a_session_follows_its_plan(model):
    sess = wb.Session(model, "x86", level=2)
    fig = wb.viz.memory(sess)
    assert not fig.data and "run the session" in annotation_texts(fig)[0]
    feeds = sess.random_feeds()
    sess.run(feeds)
    sess.run(feeds)  # the second run runs in the planned arena
    mem = sess.memory
    fig = wb.viz.memory(sess)
    live = _trace(fig, "live bytes")
    assert list(live.y) == [s.live_bytes for s in mem.timeline]
    assert max(live.y) == mem.lower_bound_bytes
    assert _trace(fig, f"arena {fmt_bytes(mem.arena_bytes)}").y[0] == mem.arena_bytes
    # the stacked segments of each step add up to its live bytes
    bars = _trace(fig, "live buffers")
    per_step = np.zeros(len(mem.timeline))
    np.add.at(per_step, np.asarray(bars.x), np.asarray(bars.y))
    assert per_step.tolist() == list(live.y)
    # hover: every live tensor of the step
    step = int(np.argmax(live.y))
    for name in mem.timeline[step].live:
        assert name[-40:] in live.hovertext[step]
    # offsets: each buffer where the planner put it, inside the arena
    fig = wb.viz.memory(mem, layout="offsets")
    bars = _trace(fig, "buffers at their offsets")
    assert list(bars.base) == [b.offset for b in mem.buffers]
    assert max(_f(bars.base) + _f(bars.y)) <= mem.arena_bytes


def test_memory_of_a_profile_survives_the_store(prof):
    mem = prof.meta["memory"]
    fig = wb.viz.memory(prof)
    live = _trace(fig, "live bytes")
    assert max(live.y) == mem["lower_bound_bytes"]
    arena = [t for t in fig.data if t.name.startswith("arena")]
    assert arena[0].y[0] == mem["arena_bytes"] > 0
    assert len(live.y) == len(prof.kernels)
    path = _copy(prof).save()
    back = Profile.load(path)
    assert back.meta["memory"]["layout"] == mem["layout"]
    again = _trace(wb.viz.memory(back), "live bytes")
    assert list(again.y) == list(live.y)
    assert list(live_bytes(mem["layout"]["buffers"], len(prof.kernels))) == list(live.y)
    # a profile without a plan: the empty state says why
    bare = _copy(prof)
    del bare.meta["memory"]
    assert "no memory plan" in annotation_texts(wb.viz.memory(bare))[0]


# -- roofline ---------------------------------------------------------------------------------


def test_roofline_places_every_kernel_with_flops(prof):
    fig = wb.viz.roofline(prof)
    k = prof.kernels
    known = k[(k["flops"] > 0) & (k["bytes"] > 0) & (k["median_ms"] > 0)]
    points = [t for t in fig.data if t.mode == "markers"]
    xs = np.concatenate([t.x for t in points])
    ys = np.concatenate([t.y for t in points])
    assert len(xs) == len(known) > 0
    np.testing.assert_allclose(np.sort(xs), np.sort(known["intensity"]))
    np.testing.assert_allclose(np.sort(ys), np.sort(known["gflop_s"]))
    m = prof.machine
    roof = _trace(fig, "roof")
    assert max(roof.y) == pytest.approx(m["peak_gflops"])
    assert roof.y[0] == pytest.approx(roof.x[0] * m["mem_gbps"])
    texts = " ".join(annotation_texts(fig))
    assert f"peak {m['peak_gflops']:.3g} GFLOP/s" in texts and "matmul" in texts
    assert f"bandwidth {m['mem_gbps']:.3g} GB/s" in texts
    assert f"{int((k['flops'] == 0).sum())} kernels do no arithmetic" in texts


def test_roofline_without_flops_says_so(prof):
    kernels = prof.kernels.assign(flops=np.nan)
    fig = wb.viz.roofline(dataclasses.replace(prof, kernels=kernels))
    texts = annotation_texts(fig)
    assert any("no kernel has known FLOPs" in a for a in texts)
    assert any(f"{len(kernels)} kernels with unknown FLOPs" in a for a in texts)


# -- accuracy ---------------------------------------------------------------------------------


def test_error_by_node_marks_the_first_divergence(cmp_exact):
    d = cmp_exact.first_divergence()
    t = cmp_exact.tensors
    # the comparison's answer, and independently the first step out of tolerance
    assert d is not None and d.topo == int(t.loc[t["local_out_of_tol"] > 0, "topo"].min())
    fig = wb.viz.error_by_node(cmp_exact, kind="local")
    lines = [s for s in fig.layout.shapes if s.name == "first divergence x86"]
    assert len(lines) == 1 and lines[0].x0 == d.topo
    assert any(d.node[-30:] in a for a in annotation_texts(fig))
    assert fig.layout.yaxis.type == "log"
    main = _trace(fig, "x86 (fp32) vs reference (fp64)")
    exact = _trace(fig, "x86: exact (0), on the floor")
    assert len(main.x) + len(exact.x) == len(t)
    v = t.set_index("value")["local_max_abs"]
    np.testing.assert_allclose(main.y, v[list(main.customdata[:, 2])].to_numpy())
    assert (v[list(exact.customdata[:, 2])] == 0).all()
    acc = wb.viz.error_by_node(cmp_exact, kind="accumulated")
    assert "Accumulated" in acc.layout.title.text
    assert [s.x0 for s in acc.layout.shapes if s.name == "first divergence x86"] == [d.topo]


def test_error_by_node_finds_a_planted_error(model, monkeypatch):
    x86 = get_backend("x86")
    compile_ = x86.compile

    def planted(node, ctx):  # one node's output 1 % off
        kernel = compile_(node, ctx)
        if kernel is not None and node.name == PLANTED:
            run = kernel.run
            kernel.run = lambda *a: tuple((y * 1.01).astype(y.dtype) for y in run(*a))
        return kernel

    monkeypatch.setattr(x86, "compile", planted)
    c = wb.compare(model, backends=["x86"], save=False, progress=False)
    steps = [s.node.name for s in wb.Session(model, "x86", level=2).plan.steps]
    fig = wb.viz.error_by_node(c)
    lines = [s for s in fig.layout.shapes if s.name == "first divergence x86"]
    assert [s.x0 for s in lines] == [steps.index(PLANTED)]
    atol, _ = c.tolerance("x86")
    assert [s.y0 for s in fig.layout.shapes if s.name == "tolerance x86"] == [atol]
    ringed = _trace(fig, "x86: out of tolerance")
    assert min(ringed.x) == steps.index(PLANTED)


def test_error_by_node_without_divergence(model):
    c = wb.compare(model, backends=["x86"], save=False, progress=False)
    assert c.first_divergence() is None
    fig = wb.viz.error_by_node(c, metric="max_rel")
    assert not [s for s in fig.layout.shapes if (s.name or "").startswith("first divergence")]
    assert any("no node out of tolerance" in a for a in annotation_texts(fig))
    with pytest.raises(wb.WorkbenchError, match="no metric"):
        wb.viz.error_by_node(c, metric="loudness")
    with pytest.raises(wb.WorkbenchError, match="kind"):
        wb.viz.error_by_node(c, kind="global")


def test_error_histogram_counts_every_element(cmp_exact):
    d = cmp_exact.first_divergence()
    value = d.values[0]
    fig = wb.viz.error_histogram(cmp_exact, value)
    row = cmp_exact.tensors.set_index("value").loc[value]
    counts, _ = cmp_exact.histogram(value)
    bins = _trace(fig, "|error| per half decade")
    exact = _trace(fig, "exact (error 0)")
    assert sum(bins.y) == counts.sum() > 0  # no non-zero bin left out of the view
    assert sum(bins.y) + exact.y[0] == row["size"]
    assert exact.y[0] == round(row["local_exact"] * row["size"])
    assert value in fig.layout.title.text and "x86 (fp32) vs reference (fp64)" in (
        fig.layout.title.text
    )
    acc = wb.viz.error_histogram(cmp_exact, value, kind="accumulated")
    acc_counts, _ = cmp_exact.histogram(value, kind="acc")
    assert sum(_trace(acc, "|error| per half decade").y) == acc_counts.sum()
    with pytest.raises(wb.WorkbenchError, match="no tensor"):
        wb.viz.error_histogram(cmp_exact, "nope")


def test_parameter_docs_are_shared():
    for fn in (wb.viz.kernel_time, wb.viz.timeline, wb.viz.roofline):
        assert "A `Profile` (`wb.profile(...)`)" in fn.__doc__
    assert "the tested run's value" in wb.viz.error_by_node.__doc__
