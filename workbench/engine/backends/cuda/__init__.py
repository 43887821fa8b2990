"""`cuda`: NVIDIA GPUs through numba.cuda (and pycuda for CUDA C, optional).

The interface is in place so the registry, plans and profiles already know the device;
its kernels arrive with the CUDA backend work. Nothing here imports numba.cuda or pycuda
at import time: availability is checked lazily.
"""

from __future__ import annotations

import os

import numpy as np

from ..base import Availability, Backend


class CudaBackend(Backend):
    name = "cuda"
    device = "cuda:0"
    precisions = ("fp32", "fp16", "tf32")
    dtypes = frozenset({"float32", "float16"})
    description = "numba.cuda kernels on an NVIDIA GPU"

    def availability(self) -> Availability:
        if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
            sim = "numba's CUDA simulator is enabled (NUMBA_ENABLE_CUDASIM=1)"
        else:
            sim = ""
        try:
            from numba import cuda
        except Exception as e:
            return Availability(False, "unavailable", f"numba.cuda does not import: {e}")
        if not sim and not cuda.is_available():
            return Availability(False, "unavailable", "no CUDA driver found")
        if not self.kernels.specs():
            why = "the CUDA kernels are not built yet"
            return Availability(False, "unavailable", f"{why}; {sim}" if sim else why)
        return Availability(True, "simulator" if sim else "native", sim)

    def to_device(self, array: np.ndarray):
        from numba import cuda

        return cuda.to_device(np.ascontiguousarray(array))

    def to_host(self, tensor) -> np.ndarray:
        return tensor.copy_to_host() if hasattr(tensor, "copy_to_host") else np.asarray(tensor)

    def allocate(self, nbytes: int):
        from numba import cuda

        return cuda.device_array(nbytes, dtype=np.uint8)

    def synchronize(self) -> None:
        from numba import cuda

        cuda.synchronize()


BACKEND = CudaBackend()
