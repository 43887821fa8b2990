"""`profile(model)`: time every kernel of a compiled model and say where the time goes.

Like torch.fx's ShapeProp over its Interpreter, the profiler does not touch the pipeline: it
compiles a `Session` as usual and drives the executor's own loop, asking it for a clock
stamp after every step (`execute(plan, env, times=...)`). One untimed run first keeps every
tensor to learn the shapes each kernel reads and writes (hence its FLOPs and bytes); the
timed runs then carry no bookkeeping beyond the stamps.

    prof = wb.profile(model, backend="x86", repeat=20)
    prof.kernels          # one row per kernel: op, shapes, time stats, FLOPs, GFLOP/s ...
    prof.by_op()          # the same, per op type
    prof.summary()        # a few lines of text
    prof.to_chrome_trace("trace.json")   # Perfetto / chrome://tracing
    wb.Profile.load(prof.path)           # every profile is in the run store already
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.executor import Session, execute
from ..errors import WorkbenchError
from .flops import Spec, node_bytes, node_flops, spec_of

if TYPE_CHECKING:
    import pandas as pd  # imported where used: `import workbench` stays free of pandas

log = logging.getLogger("workbench.profiler")

KIND = "profile"


# -- measuring ---------------------------------------------------------------------------------


def _session(model: Any, backend: str, level: int) -> tuple[Session, Any]:
    """A compiled session and the model as the user gave it (before any pass)."""
    if isinstance(model, Session):
        source = model.optimized.before if model.optimized is not None else model.model
        return model, source
    if isinstance(model, str) and not os.path.exists(model) and not model.endswith(".onnx"):
        from .. import zoo  # a zoo name: wb.profile("resnet50")
        from ..engine import load

        if model in zoo.names():
            model = load(zoo.get(model))
    sess = Session(model, backend, level=level)
    source = sess.optimized.before if sess.optimized is not None else sess.model
    return sess, source


def _outputs_to_host(sess: Session, env: list[Any]) -> None:
    to_host = sess.backend.to_host
    for _, slot in sess.plan.outputs:
        x = env[slot]
        if isinstance(x, list):
            [to_host(i) for i in x]
        elif x is not None:
            to_host(x)


def run_timed(sess: Session, feeds: Mapping[str, Any], times: list[float]) -> tuple[float, float]:
    """One run as `Session.run` does it (feeds placed, every step, outputs fetched), with a
    stamp per step appended to `times`; returns the (start, end) clock of the whole run."""
    clock = time.perf_counter
    start = clock()
    env = sess.prepare(feeds)
    events = getattr(sess.backend, "events", None)  # a GPU's own clock (CUDA events)
    if events is not None:
        events.start()
    if hasattr(sess, "execute"):  # the session's own loop: in its memory arena when it has one
        env = sess.execute(env, times=times)
    else:
        env = execute(sess.plan, env, keep=False, times=times)
    if events is not None:
        events.stop(times)  # the per-step stamps become the device's, from the first one
    sess.backend.synchronize()
    _outputs_to_host(sess, env)
    return start, clock()


def measure_once(
    sess: Session, feeds: Mapping[str, Any], stamps: np.ndarray, bounds: np.ndarray, r: int
) -> None:
    """Timed run number `r` into row r of `stamps` and `bounds`: all a profile adds per run
    (benchmarks/profiler_overhead.py times exactly this against `Session.run`)."""
    times: list[float] = []
    bounds[r] = run_timed(sess, feeds, times)
    stamps[r] = times


def record_specs(
    sess: Session, feeds: Mapping[str, Any]
) -> list[tuple[list[Spec | None], list[Spec | None]]]:
    """Per step, the specs of what it read and wrote, from one run that keeps every tensor."""
    env = execute(sess.plan, sess.prepare(feeds), keep=True)
    sess.backend.synchronize()
    return [
        ([spec_of(env[i]) for i in s.inputs], [spec_of(env[o]) for o in s.outputs])
        for s in sess.plan.steps
    ]


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _progress(total: int, enabled: bool | None, desc: str):
    if enabled is None:
        enabled = _in_notebook() or sys.stderr.isatty()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def profile(
    model: Any,
    backend: str = "x86",
    inputs: Mapping[str, Any] | None = None,
    repeat: int = 20,
    warmup: int = 3,
    level: int = 2,
    *,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    progress: bool | None = None,
    save: bool = True,
    name: str | None = None,
) -> Profile:
    """Time every kernel of `model` on `backend` over `repeat` runs (after `warmup`).

    `model` is a Model, a path, bytes, an onnx.ModelProto, a zoo name or a compiled
    `Session` (then `backend` and `level` are the session's). `inputs` default to
    deterministic random feeds from the declared shapes; symbolic dims take their values
    from `dims` (then the model's own defaults), and a missing one is a `FeedError` naming
    it. The profile is saved to the run store (`wb.runs()`) as soon as it is measured.
    """
    if repeat < 1:
        raise WorkbenchError(f"repeat must be at least 1, got {repeat}")
    sess, source = _session(model, backend, level)
    if getattr(sess, "remote", False):  # arm: measured in its worker, tables built here
        return sess.profile(inputs, repeat, warmup, dims=dims, seed=seed, save=save, name=name)
    feeds = dict(inputs) if inputs is not None else sess.random_feeds(dims, seed=seed)
    plan = sess.plan
    n = len(plan.steps)
    model_name = name or source.name

    specs = record_specs(sess, feeds)  # also the first warm-up run (numba compiles here)
    # at least one warm-up as `run` does it: a session plans its memory arena on that run
    for _ in range(max(warmup - 1, 1)):
        run_timed(sess, feeds, [])
    stamps = np.empty((repeat, n + 1), np.float64)
    bounds = np.empty((repeat, 2), np.float64)
    bar = _progress(repeat, progress, f"profile {model_name} on {sess.backend.name}")
    from ..engine.memory import PeakRSS

    try:
        with PeakRSS() as rss:  # the steady-state runs' peak resident memory
            for r in range(repeat):
                measure_once(sess, feeds, stamps, bounds, r)
                bar.update()
    finally:
        bar.close()

    from .machine import machine_info
    from .store import model_hash, save_run

    try:
        machine = machine_info()
        kernels = kernel_table(sess, specs, stamps, machine)
        runs = runs_table(stamps, bounds)
    except Exception as e:
        if save:  # keep the raw stamps of what was measured; then say what went wrong
            raw = {"backend": sess.backend.name, "error": f"{type(e).__name__}: {e}"}
            where = save_run(
                f"{KIND}-raw", model_name, raw, {}, {"stamps": stamps, "bounds": bounds}
            )
            log.warning("building the profile failed; the raw timings are in %s", where)
        raise
    meta = {
        "model": model_name,
        "model_hash": model_hash(source),
        "backend": sess.backend.name,
        "precision": sess.precision,
        "level": sess.level,
        "repeat": repeat,
        "warmup": warmup,
        "inputs": {
            k: {"shape": list(np.shape(v)), "dtype": str(getattr(v, "dtype", ""))}
            for k, v in feeds.items()
        },
        "dims": dict(dims or {}),
        "machine": machine,
        "summary": _summary_numbers(kernels, runs),
        "peak_rss_bytes": int(rss.peak_bytes),
        "peak_rss_is_since_start": not rss.reset,  # True where the OS cannot reset the mark
    }
    meta["summary"]["peak_rss_mib"] = rss.peak_bytes / 2**20
    # What the backend knows of its device: the clock used (CUDA events), device memory.
    meta.update(getattr(sess.backend, "profile_meta", dict)())
    from workbench import _threads  # how many threads the kernels had, and why

    meta["threads"] = _threads.info()
    memory = _memory_summary(sess)
    if memory is not None:
        meta["memory"] = memory
        meta["summary"]["arena_mib"] = memory["arena_bytes"] / 2**20
    prof = Profile(kernels, runs, meta, stamps, bounds)
    if save:
        prof.save()  # before anything else can fail: what was measured is kept
    _annotate(plan, kernels)
    prof.graph = sess.model.graph
    if log.isEnabledFor(logging.DEBUG):
        for row in kernels.itertuples():
            log.debug(
                "%4d %-40s %-18s %-9s %9.3f ms %9.2f GFLOP/s  %s -> %s",
                row.kernel,
                row.node[:40],
                row.op,
                row.backend,
                row.median_ms,
                row.gflop_s,
                row.in_shapes,
                row.out_shapes,
            )
    return prof


# -- tables ------------------------------------------------------------------------------------


def _shapes(specs: list[Spec | None]) -> str:
    return ", ".join("-" if s is None else str(s) for s in specs)


# what each kernel is: column -> dtype (the time and rate columns follow from the stamps)
_DESCRIBE = {
    "kernel": "int64",
    "node": "str",
    "op": "str",
    "domain": "str",
    "backend": "str",
    "algorithm": "str",
    "fallback": "bool",
    "transfer": "bool",
    "origin": "str",
    "n_origin": "int64",
    "in_shapes": "str",
    "out_shapes": "str",
    "dtype": "str",
    "flops": "float64",
    "bytes": "int64",
}


def kernel_table(
    sess: Session,
    specs: list[tuple[list[Spec | None], list[Spec | None]]],
    stamps: np.ndarray,
    machine: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per kernel of `sess.plan`: what it is and runs on, its shapes, time stats over
    the repeats (ms), FLOPs, bytes, achieved GFLOP/s and GB/s, arithmetic intensity."""
    import pandas as pd

    from ..engine.backends import get_backend

    plan = sess.plan
    ms = np.diff(stamps, axis=1) * 1e3  # [repeat, kernel]
    device = plan.backend.device
    rows = []
    for i, (step, (ins, outs)) in enumerate(zip(plan.steps, specs)):
        node, k = step.node, step.kernel
        origin = tuple(node.meta.get("origin", (node.name,)))
        k_device = get_backend(k.backend, require_available=False).device
        out0 = next((s for s in outs if s is not None), None)
        rows.append(
            {
                "kernel": i,
                "node": node.name,
                "op": node.op_type,
                "domain": node.domain or "ai.onnx",
                "backend": k.backend,
                "algorithm": k.algorithm,
                "fallback": bool(k.fallback),
                # a kernel on another device moves its tensors; copy steps are the moves
                "transfer": k_device != device or node.domain == "workbench.copy",
                "origin": ", ".join(origin),
                "n_origin": len(origin),
                "in_shapes": _shapes(ins),
                "out_shapes": _shapes(outs),
                "dtype": out0.dtype if out0 is not None else "",
                "flops": node_flops(node, ins, outs),
                "bytes": node_bytes(ins, outs),
            }
        )
    df = pd.DataFrame(rows, columns=list(_DESCRIBE)).astype(_DESCRIBE)  # typed even if empty
    df.insert(13, "median_ms", np.median(ms, axis=0))
    df.insert(14, "min_ms", ms.min(axis=0))
    df.insert(15, "max_ms", ms.max(axis=0))
    df.insert(16, "std_ms", ms.std(axis=0))
    total = df["median_ms"].sum()
    df.insert(17, "pct", df["median_ms"] / total * 100 if total > 0 else 0.0)
    seconds = (df["median_ms"] / 1e3).where(df["median_ms"] > 0)
    df["gflop_s"] = df["flops"] / seconds / 1e9
    df["gb_s"] = df["bytes"] / seconds / 1e9
    df["intensity"] = df["flops"] / df["bytes"].where(df["bytes"] > 0)
    peak = (machine or {}).get("peak_gflops")
    bw = (machine or {}).get("mem_gbps")
    if peak and bw:
        # roofline: what this intensity allows, and the share of it the kernel reached
        attainable = np.minimum(peak, df["intensity"] * bw)
        df["roofline_pct"] = df["gflop_s"] / attainable * 100
        df["bound"] = np.where(
            df["intensity"].isna(), "", np.where(df["intensity"] * bw < peak, "memory", "compute")
        )
    else:
        df["roofline_pct"] = np.nan
        df["bound"] = ""
    # algorithm selection (backends/x86/autotune.py): every candidate's median ms, fastest
    # first, with the memory it holds of its own where it holds any
    df["candidates"] = [_candidates_text(st.run) for st in plan.steps]
    return df


def _candidates_text(run: Any) -> str:
    ms = getattr(run, "candidates", None) or {}
    mib = getattr(run, "candidates_mib", None) or {}
    cold = getattr(run, "candidates_cold", None) or {}  # ms its weights' read from memory takes
    return ", ".join(
        f"{a}={t:.3g}"
        + (f" ({mib[a]:.3g} MiB)" if mib.get(a) else "")
        + (f" (cold read {cold[a]:.2g})" if cold.get(a) else "")
        for a, t in sorted(ms.items(), key=lambda kv: kv[1])
    )


def runs_table(stamps: np.ndarray, bounds: np.ndarray) -> pd.DataFrame:
    """Per timed run: end-to-end time, time inside kernels, and the rest (feeds, loop,
    output fetch). Per run the kernels' share is an identity: their stamps lie inside it."""
    import pandas as pd

    e2e = (bounds[:, 1] - bounds[:, 0]) * 1e3
    inside = (stamps[:, -1] - stamps[:, 0]) * 1e3
    return pd.DataFrame(
        {
            "run": np.arange(len(e2e)),
            "start_ms": (bounds[:, 0] - bounds[0, 0]) * 1e3,
            "e2e_ms": e2e,
            "kernels_ms": inside,
            "overhead_ms": e2e - inside,
        }
    )


def _summary_numbers(kernels: pd.DataFrame, runs: pd.DataFrame) -> dict[str, Any]:
    e2e = runs["e2e_ms"]
    flops = float(kernels["flops"].sum()) if len(kernels) else 0.0
    median = float(e2e.median())
    return {
        "latency_ms": median,
        "latency_min_ms": float(e2e.min()),
        "latency_max_ms": float(e2e.max()),
        "latency_std_ms": float(e2e.std(ddof=0)),
        "kernels_ms": float(kernels["median_ms"].sum()) if len(kernels) else 0.0,
        # the median over runs of (run - its kernels): never negative, unlike the
        # difference of the two medians, and the same number on a quiet machine
        "overhead_ms": float(runs["overhead_ms"].median()),
        "gflop": flops / 1e9,
        "gflop_s": flops / (median / 1e3) / 1e9 if median > 0 else math.nan,
        "n_kernels": len(kernels),
        "fallbacks": int(kernels["fallback"].sum()) if len(kernels) else 0,
        "flops_unknown": int(kernels["flops"].isna().sum()) if len(kernels) else 0,
        "repeat": len(runs),
    }


def _memory_summary(sess: Session) -> dict[str, Any] | None:
    """The session's memory plan for these feeds (engine/memory.py), where it has one."""
    mem = getattr(sess, "memory", None)
    if mem is None or not callable(getattr(mem, "summary", None)):
        return None
    try:
        out: dict[str, Any] = {"summary": mem.summary()}
        for key in ("arena_bytes", "lower_bound_bytes", "weight_bytes", "input_bytes"):
            out[key] = int(getattr(mem, key))
        out["copy_bytes"] = int(getattr(mem, "copy_bytes", 0))
        out["ratio"] = float(getattr(mem, "ratio", 1.0))
        out["layout"] = memory_layout(mem)  # what wb.viz.memory draws from a Profile
        return out
    except Exception as e:  # a planner that changed shape must not cost the measurement
        log.debug("memory plan summary unavailable: %s", e)
        return None


def memory_layout(mem: Any) -> dict[str, Any]:
    """A MemoryPlan's values and arena buffers as JSON-ready columns, step by step.

    `values`: name, shape, dtype, nbytes, first/last step, arena offset (None: dynamic),
    kind, and the index of the buffer it lives in; `buffers`: offset, nbytes (unaligned),
    first/last step. Buffer b is live on steps first..min(last, n_steps - 1), as in
    `MemoryPlan.timeline`, so the live bytes per step and their peak (the lower bound)
    follow from this alone, without the plan.
    """
    vals = mem.values
    return {
        "n_steps": len(mem.plan.steps),
        "values": {
            "name": [v.name for v in vals],
            "shape": [None if v.shape is None else [int(d) for d in v.shape] for v in vals],
            "dtype": [v.dtype for v in vals],
            "nbytes": [int(v.nbytes) for v in vals],
            "first": [int(v.first) for v in vals],
            "last": [int(v.last) for v in vals],
            "offset": [None if v.offset is None else int(v.offset) for v in vals],
            "kind": [v.kind for v in vals],
            "buffer": [None if v.buffer is None else int(v.buffer) for v in vals],
        },
        "buffers": {
            key: [int(getattr(b, key)) for b in mem.buffers]
            for key in ("offset", "nbytes", "first", "last")
        },
    }


def _annotate(plan: Any, kernels: pd.DataFrame) -> None:
    """torch.fx style: the numbers go into each node's meta for viz to read."""
    cols = ["median_ms", "min_ms", "max_ms", "flops", "bytes", "gflop_s", "pct"]
    for step, rec in zip(plan.steps, kernels[cols].to_dict("records")):
        step.node.meta["prof"] = rec


# -- the result ---------------------------------------------------------------------------------


@dataclass(eq=False)  # tables do not compare with ==
class Profile:
    """Per-kernel timing of one model on one backend: tables, raw stamps and metadata."""

    kernels: pd.DataFrame
    runs: pd.DataFrame
    meta: dict[str, Any]
    stamps: np.ndarray  # [repeat, kernels + 1] perf_counter stamps: kernel k ran [k, k+1]
    bounds: np.ndarray  # [repeat, 2] start and end of each whole run
    path: Path | None = field(default=None)
    # The graph that ran (in memory only, not saved): viz draws timings on it.
    graph: Any = field(default=None, repr=False)

    # -- numbers --------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return str(self.meta.get("model", "model"))

    @property
    def backend(self) -> str:
        return str(self.meta.get("backend", ""))

    @property
    def latency_ms(self) -> float:
        """Median end-to-end latency."""
        return float(self.runs["e2e_ms"].median())

    @property
    def latency(self) -> dict[str, float]:
        """End-to-end latency stats over the timed runs (ms)."""
        e = self.runs["e2e_ms"]
        return {
            "median": float(e.median()),
            "min": float(e.min()),
            "max": float(e.max()),
            "mean": float(e.mean()),
            "std": float(e.std(ddof=0)),
        }

    @property
    def kernels_ms(self) -> float:
        """Sum of the kernels' median times."""
        return float(self.kernels["median_ms"].sum()) if len(self.kernels) else 0.0

    @property
    def overhead_ms(self) -> float:
        """Median time per run outside kernels (placing feeds, the loop, fetching outputs)."""
        return float(self.runs["overhead_ms"].median())

    @property
    def flops(self) -> float:
        return float(self.kernels["flops"].sum()) if len(self.kernels) else 0.0

    @property
    def machine(self) -> dict[str, Any]:
        return dict(self.meta.get("machine") or {})

    def kernel_times(self) -> np.ndarray:
        """[repeat, kernel] seconds of every kernel in every timed run."""
        return np.diff(self.stamps, axis=1)

    # -- views ----------------------------------------------------------------------------------
    def by_op(self) -> pd.DataFrame:
        """Per op type: kernels, time, share, FLOPs, bytes and achieved rates; slowest first."""
        k = self.kernels
        g = k.groupby("op", sort=False).agg(
            kernels=("kernel", "size"),
            median_ms=("median_ms", "sum"),
            flops=("flops", lambda s: s.sum(min_count=1)),
            bytes=("bytes", "sum"),
            fallbacks=("fallback", "sum"),
        )
        total = g["median_ms"].sum()
        g["pct"] = g["median_ms"] / total * 100 if total > 0 else 0.0
        seconds = (g["median_ms"] / 1e3).where(g["median_ms"] > 0)
        g["gflop_s"] = g["flops"] / seconds / 1e9
        g["gb_s"] = g["bytes"] / seconds / 1e9
        return g.sort_values("median_ms", ascending=False)

    def top(self, n: int = 10) -> pd.DataFrame:
        """The `n` slowest kernels, with the columns worth reading first."""
        cols = ["kernel", "node", "op", "backend", "algorithm", "median_ms", "pct"]
        cols += ["gflop_s", "gb_s", "out_shapes", "fallback"]
        return self.kernels.nlargest(n, "median_ms")[cols]

    def summary(self) -> str:
        lat = self.latency
        m = self.machine
        kms, over = self.kernels_ms, self.overhead_ms
        fb = int(self.kernels["fallback"].sum()) if len(self.kernels) else 0
        share = over / lat["median"] * 100 if lat["median"] else 0.0
        lines = [
            f"{self.model} on {self.backend} (level {self.meta.get('level', '?')}), "
            f"{len(self.runs)} runs: median {lat['median']:.3f} ms "
            f"(min {lat['min']:.3f}, max {lat['max']:.3f})",
            f"  kernels {kms:.3f} ms ({len(self.kernels)} kernels, {fb} fallbacks), "
            f"outside kernels {over:.3f} ms ({share:.1f}%)",
        ]
        if self.meta.get("emulated"):
            lines.insert(
                1,
                "  timings EMULATED (QEMU user-mode): relative between kernels only, not ARM speed",
            )
        gflop = self.flops / 1e9
        rate = gflop / (lat["median"] / 1e3) if lat["median"] else math.nan
        line = f"  {gflop:.3f} GFLOP, {rate:.1f} GFLOP/s achieved"
        if m.get("peak_gflops"):
            line += f" (machine: {m['peak_gflops']:.0f} GFLOP/s peak, {m['mem_gbps']:.1f} GB/s)"
        lines.append(line)
        if "peak_rss_bytes" in self.meta:
            lines.append(
                f"  peak RSS of the timed runs: {self.meta['peak_rss_bytes'] / 2**20:.1f} MiB"
            )
        mem = self.meta.get("memory")
        if mem:
            lines.append(f"  memory: {mem['summary']}")
        ops = self.by_op().head(4)
        lines.append("  top ops: " + ", ".join(f"{op} {r.pct:.0f}%" for op, r in ops.iterrows()))
        if self.path is not None:
            lines.append(f"  saved in {self.path}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        where = f", saved in {self.path}" if self.path else ""
        return (
            f"<workbench.Profile {self.model} on {self.backend}: {self.latency_ms:.3f} ms median "
            f"of {len(self.runs)}, {len(self.kernels)} kernels, "
            f"{self.flops / 1e9:.3f} GFLOP{where}>"
        )

    # -- traces and persistence -------------------------------------------------------------------
    def to_chrome_trace(self, path: str | os.PathLike) -> Path:
        """Write a Chrome trace-event JSON (Perfetto, chrome://tracing): one track per backend."""
        from .trace import write_chrome_trace

        return write_chrome_trace(self, path)

    def save(self) -> Path:
        """Write into the run store (once; later calls return the same folder)."""
        if self.path is None:
            from .store import save_run

            self.path = save_run(
                KIND,
                self.model,
                self.meta,
                {"kernels": self.kernels, "runs": self.runs},
                {"stamps": self.stamps, "bounds": self.bounds},
            )
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Profile:
        """A profile back from the run store (a folder path, or its name or id there)."""
        from .store import load_run

        meta, tables, arrays = load_run(path)
        if meta.get("kind") != KIND:
            raise WorkbenchError(f"run {meta.get('path')} is a {meta.get('kind')!r}, not a profile")
        folder = Path(meta.pop("path"))
        return cls(
            tables["kernels"], tables["runs"], meta, arrays["stamps"], arrays["bounds"], folder
        )


__all__ = [
    "Profile",
    "kernel_table",
    "measure_once",
    "memory_layout",
    "profile",
    "record_specs",
    "run_timed",
    "runs_table",
]
