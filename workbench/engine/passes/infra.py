"""Pass infrastructure: results with change records, a context, a manager, instruments.

Shaped after onnx-ir's `PassResult(model, modified)` and TVM's `PassContext` (opt level,
disabled passes, instruments): timing or dumping passes needs no edit of the pipeline.
A pass that raises leaves the graph as it was before it ran; the failure names the pass,
the rule and nodes when it knows them, and the passes that ran before it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import WorkbenchError
from ..ir import Graph, Node


class PassError(WorkbenchError):
    """A pass raised: a bug in that pass or rule, reported with where it happened."""


@dataclass(frozen=True)
class Change:
    """One rule application or cleanup step."""

    pass_name: str
    rule: str
    kind: str  # fused | folded | eliminated | merged | rewritten
    removed: tuple[str, ...]  # names of the nodes taken out (in the graph the pass saw)
    added: tuple[str, ...]  # names of the nodes put in
    origin: tuple[str, ...]  # the original ONNX nodes concerned
    detail: str = ""


@dataclass(frozen=True)
class Rejection:
    """A candidate a rule looked at and refused, with the reason in words."""

    pass_name: str
    rule: str
    nodes: tuple[str, ...]
    reason: str


@dataclass
class PassResult:
    graph: Graph
    modified: bool
    changes: list[Change] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


@dataclass
class PassContext:
    """What every pass may consult: the opt level, the target backend, the model's opsets,
    passes switched off by name, and instruments called around each pass."""

    level: int = 2
    backend: str = "x86"
    opsets: dict[str, int] = field(default_factory=lambda: {"": 17})
    disabled: frozenset[str] = frozenset()
    instruments: Sequence[Any] = ()

    @property
    def opset(self) -> int:
        return self.opsets.get("", 17)

    def enabled(self, p: Pass) -> bool:
        return p.level <= self.level and p.name not in self.disabled

    def backend_supports(self, op_type: str, domain: str = "workbench", opset: int = 1) -> bool:
        """Whether the target backend has a kernel for a fused op (no fallback wanted)."""
        from ..backends import get_backend

        return get_backend(self.backend, require_available=False).supports(domain, op_type, opset)


class Pass:
    """Base class: `name`, the lowest opt `level` it runs at, and `run(graph, ctx)`."""

    name: str = ""
    level: int = 1
    order: int = 50  # position within its level: lower runs first
    description: str = ""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pass {self.name} (level {self.level})>"


class FunctionPass(Pass):
    """A pass from a plain function `fn(graph, ctx) -> PassResult`."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Graph, PassContext], PassResult],
        *,
        level: int = 1,
        order: int = 50,
        description: str = "",
    ) -> None:
        self.name, self.level, self.order = name, level, order
        self.description = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        self._fn = fn

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return self._fn(graph, ctx)


class PassTiming:
    """Instrument: wall time per pass (seconds), in `times`."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t0 = 0.0

    def before_pass(self, p: Pass, graph: Graph) -> None:
        self._t0 = time.perf_counter()

    def after_pass(self, p: Pass, graph: Graph, result: PassResult | None) -> None:
        self.times[p.name] = self.times.get(p.name, 0.0) + time.perf_counter() - self._t0


@dataclass
class PassFailure:
    pass_name: str
    error: str


@dataclass
class ManagerResult:
    graph: Graph
    changes: list[Change] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    failures: list[PassFailure] = field(default_factory=list)


class PassManager:
    """Runs passes in order under a context. With `strict`, a failing pass raises
    `PassError`; otherwise it is recorded (and warned about) and the graph is the one
    from before that pass."""

    def __init__(self, passes: Sequence[Pass], ctx: PassContext, *, strict: bool = False) -> None:
        self.passes = sorted(passes, key=lambda p: (p.level, p.order))
        self.ctx = ctx
        self.strict = strict

    def run(self, graph: Graph) -> ManagerResult:
        out = ManagerResult(graph)
        for p in self.passes:
            if not self.ctx.enabled(p):
                continue
            snapshot = out.graph.clone()
            for inst in self.ctx.instruments:
                inst.before_pass(p, out.graph)
            try:
                result = p.run(out.graph, self.ctx)
            except Exception as e:
                msg = (
                    f"pass {p.name!r} failed: {type(e).__name__}: {e}; "
                    f"passes run before it: {', '.join(out.ran) or 'none'}; "
                    "the graph is left as it was before this pass"
                )
                for inst in self.ctx.instruments:
                    inst.after_pass(p, snapshot, None)
                if self.strict:
                    raise PassError(msg) from e
                warnings.warn(msg, stacklevel=2)
                out.failures.append(PassFailure(p.name, msg))
                out.graph = snapshot
                continue
            for inst in self.ctx.instruments:
                inst.after_pass(p, result.graph, result)
            out.graph = result.graph
            out.changes += result.changes
            out.rejected += result.rejected
            out.ran.append(p.name)
        return out


def origin_of(nodes: Sequence[Node]) -> tuple[str, ...]:
    """The original ONNX nodes a group of nodes stands for, in order, without repeats."""
    seen: dict[str, None] = {}
    for n in nodes:
        for name in n.meta.get("origin", (n.name,)):
            seen.setdefault(name, None)
    return tuple(seen)
