"""Refuse tensors that cannot fit before numpy tries (and the kernel OOM-kills the notebook)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import AllocationError


def available_bytes() -> int:
    """Memory the OS says a new allocation can get now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def nbytes_of(shape: Sequence[int], dtype: np.dtype | type) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * np.dtype(dtype).itemsize


def check_size(shape: Sequence[int], dtype: np.dtype | type, what: str) -> None:
    """Raise `AllocationError` if a tensor of `shape` x `dtype` exceeds available memory."""
    if any(int(d) < 0 for d in shape):
        raise AllocationError(f"{what}: negative dimension in shape {list(shape)}")
    need = nbytes_of(shape, dtype)
    if need <= 64 << 20:  # small tensors: not worth a look at /proc
        return
    have = available_bytes()
    if need > have:
        raise AllocationError(
            f"{what}: shape {list(shape)} of {np.dtype(dtype)} needs {need / 2**30:.1f} GiB, "
            f"but only {have / 2**30:.1f} GiB is available; refused before allocating"
        )
