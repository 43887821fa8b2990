"""A Dask scheduler and an (emulated) arm worker on 127.0.0.1: a run routed through
`wb.connect`, then the worker killed mid-run: a clear error naming it, a notebook that
goes on, and the profile measured before still in the run store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import workbench as wb
from workbench import zoo
from workbench.remote import connect  # wb.connect once exported

pytestmark = pytest.mark.usefixtures("arm_worker")
pytest.importorskip("distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                ":0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "scheduler.log", "wb"),  # noqa: SIM115
            env=env,
        ),
    ]
    time.sleep(3)
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workbench.cli",
                "worker",
                "--scheduler",
                address,
                "--resources",
                "arm=1",
                "--name",
                "board-1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
            env=env,
        )
    )
    try:
        yield address, procs
    finally:
        try:
            connect(None)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=60)


def test_run_through_dask_then_the_worker_is_killed_mid_run(cluster):
    from workbench.remote.client import WorkerCrashed

    address, procs = cluster
    route = connect(address, timeout=120)
    assert route.info["workbench"] == wb.__version__
    assert {b.name: b for b in wb.backends()}["arm"].mode == "remote"
    model = wb.load(zoo.get("tiny_resnet"))
    sess = wb.Session(model, "arm")
    feeds = sess.random_feeds()
    ref = wb.Session(model, "reference").run(feeds)["output"]
    out = sess.run(feeds)["output"]
    assert abs(out - ref).max() <= 1e-4 * abs(ref).max()
    saved = wb.profile(sess, repeat=2, warmup=1, progress=False)
    assert saved.meta["route"] == "remote" and saved.path.exists()

    # a long profile; the Dask worker (the "board") is killed a few seconds into it
    killer = threading.Timer(5.0, lambda: os.kill(procs[1].pid, signal.SIGKILL))
    killer.start()
    t0 = time.monotonic()
    with pytest.raises(WorkerCrashed, match=r"left tcp://127\.0\.0\.1:\d+ while running 'profile'"):
        wb.profile(sess, repeat=100000, warmup=1, progress=False)
    assert time.monotonic() - t0 < 60  # reported at once, not at the call's timeout
    # the notebook goes on: local sessions run, and what was measured is in the store
    assert wb.Session(model, "x86").run(feeds)["output"].shape == ref.shape
    assert saved.path in [type(saved.path)(p) for p in wb.runs()["path"]]
    assert wb.Profile.load(saved.path).meta["backend"] == "arm"
    with pytest.raises(wb.WorkbenchError, match=r"no worker of .* advertises resource 'arm'"):
        sess.run(feeds)
