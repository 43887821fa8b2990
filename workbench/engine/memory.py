"""The memory planner: lifetimes over the execution order, one arena, offsets by best fit.

Sizes are only known once feeds fix the symbolic dims, so a session plans per *input
signature* (the shapes and dtypes of the feeds). The first run with a new signature runs
with fresh allocations while a `Recorder` notes, like torch.fx's ShapeProp, each value's
shape and dtype and which outputs are views of an input. `plan_memory` turns that into a
`MemoryPlan`:

1. buffers: a view (Reshape, Squeeze, Identity... returning its input's memory) joins the
   buffer of the value it views. A buffer lives from its producer's step to the last step
   reading any of its members, both inclusive: a step's inputs and outputs coexist.
2. in place: when a kernel says `run.inplace = (j, ...)` and input j's buffer dies at this
   step with output 0's size, shape and dtype, output 0 takes that buffer over.
3. offsets: greedy by size with best fit (TFLite's GreedyBySize): largest buffer first, each
   into the smallest gap left by the placed buffers whose lifetimes overlap its own.
4. lower bound: the most bytes alive at any step; no layout of these buffers needs less.

Values outside the arena are *dynamic*, allocated by their kernel on every run: graph
outputs and their views (what the caller gets must survive the next run), views of weights
or feeds, non-tensors and object arrays, and values whose shape changed between two runs
with one signature (data-dependent: NonZero, a Loop's outputs), with everything computed
from them. `MemoryPlan.program()` allocates the arena once and precomputes, per step, the
views its kernel writes into: a run then only indexes lists.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .plan import NONE_SLOT, SINK_SLOT, Plan, Step

ALIGN = 64  # offsets and sizes round up to a cache line (and one AVX-512 vector)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# -- the planner proper: lifetimes in, offsets out ----------------------------------------------
def lower_bound(sizes: list[int], firsts: list[int], lasts: list[int]) -> int:
    """The most bytes alive at once. A buffer is alive on steps first..last, so it counts
    from `first` and stops counting at `last + 1`; at equal times frees sort first."""
    events = sorted(
        [(f, s) for f, s in zip(firsts, sizes)] + [(l + 1, -s) for l, s in zip(lasts, sizes)]
    )
    live = peak = 0
    for _, change in events:
        live += change
        peak = max(peak, live)
    return peak


def assign_offsets(sizes: list[int], firsts: list[int], lasts: list[int]) -> tuple[list[int], int]:
    """Byte offsets such that buffers alive at a common step never overlap; and the total.

    Greedy by size, best fit: the largest buffers go first (they are the hardest to fit);
    each goes into the smallest gap between the placed buffers whose lifetimes overlap its
    own, or on top of them when no gap is big enough.
    """
    n = len(sizes)
    offsets = [0] * n
    lo, hi = np.zeros(n, np.int64), np.zeros(n, np.int64)  # placed byte ranges [lo, hi)
    first, last = np.asarray(firsts, np.int64), np.asarray(lasts, np.int64)
    placed = np.zeros(n, bool)
    total = 0
    for b in sorted(range(n), key=lambda b: (-sizes[b], firsts[b])):
        size = sizes[b]
        clash = np.flatnonzero(placed & (first <= lasts[b]) & (last >= firsts[b]))
        best, best_gap, top = -1, None, 0
        for i in clash[np.argsort(lo[clash], kind="stable")]:
            gap = int(lo[i]) - top  # free bytes between what is below and block i
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = top, gap
            top = max(top, int(hi[i]))
        offsets[b] = top if best < 0 else best
        lo[b], hi[b], placed[b] = offsets[b], offsets[b] + size, True
        total = max(total, offsets[b] + size)
    return offsets, total


# -- what one run showed ----------------------------------------------------------------------
def _address(a: Any) -> int:
    """The first byte of a host array, or of a device array (`__cuda_array_interface__`)."""
    face = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return face["data"][0]


def _shares(o: Any, a: Any) -> bool:
    """Whether `o` lies in `a`'s memory: bounds only (cheap); only views get here."""
    if type(o) is np.ndarray and type(a) is np.ndarray:
        return np.may_share_memory(o, a)
    return 0 <= _address(o) - _address(a) < a.nbytes


def signature(plan: Plan, env: list[Any]) -> tuple:
    """What sizes every value of a run: each feed's shape and dtype (or its type)."""
    return tuple(
        (x.shape, x.dtype.str) if isinstance(x, np.ndarray) else type(x).__name__
        for x in (env[s] for _, s in plan.inputs)
    )


class Recorder:
    """`execute(..., observe=recorder)` of a run with fresh allocations: per slot, the
    (shape, dtype) of each tensor a kernel returned (None for anything else) and, for an
    output sharing memory with an input, (input slot, the output's byte offset in it).

    The arena's tensors are of the type `backend.allocate` returns (numpy on the host, a
    device array on a GPU); tensors of another type (a GPU plan's host tensors around its
    fallbacks) are noted in `elsewhere` and stay out of the arena."""

    def __init__(self, plan: Plan, env: list[Any]) -> None:
        self.signature = signature(plan, env)
        self.tensor = tensor = type(plan.backend.allocate(0))
        feeds = [env[s] for _, s in plan.inputs]
        self.input_bytes = sum(x.nbytes for x in feeds if isinstance(x, (np.ndarray, tensor)))
        self.types: dict[int, tuple[tuple[int, ...], np.dtype] | None] = {}
        self.alias: dict[int, tuple[int, int]] = {}
        self.elsewhere: set[int] = set()

    def __call__(self, i: int, step: Step, args: list[Any], outs: Any) -> None:
        tensor = self.tensor
        for s, o in zip(step.outputs, outs):
            if s == SINK_SLOT:
                continue
            if not isinstance(o, tensor):
                self.types[s] = None
                if isinstance(o, np.ndarray):
                    self.types[s] = (o.shape, o.dtype)
                    self.elsewhere.add(s)
                continue
            self.types[s] = (tuple(o.shape), np.dtype(o.dtype))
            for j, a in zip(step.inputs, args):
                if isinstance(a, tensor) and a.size and o.size and _shares(o, a):
                    self.alias[s] = (j, _address(o) - _address(a))
                    break


# -- the plan ---------------------------------------------------------------------------------
@dataclass(slots=True)
class ValueMemory:
    """Where one value lives. `offset` is its first byte in the arena (None: dynamic);
    `first`/`last` are the steps producing it and last reading it (len(steps) for graph
    outputs); `buffer` indexes `MemoryPlan.buffers`."""

    name: str
    slot: int
    shape: tuple[int, ...] | None
    dtype: str
    nbytes: int
    first: int
    last: int
    offset: int | None
    kind: str  # arena (owns its buffer), view, inplace (took an input's buffer) or dynamic
    aliased_to: str | None = None  # the value whose memory a view or in-place output reuses
    why: str = ""  # why a dynamic value is not in the arena
    copied: bool = False  # its kernel ignores `out`: the executor copies its result in
    buffer: int | None = None


@dataclass(slots=True)
class Buffer:
    """One block of the arena and the values sharing it over its lifetime."""

    offset: int
    nbytes: int
    first: int
    last: int
    values: list[str]


@dataclass(slots=True)
class StepMemory:
    step: int
    node: str
    op: str
    live_bytes: int  # bytes of arena buffers alive during the step
    live: list[str]  # the arena values alive during the step


@dataclass
class MemoryPlan:
    """Where every intermediate of one input signature lives, and what that costs."""

    plan: Plan
    recorded: Recorder
    values: list[ValueMemory]
    buffers: list[Buffer]
    arena_bytes: int  # the arena's size: the planned peak
    lower_bound_bytes: int  # the most bytes of arena buffers alive at any step
    weight_bytes: int
    input_bytes: int
    varying: frozenset[int] = frozenset()  # slots whose shape may change within the signature
    stale: set[int] = field(default_factory=set)  # shapes a run saw break the plan
    arena: Any = None  # the arena (host or device array), once `program()` has allocated it
    _program: list[tuple] | None = field(default=None, repr=False)
    _bindable: list[bool] = field(default_factory=list, repr=False)
    _calls: list[Any] | None = field(default=None, repr=False)
    _calls_token: Any = field(default=None, repr=False)
    scratch: Any = field(default=None, repr=False)  # the bound calls' (backends/base.py)

    @property
    def ratio(self) -> float:
        return self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0

    @property
    def copies(self) -> list[str]:
        """Values whose kernels return fresh arrays the executor copies into the arena."""
        return [v.name for v in self.values if v.copied]

    @property
    def copy_bytes(self) -> int:
        return sum(v.nbytes for v in self.values if v.copied)

    @property
    def dynamic(self) -> list[ValueMemory]:
        return [v for v in self.values if v.kind == "dynamic"]

    @cached_property
    def timeline(self) -> list[StepMemory]:
        """Per step, the arena bytes alive (buffers: an in-place pair counts once) and the
        arena values alive; the largest `live_bytes` is `lower_bound_bytes`."""
        steps = self.plan.steps
        live, names = [0] * len(steps), [[] for _ in steps]
        for b in self.buffers:
            for t in range(b.first, min(b.last, len(steps) - 1) + 1):
                live[t] += b.nbytes
        for v in self.values:
            if v.offset is not None:
                for t in range(v.first, min(v.last, len(steps) - 1) + 1):
                    names[t].append(v.name)
        return [
            StepMemory(i, s.node.name, s.node.op_type, live[i], names[i])
            for i, s in enumerate(steps)
        ]

    def frame(self) -> Any:
        """The values as a pandas DataFrame, one row each."""
        import pandas as pd

        rows = [{k: getattr(v, k) for k in ValueMemory.__slots__} for v in self.values]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        mib = 1 / 2**20
        return (
            f"arena {self.arena_bytes * mib:.2f} MiB, lower bound "
            f"{self.lower_bound_bytes * mib:.2f} MiB (x{self.ratio:.3f}), weights "
            f"{self.weight_bytes * mib:.2f} MiB; {len(self.values) - len(self.dynamic)} "
            f"values in {len(self.buffers)} buffers, {len(self.dynamic)} dynamic, "
            f"{len(self.copies)} copied in"
        )

    def __repr__(self) -> str:
        return f"<MemoryPlan: {self.summary()}>"

    def program(self) -> list[tuple]:
        """The arena run's steps, built once: (step, input slots, output slots, `out` views
        for a kernel that writes into them or None, views to copy its outputs into, the
        shapes its outputs must have or None, dynamic slots to free after it).

        Only outputs of kernels that ignore `out` are checked: a kernel writing into `out`
        computes its output shape from its input shapes, and those were checked."""
        if self._program is not None:
            return self._program
        _trim_heap()
        raw = self.plan.backend.allocate(self.arena_bytes + ALIGN)
        pad = -_address(raw) % ALIGN
        self.arena = raw[pad : pad + self.arena_bytes]
        views: dict[int, Any] = {}
        for v in self.values:
            if v.offset is not None and v.kind != "view":  # a view comes from its kernel
                piece = self.arena[v.offset : v.offset + v.nbytes]
                views[v.slot] = piece.view(v.dtype).reshape(v.shape)
        placed = {v.slot for v in self.values if v.offset is not None}
        # slots that hold the same memory on every run of this plan: arena buffers (not
        # views, which their kernels make afresh) and constants; a kernel reading only
        # these and writing into `out` can be bound to them once (see `calls`)
        fixed = {v.slot for v in self.values if v.offset is not None and v.kind != "view"}
        fixed |= {s for s, c in enumerate(self.plan.template) if c is not None}
        fixed.add(NONE_SLOT)
        types, varying = self.recorded.types, self.varying
        program, self._bindable = [], []
        for step in self.plan.steps:
            into = tuple(views.get(s) for s in step.outputs)
            free = tuple(s for s in step.free if s not in placed)
            if step.writes_out and any(t is not None for t in into):
                program.append((step, step.inputs, step.outputs, into, None, None, free))
                self._bindable.append(
                    hasattr(step.run, "bind")
                    and all(t is not None for t in into)
                    and all(s in fixed for s in step.inputs)
                )
                continue
            self._bindable.append(False)
            expect = tuple(
                None if s == SINK_SLOT or s in varying or types.get(s) is None else types[s][0]
                for s in step.outputs
            )
            if all(e is None for e in expect):
                program.append((step, step.inputs, step.outputs, None, None, None, free))
            else:
                program.append((step, step.inputs, step.outputs, None, into, expect, free))
        self._program = program
        return program

    def calls(self, token: Any = None) -> list[Any]:
        """Per step of `program()`: the kernel's call bound to this arena (`run.bind`, see
        backends/base.py), None where none was tried yet, False where the step runs unbound.
        A new `token` (the backend's `binding_token()`: its thread count, say) drops the
        bindings made under the old one."""
        if self._calls is None or token != self._calls_token:
            self.program()
            self._calls = [None if b else False for b in self._bindable]
            self._calls_token = token
        return self._calls

    def replan(self) -> MemoryPlan:
        """A new plan for this signature in which the values a run saw change shape (and
        everything computed from them) are dynamic."""
        return plan_memory(self.plan, self.recorded, self.varying | frozenset(self.stale))


def plan_memory(
    plan: Plan, recorded: Recorder, varying: frozenset[int] = frozenset()
) -> MemoryPlan:
    """Lay out the values of `plan` as `recorded` saw them (see the module docstring)."""
    steps, types, alias = plan.steps, recorded.types, recorded.alias
    n = len(steps)
    born: dict[int, int] = {}  # slot -> producing step
    last: dict[int, int] = {}  # slot -> last step reading it
    grow = set(varying)
    for i, step in enumerate(steps):
        for s in step.inputs:
            last[s] = i
        if any(s in grow for s in step.inputs):  # computed from a varying shape: may vary
            grow.update(step.outputs)
        for s in step.outputs:
            if s != SINK_SLOT:
                born[s], last[s] = i, max(last.get(s, i), i)
    varying = frozenset(grow - {SINK_SLOT})
    outputs = {s for _, s in plan.outputs}
    for s in outputs:
        last[s] = n  # handed to the caller: alive past the last step

    def nbytes(s: int) -> int:
        t = types.get(s)
        return 0 if t is None else int(np.prod(t[0], dtype=np.int64)) * t[1].itemsize

    # 1. buffers: each value's root (the value owning its memory) and its offset in it
    root: dict[int, int] = {}
    delta: dict[int, int] = {}
    for s in born:  # in step order: whatever a view views is already rooted
        a, d = alias.get(s, (s, 0))
        root[s], delta[s] = (root.get(a, a), delta.get(a, 0) + d) if a != s else (s, 0)
    members: dict[int, list[int]] = {}
    for s in born:
        members.setdefault(root[s], []).append(s)
    why: dict[int, str] = {}  # root -> why its buffer is dynamic
    for r, group in members.items():
        t = types.get(r)
        if r not in born:
            why[r] = "a view of a weight or feed"
        elif t is None:
            why[r] = "not a tensor"
        elif t[1].kind == "O":
            why[r] = "an object array"
        elif r in varying:
            why[r] = "its shape may vary (data-dependent)"
        elif any(s in outputs for s in group):
            why[r] = "a graph output (or a view of one): the caller keeps it"
        elif r in recorded.elsewhere:
            why[r] = "not in the arena's memory (a host tensor of a device plan)"
    end = {r: max(last[s] for s in group) for r, group in members.items()}

    # 2. in place: output 0 takes over input j's buffer if that buffer dies at this step
    reuses: dict[int, int] = {}  # output slot -> the input slot whose buffer it took
    for i, step in enumerate(steps):
        o = step.outputs[0] if step.outputs else SINK_SLOT
        if not step.inplace or o == SINK_SLOT or root.get(o) != o or o in why:
            continue
        for j in step.inplace:
            a = step.inputs[j] if j < len(step.inputs) else SINK_SLOT
            r = root.get(a)
            if r is None or r in why or end[r] != i or delta[a] or types[a] != types[o]:
                continue
            if nbytes(a) != nbytes(r):  # a view of only part of its buffer
                continue
            for s in members[o]:  # o sits at offset 0 of r: its views keep their deltas
                root[s] = r
            members[r] += members.pop(o)
            end[r], reuses[o] = end.pop(o), a
            break

    # 3. offsets; 4. the lower bound, over the same buffers (unaligned sizes)
    roots = [r for r in members if r not in why]
    sizes = [nbytes(r) for r in roots]
    firsts, lasts = [born[r] for r in roots], [end[r] for r in roots]
    offsets, arena = assign_offsets([_aligned(s) for s in sizes], firsts, lasts)
    index = {r: k for k, r in enumerate(roots)}

    def name(s: int) -> str:  # a device plan's copies name no model value: their step's
        return plan.values[s].name if plan.values[s] is not None else steps[born[s]].node.name

    buffers = [
        Buffer(o, sz, f, l, [name(s) for s in members[r]])
        for r, o, sz, f, l in zip(roots, offsets, sizes, firsts, lasts)
    ]
    values = []
    for s in born:
        t, r, k = types.get(s), root[s], index.get(root[s])
        off = None if k is None else offsets[k] + delta[s]
        kind = (
            "dynamic" if k is None else "inplace" if s in reuses else "view" if s != r else "arena"
        )
        seen = reuses.get(s, alias.get(s, (s, 0))[0])
        values.append(
            ValueMemory(
                name=name(s),
                slot=s,
                shape=None if t is None else t[0],
                dtype="" if t is None else t[1].str,
                nbytes=nbytes(s),
                first=born[s],
                last=last[s],
                offset=off,
                kind=kind,
                aliased_to=name(seen) if seen != s else None,
                why=why.get(r, ""),
                copied=kind in ("arena", "inplace") and not steps[born[s]].writes_out,
                buffer=k,
            )
        )
    weights = sum(a.nbytes for a in plan.template if isinstance(a, recorded.tensor))
    return MemoryPlan(
        plan, recorded, values, buffers, arena, lower_bound(sizes, firsts, lasts), weights,
        recorded.input_bytes, varying,
    )  # fmt: skip


def _trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim). The recording run's
    arrays were freed into malloc's heap, which keeps them resident; without this the
    arena came on top of them (resnet50 at batch 8: 55 MiB more resident for good)."""
    with contextlib.suppress(AttributeError, OSError, TypeError):  # not glibc: no-op
        ctypes.CDLL(None).malloc_trim(0)


# -- measuring ----------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakRSS:
    """The process's peak resident memory while a block runs.

    >>> with PeakRSS() as m:
    ...     sess.run(feeds)
    >>> m.peak_bytes, m.start_bytes, m.reset

    On Linux the high-water mark (VmHWM) is reset on entry through /proc/self/clear_refs, so
    `peak_bytes` is this block's peak (`reset` True). Elsewhere it is ru_maxrss, the peak
    since the process started (`reset` False).
    """

    def __enter__(self) -> PeakRSS:
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS to the current RSS
            self.reset = True
        except OSError:
            pass
        self.start_bytes = (_status_kib("VmRSS:") or 0) * 1024
        self.peak_bytes = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_bytes = peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (since the last `PeakRSS` reset)."""
    hwm = _status_kib("VmHWM:")
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
