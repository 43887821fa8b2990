"""`Session`: compile a model for a backend once, then run it many times.

Like torch.fx's Interpreter, `execute` loops over the plan, one kernel per step; a
profiler wraps the loop (`times=`) rather than editing it. Its arena form runs the steps
of a `MemoryPlan` (memory.py): every planned intermediate in one buffer allocated once
per input signature, the session choosing, recording and re-planning per signature.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import AllocationError, FeedError, KernelError, WorkbenchError
from .backends import get_backend
from .backends.base import CompileContext, bind_with
from .feeds import check_feeds, random_feeds
from .ir import Value
from .memory import MemoryPlan, Recorder, plan_memory, signature
from .model import Model
from .onnx_io import load
from .plan import Plan, Step, compile_plan, host_cast

log = logging.getLogger("workbench.executor")


def describe_failure(step: Step, args: list[Any], err: Exception) -> str:
    node = step.node
    shapes = ", ".join(
        "None" if a is None else f"{getattr(a, 'dtype', '?')}{list(getattr(a, 'shape', []))}"
        for a in args
    )
    where = "fallback on reference" if step.kernel.fallback else step.kernel.backend
    return (
        f"node {node.name or '(unnamed)'!r} ({node.op_type}) failed on {where}: "
        f"{type(err).__name__}: {err} [inputs: {shapes}]"
    )


def execute(
    plan: Plan,
    env: list[Any],
    keep: bool = False,
    times: list[float] | None = None,
    *,
    arena: MemoryPlan | None = None,
    observe: Callable[[int, Step, list[Any], Any], None] | None = None,
) -> list[Any]:
    """Run every step of `plan` over `env` (slot -> tensor); returns env.

    With `times`, the loop appends a `perf_counter()` stamp before the first step and after
    each step (the backend is synchronized first on asynchronous devices), so step i took
    times[i+1] - times[i]. The profiler uses this; the untimed loop pays nothing for it.

    With `arena` (a `MemoryPlan` of this run's input signature; not with `keep`) every
    planned intermediate is written into the arena: see `_execute_arena`. `observe(i, step,
    args, outputs)` is called after each step (the memory planner's `Recorder`).
    """
    if arena is not None and not keep:
        return _execute_arena(plan, env, arena, times)
    if times is not None or observe is not None:
        return _execute_general(plan, env, keep, times, observe)
    for step in plan.steps:
        args = [env[i] for i in step.inputs]
        try:
            outs = step.run(*args)
        except WorkbenchError:
            raise
        except Exception as e:
            raise _failure(step, args, e) from e
        if len(outs) < len(step.outputs):
            raise KernelError(_short_message(step, outs))
        for s, o in zip(step.outputs, outs):
            env[s] = o
        if not keep:
            for s in step.free:
                env[s] = None
    return env


def _short_message(step: Step, outs: Any) -> str:
    return (
        f"node {step.node.name!r} ({step.node.op_type}): kernel {step.kernel.source} "
        f"returned {len(outs)} outputs, the node has {len(step.outputs)}"
    )


def _failure(step: Step, args: list[Any], err: Exception) -> WorkbenchError:
    """What a kernel's exception becomes: out of memory -> AllocationError, else KernelError,
    both naming the node, the op, the backend and the input shapes."""
    kind = AllocationError if isinstance(err, MemoryError) else KernelError
    return kind(describe_failure(step, args, err))


def _call(step: Step, args: list[Any], **out: Any) -> Any:
    try:
        return step.run(*args, **out)
    except WorkbenchError:
        raise
    except Exception as e:
        raise _failure(step, args, e) from e


def _execute_general(
    plan: Plan,
    env: list[Any],
    keep: bool,
    times: list[float] | None,
    observe: Callable | None = None,
    start: int = 0,
) -> list[Any]:
    """The plain loop with stamps, an observer, or from step `start` on."""
    clock, sync = time.perf_counter, plan.backend.synchronize
    if times is not None and start == 0:
        times.append(clock())
    steps = plan.steps
    for i in range(start, len(steps)):
        step = steps[i]
        args = [env[j] for j in step.inputs]
        outs = _call(step, args)
        if times is not None:
            sync()
            times.append(clock())
        if len(outs) < len(step.outputs):
            raise KernelError(_short_message(step, outs))
        if observe is not None:
            observe(i, step, args, outs)
        for s, o in zip(step.outputs, outs):
            env[s] = o
        if not keep:
            for s in step.free:
                env[s] = None
    return env


def _execute_arena(
    plan: Plan, env: list[Any], memory: MemoryPlan, times: list[float] | None
) -> list[Any]:
    """The loop of `MemoryPlan.program()`: kernels that write into `out` get their planned
    views; the fresh results of the others are checked against the planned shapes and
    copied into theirs. A kernel that reads only arena buffers and constants runs as the
    call its `bind` made on the first arena run (`MemoryPlan.calls`): its checks, views and
    pointers are worked out once, not per run. A result of another shape (data-dependent)
    leaves the rest of this run to `_execute_general`, with fresh allocations, and is noted
    in `memory.stale` for the session to plan again. A device backend copies with its own
    `copy_into`."""
    clock, sync = time.perf_counter, plan.backend.synchronize
    copyto = getattr(plan.backend, "copy_into", np.copyto)
    token = getattr(plan.backend, "binding_token", None)
    calls = memory.calls(token() if token is not None else None)
    if times is not None:
        times.append(clock())
    for i, (step, ins, outs, out, into, expect, free) in enumerate(memory.program()):
        call = calls[i]
        try:
            if call:
                res = call()
            else:
                args = [env[j] for j in ins]
                if call is None:  # bindable, not bound yet: bound now, to this run's arrays
                    call = calls[i] = bind_with(memory, step.run.bind, *args, out=out) or False
                if call:
                    res = call()
                else:
                    res = step.run(*args) if out is None else step.run(*args, out=out)
        except WorkbenchError:
            raise
        except Exception as e:
            raise _failure(step, [env[j] for j in ins], e) from e
        if times is not None:
            sync()
            times.append(clock())
        if expect is None:
            for s, o in zip(outs, res):
                env[s] = o
        else:
            for s, o, v, shape in zip(outs, res, into, expect):
                if shape is not None and getattr(o, "shape", None) != shape:
                    memory.stale.add(s)
                elif v is not None:
                    copyto(v, o)
                    o = v
                env[s] = o
            if memory.stale:
                for s in step.free:
                    env[s] = None
                return _execute_general(plan, env, False, times, start=i + 1)
        for s in free:
            env[s] = None
    return env


class Session:
    """A model compiled for one backend.

    >>> sess = Session(model, backend="x86")
    >>> outputs = sess.run({"input": x})            # name -> numpy array
    >>> outputs = sess.run(feeds, keep=True)        # also keeps every intermediate
    >>> sess.intermediates["/layer1/Relu_output_0"]
    >>> sess.memory                                 # the MemoryPlan of the last run

    Memory (`arena=True`): the first run with a new input signature
    (feed shapes and dtypes) allocates freshly and records every value's shape; from the
    next run on, every planned intermediate lives in one arena allocated once for that
    signature (memory.py). Outputs are always fresh arrays. `keep=True` runs without the
    arena, so kept intermediates are never overwritten. The arena is the session's: a run
    that finds it in use by another thread allocates freshly instead.
    """

    MEMORY_PLANS = 4  # signatures whose arenas a session keeps (the oldest is dropped)

    def __new__(cls, model: Any = None, backend: str = "x86", *args: Any, **kwargs: Any):
        # A backend whose kernels run in another process (arm) has a Session subclass of its
        # own that drives it (workbench/remote/session.py); "arm:fp16" names a variant.
        if cls is Session and isinstance(backend, str):
            from .backends import all_backends

            b = all_backends().get(backend.partition(":")[0])
            sub = getattr(b, "session_class", None)
            if sub is not None:
                return super().__new__(sub)
        return super().__new__(cls)

    def __init__(
        self,
        model: Model | str | os.PathLike | bytes | onnx.ModelProto,
        backend: str = "x86",
        *,
        precision: str | None = None,
        level: int = 0,
        arena: bool = True,
    ) -> None:
        source = model if isinstance(model, Model) else load(model)
        self.backend = get_backend(backend)
        self.level = level
        self.optimized = None  # the OptimizeResult when level > 0
        self.model = source
        if level > 0:
            from .passes import optimize

            self.optimized = optimize(source, level, self.backend.name)
            self.model = self.optimized.after
        self.precision = precision or self.backend.default_precision
        if self.precision not in self.backend.precisions:
            raise WorkbenchError(
                f"backend {backend!r} has no precision {self.precision!r}; "
                f"it has: {', '.join(self.backend.precisions)}"
            )
        ctx = CompileContext(
            self.backend,
            self.model.opset(),
            self.precision,
            dict(self.model.opset_imports),
            list(self.model.functions),
        )
        self.plan = compile_plan(self.model.graph, self.backend, ctx)
        self.intermediates: dict[str, np.ndarray] = {}
        self.arena = arena  # on the host, or one device allocation (backend.allocate)
        self.memory: MemoryPlan | None = None  # the plan of the latest arena-able run
        self._plans: dict[tuple, MemoryPlan] = {}
        self._busy = threading.Lock()
        n_fb = len(self.plan.fallbacks)
        log.debug(
            "compiled %s for %s: %d kernels, %d fallbacks",
            self.model.name,
            self.backend.name,
            len(self.plan.steps),
            n_fb,
        )

    # -- running ------------------------------------------------------------------------------
    def prepare(self, feeds: Mapping[str, Any] | None) -> list[Any]:
        """Checked feeds placed into a fresh env on the device."""
        arrays = check_feeds(self.model.graph, feeds)
        env = self.plan.new_env()
        to_device = (lambda a: a) if self.plan.places_inputs else self.backend.to_device
        for v, slot in self.plan.inputs:
            if v.name not in arrays:
                continue
            x = arrays[v.name]
            env[slot] = to_device(host_cast(x, self.precision)) if isinstance(x, np.ndarray) else x
        return env

    def run(
        self,
        feeds: Mapping[str, Any] | None = None,
        *,
        outputs: list[str] | None = None,
        keep: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run once. `keep=True` also stores every intermediate in `self.intermediates`."""
        env = self.execute(self.prepare(feeds), keep=keep)
        self.backend.synchronize()
        to_host = self._to_host
        result = {name: to_host(env[slot]) for name, slot in self.plan.outputs}
        if outputs is not None:
            unknown = [o for o in outputs if o not in result]
            if unknown:
                raise FeedError(f"unknown output {unknown[0]!r}; outputs are: {', '.join(result)}")
            result = {o: result[o] for o in outputs}
        if keep:
            self.intermediates = {
                v.name: to_host(env[i])
                for i, v in enumerate(self.plan.values)
                if v is not None and v.name and env[i] is not None and not v.is_const
            }
        return result

    def execute(
        self, env: list[Any], *, keep: bool = False, times: list[float] | None = None
    ) -> list[Any]:
        """`execute` on a prepared env as `run` does it: in the arena of its signature when
        there is one (see the class docstring), else recording the shapes for one. The
        intermediates left in env are then views of the arena, valid until the next run."""
        if keep or not self.arena:
            return execute(self.plan, env, keep, times)
        key = signature(self.plan, env)
        memory = self._plans.get(key)
        if memory is None:
            recorder = Recorder(self.plan, env)
            execute(self.plan, env, times=times, observe=recorder)
            memory = plan_memory(self.plan, recorder)
        elif self._busy.acquire(blocking=False):
            try:
                execute(self.plan, env, times=times, arena=memory)
            finally:
                self._busy.release()
            if memory.stale:  # a shape changed within the signature: data-dependent
                log.debug("re-planning memory: %d values vary", len(memory.stale))
                memory = memory.replan()
        else:
            execute(self.plan, env, times=times)
        self._plans.pop(key, None)  # (re)inserted last: the most recently used
        self._plans[key] = self.memory = memory
        while len(self._plans) > self.MEMORY_PLANS:
            del self._plans[next(iter(self._plans))]
        return env

    def memory_plan(
        self,
        feeds: Mapping[str, Any] | None = None,
        *,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> MemoryPlan:
        """The memory plan for the signature of `feeds`, or of random feeds of `shapes`
        (input name -> shape); either way one run of the model when it is not planned yet."""
        if feeds is None:
            dims: dict[str, int] = {}
            for v in self.model.graph.inputs:
                for d, n in zip(v.shape or (), (shapes or {}).get(v.name, ())):
                    if isinstance(d, str):
                        dims[d] = int(n)
            feeds = self.random_feeds(dims)
        env = self.prepare(feeds)
        memory = self._plans.get(signature(self.plan, env))
        if memory is None:
            self.execute(env)
            memory = self.memory
        if memory is None:
            raise WorkbenchError(f"no memory plan: backend {self.backend.name!r} has no arena")
        return memory

    def _to_host(self, x: Any) -> Any:
        # sequences come back as lists and absent optionals as None, tensors as numpy
        if isinstance(x, list):
            return [self._to_host(item) for item in x]
        return None if x is None else self.backend.to_host(x)

    def random_feeds(self, dims: Mapping[str, int] | None = None, seed: int = 0) -> dict:
        """Deterministic feeds from the model's declared inputs (see `feeds.random_feeds`)."""
        return random_feeds(self.model.graph, dims, seed=seed, defaults=self.model.default_dims())

    # -- looking at it ------------------------------------------------------------------------
    def kernels(self) -> list[dict[str, Any]]:
        """One row per step: node, op, backend, algorithm, fallback, and whether the kernel
        writes into the memory planner's arena itself (`writes_out`) or is copied there."""
        return [
            {
                "node": s.node.name,
                "op": s.node.op_type,
                "backend": s.kernel.backend,
                "algorithm": s.kernel.algorithm,
                "fallback": s.kernel.fallback,
                "writes_out": s.writes_out,
                "source": s.kernel.source,
            }
            for s in self.plan.steps
        ]

    def __repr__(self) -> str:
        fb = len(self.plan.fallbacks)
        return (
            f"<workbench.Session {self.model.name} on {self.backend.name} ({self.precision}): "
            f"{len(self.plan.steps)} kernels, {fb} fallbacks>"
        )


def run_model(
    model: Model | str | Path | bytes | onnx.ModelProto,
    feeds: Mapping[str, Any] | None = None,
    backend: str = "x86",
    **kw: Any,
) -> dict[str, np.ndarray]:
    """One-shot convenience: compile and run once."""
    return Session(model, backend, **kw).run(feeds)


__all__ = ["Session", "Value", "execute", "run_model"]
