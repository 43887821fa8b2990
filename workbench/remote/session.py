"""`RemoteSession`: what `Session(model, "arm")` is in the notebook.

It compiles the model here exactly as the worker does (same passes, same plan, same
slots), for the plan's *structure* only: node names, provenance, FLOPs, consumers, what
the profiler's and comparison's tables are made of. Nothing runs here. Every run, profile
and comparison goes to the worker (workbench/remote/worker.py) with the model's bytes and
the feeds as .npy; outputs, intermediates and the raw timings come back the same way.

    sess = wb.Session(model, "arm")                        # fp32
    sess = wb.Session(model, "arm", precision="fp16")      # fp16, fp16 accumulation
    sess = wb.Session(model, "arm", precision="fp16", accumulate="fp32")
    sess = wb.Session(model, "arm:fp16-acc32")             # the same, as one name for compare
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..engine.executor import Session
from ..engine.feeds import check_feeds
from ..engine.model import Model
from ..engine.onnx_io import load, to_onnx
from ..engine.plan import NONE_SLOT
from ..errors import FeedError, WorkbenchError
from .client import TIMEOUT, UnknownSessionError, worker

# "arm:<suffix>" names: precision and accumulation in one backend name
SUFFIXES = {
    "fp32": ("fp32", None),
    "fp16": ("fp16", "fp16"),
    "fp16-acc16": ("fp16", "fp16"),
    "fp16-acc32": ("fp16", "fp32"),
}


def parse_backend(name: str) -> tuple[str, str | None, str | None]:
    """ "arm:fp16-acc32" -> ("arm", "fp16", "fp32"); "arm" -> ("arm", None, None)."""
    base, _, suffix = name.partition(":")
    if not suffix:
        return base, None, None
    if suffix not in SUFFIXES:
        raise WorkbenchError(
            f"unknown variant {suffix!r} of backend {base!r}; known: {', '.join(SUFFIXES)}"
        )
    return (base, *SUFFIXES[suffix])


class RemoteSession(Session):
    """A Session whose kernels run in the aarch64 worker (local, emulated or via Dask)."""

    remote = True

    def __init__(
        self,
        model: Any,
        backend: str = "arm",
        *,
        precision: str | None = None,
        level: int = 0,
        arena: bool = True,
        accumulate: str | None = None,
        timeout: float | None = None,
    ) -> None:
        from ..engine.backends.arm import accumulation
        from ..engine.backends.x86 import autotune

        base, p, acc = parse_backend(backend)
        precision = precision or p
        accumulate = accumulate or acc
        self.label = backend
        self.accumulate = (accumulate or "fp16") if precision == "fp16" else None
        source = model if isinstance(model, Model) else load(model)
        # the plan's structure only: no measuring here (the worker decides algorithms)
        with autotune.settings(enabled=False), accumulation(self.accumulate):
            super().__init__(source, base, precision=precision, level=level, arena=False)
        self.source = source
        self.timeout = float(timeout or TIMEOUT)
        self.sid = uuid.uuid4().hex
        self._model_bytes = np.frombuffer(to_onnx(source).SerializeToString(), np.uint8)
        self.worker_info: dict[str, Any] = {}
        self._worker_kernels: list[dict[str, Any]] = []
        self._load()

    # -- the worker -----------------------------------------------------------------------------
    @property
    def emulated(self) -> bool:
        return bool(self.worker_info.get("emulated"))

    @property
    def mode(self) -> str:
        return self.backend.availability().mode

    def _load(self) -> None:
        h, _ = worker().request(
            "load",
            {
                "sid": self.sid,
                "precision": self.precision,
                "accumulate": self.accumulate,
                "level": self.level,
            },
            {"model": self._model_bytes},
            self.timeout,
        )
        mine = [[s.node.name, s.node.op_type] for s in self.plan.steps]
        if h["steps"] != mine:
            raise WorkbenchError(
                f"the worker compiled another plan ({len(h['steps'])} steps, here {len(mine)}): "
                "are the notebook and the worker on the same workbench version?"
            )
        self._worker_kernels = h["kernels"]
        self.worker_info = {k: h[k] for k in ("worker_id", "emulated") if k in h}
        self.worker_info["compile_s"] = h.get("compile_s")

    def _call(
        self, op: str, header: Mapping[str, Any], arrays: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A request about this session; a worker that restarted gets the model again."""
        for attempt in range(2):
            try:
                return worker().request(op, {"sid": self.sid, **header}, arrays, self.timeout)
            except UnknownSessionError:
                if attempt:
                    raise
                self._load()
        raise AssertionError("unreachable")

    def _feeds(self, feeds: Mapping[str, Any] | None, prefix: str = "f:") -> dict[str, Any]:
        arrays = check_feeds(self.model.graph, feeds)
        out = {}
        for k, v in arrays.items():
            if not isinstance(v, np.ndarray):
                raise FeedError(f"input {k!r}: only tensors can be sent to the arm worker")
            out[prefix + k] = v
        return out

    # -- Session's API --------------------------------------------------------------------------
    def run(
        self,
        feeds: Mapping[str, Any] | None = None,
        *,
        outputs: list[str] | None = None,
        keep: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run once in the worker; `keep=True` brings every intermediate back too."""
        h, a = self._call("run", {"keep": keep, "outputs": outputs}, self._feeds(feeds))
        if keep:
            self.intermediates = {k[2:]: v for k, v in a.items() if k.startswith("i:")}
        return {k: a[f"o:{k}"] for k in h["outputs"]}

    def execute(self, env: list[Any], *, keep: bool = False, times: Any = None) -> list[Any]:
        raise WorkbenchError(
            f"{self.label}: the plan runs in the worker, not here; use run(), "
            "wb.profile(sess) or wb.compare(model, backends=[...])"
        )

    def memory_plan(self, feeds: Any = None, *, shapes: Any = None) -> Any:
        raise WorkbenchError(f"{self.label}: the memory plan lives in the worker process")

    def kernels(self) -> list[dict[str, Any]]:
        """The worker's kernels (its algorithm choices), one row per step."""
        return [dict(r) for r in self._worker_kernels]

    def __repr__(self) -> str:
        how = "emulated" if self.emulated else self.mode
        acc = f", accumulate {self.accumulate}" if self.accumulate else ""
        return (
            f"<workbench.RemoteSession {self.model.name} on {self.label} ({how}, "
            f"{self.precision}{acc}): {len(self.plan.steps)} kernels in the worker>"
        )

    # -- what the profiler and the comparison ask of it -------------------------------------------
    def compare_steps(
        self, feeds: Mapping[str, Any], refs: Mapping[str, Any]
    ) -> tuple[list[Any], list[tuple[list[Any], str]], float]:
        """The tested side of `compare`, run in the worker: (env of every named step output,
        per step the (outputs, note) of its local re-run, seconds of the kept run)."""
        wanted: dict[str, Any] = {}
        for step in self.plan.steps:
            for slot in step.inputs:
                v = self.plan.values[slot] if slot != NONE_SLOT else None
                if v is not None and not v.is_const and isinstance(refs.get(v.name), np.ndarray):
                    wanted[f"r:{v.name}"] = refs[v.name]
        h, a = self._call("compare_steps", {}, {**self._feeds(feeds), **wanted})
        env: list[Any] = [None] * len(self.plan.values)
        for k, v in a.items():
            if k.startswith("s:"):
                env[int(k[2:])] = v
        reruns = []
        for topo, step in enumerate(self.plan.steps):
            outs: list[Any] = []
            for k in range(len(step.outputs)):
                err = h["errors"].get(f"{topo}:{k}")
                if err is not None:
                    outs.append(RemoteKernelError(f"{err[0]}: {err[1]}"))
                else:
                    outs.append(a.get(f"l:{topo}:{k}"))
            reruns.append((outs, h["notes"].get(str(topo), "")))
        return env, reruns, float(h["t_run"])

    def profile(
        self,
        inputs: Mapping[str, Any] | None,
        repeat: int,
        warmup: int,
        *,
        dims: Mapping[str, int] | None = None,
        seed: int = 0,
        save: bool = True,
        name: str | None = None,
    ) -> Any:
        """`wb.profile` of this session: measured in the worker, tables built here."""
        import importlib

        # the module: the package's `profile` is the function
        P = importlib.import_module("workbench.profiler.profile")
        from ..profiler.flops import Spec
        from ..profiler.store import model_hash

        feeds = dict(inputs) if inputs is not None else self.random_feeds(dims, seed=seed)
        h, a = self._call("profile", {"repeat": repeat, "warmup": warmup}, self._feeds(feeds))

        def spec(s: Any) -> Spec | None:
            return None if s is None else Spec(tuple(s[0]), s[1], int(s[2]))

        specs = [([spec(s) for s in ins], [spec(s) for s in outs]) for ins, outs in h["specs"]]
        stamps, bounds = a["stamps"], a["bounds"]
        machine = dict(h["machine"])
        emulated = bool(h["worker"].get("emulated"))
        if emulated:  # the host's peak numbers say nothing about an emulated aarch64 core
            machine.update(peak_gflops=None, mem_gbps=None)
        kernels = P.kernel_table(self, specs, stamps, machine)
        if len(h["algorithms"]) == len(kernels):
            kernels["algorithm"] = h["algorithms"]
        kernels["emulated"] = emulated
        runs = P.runs_table(stamps, bounds)
        source = self.optimized.before if self.optimized is not None else self.model
        meta = {
            "model": name or source.name,
            "model_hash": model_hash(source),
            "backend": self.label,
            "precision": self.precision,
            "accumulate": self.accumulate,
            "level": self.level,
            "repeat": repeat,
            "warmup": warmup,
            "inputs": {
                k: {"shape": list(np.shape(v)), "dtype": str(getattr(v, "dtype", ""))}
                for k, v in feeds.items()
            },
            "dims": dict(dims or {}),
            "machine": machine,
            "summary": P._summary_numbers(kernels, runs),
            "peak_rss_bytes": h["peak_rss_bytes"],
            "peak_rss_is_since_start": h["peak_rss_is_since_start"],
            "emulated": emulated,
            "worker": h["worker"],
            "route": self.mode,
        }
        meta["summary"]["peak_rss_mib"] = h["peak_rss_bytes"] / 2**20
        meta["summary"]["emulated"] = emulated
        if h.get("memory"):
            meta["memory"] = h["memory"]
            meta["summary"]["arena_mib"] = h["memory"]["arena_bytes"] / 2**20
        prof = P.Profile(kernels, runs, meta, stamps, bounds)
        if save:
            prof.save()
        P._annotate(self.plan, kernels)
        return prof


class RemoteKernelError(WorkbenchError):
    """A step's local re-run failed in the worker (the message is the worker's)."""


__all__ = ["RemoteSession", "parse_backend"]
