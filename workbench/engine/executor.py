"""`Session`: compile a model for a backend once, then run it many times.

Like torch.fx's Interpreter, `execute` loops over the plan and `run_step` runs one
kernel; a profiler subclasses the session and wraps the loop rather than editing it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import AllocationError, FeedError, KernelError, WorkbenchError
from .backends import get_backend
from .backends.base import CompileContext
from .feeds import check_feeds, random_feeds
from .ir import Value
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
    plan: Plan, env: list[Any], keep: bool = False, times: list[float] | None = None
) -> list[Any]:
    """Run every step of `plan` over `env` (slot -> tensor); returns env.

    With `times`, the loop appends a `perf_counter()` stamp before the first step and after
    each step (the backend is synchronized first on asynchronous devices), so step i took
    times[i+1] - times[i]. The profiler uses this; the untimed loop pays nothing for it.
    """
    if times is not None:
        return _execute_timed(plan, env, keep, times)
    for step in plan.steps:
        args = [env[i] for i in step.inputs]
        try:
            outs = step.run(*args)
        except WorkbenchError:
            raise
        except MemoryError as e:
            raise AllocationError(describe_failure(step, args, e)) from e
        except Exception as e:
            raise KernelError(describe_failure(step, args, e)) from e
        if len(outs) < len(step.outputs):
            raise KernelError(
                f"node {step.node.name!r} ({step.node.op_type}): kernel {step.kernel.source} "
                f"returned {len(outs)} outputs, the node has {len(step.outputs)}"
            )
        for s, o in zip(step.outputs, outs):
            env[s] = o
        if not keep:
            for s in step.free:
                env[s] = None
    return env


def _execute_timed(plan: Plan, env: list[Any], keep: bool, times: list[float]) -> list[Any]:
    clock, sync = time.perf_counter, plan.backend.synchronize
    times.append(clock())
    for step in plan.steps:
        args = [env[i] for i in step.inputs]
        try:
            outs = step.run(*args)
        except WorkbenchError:
            raise
        except MemoryError as e:
            raise AllocationError(describe_failure(step, args, e)) from e
        except Exception as e:
            raise KernelError(describe_failure(step, args, e)) from e
        sync()
        times.append(clock())
        for s, o in zip(step.outputs, outs):
            env[s] = o
        if not keep:
            for s in step.free:
                env[s] = None
    return env


class Session:
    """A model compiled for one backend.

    >>> sess = Session(model, backend="x86")
    >>> outputs = sess.run({"input": x})            # name -> numpy array
    >>> outputs = sess.run(feeds, keep=True)        # also keeps every intermediate
    >>> sess.intermediates["/layer1/Relu_output_0"]
    """

    def __init__(
        self,
        model: Model | str | os.PathLike | bytes | onnx.ModelProto,
        backend: str = "x86",
        *,
        precision: str | None = None,
        level: int = 0,
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
        to_device = self.backend.to_device
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
        env = execute(self.plan, self.prepare(feeds), keep=keep)
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
                if v is not None and v.name and env[i] is not None and v.const is None
            }
        return result

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
        """One row per step: node, op, backend, algorithm, fallback."""
        return [
            {
                "node": s.node.name,
                "op": s.node.op_type,
                "backend": s.kernel.backend,
                "algorithm": s.kernel.algorithm,
                "fallback": s.kernel.fallback,
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
