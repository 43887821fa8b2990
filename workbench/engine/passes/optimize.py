"""`optimize(model, level, backend)`: run the pipeline, keep before/after and the whole story.

Opt levels: 0 none; 1 cleanup (constant and shape folding, Identity/Dropout elimination,
dead code, common subexpressions); 2 fusions; 3 layout (channels-last chains of
convolutions, for the backends that prefer them). Passes are discovered: every module in
`passes/cleanup/`, `passes/fusion/` and `passes/layout/` that defines `PASSES`
contributes them, ordered by (level, order).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import Model
from .infra import (
    Change,
    Pass,
    PassContext,
    PassFailure,
    PassManager,
    PassTiming,
    Rejection,
)

LEVELS = {0: "none", 1: "cleanup", 2: "fusions", 3: "layout"}


def all_passes() -> list[Pass]:
    """Every pass of the pipeline, ordered by (level, order)."""
    found: list[Pass] = []
    for sub in ("cleanup", "fusion", "layout"):
        pkg = importlib.import_module(f"{__package__}.{sub}")
        for info in pkgutil.iter_modules(pkg.__path__):
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            found += list(getattr(module, "PASSES", ()))
    return sorted(found, key=lambda p: (p.level, p.order, p.name))


@dataclass(frozen=True)
class Fate:
    """Where an original ONNX node went."""

    kind: str  # kept | fused | folded | eliminated | merged
    into: str = ""  # the optimized node (or constant) that now stands for it
    pass_name: str = ""
    rule: str = ""

    def __str__(self) -> str:
        if self.kind == "kept":
            return f"kept as {self.into}"
        if self.kind == "eliminated" and self.pass_name == "dead_code":
            return "eliminated as dead"
        where = f" by {self.rule or self.pass_name}" if (self.rule or self.pass_name) else ""
        target = f" into {self.into}" if self.into else ""
        return f"{self.kind}{target}{where}"


@dataclass
class OptimizeResult:
    before: Model
    after: Model
    level: int
    backend: str
    changes: list[Change] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    failures: list[PassFailure] = field(default_factory=list)

    # -- provenance, both ways -----------------------------------------------------------------
    def origin(self, node_name: str) -> tuple[str, ...]:
        """The original ONNX nodes an optimized node came from."""
        for n in self.after.graph.walk():
            if n.name == node_name:
                return tuple(n.meta.get("origin", (n.name,)))
        raise KeyError(f"no node {node_name!r} in the optimized graph")

    def fates(self) -> dict[str, Fate]:
        """Every original node -> where it went (kept, fused into X, folded, eliminated)."""
        out: dict[str, Fate] = {}
        for ch in self.changes:  # later changes overwrite earlier ones
            target = ch.added[0] if ch.added else ch.detail
            for name in ch.origin:
                out[name] = Fate(ch.kind, target, ch.pass_name, ch.rule)
        for n in self.after.graph.walk():
            origin = tuple(n.meta.get("origin", (n.name,)))
            for name in origin:
                if origin == (name,) and n.name == name:
                    out[name] = Fate("kept", n.name)
                else:
                    prior = out.get(name) or Fate("fused")
                    kind = prior.kind if prior.kind in ("fused", "rewritten") else "fused"
                    out[name] = Fate(kind, n.name, prior.pass_name, prior.rule)
        res = {n.name: out.get(n.name, Fate("eliminated")) for n in self.before.graph.walk()}
        for name, f in res.items():  # follow merges: merged into Y, and Y later fused into Z
            for _ in range(8):
                t = res.get(f.into) if f.kind == "merged" else None
                if t is None or t.kind in ("kept", "merged"):
                    break
                f = Fate("merged", t.into, f.pass_name, f.rule)
            res[name] = f
        return res

    def fate(self, original: str) -> Fate:
        return self.fates()[original]

    # -- summaries -------------------------------------------------------------------------------
    def counts_by_rule(self) -> Counter[str]:
        return Counter(c.rule or c.pass_name for c in self.changes)

    def summary(self) -> str:
        b, a = len(self.before.graph.nodes), len(self.after.graph.nodes)
        lines = [f"{self.before.name}: {b} -> {a} nodes at level {self.level} for {self.backend}"]
        for rule, count in sorted(self.counts_by_rule().items()):
            lines.append(f"  {rule}: {count}")
        if self.rejected:
            reasons = Counter(f"{r.rule}: {r.reason}" for r in self.rejected)
            lines.append(f"  not applied ({len(self.rejected)}):")
            lines += [f"    {n} x {why}" for why, n in reasons.most_common(8)]
        for f in self.failures:
            lines.append(f"  FAILED {f.error}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<OptimizeResult {self.summary().splitlines()[0]}>"


def optimize(
    model: Model | Any,
    level: int = 2,
    backend: str = "x86",
    *,
    disabled: Iterable[str] = (),
    instruments: Sequence[Any] = (),
    passes: Sequence[Pass] | None = None,
    strict: bool = False,
) -> OptimizeResult:
    """Optimize a copy of `model` for `backend`; `model` itself is never modified."""
    from ..model import Model as _Model
    from ..onnx_io import load

    before = model if isinstance(model, _Model) else load(model)
    if level not in LEVELS:
        from ...errors import WorkbenchError

        raise WorkbenchError(f"opt level must be one of {sorted(LEVELS)}, got {level!r}")
    timing = PassTiming()
    ctx = PassContext(
        level=level,
        backend=backend,
        opsets=dict(before.opset_imports),
        disabled=frozenset(disabled),
        instruments=(timing, *instruments),
    )
    after = before.clone()
    manager = PassManager(all_passes() if passes is None else passes, ctx, strict=strict)
    result = manager.run(after.graph)
    after.graph = result.graph
    if any(n.domain == "workbench" for n in after.graph.walk()):
        after.opset_imports = {**after.opset_imports, "workbench": 1}
    return OptimizeResult(
        before,
        after,
        level,
        backend,
        result.changes,
        result.rejected,
        timing.times,
        result.failures,
    )
