"""`cuda`: NVIDIA GPUs through numba.cuda (and pycuda for CUDA C, optional).

Every `ops_*.py` module here registers numba.cuda kernel factories into `_table.kernels`;
nothing imports numba.cuda or pycuda when the package is imported (kernels are built by
their factories, on first use). Tensors live on the device between kernels; the plan's
own steps copy feeds in, outputs out and the tensors of fallback kernels (ops without a
cuda kernel run on `reference`, on the host) back and forth (`_plan.place`), so a profile
shows every copy as a row.

Timing: on a real GPU the profiler asks `backend.events` for a CUDA-event timer (one event
recorded after each step, elapsed times read once the run is done); under numba's CUDA
simulator there are no device clocks and steps are timed with perf_counter, as
`profile_meta()["timing"]` says.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any

import numpy as np

from ..base import Availability, Backend
from . import _launch
from ._table import kernels

for _m in pkgutil.iter_modules(__path__):
    if _m.name.startswith("ops_"):
        importlib.import_module(f"{__name__}.{_m.name}")


class EventTimer:
    """CUDA events per step: `start()` before a run, `synchronize()` of the backend records
    one event per step, `stop(times)` rewrites the run's perf_counter stamps from the
    events' elapsed milliseconds (the first stamp stays the host's: the clock origin)."""

    def __init__(self, backend: CudaBackend) -> None:
        self.backend = backend
        self.events: list[Any] = []
        self.memory_before: tuple[int, int] | None = None
        self.memory_after: tuple[int, int] | None = None

    def start(self) -> None:
        cuda = _launch.cuda()
        if self.memory_before is None:
            self.memory_before = self.backend.memory_info()
        first = cuda.event()
        first.record()
        self.events = [first]
        self.backend._timer = self

    def record(self) -> None:
        e = _launch.cuda().event()
        e.record()
        e.synchronize()
        self.events.append(e)

    def stop(self, times: list[float]) -> None:
        self.backend._timer = None
        elapsed = _launch.cuda().event_elapsed_time
        first = self.events[0]
        if len(self.events) == len(times):
            t0 = times[0]
            times[1:] = [t0 + elapsed(first, e) / 1e3 for e in self.events[1:]]
        self.memory_after = self.backend.memory_info()


class CudaBackend(Backend):
    name = "cuda"
    device = "cuda:0"
    precisions = ("fp32", "fp16", "tf32")
    dtypes = frozenset({"float32", "float16"})
    description = "numba.cuda kernels on an NVIDIA GPU"

    def __init__(self) -> None:
        super().__init__()
        self.kernels = kernels
        self._timer: EventTimer | None = None
        self._event_timer: EventTimer | None = None

    def availability(self) -> Availability:
        if _launch.simulated():
            sim = "numba's CUDA simulator is enabled (NUMBA_ENABLE_CUDASIM=1)"
        else:
            sim = ""
        try:
            cuda = _launch.cuda()
        except Exception as e:
            return Availability(False, "unavailable", f"numba.cuda does not import: {e}")
        if not sim and not cuda.is_available():
            why = "no CUDA driver or GPU found (set NUMBA_ENABLE_CUDASIM=1 for the simulator)"
            return Availability(False, "unavailable", why)
        if not self.kernels.specs():
            why = "the CUDA kernels are not built yet"
            return Availability(False, "unavailable", f"{why}; {sim}" if sim else why)
        return Availability(True, "simulator" if sim else "native", sim)

    # -- tensors on the device ----------------------------------------------------------------
    def to_device(self, array: np.ndarray) -> Any:
        return _launch.upload(np.asarray(array))

    def to_host(self, tensor: Any) -> np.ndarray:
        return _launch.download(tensor) if _launch.is_device(tensor) else np.asarray(tensor)

    def allocate(self, nbytes: int) -> Any:
        """One device allocation: the memory planner's arena, whose views the kernels write
        into (`out=`)."""
        return _launch.cuda().device_array(nbytes, dtype=np.uint8)

    def copy_into(self, dst: Any, src: Any) -> None:
        """The executor's copy of a result into its arena view (a kernel that ignores `out`):
        device to device, or host to device."""
        dst.copy_to_device(src if _launch.is_device(src) else _launch.host_c(src))

    def synchronize(self) -> None:
        if self._timer is not None:
            self._timer.record()
        else:
            _launch.cuda().synchronize()

    def place(self, plan: Any) -> None:
        """Called by `compile_plan`: add the host<->device copy steps (see `_plan`)."""
        from ._plan import place

        place(plan)

    # -- measuring ----------------------------------------------------------------------------
    @property
    def events(self) -> EventTimer | None:
        """The CUDA-event timer of this backend, None under the simulator (no device clock)."""
        if _launch.simulated():
            return None
        if self._event_timer is None:
            self._event_timer = EventTimer(self)
        return self._event_timer

    def memory_info(self) -> tuple[int, int] | None:
        """(free, total) bytes of device memory as the driver reports them; None when it
        cannot (the simulator reports infinity)."""
        try:
            free, total = _launch.cuda().current_context().get_memory_info()
        except Exception:
            return None
        if not (np.isfinite(free) and np.isfinite(total)):
            return None
        return int(free), int(total)

    def device_name(self) -> str:
        if _launch.simulated():
            return "numba CUDA simulator"
        try:
            dev = _launch.cuda().get_current_device()
            name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            return f"{name} (cc {dev.compute_capability[0]}.{dev.compute_capability[1]})"
        except Exception as e:
            return f"unknown ({e})"

    def profile_meta(self) -> dict[str, Any]:
        """What a profile records about the device: the clock its steps were timed with and
        device memory (free/total) before the first and after the last timed run."""
        timer = self._event_timer
        sim = _launch.simulated()
        meta: dict[str, Any] = {
            "device": self.device_name(),
            "timing": "perf_counter (simulator: no CUDA events)" if sim else "cuda events",
            "device_memory": None,
        }
        if timer is not None and timer.memory_before and timer.memory_after:
            (f0, total), (f1, _) = timer.memory_before, timer.memory_after
            meta["device_memory"] = {"free_before": f0, "free_after": f1, "total": total}
        elif os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
            meta["device_memory_note"] = "the simulator has no device memory to report"
        meta.update(_tensor_core_meta())
        return meta


def _tensor_core_meta() -> dict[str, Any]:
    """Whether the tensor-core GEMM runs per precision (or why not) and, where it does, the
    device's measured WMMA peak in TFLOP/s (once per process): the denominator of the
    `fast_gemm.achieved` fractions."""
    from . import fast_gemm

    why = {p: fast_gemm.why_not(p) for p in ("fp16", "tf32")}
    on = [p for p, w in why.items() if not w]
    return {
        "tensor_cores": {p: w or f"on, via {fast_gemm._module(p).via}" for p, w in why.items()},
        "peak_tflops": {p: round(fast_gemm.measure_peak(p), 2) for p in on},
    }


BACKEND = CudaBackend()
