"""The emulated (or native) aarch64 worker: tiny zoo models against the reference, fused
ops at level 2 through `compare`, fp16 errors per node, an emulated profile, and a worker
that crashes or hangs. One worker serves the whole module (QEMU boots in ~30 s)."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from workbench import zoo
from workbench.remote.client import WorkerCrashed, WorkerTimeout, local_worker

pytestmark = pytest.mark.usefixtures("arm_worker")


@pytest.fixture(scope="module")
def tiny_resnet():
    return wb.load(zoo.get("tiny_resnet"))


@pytest.fixture(scope="module")
def tiny_bert():
    return wb.load(zoo.get("tiny_bert"))


def test_arm_is_listed_with_its_mode():
    info = {b.name: b for b in wb.backends()}["arm"]
    assert info.available and info.mode in ("native", "emulated", "remote")


@pytest.mark.parametrize("name", ["tiny_resnet", "tiny_bert"])
def test_compare_arm_fp32_within_tolerance_and_fp16_per_node(name, request):
    model = request.getfixturevalue(name)
    cmp = wb.compare(model, backends=["x86", "arm", "arm:fp16"], progress=False)
    t = cmp.tensors
    for b in ("x86", "arm"):  # fused ops included: level 2
        assert cmp.first_divergence(backend=b) is None, cmp.summary()
        assert (t[t["backend"] == b]["local_status"] == "ok").all()
    assert (t[t["backend"] == "arm"]["origin"].map(len) > 1).any()  # fused nodes compared
    f16 = t[t["backend"] == "arm:fp16"]
    assert len(f16) == len(t[t["backend"] == "arm"]) and set(f16["dtype"]) <= {"float16", "int64"}
    floats = f16[f16["dtype"] == "float16"]
    assert (floats["local_status"] == "ok").all()
    assert (floats["local_max_abs"] > 0).any()  # real fp16 rounding, per node
    assert cmp.meta["precisions"]["arm:fp16"] == "fp16"
    assert cmp.path is not None  # in the run store already


def test_fp16_accumulation_is_an_option_and_matters(tiny_bert):
    feeds = wb.Session(tiny_bert, "reference").random_feeds()
    ref = wb.Session(tiny_bert, "reference", precision="fp64").run(feeds)
    name = next(iter(ref))
    outs = {}
    for acc in ("fp16", "fp32"):
        sess = wb.Session(tiny_bert, "arm", precision="fp16", accumulate=acc, level=2)
        outs[acc] = sess.run(feeds)[name]
        assert outs[acc].dtype == np.float16
        mm = {k["algorithm"] for k in sess.kernels() if k["op"] == "FusedMatMul"}
        assert (
            mm == {"fp16-acc16 (FMA rounded to fp16, numpy)"}
            if acc == "fp16"
            else all(a.endswith(",fp16-acc32") for a in mm)
        ), mm
        err = np.abs(outs[acc].astype(np.float64) - ref[name]).max()
        assert err < 0.05 * np.abs(ref[name]).max()  # fp16, not garbage
    assert not np.array_equal(outs["fp16"], outs["fp32"])  # the option changes the numbers


def test_profile_is_marked_emulated_and_saved(tiny_resnet):
    prof = wb.profile(tiny_resnet, backend="arm", repeat=3, warmup=1, progress=False)
    emulated = bool(local_worker().info.get("emulated"))
    assert prof.meta["emulated"] is emulated
    assert prof.kernels["emulated"].all() == emulated
    assert prof.meta["machine"]["arch"] == "aarch64"
    assert prof.path is not None and wb.Profile.load(prof.path).meta["emulated"] is emulated
    assert len(prof.kernels) == len(wb.Session(tiny_resnet, "x86", level=2).plan.steps)


def test_crash_and_hang_give_clear_errors_and_the_worker_restarts(tiny_resnet):
    sess = wb.Session(tiny_resnet, "arm")
    feeds = sess.random_feeds()
    before = sess.run(feeds)
    w = local_worker()
    with pytest.raises(WorkerCrashed, match=r"ended during 'exit': exited with code 3"):
        w.request("exit", {"code": 3}, timeout=60)
    again = sess.run(feeds)  # a new worker; the session is loaded on it again
    np.testing.assert_array_equal(again["output"], before["output"])
    with pytest.raises(WorkerTimeout, match=r"no answer to 'sleep' within 1 s"):
        w.request("sleep", {"seconds": 120}, timeout=1)
    assert not w.alive()


@pytest.mark.slow
def test_compare_resnet18_full_size():
    model = wb.load(zoo.get("resnet18"))
    cmp = wb.compare(model, backends=["arm", "arm:fp16"], progress=False)
    assert cmp.first_divergence(backend="arm") is None, cmp.summary()
    f16 = cmp.tensors[cmp.tensors["backend"] == "arm:fp16"]
    assert (f16["local_status"] == "ok").all() and (f16["local_max_abs"] > 0).any()
