"""Per-kernel timing, FLOPs and bytes, machine roofline, traces and the run store.

prof = wb.profile(model, backend="x86", repeat=20)   # a Profile, saved as it completes
prof.kernels                                          # pandas DataFrame, one row per kernel
wb.runs()                                             # every stored profile and comparison
wb.Profile.load(path)                                 # one back, after a restart
cmp = wb.compare(model, backends=["x86"])             # per-tensor errors vs reference (fp64)
cmp.first_divergence()                                # earliest node whose own error is too big
"""

from __future__ import annotations

from .compare import Comparison, Divergence, compare
from .machine import machine_info
from .profile import Profile, profile
from .store import load_run, runs, runs_root, save_run

__all__ = [
    "Comparison",
    "Divergence",
    "Profile",
    "compare",
    "load_run",
    "machine_info",
    "profile",
    "runs",
    "runs_root",
    "save_run",
]
