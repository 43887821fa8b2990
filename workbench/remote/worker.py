"""The aarch64 worker: a loop serving load / run / profile / compare-steps requests.

It runs the same engine as the notebook, with the `arm` backend's kernels, in a process
of its own: natively on an aarch64 host, under `qemu-aarch64-static` on an x86 one, or
behind a Dask worker on a board. `python -m workbench.remote.worker` reads framed
requests (protocol.py) on stdin and answers on stdout; anything the engine prints goes
to stderr, so it cannot corrupt the stream. `handle(body) -> body` is the whole server:
the pipe loop and the Dask task both call it.

Failures of a request are answered as `{"ok": false, "error": ..., "type": ...}`; a crash
of the process itself is what the client reports (exit code or signal, last request).
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from . import protocol

WORKER_ID = uuid.uuid4().hex[:12]  # a restarted worker has another id: sessions are gone
MAX_SESSIONS = 8  # compiled sessions kept; the least recently used is dropped

_sessions: OrderedDict[str, Any] = OrderedDict()


class UnknownSession(Exception):
    """The client's session is not loaded here (a new worker, or dropped): load again."""


def _emulated() -> bool:
    return os.environ.get("WORKBENCH_ARM_EMULATED") == "1"


def info() -> dict[str, Any]:
    """What this worker is: versions, machine, how it runs."""
    import numba

    import workbench

    return {
        "worker_id": WORKER_ID,
        "protocol": protocol.VERSION,
        "workbench": workbench.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "emulated": _emulated(),
        "pid": os.getpid(),
        "numba_cache": os.environ.get("NUMBA_CACHE_DIR", ""),
    }


def _session(sid: str) -> Any:
    sess = _sessions.get(sid)
    if sess is None:
        raise UnknownSession(f"session {sid} is not loaded on worker {WORKER_ID}")
    _sessions.move_to_end(sid)
    return sess


def _feeds(arrays: dict[str, Any], prefix: str = "f:") -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _host(x: Any, what: str) -> np.ndarray | None:
    if isinstance(x, list):
        raise protocol.ProtocolError(f"{what} is a sequence; only tensors travel to the notebook")
    return None if x is None else np.asarray(x)


# -- requests ---------------------------------------------------------------------------------


def op_hello(h: dict, a: dict) -> tuple[dict, dict]:
    return info(), {}


def op_load(h: dict, a: dict) -> tuple[dict, dict]:
    from workbench.engine.backends.arm import accumulation
    from workbench.engine.executor import Session
    from workbench.engine.onnx_io import load

    model = load(a["model"].tobytes())
    t0 = time.perf_counter()
    with accumulation(h.get("accumulate")):
        sess = Session(model, "arm", precision=h["precision"], level=int(h["level"]))
    _sessions[h["sid"]] = sess
    while len(_sessions) > MAX_SESSIONS:
        _sessions.popitem(last=False)
    steps = [[s.node.name, s.node.op_type] for s in sess.plan.steps]
    return {
        **info(),
        "steps": steps,
        "kernels": sess.kernels(),
        "compile_s": time.perf_counter() - t0,
    }, {}


def op_run(h: dict, a: dict) -> tuple[dict, dict]:
    sess = _session(h["sid"])
    keep = bool(h.get("keep"))
    out = sess.run(_feeds(a), outputs=h.get("outputs"), keep=keep)
    arrays = {f"o:{k}": _host(v, f"output {k!r}") for k, v in out.items()}
    if keep:
        for k, v in sess.intermediates.items():
            if not isinstance(v, list):
                arrays[f"i:{k}"] = _host(v, k)
    return {"outputs": list(out)}, arrays


def op_profile(h: dict, a: dict) -> tuple[dict, dict]:
    """What `profile()` measures, measured here: stamps, bounds, specs; tables are built by
    the notebook from them (no DataFrame crosses the wire)."""
    from workbench.engine.memory import PeakRSS
    from workbench.profiler.machine import machine_info
    from workbench.profiler.profile import _memory_summary, measure_once, record_specs, run_timed

    sess = _session(h["sid"])
    feeds = _feeds(a)
    repeat, warmup = int(h["repeat"]), int(h["warmup"])
    specs = record_specs(sess, feeds)
    for _ in range(max(warmup - 1, 1)):
        run_timed(sess, feeds, [])
    n = len(sess.plan.steps)
    stamps = np.empty((repeat, n + 1), np.float64)
    bounds = np.empty((repeat, 2), np.float64)
    with PeakRSS() as rss:
        for r in range(repeat):
            measure_once(sess, feeds, stamps, bounds, r)

    def spec(s: Any) -> Any:
        return None if s is None else [list(s.shape), s.dtype, s.nbytes]

    return {
        "specs": [[[spec(s) for s in ins], [spec(s) for s in outs]] for ins, outs in specs],
        "machine": machine_info(measure=not _emulated()),  # no peak measured under QEMU
        "peak_rss_bytes": int(rss.peak_bytes),
        "peak_rss_is_since_start": not rss.reset,
        "memory": _memory_summary(sess),
        "algorithms": [s.kernel.algorithm for s in sess.plan.steps],
        "worker": info(),
    }, {"stamps": stamps, "bounds": bounds}


def op_compare_steps(h: dict, a: dict) -> tuple[dict, dict]:
    """The tested side of `compare`: the run kept whole (every named step output), then each
    step re-run on the reference's inputs (`compare._rerun`), its outputs or its error."""
    from workbench.engine.executor import execute
    from workbench.engine.plan import SINK_SLOT
    from workbench.profiler.compare import _rerun

    sess = _session(h["sid"])
    refs = _feeds(a, "r:")
    t0 = time.perf_counter()
    env = execute(sess.plan, sess.prepare(_feeds(a)), keep=True)
    t_run = time.perf_counter() - t0
    arrays: dict[str, Any] = {}
    for step in sess.plan.steps:
        for s in step.outputs:
            if s != SINK_SLOT and sess.plan.values[s] is not None and f"s:{s}" not in arrays:
                arrays[f"s:{s}"] = _host(sess._to_host(env[s]), sess.plan.values[s].name)
    notes, errors = {}, {}
    for topo, step in enumerate(sess.plan.steps):
        outs, note = _rerun(sess, step, env, refs)
        if note:
            notes[str(topo)] = note
        for k, o in enumerate(outs):
            if isinstance(o, Exception):
                errors[f"{topo}:{k}"] = [type(o).__name__, str(o)]
            elif not isinstance(o, list):
                arrays[f"l:{topo}:{k}"] = None if o is None else np.asarray(o)
    return {"t_run": t_run, "notes": notes, "errors": errors}, arrays


def op_drop(h: dict, a: dict) -> tuple[dict, dict]:
    _sessions.pop(h["sid"], None)
    return {}, {}


def op_sleep(h: dict, a: dict) -> tuple[dict, dict]:
    """For tests of the client's timeouts: a worker that hangs."""
    time.sleep(float(h["seconds"]))
    return {}, {}


def op_exit(h: dict, a: dict) -> tuple[dict, dict]:
    """For tests of the client's crash handling: a worker that dies mid-request."""
    os._exit(int(h.get("code", 3)))


OPS: dict[str, Callable[[dict, dict], tuple[dict, dict]]] = {
    "hello": op_hello,
    "load": op_load,
    "run": op_run,
    "profile": op_profile,
    "compare_steps": op_compare_steps,
    "drop": op_drop,
    "sleep": op_sleep,
    "exit": op_exit,
}


def handle(body: bytes) -> bytes:
    """One request body in, one reply body out; never raises for a failed request."""
    try:
        h, a = protocol.decode(body)
        op = h.get("op")
        fn = OPS.get(op)
        if fn is None:
            raise protocol.ProtocolError(f"unknown request {op!r}; known: {', '.join(OPS)}")
        if h.get("protocol", protocol.VERSION) != protocol.VERSION:
            raise protocol.ProtocolError(
                f"protocol version mismatch: notebook speaks {h.get('protocol')}, "
                f"worker {protocol.VERSION}"
            )
        t0 = time.perf_counter()
        reply, arrays = fn(h, a)
        reply.update(ok=True, worker_id=WORKER_ID, seconds=time.perf_counter() - t0)
        return protocol.encode(reply, arrays)
    except Exception as e:
        err = {
            "ok": False,
            "type": type(e).__name__,
            "error": str(e),
            "traceback": traceback.format_exc(limit=8),
            "worker_id": WORKER_ID,
        }
        return protocol.encode(err)


def _watch_parent(parent: int) -> None:
    """Exit when the process that started us is gone (killed with SIGKILL, say): a worker
    in the middle of a long request would otherwise only notice at its next read."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(70)


def main() -> int:
    """Serve requests on stdin/stdout until stdin closes or the parent process dies."""
    import threading

    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    proto_in, proto_out = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # print() and numba's chatter go to stderr, never into the stream
    sys.stdout = sys.stderr
    import workbench  # noqa: F401  (configures the numba cache before numba loads)

    protocol.write_frame(proto_out, protocol.encode({"ok": True, "ready": True, **info()}))
    while True:
        try:
            body = protocol.read_frame(proto_in)
        except EOFError:
            return 0
        protocol.write_frame(proto_out, handle(body))


if __name__ == "__main__":
    sys.exit(main())
