"""`compare(model, backends)`: numeric diffs of every tensor against a reference run.

The reference runs the unoptimized graph (level 0) in float64 by default; each backend
under test runs at its own opt level (2, fusions on, by default). Tensors are matched by
value name: a fused node takes over the names of the values it replaces, so its output is
compared with the output of the last original node it stands for, and the original nodes
come along as its `origin`. Values inside a fused group do not exist on the tested side
and are simply not compared.

Two errors per tensor:

- *accumulated*: the tested run's own value against the reference; it includes what the
  kernel inherited from everything upstream;
- *local*: the tested kernel run once more with its inputs taken from the reference (cast
  to the dtypes the tested run used), so only that kernel's own error remains.

`Comparison.first_divergence()` names the earliest node (in the tested plan's order)
whose *local* error is out of tolerance, and the chain from it to the graph outputs.
Unlike a layer-wise "mark all outputs" comparison, nothing is unfused to look inside.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from ..engine.executor import Session, execute
from ..engine.model import Model
from ..engine.onnx_io import load
from ..engine.plan import NONE_SLOT, SINK_SLOT, Plan, Step
from ..errors import WorkbenchError
from .metrics import HIST_EDGES, METRICS, TensorMetrics, tensor_metrics
from .store import model_hash

if TYPE_CHECKING:  # pandas costs ~0.5 s to import: only when a comparison is built
    import pandas as pd

# default (atol, rtol) by the precision the tested backend computes in: a few units of
# roundoff of that precision after a deep network, per element as numpy.isclose tests
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp64": (1e-9, 1e-8),
    "fp32": (1e-4, 1e-3),
    "fp16": (1e-2, 1e-2),
    "bf16": (5e-2, 5e-2),
}
# rtols whose needed atol is recorded per tensor, so first_divergence can be asked
# about other tolerances later without the tensors
RTOLS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
KINDS = ("acc", "local")  # accumulated and local error: column prefixes
# `*_status` of a row: "ok", or why it was not measured; these count as divergence
DIVERGENT = ("shape", "failed")


@dataclass
class Divergence:
    """The earliest node whose own (local) error is out of tolerance."""

    backend: str
    node: str
    op: str
    origin: tuple[str, ...]  # the original ONNX nodes it stands for
    topo: int  # position in the tested plan
    values: list[str]  # its outputs that diverge
    local: dict[str, Any]  # metrics of its worst output's local error
    accumulated: dict[str, Any]  # metrics of the same output's accumulated error
    atol: float
    rtol: float
    reason: str = ""  # why it diverges, in words
    chain: list[str] = field(default_factory=list)  # shortest path of nodes to an output
    downstream: list[str] = field(default_factory=list)  # every node it reaches

    def __str__(self) -> str:
        fused = f" from {', '.join(self.origin)}" if self.origin != (self.node,) else ""
        return (
            f"first local divergence on {self.backend} (atol={self.atol:g}, rtol={self.rtol:g}): "
            f"node {self.node!r} ({self.op}{fused}), step {self.topo}, output "
            f"{self.values[0]!r}: {self.reason}; chain to the outputs: {' -> '.join(self.chain)}"
        )

    def __repr__(self) -> str:
        return f"<Divergence {self.backend}: {self.node!r} ({self.op})>"


class Comparison:
    """Per tensor and backend: accumulated and local error against the reference.

    `tensors`: one row per (tested value, backend) with node, op, origin, topo, dtype,
    shape, and every metric of `metrics.METRICS` as `acc_*` and `local_*` columns.
    `nodes`: one row per tested plan step with its consumers (for chains).
    """

    def __init__(
        self,
        meta: dict[str, Any],
        tensors: pd.DataFrame,
        nodes: pd.DataFrame,
        arrays: dict[str, np.ndarray],
        path: Path | None = None,
    ) -> None:
        self.meta = meta
        self.tensors = tensors
        self.nodes = nodes
        self.arrays = arrays
        self.path = path
        # The graph each backend ran (in memory only, not saved): viz draws errors on it.
        self.graphs: dict[str, Any] = {}

    # -- reading it ----------------------------------------------------------------------------
    @property
    def backends(self) -> list[str]:
        return list(self.meta["backends"])

    def tolerance(self, backend: str | None = None) -> tuple[float, float]:
        """(atol, rtol) the comparison used for `backend`."""
        atol, rtol = self.meta["tolerances"][self._backend(backend)]
        return float(atol), float(rtol)

    def histogram(
        self, value: str, backend: str | None = None, kind: str = "local"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of log10 |error| of one tensor; exact elements are not counted
        (their share is the `*_exact` column)."""
        if kind not in KINDS:
            raise WorkbenchError(f"kind must be one of {KINDS}, got {kind!r}")
        b = self._backend(backend)
        t = self.tensors
        hit = np.flatnonzero((t["value"] == value).to_numpy() & (t["backend"] == b).to_numpy())
        if not len(hit):
            raise WorkbenchError(f"no tensor {value!r} compared on {b!r}")
        return self.arrays[f"hist_{kind}"][hit[0]], self.arrays["hist_edges"]

    def first_divergence(
        self, atol: float | None = None, rtol: float | None = None, backend: str | None = None
    ) -> Divergence | None:
        """The earliest node in the tested plan whose *local* error fails
        |err| <= atol + rtol * |ref| on some element (or whose output cannot be compared
        although the reference has it: another shape, a failed local run); None when
        every node passes.

        Defaults: the tolerances of the comparison. `rtol` must be one the comparison
        recorded (`meta["rtols"]`); `atol` may be anything.
        """
        b = self._backend(backend)
        d_atol, d_rtol = self.tolerance(b)
        atol = d_atol if atol is None else float(atol)
        rtol = d_rtol if rtol is None else float(rtol)
        col = self._rtol_column(rtol)
        need = self.arrays["need_atol_local"][:, col]
        t = self.tensors
        mine = (t["backend"] == b).to_numpy()
        broken = t["local_status"].isin(DIVERGENT).to_numpy()
        bad = mine & ((need > atol) | (t["local_mismatch"].to_numpy() > 0) | broken)
        if not bad.any():
            return None
        first_topo = int(t["topo"].to_numpy()[bad].min())
        rows = np.flatnonzero(bad & (t["topo"].to_numpy() == first_topo))
        worst = rows[np.argmax(np.where(broken[rows], np.inf, np.nan_to_num(need[rows])))]
        row = t.iloc[worst]
        if row["local_status"] in DIVERGENT:
            reason = row["note"]
        else:
            reason = (
                f"local max_abs {row['local_max_abs']:.3g}, max_rel {row['local_max_rel']:.3g}, "
                f"{row['local_out_of_tol']:.1%} of elements out of tolerance"
            )
        chain, downstream = self._paths(b, row["node"])
        return Divergence(
            backend=b,
            node=row["node"],
            op=row["op"],
            origin=tuple(row["origin"]),
            topo=first_topo,
            values=[t.iloc[i]["value"] for i in rows],
            local=self._metrics(row, "local"),
            accumulated=self._metrics(row, "acc"),
            atol=atol,
            rtol=rtol,
            reason=reason,
            chain=chain,
            downstream=downstream,
        )

    def worst(self, n: int = 10, kind: str = "local", backend: str | None = None) -> pd.DataFrame:
        """The `n` tensors with the largest error relative to their reference's magnitude."""
        if kind not in KINDS:
            raise WorkbenchError(f"kind must be one of {KINDS}, got {kind!r}")
        t = self.tensors[self.tensors["backend"] == self._backend(backend)]
        scaled = t[f"{kind}_max_abs"] / t["ref_max_abs"].where(t["ref_max_abs"] > 0, 1.0)
        cols = ["topo", "node", "op", "value", f"{kind}_max_abs", f"{kind}_max_rel"]
        cols += [f"{kind}_snr_db", f"{kind}_max_ulp", f"{kind}_out_of_tol"]
        return t.assign(scaled=scaled).nlargest(n, "scaled")[[*cols, "scaled"]]

    def summary(self) -> str:
        m = self.meta
        lines = [
            f"{m['model']}: {m['reference']} ({m['reference_precision']}, level 0) vs "
            + ", ".join(f"{b} ({m['precisions'][b]}, level {m['level']})" for b in self.backends)
        ]
        for b in self.backends:
            t = self.tensors[self.tensors["backend"] == b]
            atol, rtol = self.tolerance(b)
            fused = int((t.drop_duplicates("node")["origin"].map(len) > 1).sum())
            lines.append(
                f"  {b}: {len(t)} tensors ({fused} from fused nodes), "
                f"{m['seconds'][b]['total']:.2f} s"
            )
            skipped = t[(t["acc_status"] != "ok") | (t["local_status"] != "ok")]
            if len(skipped):
                why = "; ".join(f"{n} x {s}" for s, n in skipped["note"].value_counts().items())
                lines.append(f"    not compared ({len(skipped)}): {why}")
            for kind, label in (("local", "local"), ("acc", "accumulated")):
                if t.empty:
                    break
                ok = t[f"{kind}_max_abs"].notna()
                if not ok.any():
                    continue
                i = t.loc[ok, f"{kind}_max_abs"].idxmax()
                lines.append(
                    f"    {label:<11} max_abs {t.loc[i, f'{kind}_max_abs']:.3g} at "
                    f"{t.loc[i, 'node']!r}; max_ulp {t.loc[ok, f'{kind}_max_ulp'].max():.3g}; "
                    f"min SNR {t.loc[ok, f'{kind}_snr_db'].min():.1f} dB; "
                    f"{int((t.loc[ok, f'{kind}_out_of_tol'] > 0).sum())} tensors out of tolerance"
                )
            d = self.first_divergence(backend=b)
            lines.append(
                f"    first local divergence (atol={atol:g}, rtol={rtol:g}): "
                + (f"{d.node!r} ({d.op})" if d else "none")
            )
        if self.path is not None:
            lines.append(f"  saved to {self.path}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"<Comparison {m['model']}: {', '.join(self.backends)} vs {m['reference']} "
            f"({m['reference_precision']}), {len(self.tensors)} tensors>"
        )

    # -- store ---------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write to the run store (kind "compare"); returns the run's path."""
        from .store import save_run

        tables = {"tensors": _encode(self.tensors), "nodes": _encode(self.nodes)}
        meta = {**self.meta, "summary": self._numbers()}
        self.path = Path(save_run("compare", self.meta["model"], meta, tables, self.arrays))
        return self.path

    def _numbers(self) -> dict[str, Any]:
        """Headline numbers for the store's `runs()` table (first tested backend)."""
        b = self.backends[0]
        t = self.tensors[self.tensors["backend"] == b]
        d = self.first_divergence(backend=b)
        return {
            "tensors": len(t),
            "local_max_abs": float(t["local_max_abs"].max()) if len(t) else 0.0,
            "acc_max_abs": float(t["acc_max_abs"].max()) if len(t) else 0.0,
            "first_divergence": d.node if d else "",
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> Comparison:
        """A Comparison read back from the run store."""
        from .store import load_run

        meta, tables, arrays = load_run(path)
        if meta.get("kind", "compare") != "compare":
            raise WorkbenchError(f"{path} holds a {meta.get('kind')!r} run, not a comparison")
        return cls(
            dict(meta),
            _decode(tables["tensors"]),
            _decode(tables["nodes"]),
            dict(arrays or {}),
            Path(meta["path"]),
        )

    # -- helpers -------------------------------------------------------------------------------
    def _backend(self, backend: str | None) -> str:
        if backend is None:
            return self.backends[0]
        if backend not in self.backends:
            raise WorkbenchError(
                f"backend {backend!r} is not in this comparison; it has: {', '.join(self.backends)}"
            )
        return backend

    def _rtol_column(self, rtol: float) -> int:
        rtols = np.asarray(self.meta["rtols"], np.float64)
        hit = np.flatnonzero(np.isclose(rtols, rtol, rtol=1e-9, atol=0.0))
        if not len(hit):
            raise WorkbenchError(
                f"rtol {rtol:g} was not recorded; recorded: {', '.join(f'{r:g}' for r in rtols)} "
                f"(pass rtols=[{rtol:g}] to compare to record it)"
            )
        return int(hit[0])

    def _metrics(self, row: pd.Series, kind: str) -> dict[str, Any]:
        return {k: row[f"{kind}_{k}"] for k in METRICS}

    def _paths(self, backend: str, start: str) -> tuple[list[str], list[str]]:
        """Shortest chain of consumers from `start` to a graph output, and all it reaches."""
        nodes = self.nodes[self.nodes["backend"] == backend]
        consumers = dict(zip(nodes["node"], nodes["consumers"], strict=True))
        is_output = dict(zip(nodes["node"], nodes["is_output"], strict=True))
        topo = dict(zip(nodes["node"], nodes["topo"], strict=True))
        parent: dict[str, str | None] = {start: None}
        queue, end = deque([start]), None
        while queue:
            n = queue.popleft()
            if is_output.get(n) and end is None:
                end = n
            for c in sorted(consumers.get(n, ()), key=lambda c: topo.get(c, 0)):
                if c not in parent:
                    parent[c] = n
                    queue.append(c)
        chain: list[str] = []
        while end is not None:
            chain.append(end)
            end = parent[end]
        downstream = sorted((n for n in parent if n != start), key=lambda n: topo.get(n, 0))
        return chain[::-1], downstream


# -- running it ----------------------------------------------------------------------------------


def compare(
    model: Model | str | os.PathLike | bytes | onnx.ModelProto,
    backends: str | Sequence[str] = ("x86",),
    reference: str = "reference",
    inputs: Mapping[str, Any] | None = None,
    *,
    level: int = 2,
    dims: Mapping[str, int] | None = None,
    reference_precision: str = "fp64",
    atol: float | None = None,
    rtol: float | None = None,
    rtols: Sequence[float] = (),
    progress: bool = True,
    save: bool = True,
) -> Comparison:
    """Compare every tensor of `model` on each of `backends` with `reference`.

    `inputs`: feeds by input name (default: deterministic random feeds, with `dims` for
    symbolic dims). `level`: the opt level of the backends under test (the reference
    always runs level 0, in `reference_precision`). `atol`/`rtol`: the per-element
    tolerance (default by the tested precision, see `TOLERANCES`); `rtols`: extra rtols
    that `first_divergence` may be asked about later. `save`: write the result to the run
    store as soon as it exists.
    """
    started = time.perf_counter()
    source = model if isinstance(model, Model) else load(model)
    names = [backends] if isinstance(backends, str) else list(backends)
    if not names:
        raise WorkbenchError("compare needs at least one backend to test")

    t0 = time.perf_counter()
    ref_sess = Session(source, reference, precision=reference_precision, level=0)
    feeds = dict(inputs) if inputs is not None else ref_sess.random_feeds(dims)
    ref_sess.run(feeds, keep=True)
    refs = ref_sess.intermediates
    ref_producer = {v.name: n.name for n in ref_sess.model.graph.nodes for v in n.outputs}
    seconds: dict[str, Any] = {"reference": time.perf_counter() - t0}

    sessions = {b: Session(source, b, level=level) for b in names}
    tolerances = {b: _tolerance(s.precision, atol, rtol) for b, s in sessions.items()}
    ladder = sorted({*RTOLS, *(float(r) for r in rtols), *(r for _, r in tolerances.values())})

    rows: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    for b, sess in sessions.items():
        t0 = time.perf_counter()
        got, t_run = _compare_backend(
            b, sess, feeds, refs, ref_producer, tolerances[b], ladder, progress
        )
        rows += got
        node_rows += _node_rows(b, sess.plan)
        seconds[b] = {"run": t_run, "total": time.perf_counter() - t0}
    seconds["total"] = time.perf_counter() - started

    nbins, nr = len(HIST_EDGES) - 1, len(ladder)
    arrays: dict[str, np.ndarray] = {
        "hist_edges": HIST_EDGES.copy(),
        "rtols": np.asarray(ladder, np.float64),
    }
    for kind in KINDS:
        hist = [r.pop(f"_{kind}_hist") for r in rows]
        need = [r.pop(f"_{kind}_need") for r in rows]
        arrays[f"hist_{kind}"] = np.stack(hist) if rows else np.zeros((0, nbins), np.int64)
        arrays[f"need_atol_{kind}"] = np.stack(need) if rows else np.zeros((0, nr))
    meta = {
        "model": source.name,
        "model_hash": model_hash(source),
        "backend": ",".join(names),
        "backends": names,
        "reference": reference,
        "reference_precision": reference_precision,
        "precisions": {b: s.precision for b, s in sessions.items()},
        "level": level,
        "tolerances": {b: list(t) for b, t in tolerances.items()},
        "rtols": ladder,
        "feeds": {k: [str(np.asarray(x).dtype), list(np.shape(x))] for k, x in feeds.items()},
        "dims": dict(dims or {}),
        "n_reference_nodes": len(ref_sess.plan.steps),
        "n_steps": {b: len(s.plan.steps) for b, s in sessions.items()},
        "seconds": seconds,
    }
    import pandas as pd

    tensors = pd.DataFrame(rows, columns=_columns())
    result = Comparison(meta, tensors, pd.DataFrame(node_rows, columns=_NODE_COLUMNS), arrays)
    result.graphs = {b: sess.model.graph for b, sess in sessions.items()}
    if save:
        result.save()
    return result


def _tolerance(precision: str, atol: float | None, rtol: float | None) -> tuple[float, float]:
    d_atol, d_rtol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    return (d_atol if atol is None else float(atol), d_rtol if rtol is None else float(rtol))


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def _rerun(
    sess: Session, step: Step, env: list[Any], refs: Mapping[str, Any]
) -> tuple[list[Any], str]:
    """Run `step` again with its inputs taken from the reference, in the tested dtypes.

    Constants stay the tested side's own (folded weights are part of what is tested);
    an input the reference has no tensor for (a value a pass created) keeps the tested
    run's value, and the note says so: that input's error then counts as local.
    """
    plan, backend = sess.plan, sess.backend
    args, from_tested = [], []
    for slot in step.inputs:
        cur = env[slot]
        v = plan.values[slot]
        if slot == NONE_SLOT or v is None or v.is_const or cur is None:
            args.append(cur)
            continue
        ref = refs.get(v.name)
        dtype, shape = getattr(cur, "dtype", None), getattr(cur, "shape", None)
        if isinstance(ref, np.ndarray) and dtype is not None and tuple(shape) == ref.shape:
            args.append(backend.to_device(np.asarray(ref).astype(np.dtype(dtype))))
        else:
            args.append(cur)
            from_tested.append(v.name)
    note = f"local run took {', '.join(from_tested)} from the tested run" if from_tested else ""
    try:
        outs = step.run(*args)
        backend.synchronize()
    except Exception as e:  # the local run is a diagnosis: report, do not abort it
        return [e] * len(step.outputs), note
    return [sess._to_host(o) for o in outs], note


def _compare_backend(
    backend: str,
    sess: Session,
    feeds: Mapping[str, Any],
    refs: Mapping[str, Any],
    ref_producer: dict[str, str],
    tol: tuple[float, float],
    ladder: list[float],
    progress: bool,
) -> tuple[list[dict[str, Any]], float]:
    """Rows of one tested backend (its run kept whole, then every step re-run locally),
    and the seconds its run took."""
    t0 = time.perf_counter()
    reruns = None
    if getattr(sess, "remote", False):  # arm: its worker runs it and re-runs every step
        env, reruns, t_run = sess.compare_steps(feeds, refs)
    else:
        env = execute(sess.plan, sess.prepare(feeds), keep=True)
        sess.backend.synchronize()
        t_run = time.perf_counter() - t0
    steps = sess.plan.steps
    named = [
        [(k, s) for k, s in enumerate(step.outputs) if s != SINK_SLOT and sess.plan.values[s]]
        for step in steps
    ]
    bar = _progress(2 * len(steps), f"compare {backend}", progress)
    # accumulated error first, for every step: a re-run may write into buffers the
    # tested run's values live in, so nothing runs again until those are measured
    per_step: list[list[dict[str, Any]]] = []
    for topo, step in enumerate(steps):
        rows = []
        for _, slot in named[topo]:
            v = sess.plan.values[slot]
            tested = sess._to_host(env[slot])
            row = _row(backend, sess, topo, step, v, ref_producer, tested)
            _put(row, "acc", tested, refs.get(v.name), tol, ladder)
            rows.append(row)
        per_step.append(rows)
        bar.update()
    for topo, step in enumerate(steps):
        if named[topo]:
            if reruns is not None:
                local_outs, note = reruns[topo]
            else:
                local_outs, note = _rerun(sess, step, env, refs)
            for (k, slot), row in zip(named[topo], per_step[topo], strict=True):
                v = sess.plan.values[slot]
                _put(row, "local", local_outs[k], refs.get(v.name), tol, ladder, note)
        bar.update()
    bar.close()
    return [row for rows in per_step for row in rows], t_run


def _row(
    backend: str,
    sess: Session,
    topo: int,
    step: Step,
    v: Any,
    ref_producer: dict[str, str],
    tested: Any,
) -> dict[str, Any]:
    node = step.node
    is_array = isinstance(tested, np.ndarray)
    return {
        "backend": backend,
        "precision": sess.precision,
        "topo": topo,
        "node": node.name,
        "op": node.op_type,
        "domain": node.domain,
        "origin": tuple(node.meta.get("origin", (node.name,))),
        "ref_node": ref_producer.get(v.name, ""),
        "value": v.name,
        "dtype": str(tested.dtype) if is_array else type(tested).__name__,
        "shape": tuple(int(d) for d in tested.shape) if is_array else (),
        "size": int(tested.size) if is_array else 0,
        "fallback": bool(step.kernel.fallback),
        "ref_max_abs": np.nan,
        "note": "",
    }


def _put(
    row: dict[str, Any],
    kind: str,
    x: Any,
    ref: Any,
    tol: tuple[float, float],
    ladder: list[float],
    note: str = "",
) -> None:
    """Metrics of `x` against `ref` into `row` as `kind` columns (NaN when not comparable)."""
    notes = [n for n in (row["note"], note) if n]
    status, why, m = _measure(x, ref, tol, ladder)
    row[f"{kind}_status"] = status
    if m is None:
        for k in METRICS:
            row[f"{kind}_{k}"] = np.nan
        row[f"_{kind}_hist"] = np.zeros(len(HIST_EDGES) - 1, np.int64)
        row[f"_{kind}_need"] = np.full(len(ladder), np.nan)
        if why and why not in notes:
            notes.append(why)
    else:
        row["ref_max_abs"] = m.ref_max_abs
        for k, val in m.as_dict().items():
            row[f"{kind}_{k}"] = val
        row[f"_{kind}_hist"] = m.hist
        row[f"_{kind}_need"] = m.need_atol
    row["note"] = "; ".join(notes)


def _measure(
    x: Any, ref: Any, tol: tuple[float, float], ladder: list[float]
) -> tuple[str, str, TensorMetrics | None]:
    """(status, why, metrics): status "ok" with metrics, else what stopped the comparison."""
    if isinstance(x, Exception):
        return "failed", f"local run failed: {type(x).__name__}: {x}", None
    if ref is None:
        return "no reference", "no reference tensor of that name", None
    if not isinstance(x, np.ndarray) or not isinstance(ref, np.ndarray):
        return "not a tensor", f"not a tensor ({type(x).__name__})", None
    if x.shape != ref.shape:
        return "shape", f"shape {list(x.shape)} but reference {list(ref.shape)}", None
    try:
        return "ok", "", tensor_metrics(x, ref, atol=tol[0], rtol=tol[1], rtols=ladder)
    except TypeError as e:
        return "dtype", str(e), None


_NODE_COLUMNS = ["backend", "topo", "node", "op", "origin", "outputs", "consumers", "is_output"]


def _node_rows(backend: str, plan: Plan) -> list[dict[str, Any]]:
    outputs = {name for name, _ in plan.outputs}
    rows = []
    for topo, step in enumerate(plan.steps):
        node = step.node
        named = [v.name for v in node.outputs if v.name]
        consumers = {c.name for v in node.outputs for c in v.consumers()}
        rows.append(
            {
                "backend": backend,
                "topo": topo,
                "node": node.name,
                "op": node.op_type,
                "origin": tuple(node.meta.get("origin", (node.name,))),
                "outputs": tuple(named),
                "consumers": tuple(sorted(consumers)),
                "is_output": any(n in outputs for n in named),
            }
        )
    return rows


def _columns() -> list[str]:
    head = ["backend", "precision", "topo", "node", "op", "domain", "origin", "ref_node"]
    head += ["value", "dtype", "shape", "size", "fallback", "ref_max_abs"]
    metrics = [f"{k}_{m}" for k in KINDS for m in (*METRICS, "status")]
    return [*head, *metrics, "note"]


# tuple columns travel through the store as JSON text
_TUPLES = ("origin", "shape", "outputs", "consumers")


def _encode(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in _TUPLES:
        if c in out:
            out[c] = [json.dumps(list(x)) for x in out[c]]
    return out


def _decode(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in _TUPLES:
        if c in out:
            out[c] = [tuple(json.loads(x)) if isinstance(x, str) else tuple(x) for x in out[c]]
    return out
