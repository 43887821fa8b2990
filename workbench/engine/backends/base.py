"""What a backend is: a device, the dtypes and precisions it computes in, how tensors move
to and from it, and a table of kernels keyed by (domain, op type, opset range).

A *kernel factory* is called once per node when a plan is compiled and returns the
function that runs it (or None to decline that node, e.g. an unsupported dtype or
attribute, and let the planner fall back). The returned function takes the node's
inputs positionally (None for an omitted optional input; for nodes with subgraphs the
captured outer values follow the declared inputs) and returns a tuple with one array
per output. Everything that can be decided from attributes and constant inputs is
decided in the factory, so the per-call work is the arithmetic alone.

    table = KernelTable()

    @table.register("LeakyRelu", since=6)
    def leaky_relu(node, ctx):
        alpha = np.float32(node.attrs.get("alpha", 0.01))
        def run(x):
            return (np.where(x >= 0, x, x * alpha),)
        return run

Destination passing (opt in, for the memory planner's arena): a kernel that sets
`run.writes_out = True` also accepts `out=(array | None, ...)`, one entry per output. For
each array given it writes output i into `out[i]` (exactly the output's shape and dtype:
a view into the arena) and returns that very array; for a None entry, or without `out`,
it allocates as before. Such a kernel's output shapes must follow from its input shapes,
attributes and constant inputs alone (a shape read from a runtime tensor's values must
not: the executor checks only the shapes of kernels that do not write into `out`).
`run.inplace = (j, ...)` says `out[0]` may be the very memory of input j (the planner
does that when input j dies at this step): the kernel must read each element of input j
before it writes that element of the output, as a ufunc does. `dest` and `deliver` are
the two helpers such kernels use:

    def run(x, out=None):
        return (np.maximum(x, 0, out=dest(out)),)
    run.writes_out, run.inplace = True, (0,)

Binding (opt in, for kernels called many times on the same buffers): a writes_out kernel
may also have `run.bind(*inputs, out=out)`, which returns a callable of no arguments that
does exactly what `run(*inputs, out=out)` would and returns its outputs, or None. The
executor binds a step once per arena, on its first arena run, when every input and output
is memory that stays put from run to run (arena buffers and constants, see
`MemoryPlan.calls`), and then calls the bound callable on every run: the checks, views,
pointers and parts a call works out are worked out once. So a bound call must read its
inputs' values when called, never at bind time, and must return None where its result
would not land in the given buffers (a copy made of an input, a fresh output).
`binding_token()` on a backend names what bound calls depend on beyond their arrays
(the x86 thread count); a new token drops them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..ir import Node

KernelFn = Callable[..., Sequence[Any]]
Factory = Callable[["Node", "CompileContext"], KernelFn | None]

OPSET_MAX = 1 << 30


def dest(out: Sequence[Any] | None, i: int = 0) -> Any:
    """The array output `i` is to be written into, or None when the kernel allocates it."""
    return None if out is None else out[i]


def returning(call: Callable[[], object], result: tuple) -> Callable[[], tuple]:
    """A bound call (see the module docstring) that runs `call` and returns `result`, the
    outputs it writes into."""

    def bound() -> tuple:
        call()
        return result

    return bound


class BindScratch:
    """Work arrays shared by the calls bound to one arena (a `MemoryPlan`'s, see the module
    docstring). Those calls run one after another (a session runs its arena one run at a time,
    a step at a time), so one buffer per slot, as large as the largest request, serves them
    all: a bound call may not take the calling thread's scratch (`_numba.scratch`), since
    another session on that thread may hold it when the call runs, and a buffer of its own
    per call added up to 25 MiB of windows on ResNet-50. A call that needs two work arrays
    at once takes the second from another slot."""

    def __init__(self) -> None:
        self._bufs: dict[int, np.ndarray] = {}

    def take(self, shape: Sequence[int], slot: int = 0) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        buf = self._bufs.get(slot)
        if buf is None or buf.size < n:  # (calls bound before keep the smaller one)
            buf = self._bufs[slot] = np.empty(n, np.float32)
        return buf[:n].reshape(shape)


_binding: ContextVar[BindScratch | None] = ContextVar("workbench_binding", default=None)


def bind_with(owner: Any, bind: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`bind(*args, **kwargs)` (a kernel's `run.bind`) with `bind_scratch` handing out the
    work arrays of `owner.scratch` (a `BindScratch`, made on first use): the executor binds
    each call of an arena (`owner`, its `MemoryPlan`) so."""
    if owner.scratch is None:
        owner.scratch = BindScratch()
    token = _binding.set(owner.scratch)
    try:
        return bind(*args, **kwargs)
    finally:
        _binding.reset(token)


def bind_scratch(shape: Sequence[int], slot: int = 0) -> np.ndarray:
    """A float32 work array for a call being bound: shared with the other calls bound to
    the same arena (`BindScratch`); a fresh one when nothing is being bound."""
    scratch = _binding.get()
    if scratch is None:
        return np.empty(tuple(shape), np.float32)
    return scratch.take(shape, slot)


def deliver(into: np.ndarray | None, value: Any) -> Any:
    """`value` copied into `into` when one is given (and `into` returned), else `value`:
    for paths of a writes_out kernel that compute into a fresh array."""
    if into is None:
        return value
    np.copyto(into, value)
    return into


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here; `mode` is native, emulated, remote, simulator or
    unavailable, and `reason` says why when it is not plainly native."""

    available: bool
    mode: str = "native"
    reason: str = ""


@dataclass(frozen=True)
class KernelSpec:
    domain: str
    op_type: str
    since: int
    until: int
    factory: Factory
    algorithm: str = "default"

    @property
    def source(self) -> str:
        return f"{self.factory.__module__}.{self.factory.__qualname__}"


@dataclass
class CompileContext:
    """What a kernel factory may look at besides the node itself."""

    backend: Backend
    opset: int  # the model's opset version for the node's domain
    precision: str
    opsets: dict[str, int] = field(default_factory=dict)
    functions: list[Any] = field(default_factory=list)  # model-local FunctionProtos


@dataclass(slots=True)
class Kernel:
    """A compiled kernel bound to one node."""

    run: KernelFn
    backend: str
    op_type: str
    algorithm: str = "default"
    fallback: bool = False  # run by another backend because this one lacks the op
    source: str = ""


class KernelTable:
    """Kernel factories of one backend, keyed by (domain, op_type) and opset range."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], list[KernelSpec]] = {}

    def register(
        self,
        op_type: str | Sequence[str],
        *,
        domain: str = "",
        since: int = 1,
        until: int = OPSET_MAX,
        algorithm: str = "default",
    ) -> Callable[[Factory], Factory]:
        """Decorator: register a factory for `op_type` (or several) at opsets since..until."""
        names = [op_type] if isinstance(op_type, str) else list(op_type)

        def deco(factory: Factory) -> Factory:
            for name in names:
                spec = KernelSpec(domain, name, since, until, factory, algorithm)
                specs = self._specs.setdefault((domain, name), [])
                specs.append(spec)
                specs.sort(key=lambda s: s.since, reverse=True)
            return factory

        return deco

    def lookup(self, domain: str, op_type: str, opset: int) -> KernelSpec | None:
        """The newest spec whose range covers `opset`."""
        for spec in self._specs.get((domain, op_type), ()):
            if spec.since <= opset <= spec.until:
                return spec
        return None

    def specs(self) -> list[KernelSpec]:
        return [s for specs in self._specs.values() for s in specs]

    def ops(self) -> list[tuple[str, str]]:
        return sorted(self._specs)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._specs


class Backend:
    """Base class; each backend package under `backends/` exposes one instance as BACKEND."""

    name: str = ""
    device: str = "cpu"
    precisions: tuple[str, ...] = ("fp32",)
    dtypes: frozenset[str] = frozenset({"float32"})  # float dtypes computed natively
    description: str = ""
    # opt level 3 moves chains of depthwise and 1x1 convs to NHWC (passes/layout/) for it
    prefers_channels_last: bool = False
    # ... and chains of any convolutions, depthwise or not (its NHWC GEMMs beat its NCHW ones)
    channels_last_any_chain: bool = False

    def __init__(self) -> None:
        self.kernels = KernelTable()

    @property
    def default_precision(self) -> str:
        return self.precisions[0]

    def availability(self) -> Availability:
        return Availability(True)

    # -- tensors on the device ----------------------------------------------------------------
    def to_device(self, array: np.ndarray) -> Any:
        """Host array -> a tensor kernels of this backend accept (host backends: itself)."""
        return array

    def to_host(self, tensor: Any) -> np.ndarray:
        return np.asarray(tensor)

    def allocate(self, nbytes: int) -> Any:
        """One contiguous buffer of `nbytes` (the memory planner's arena lives in it)."""
        return np.empty(nbytes, dtype=np.uint8)

    def synchronize(self) -> None:
        """Wait until queued work is done (host backends run synchronously)."""

    # -- kernels ------------------------------------------------------------------------------
    def supports(self, domain: str, op_type: str, opset: int) -> bool:
        return self.kernels.lookup(domain, op_type, opset) is not None

    def compile(self, node: Node, ctx: CompileContext) -> Kernel | None:
        """Build the kernel for `node`, or None when this backend has none for it."""
        spec = self.kernels.lookup(node.domain, node.op_type, ctx.opset)
        if spec is None:
            return None
        run = spec.factory(node, ctx)
        if run is None:
            return None
        algorithm = getattr(run, "algorithm", spec.algorithm)  # a factory may choose per node
        return Kernel(run, self.name, node.op_type, algorithm, source=spec.source)

    def __repr__(self) -> str:
        return f"<backend {self.name} on {self.device}>"
