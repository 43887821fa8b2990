"""`arm`: the engine's CPU kernels in an aarch64 process (native, under QEMU, or remote).

The kernels are the x86 backend's numpy + numba ones (the same table, not copies),
compiled by numba for aarch64 inside the worker (workbench/remote/worker.py). On top,
the ARM choice that changes numbers: precision `fp16`, tensors stored in half precision
and the contractions accumulating in fp16 (FMLA .8h) or fp32 (FMLAL), see fp16.py.

In the notebook's process the backend is a front: `Session(model, "arm")` is a
`RemoteSession` (workbench/remote/session.py) that compiles the same plan locally, for
its structure only, and runs everything in the worker. Inside the worker
(`WORKBENCH_ARM_WORKER=1`) it is a plain CPU backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..base import Availability, Backend, Kernel

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext

ACCUMULATE = ("fp16", "fp32")  # how fp16 contractions accumulate; fp16 is the default
_accumulate: contextvars.ContextVar[str] = contextvars.ContextVar("arm_accumulate", default="fp16")


@contextlib.contextmanager
def accumulation(mode: str | None) -> Iterator[None]:
    """Plans compiled inside the block accumulate fp16 contractions in `mode`."""
    mode = mode or "fp16"
    if mode not in ACCUMULATE:
        from ....errors import WorkbenchError

        raise WorkbenchError(f"accumulate must be one of {ACCUMULATE}, got {mode!r}")
    token = _accumulate.set(mode)
    try:
        yield
    finally:
        _accumulate.reset(token)


def in_worker() -> bool:
    """True inside the aarch64 worker process itself."""
    return os.environ.get("WORKBENCH_ARM_WORKER") == "1"


class ArmBackend(Backend):
    name = "arm"
    device = "aarch64"
    precisions = ("fp32", "fp16")
    dtypes = frozenset({"float32", "float16"})
    description = "CPU kernels compiled for aarch64 in a worker process"

    def __init__(self) -> None:
        super().__init__()
        from ..x86 import BACKEND as _x86  # noqa: F401  (imports every x86 ops_* module)
        from ..x86._table import kernels

        self.kernels = kernels  # the x86 kernels, registered under `arm` by this table

    def binding_token(self) -> tuple:
        from ..x86._parallel import binding_token

        return binding_token()

    def availability(self) -> Availability:
        if in_worker():
            emulated = os.environ.get("WORKBENCH_ARM_EMULATED") == "1"
            why = "inside the worker, under QEMU user-mode emulation" if emulated else ""
            return Availability(True, "emulated" if emulated else "native", why)
        from ....remote.client import route

        return route()

    @property
    def session_class(self) -> type | None:
        """The Session subclass that drives the worker (None inside the worker itself)."""
        if in_worker():
            return None
        from ....remote.session import RemoteSession

        return RemoteSession

    def compile(self, node: Node, ctx: CompileContext) -> Kernel | None:
        if ctx.precision != "fp16":
            return super().compile(node, ctx)
        from . import fp16

        spec = self.kernels.lookup(node.domain, node.op_type, ctx.opset)
        if spec is None:
            return None
        rounded = fp16.rounded_node(node)
        ctx32 = _with_precision(ctx, "fp32")  # the x86 factories are fp32 ones
        base = spec.factory(rounded, ctx32)
        if base is None:
            return None
        run = fp16.storage_fp16(base)
        acc16 = fp16.acc16_kernel(rounded, ctx32, run)  # None: not a contraction
        if acc16 is not None and _accumulate.get() == "fp16":
            run = acc16
        elif acc16 is not None:
            run.algorithm += "-acc32"
        return Kernel(run, self.name, node.op_type, run.algorithm, source=spec.source)


def _with_precision(ctx: CompileContext, precision: str) -> Any:
    from ..base import CompileContext

    return CompileContext(ctx.backend, ctx.opset, precision, ctx.opsets, ctx.functions)


def host_arch() -> str:
    return platform.machine().lower()


BACKEND = ArmBackend()
