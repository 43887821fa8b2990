"""`x86`: fp32 CPU kernels in numpy and numba (JIT-compiled, cached on disk).

Every `ops_*.py` module in this folder registers its kernels into `_table.kernels`;
ops without an x86 kernel run on the reference backend and are marked as fallbacks.
Conv, Gemm and MatMul (and their fused forms) choose among several algorithms by measuring
them on the node's shapes: see autotune.py. Importing the backend applies the thread
setting of `workbench._threads` (one count for BLAS, numba and OpenMP).
"""

from __future__ import annotations

import importlib
import pkgutil
import platform

from ...._threads import current as _current_threads
from ..base import Availability, Backend, CompileContext, Kernel
from . import _mkl
from ._table import kernels

_current_threads()  # BLAS, numba and OpenMP on one thread count before any kernel runs

for _m in pkgutil.iter_modules(__path__):
    if _m.name.startswith("ops_"):
        importlib.import_module(f"{__name__}.{_m.name}")


class X86Backend(Backend):
    name = "x86"
    device = "cpu"
    precisions = ("fp32",)
    dtypes = frozenset({"float32"})
    description = "fp32 kernels in numpy and numba on the host CPU"
    prefers_channels_last = True  # its depthwise kernel vectorizes along the channels

    @property
    def channels_last_any_chain(self) -> bool:
        # With MKL a channels-last conv is (windows, then) one GEMM by the weight packed once
        # as MKL's B, which beats the NCHW GEMMs and Winograd: ResNet-50 on 2 threads,
        # same process, 101.6 -> 86.7 ms, ResNet-18 47.2 -> 43.1. Without MKL numpy's GEMM
        # gains nothing from the layout (ResNet-50 108.7 -> 110.3) and Winograd stays.
        return _mkl.available()

    def __init__(self) -> None:
        super().__init__()
        self.kernels = kernels

    def compile(self, node, ctx: CompileContext) -> Kernel | None:
        kernel = super().compile(node, ctx)
        listeners = getattr(kernel.run, "listeners", None) if kernel is not None else None
        if listeners is not None:
            # an algorithm selected on the first call (shape unknown at compile time) still
            # shows in the plan: Session.kernels(), the profiler's kernel table
            run = kernel.run
            listeners.append(lambda choice: setattr(kernel, "algorithm", run.algorithm))
        return kernel

    def binding_token(self) -> tuple:
        from ._parallel import binding_token

        return binding_token()

    def availability(self) -> Availability:
        machine = platform.machine().lower()
        if machine in ("x86_64", "amd64", "i686", "x86"):
            return Availability(True, "native")
        # The kernels are portable numpy/numba; say plainly the host is not x86.
        return Availability(True, "native", f"host CPU is {machine}, not x86")


BACKEND = X86Backend()
