"""`x86`: fp32 CPU kernels in numpy and numba (JIT-compiled, cached on disk).

Every `ops_*.py` module in this folder registers its kernels into `_table.kernels`;
ops without an x86 kernel run on the reference backend and are marked as fallbacks.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform

from ..base import Availability, Backend
from ._table import kernels

for _m in pkgutil.iter_modules(__path__):
    if _m.name.startswith("ops_"):
        importlib.import_module(f"{__name__}.{_m.name}")


class X86Backend(Backend):
    name = "x86"
    device = "cpu"
    precisions = ("fp32",)
    dtypes = frozenset({"float32"})
    description = "fp32 kernels in numpy and numba on the host CPU"

    def __init__(self) -> None:
        super().__init__()
        self.kernels = kernels

    def availability(self) -> Availability:
        machine = platform.machine().lower()
        if machine in ("x86_64", "amd64", "i686", "x86"):
            return Availability(True, "native")
        # The kernels are portable numpy/numba; say plainly the host is not x86.
        return Availability(True, "native", f"host CPU is {machine}, not x86")


BACKEND = X86Backend()
