"""`arm`: the engine's CPU kernels in an aarch64 process (native, under QEMU, or remote).

The interface is in place; the aarch64 worker it drives arrives with the ARM backend
work. Until then the backend reports why it is unavailable.
"""

from __future__ import annotations

import platform

from ..base import Availability, Backend


class ArmBackend(Backend):
    name = "arm"
    device = "aarch64"
    precisions = ("fp32", "fp16")
    dtypes = frozenset({"float32", "float16"})
    description = "CPU kernels compiled for aarch64 in a worker process"

    def availability(self) -> Availability:
        host = platform.machine().lower()
        if host in ("aarch64", "arm64"):
            why = "host is aarch64, but the aarch64 worker is not built yet"
        else:
            why = f"host is {host}; the emulated aarch64 worker is not built yet"
        return Availability(False, "unavailable", why)


BACKEND = ArmBackend()
