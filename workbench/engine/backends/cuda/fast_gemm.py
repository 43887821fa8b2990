"""The tensor-core fast path: the WMMA GEMM of `tensor_core.cu`, compiled through pycuda
(nvcc) or, where pycuda is absent, CuPy's RawModule (NVRTC).

Used only where one of them imports and a real GPU of compute capability 7.0+ (fp16) or
8.0+ (tf32) is present: `enabled(precision)` says whether, `why_not(precision)` says why
not. Both are optional; they are imported here, on first use, never at package import.
Both share numba's CUDA context (the device's primary context: `pycuda.autoprimaryctx`,
and CuPy's runtime API), so the kernels read and write numba device arrays by their
pointers, on the same legacy default stream, in order with numba's kernels.

`tc_gemm` has the signature of `_gemm.gemm` and the same semantics (strides, batch, alpha,
E0/E1, causal), activation included (a second, in-place pass); it returns False where it
does not apply (fp32, more than two batch dims, dims under 16) and the tiled kernel runs.

Measuring: `measure_peak(precision)` times MMAs on register fragments (the device's
tensor-core peak as WMMA reaches it), `measure_gemm(n, precision)` this GEMM on n x n x n;
`achieved(profile)` turns a profile's GEMM/Conv rows into TFLOP/s and a fraction of peak.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _launch

SOURCE = Path(__file__).with_name("tensor_core.cu")
BLOCK = (128, 1, 1)  # 4 warps, 2 x 2, each 32 x 32 of the block's 64 x 64 tile
TILE = 64
MIN_DIM = 16  # smaller GEMMs stay on the tiled kernel: a fragment would be mostly padding
GEMM_OPS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Conv", "FusedConv", "Attention")


def nvcc_options(precision: str) -> list[str]:
    """The defines selecting the fp16 or the tf32 kernels of `tensor_core.cu`."""
    return ["-DWB_TF32"] if precision == "tf32" else []


@functools.cache
def why_not(precision: str) -> str:
    """Empty when the tensor-core path runs for `precision`; else the reason it does not."""
    if precision not in ("fp16", "tf32"):
        return f"{precision} computes in exact fp32: no tensor cores"
    if _launch.simulated():
        return "numba's CUDA simulator has no tensor cores"
    try:
        cuda = _launch.cuda()
        if not cuda.is_available():
            return "no GPU"
        cc = cuda.get_current_device().compute_capability
    except Exception as e:
        return f"no GPU ({e})"
    need = (8, 0) if precision == "tf32" else (7, 0)
    if tuple(cc) < need:
        return f"compute capability {cc[0]}.{cc[1]} < {need[0]}.{need[1]}"
    try:
        _module(precision)
    except ImportError as e:
        return f"neither pycuda nor cupy imports ({e}): `pip install pycuda` for tensor cores"
    except Exception as e:  # nvcc missing or failing: say so, run the tiled kernel
        return f"tensor_core.cu does not compile: {type(e).__name__}: {e}"
    return ""


def enabled(precision: str) -> bool:
    return not why_not(precision)


class _Module:
    """The compiled `tensor_core.cu`: `launch(name, grid, block, *args)` whichever compiled it."""

    def __init__(self, precision: str) -> None:
        _launch.cuda().current_context()  # numba's context (the primary one) exists first
        cc = _launch.cuda().get_current_device().compute_capability
        arch = f"sm_{cc[0]}{cc[1]}"
        try:
            import pycuda.autoprimaryctx  # noqa: F401  (the primary context, made current)
            from pycuda.compiler import SourceModule
        except ImportError as first:
            try:
                import cupy
            except ImportError:
                raise first from None
            self.via = "cupy (NVRTC)"
            options = (*nvcc_options(precision), f"--gpu-architecture={arch}", "--std=c++17")
            self._cupy = cupy.RawModule(code=SOURCE.read_text(), options=options)
            return
        self.via = "pycuda (nvcc)"
        self._cupy = None
        self._pycuda = SourceModule(
            SOURCE.read_text(), options=nvcc_options(precision), no_extern_c=True, arch=arch
        )

    def launch(self, name: str, grid: tuple, block: tuple, *args: Any) -> None:
        if self._cupy is not None:
            self._cupy.get_function(name)(grid, block, args)
        else:
            self._pycuda.get_function(name)(*args, block=block, grid=grid)


@functools.cache
def _module(precision: str) -> _Module:
    return _Module(precision)


def _ptr(x: Any) -> np.uintp:
    return np.uintp(x.__cuda_array_interface__["data"][0])


def _two(batch: Sequence[int], s: Sequence[int]) -> tuple[int, int, int, int]:
    """(outer size, inner size, outer stride, inner stride) of at most two batch dims."""
    batch, s = list(batch), list(s)
    while len(batch) < 2:
        batch.insert(0, 1)
        s.insert(0, 0)
    return batch[0], batch[1], s[0], s[1]


ACTIVATE = """
def kernel(x, n):
    i = cuda.grid(1)
    if i < n:
        v = float32(x[i])
        x[i] = {act}
"""


def tc_gemm(
    A: Any,
    B: Any,
    C: Any,
    M: int,
    N: int,
    K: int,
    *,
    batch: Sequence[int] = (),
    a: tuple,
    b: tuple,
    c: tuple,
    alpha: float = 1.0,
    e0: tuple | None = None,
    beta: float = 1.0,
    e1: tuple | None = None,
    act: str = "{0}",
    precision: str = "fp16",
    causal: bool = False,
) -> bool:
    """`_gemm.gemm` on tensor cores (see the module docstring); False: it did not run."""
    if len(batch) > 2 or min(M, N, K) < MIN_DIM or not enabled(precision):
        return False
    want = np.float16 if precision == "fp16" else np.float32
    if any(np.dtype(x.dtype) != want for x in (A, B, C)):
        return False
    name = "gemm_tf32" if precision == "tf32" else "gemm_f16"
    i64, null = np.int64, np.uintp(0)
    nb1, nb2, sa1, sa2 = _two(batch, a[0])
    _, _, sb1, sb2 = _two(batch, b[0])
    _, _, sc1, sc2 = _two(batch, c[0])

    def extra(e: tuple | None) -> list[Any]:
        if e is None:
            return [null, i64(0), i64(0), i64(0), i64(0)]
        _, _, s1, s2 = _two(batch, e[1])
        return [_ptr(e[0]), i64(s1), i64(s2), i64(e[2]), i64(e[3])]

    grid = (-(-N // TILE), -(-M // TILE), nb1 * nb2)
    _module(precision).launch(
        name, grid, BLOCK,
        _ptr(A), _ptr(B), _ptr(C), np.int32(M), np.int32(N), np.int32(K), np.int32(nb2),
        i64(sa1), i64(sa2), i64(sb1), i64(sb2), i64(sc1), i64(sc2),
        i64(a[1]), i64(a[2]), i64(b[1]), i64(b[2]), i64(c[1]), i64(c[2]),
        np.float32(alpha), *extra(e0), np.float32(beta), *extra(e1), np.int32(causal),
    )  # fmt: skip
    if act != "{0}":  # the activation: one in-place pass over C (contiguous here)
        from ._elementwise import ONE, Z

        kernel = _launch.jit_source(ACTIVATE.format(act=act.format("v")), Z=Z, ONE=ONE)
        flat = _launch.flat(C)
        blocks, threads = _launch.grid(flat.size)
        kernel[blocks, threads](flat, flat.size)
    return True


# -- measuring ----------------------------------------------------------------------------------
def _elapsed_s(launch: Any) -> float:
    cuda = _launch.cuda()
    launch()  # warm-up (and compilation)
    start, stop = cuda.event(), cuda.event()
    start.record()
    launch()
    stop.record()
    stop.synchronize()
    return cuda.event_elapsed_time(start, stop) / 1e3


@functools.cache
def measure_peak(precision: str, iters: int = 1 << 14) -> float:
    """TFLOP/s of MMAs on register fragments over every SM (no memory traffic): the peak
    this device's tensor cores reach through WMMA for `precision` (fp16 or tf32)."""
    if why_not(precision):
        raise RuntimeError(f"no tensor-core path for {precision}: {why_not(precision)}")
    cuda = _launch.cuda()
    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    blocks = sms * 8  # 8 blocks of 4 warps per SM: enough warps to fill every tensor core
    name = f"peak_{'tf32' if precision == 'tf32' else 'f16'}"
    out = cuda.device_array(blocks, np.float32)
    k = 8 if precision == "tf32" else 16
    mod = _module(precision)
    seconds = _elapsed_s(
        lambda: mod.launch(name, (blocks, 1, 1), BLOCK, _ptr(out), np.int32(iters))
    )
    flops = blocks * 4 * iters * 4 * 2 * 16 * 16 * k  # warps x iterations x chains x MMA
    return flops / seconds / 1e12


def measure_gemm(n: int = 4096, precision: str = "fp16") -> float:
    """TFLOP/s of `tc_gemm` on one n x n x n product (row-major operands)."""
    dtype = np.float16 if precision == "fp16" else np.float32
    rng = np.random.default_rng(0)
    A = _launch.upload(rng.standard_normal((n, n)).astype(dtype))
    B = _launch.upload(rng.standard_normal((n, n)).astype(dtype))
    C = _launch.empty((n, n), dtype)
    row = ((), n, 1)

    def launch() -> None:
        if not tc_gemm(A, B, C, n, n, n, a=row, b=row, c=row, precision=precision):
            raise RuntimeError(f"tc_gemm declined: {why_not(precision)}")

    return 2.0 * n**3 / _elapsed_s(launch) / 1e12


def achieved(profile: Any, peak: dict[str, float] | None = None) -> Any:
    """The GEMM and Conv rows of a profile with their TFLOP/s (flops from
    workbench/profiler/flops.py over the median time) and, given the measured peak of the
    profile's precision, the fraction of it they reach."""
    k = profile.kernels
    rows = k[k["op"].isin(GEMM_OPS)][["node", "op", "algorithm", "median_ms", "flops"]].copy()
    rows["tflop_s"] = rows["flops"] / (rows["median_ms"] / 1e3) / 1e12
    precision = profile.meta.get("precision", "fp32")
    top = (peak or {}).get(precision)
    rows["of_peak"] = rows["tflop_s"] / top if top else np.nan
    return rows.reset_index(drop=True)
