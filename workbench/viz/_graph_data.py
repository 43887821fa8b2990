"""What the graph figure draws: the graph of a Model, OptimizeResult, Profile or Comparison,
and per node the facts shown on hover and in the Explorer's detail panel.

A Profile and a Comparison hold tables keyed by node name, not the graph they measured.
The graph comes, in this order, from the object itself (a `graph` attribute: a Graph or a
Model), from a Model or OptimizeResult passed beside it (`graph([model, prof])`), or from
the zoo when the run's model is a zoo model whose hash matches. A source model is
optimized at the run's level for the run's backend (the same deterministic passes a
Session runs), so node names line up with the tables.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..engine.ir import Graph, Node, Value, np_dtype
from ..engine.model import Model
from ..errors import WorkbenchError

_MAX_ATTR_CHARS = 60
_EXACT_STATS_SIZE = 1 << 20  # above this, std from one dot product (no temporary copy)


# -- what was passed ---------------------------------------------------------------------------


def _kind(x: Any) -> str:
    from ..engine.passes.optimize import OptimizeResult
    from ..profiler.compare import Comparison
    from ..profiler.profile import Profile

    for cls, name in (
        (Model, "model"),
        (OptimizeResult, "result"),
        (Profile, "profile"),
        (Comparison, "comparison"),
        (Graph, "graph"),
    ):
        if isinstance(x, cls):
            return name
    raise WorkbenchError(
        "wb.viz.graph takes a Model, an OptimizeResult, a Profile or a Comparison "
        f"(or a list of them, e.g. [model, profile]), got {type(x).__name__}"
    )


@dataclass
class Subject:
    """The graph to draw and the measurements to paint on it."""

    graph: Graph
    name: str
    profiles: list[Any] = field(default_factory=list)
    comparisons: list[Any] = field(default_factory=list)
    backend: str | None = None  # whose times colour the nodes
    tested: str | None = None  # the tested backend whose errors colour the nodes
    dims: dict[str, int] = field(default_factory=dict)
    level: int | None = None
    times: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # backend->node
    errors: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # tested->node

    @property
    def pair(self) -> str | None:
        if self.tested is None:
            return None
        ref = self.comparisons[0].meta.get("reference", "reference")
        return f"{self.tested} vs {ref}"


def resolve(obj: Any, backend: str | None = None, pair: Any = None) -> Subject:
    """Sort what was passed into the graph to draw and its measurements."""
    items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    if not items:
        raise WorkbenchError("wb.viz.graph got an empty list: pass a Model, Profile, ...")
    kinds = [_kind(x) for x in items]
    of = {k: [x for x, kk in zip(items, kinds) if kk == k] for k in set(kinds)}
    profiles, comparisons = of.get("profile", []), of.get("comparison", [])
    sources: list[Model] = of.get("model", []) + [r.before for r in of.get("result", [])]

    tested = _tested_backend(comparisons, backend, pair)
    if backend is not None and profiles and backend not in {p.backend for p in profiles}:
        have = ", ".join(sorted({p.backend for p in profiles}))
        raise WorkbenchError(f"no profile on backend {backend!r}; the profiles are on: {have}")
    prof_backend = backend or (profiles[0].backend if profiles else None)

    # the graph: of the primary measurement when there is one
    primary = next((p for p in profiles if p.backend == prof_backend), None)
    if primary is not None:
        want = (int(primary.meta.get("level", 2)), primary.backend, list(primary.kernels["node"]))
        graph = _measured_graph(primary, sources, *want, getattr(primary, "model", ""))
        level = want[0]
    elif comparisons:
        c = comparisons[0]
        nodes = c.nodes[c.nodes["backend"] == tested]
        want = (int(c.meta.get("level", 2)), tested, list(nodes["node"]))
        graph = _measured_graph(c, sources, *want, c.meta.get("model", ""))
        level = want[0]
    elif of.get("result"):
        graph, level = of["result"][0].after.graph, of["result"][0].level
    elif of.get("model"):
        graph, level = of["model"][0].graph, None
    else:
        graph, level = of["graph"][0], None

    model = next(iter(sources), None)
    dims = dict(model.default_dims()) if model is not None else {}
    for p in profiles:
        dims.update(p.meta.get("dims") or {})
    name = (
        model.name
        if model is not None
        else str((profiles or comparisons)[0].meta.get("model", graph.name))
        if profiles or comparisons
        else graph.name
    )
    s = Subject(graph, name, profiles, comparisons, prof_backend, tested, dims, level)
    s.times = {p.backend: _time_rows(p) for p in profiles}
    if not s.times:
        found = {n.name: dict(n.meta["prof"]) for n in graph.nodes if "prof" in n.meta}
        if found:  # a graph the profiler annotated (torch.fx style node.meta["prof"])
            s.times = {"profiled": found}
            s.backend = "profiled"
    s.errors = {b: _error_rows(c, b) for c in comparisons for b in c.backends if b not in s.errors}
    return s


def _tested_backend(comparisons: list[Any], backend: str | None, pair: Any) -> str | None:
    if not comparisons:
        if pair is not None:
            raise WorkbenchError("pair= needs a Comparison (wb.compare(...)) among the objects")
        return None
    tested = [b for c in comparisons for b in c.backends]
    want: str | None = None
    if pair is not None:
        names = [pair] if isinstance(pair, str) else list(pair)
        ref = comparisons[0].meta.get("reference", "reference")
        names = [n for n in names if n != ref] or names
        want = names[0]
    elif backend is not None and backend in tested:
        want = backend
    if want is None:
        return tested[0]
    if want not in tested:
        raise WorkbenchError(
            f"no comparison of backend {want!r}; compared: {', '.join(dict.fromkeys(tested))}"
        )
    return want


# optimized graphs of source models, so a redraw does not optimize again
_OPTIMIZED: OrderedDict[tuple[int, int, str], tuple[Model, Model]] = OrderedDict()


def _measured_graph(
    run: Any, sources: list[Model], level: int, backend: str, names: list[str], model_name: str
) -> Graph:
    own = getattr(run, "graph", None) or (getattr(run, "graphs", None) or {}).get(backend)
    if isinstance(own, Model):
        own = own.graph
    if isinstance(own, Graph):
        return own
    if not sources:
        sources = _zoo_source(run, model_name)
    want = set(names)
    for m in sources:
        if want <= {n.name for n in m.graph.nodes}:
            return m.graph  # already the graph that ran
    for m in sources:
        key = (id(m), level, backend)
        hit = _OPTIMIZED.get(key)
        if hit is None or hit[0] is not m:
            from ..engine.passes import optimize

            hit = (m, optimize(m, level, backend).after)
            _OPTIMIZED[key] = hit
            while len(_OPTIMIZED) > 4:
                _OPTIMIZED.popitem(last=False)
        if want <= {n.name for n in hit[1].graph.nodes}:
            return hit[1].graph
    raise WorkbenchError(
        f"the model passed does not match the run of {model_name!r}: its nodes at level "
        f"{level} for {backend} are not the ones measured; pass the model that was measured"
    )


def _zoo_source(run: Any, model_name: str) -> list[Model]:
    """The zoo model a run measured, rebuilt, when its hash matches the run's."""
    from .. import zoo
    from ..engine.onnx_io import load
    from ..profiler.store import model_hash

    if model_name in zoo.names():
        m = load(zoo.get(model_name))
        if model_hash(m) == run.meta.get("model_hash"):
            return [m]
    raise WorkbenchError(
        f"this {type(run).__name__} of {model_name!r} does not hold its graph: pass the model "
        "with it, e.g. wb.viz.graph([model, run])"
    )


def _time_rows(p: Any) -> dict[str, dict[str, Any]]:
    cols = ["node", "op", "backend", "algorithm", "fallback", "median_ms", "pct"]
    cols += ["in_shapes", "out_shapes", "bytes", "flops"]
    cols = [c for c in cols if c in p.kernels]
    return {r["node"]: r for r in p.kernels[cols].to_dict("records")}


def _error_rows(c: Any, backend: str) -> dict[str, dict[str, float]]:
    t = c.tensors[c.tensors["backend"] == backend]
    ref = t["ref_max_abs"].where(t["ref_max_abs"] > 0, 1.0)
    frame = t.assign(local_scaled=t["local_max_abs"] / ref, acc_scaled=t["acc_max_abs"] / ref)
    cols = ["local_max_abs", "acc_max_abs", "local_scaled", "acc_scaled"]
    cols += ["local_max_rel", "acc_max_rel"]
    agg = frame.groupby("node", sort=False)[cols].max()
    return {str(k): {c: float(v) for c, v in row.items()} for k, row in agg.iterrows()}


# -- facts per node ----------------------------------------------------------------------------


def fmt_shape(shape: Sequence[Any] | None) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@lru_cache(maxsize=64)
def _dtype_name(elem_type: int) -> str | None:
    dt = np_dtype(elem_type)
    return None if dt is None else str(dt)


def _dtype(v: Value) -> str:
    name = _dtype_name(v.elem_type)
    return name if name is not None else ("?" if v.type_proto is None else "non-tensor")


_STATS: dict[int, tuple[Any, dict[str, Any]]] = {}


def weight_stats(a: np.ndarray) -> dict[str, Any]:
    """shape, dtype, min, max, mean, std of a constant (cached per array: weights are shared
    between a model and its clones, and never written in place)."""
    hit = _STATS.get(id(a))
    if hit is not None and hit[0]() is a:
        return hit[1]
    out: dict[str, Any] = {"shape": list(a.shape), "dtype": str(a.dtype), "size": int(a.size)}
    if a.size and (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        x = a.reshape(-1)
        if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
        mean = float(x.sum(dtype=np.float64 if x.size <= _EXACT_STATS_SIZE else None)) / x.size
        if x.size <= _EXACT_STATS_SIZE:
            std = float(x.std(dtype=np.float64))
        else:  # E[x^2] - E[x]^2 from one BLAS dot: no temporary the size of the weight
            std = math.sqrt(max(float(np.dot(x, x)) / x.size - mean * mean, 0.0))
        out.update(min=float(x.min()), max=float(x.max()), mean=mean, std=std)
    with contextlib.suppress(TypeError):  # an array type without weak references
        _STATS[id(a)] = (weakref.ref(a), out)
    return out


def _short(a: Any) -> str:
    if isinstance(a, Graph):
        return f"<subgraph, {len(a.nodes)} nodes>"
    if isinstance(a, list) and a and isinstance(a[0], Graph):
        return f"<{len(a)} subgraphs>"
    if isinstance(a, np.ndarray):
        if a.size <= 8:
            items = a.reshape(-1).tolist()
            text = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in items)
            return f"[{text}]" if a.ndim else text
        return f"tensor {list(a.shape)} {a.dtype}"
    if isinstance(a, bytes):
        a = a.decode(errors="replace")
    text = repr(a)
    return text if len(text) <= _MAX_ATTR_CHARS else text[: _MAX_ATTR_CHARS - 3] + "..."


def _nbytes(shape: Sequence[Any] | None, dtype: np.dtype | None) -> int | None:
    if shape is None or dtype is None or any(not isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _runtime_shapes(text: str) -> list[tuple[int, ...] | None]:
    out: list[tuple[int, ...] | None] = []
    for tok in str(text).split(", "):
        if tok in ("-", "", "nan"):
            out.append(None)
        elif tok == "scalar":
            out.append(())
        else:
            try:
                out.append(tuple(int(d) for d in tok.split("x")))
            except ValueError:
                out.append(None)
    return out


def output_bytes(s: Subject, node: Node) -> int | None:
    """Bytes of a node's outputs: from the run's shapes when profiled, else the declared
    shapes with symbolic dims at the model's defaults."""
    row = s.times.get(s.backend or "", {}).get(node.name)
    if row is not None and "out_shapes" in row:
        shapes = _runtime_shapes(row["out_shapes"])
        total, known = 0, False
        for v, shape in zip(node.outputs, shapes):
            b = _nbytes(shape, v.dtype or np.dtype(np.float32))
            if b is not None:
                total, known = total + b, True
        if known:
            return total
    total, known = 0, False
    for v in node.outputs:
        shape = v.shape
        if shape is not None:
            shape = tuple(s.dims.get(d, d) if isinstance(d, str) else d for d in shape)
        b = _nbytes(shape, v.dtype)
        if b is not None:
            total, known = total + b, True
    return total if known else None


def node_info(s: Subject, node: Node) -> dict[str, Any]:
    """Every fact the hover and the detail panel show about one node."""
    inputs = []
    for v in node.inputs:
        if v is None:
            continue
        item: dict[str, Any] = {"name": v.name, "shape": fmt_shape(v.shape), "dtype": _dtype(v)}
        if v.is_const:
            item["weight"] = weight_stats(v.const)
        inputs.append(item)
    outputs = [
        {
            "name": v.name,
            "shape": fmt_shape(v.shape),
            "dtype": _dtype(v),
            "bytes": _nbytes(
                None
                if v.shape is None
                else tuple(s.dims.get(d, d) if isinstance(d, str) else d for d in v.shape),
                v.dtype,
            ),
        }
        for v in node.outputs
    ]
    info: dict[str, Any] = {
        "kind": "node",
        "name": node.name,
        "op": node.op_type,
        "domain": node.domain or "ai.onnx",
        "origin": list(node.meta.get("origin", (node.name,))),
        "fused_from": list(node.meta.get("fused_from", ())),
        "attributes": {k: _short(a) for k, a in node.attrs.items()},
        "inputs": inputs,
        "outputs": outputs,
        "memory_bytes": output_bytes(s, node),
        "time_ms": {},
        "share_pct": {},
        "algorithm": {},
        "runtime_shapes": {},
        "error": {},
    }
    for b, rows in s.times.items():
        row = rows.get(node.name)
        if row is None:
            continue
        info["time_ms"][b] = float(row.get("median_ms", math.nan))
        info["share_pct"][b] = float(row.get("pct", math.nan))
        if row.get("algorithm"):
            info["algorithm"][b] = str(row["algorithm"]) + (
                " (fallback)" if row.get("fallback") else ""
            )
        if "in_shapes" in row:
            info["runtime_shapes"][b] = {"in": row["in_shapes"], "out": row["out_shapes"]}
    for b, rows in s.errors.items():
        row = rows.get(node.name)
        if row is not None:
            ref = s.comparisons[0].meta.get("reference", "reference")
            info["error"][f"{b} vs {ref}"] = dict(row)
    return info


def group_info(
    s: Subject, gid: str, members: Iterable[Node], infos: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A block's summary: its nodes, ops, total time and memory, worst error."""
    nodes = list(members)
    ops = Counter(n.op_type for n in nodes)
    out: dict[str, Any] = {
        "kind": "group",
        "name": f"group:{gid}",
        "group": gid,
        "nodes": [n.name for n in nodes],
        "ops": dict(ops.most_common()),
        "time_ms": {},
        "share_pct": {},
        "error": {},
        "memory_bytes": None,
    }
    mem = [infos[n.name]["memory_bytes"] for n in nodes if infos[n.name]["memory_bytes"]]
    out["memory_bytes"] = int(sum(mem)) if mem else None
    for b in s.times:
        t = [infos[n.name]["time_ms"][b] for n in nodes if b in infos[n.name]["time_ms"]]
        p = [infos[n.name]["share_pct"][b] for n in nodes if b in infos[n.name]["share_pct"]]
        if t:
            out["time_ms"][b] = float(np.nansum(t))
            out["share_pct"][b] = float(np.nansum(p))
    pairs = {k for n in nodes for k in infos[n.name]["error"]}
    for k in pairs:
        rows = [infos[n.name]["error"][k] for n in nodes if k in infos[n.name]["error"]]
        out["error"][k] = {c: _nanmax([r[c] for r in rows]) for c in rows[0]}
    return out


def _nanmax(xs: list[float]) -> float:
    """The largest value that is not NaN; NaN when none is (no warning, unlike np.nanmax)."""
    ok = [x for x in xs if x == x]
    return max(ok) if ok else math.nan
