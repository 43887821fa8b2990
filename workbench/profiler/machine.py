"""What this machine is and what it can do: CPU model, cores, threads, and a measured roofline.

The roofline needs two numbers no spec sheet gives reliably on a shared or virtual machine:
the peak float32 GFLOP/s (a large matmul through numpy's BLAS, best of a few) and the memory
bandwidth (a large array copy, counted as STREAM counts it: bytes read plus bytes written).
They are measured once per (CPU model, thread count) and cached as JSON in
`workbench._cache.cache_dir("machine")`, so a profile costs the measurement only the first time.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._cache import cache_dir

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def cpu_model() -> str:
    """The CPU's marketing name ("Intel(R) Xeon(R) ...") or the best platform guess."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m and m.group(1).strip():
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs in /proc/cpuinfo; None where it does not say."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    cores, phys = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            cores.add((phys, value.strip()))
    return len(cores) or None


def _simd() -> str:
    """The widest x86 vector extension the CPU reports (for reading the peak), or ''."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(m.group(1).split()) if m else set()
    for name in ("avx512f", "avx2", "avx", "sse4_2"):
        if name in flags:
            return name
    return "neon" if platform.machine() in ("aarch64", "arm64") else ""


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_settings() -> dict[str, int]:
    """How many threads numba and BLAS use here (the kernels' parallelism)."""
    out: dict[str, int] = {}
    try:
        import numba

        out["numba"] = int(numba.get_num_threads())
    except Exception:  # numba absent or its threading layer failed to load
        pass
    blas = None
    try:
        from threadpoolctl import threadpool_info  # optional: exact where installed

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            blas = int(pools[0]["num_threads"])
    except Exception:
        pass
    if blas is None:
        for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
            if os.environ.get(var, "").isdigit():
                blas = int(os.environ[var])
                break
    out["blas"] = blas if blas is not None else _usable_cpus()
    return out


def _key(model: str, threads: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", model).strip("-").lower()[:60] or "cpu"
    return f"{slug}-{threads}t"


def measure_peak_gflops(n: int = 2048, trials: int = 5) -> float:
    """Best float32 matmul rate (2n^3 FLOPs per product) through numpy's BLAS, its rows
    split over the x86 kernels' threads as their GEMMs are (BLAS runs one per call)."""
    from ..engine.backends.x86 import _parallel

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)

    def product() -> None:
        _parallel.for_ranges(lambda lo, hi: np.matmul(a[lo:hi], b, out=c[lo:hi]), n, 64)

    product()  # warm-up: the pool starts its threads
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def measure_bandwidth_gbps(mib: int = 128, trials: int = 5) -> float:
    """Best copy rate of an array much larger than the caches: (read + write) bytes / s."""
    src = np.ones(mib * 1024 * 1024 // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # warm-up: fault the pages in
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best / 1e9


def machine_info(measure: bool = True, refresh: bool = False) -> dict[str, Any]:
    """CPU model, cores, threads in use, and the measured peak GFLOP/s and GB/s.

    The two measured numbers come from the cache when present; `measure=False` never
    measures (they are None until some call has measured them). `refresh=True` measures
    again and keeps the better of the new and the cached numbers: a peak is the best the
    machine has shown, and a measurement on a busy machine can only understate it.
    """
    model = cpu_model()
    threads = thread_settings()
    in_use = max(threads.values()) if threads else _usable_cpus()
    info: dict[str, Any] = {
        "cpu": model,
        "arch": platform.machine(),
        "simd": _simd(),
        "cores": _physical_cores(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": _usable_cpus(),
        "threads": in_use,
        "numba_threads": threads.get("numba"),
        "blas_threads": threads.get("blas"),
        "thread_env": {v: os.environ[v] for v in _THREAD_VARS if v in os.environ},
        "os": platform.platform(),
        "peak_gflops": None,
        "mem_gbps": None,
    }
    path = cache_dir("machine") / f"{_key(model, in_use)}.json"
    cached: dict[str, Any] = {}
    if path.exists():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}
    known = bool(cached.get("peak_gflops") and cached.get("mem_gbps"))
    if known and not refresh:
        info.update({k: cached.get(k) for k in ("peak_gflops", "mem_gbps", "measured_at")})
    elif measure or refresh:
        peak, bw = round(measure_peak_gflops(), 2), round(measure_bandwidth_gbps(), 2)
        info["peak_gflops"] = max(peak, cached.get("peak_gflops") or 0.0)
        info["mem_gbps"] = max(bw, cached.get("mem_gbps") or 0.0)
        info["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {k: info[k] for k in ("cpu", "threads", "peak_gflops", "mem_gbps", "measured_at")}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)  # atomic: two processes measuring at once both leave valid JSON
    return info


__all__ = ["cpu_model", "machine_info", "measure_bandwidth_gbps", "measure_peak_gflops"]
