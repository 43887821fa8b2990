"""Intel oneMKL's single-precision GEMM through ctypes, when the `mkl` wheel is installed
(the ``mkl`` extra; x86-64 only). The x86 GEMM and convolution kernels offer it to
algorithm selection beside numpy's OpenBLAS: selection measures both on the real shapes,
so MKL is used only where it wins on this machine, and everything works without it.

Why, measured on the 2-core AVX-512 machine, one thread, GFLOP/s (OpenBLAS / MKL / MKL
with B packed once / onnxruntime's MLAS): 128x384x1536 90 / 85 / 136 / 122; 128x1536x384
90 / 115 / 131 / 121; 49x960x320 82 / 96 / 113 / 114. Most of MLAS's lead over OpenBLAS
on the transformer shapes is that it packs the constant weight once, at load; MKL's
packed GEMM (`cblas_sgemm_pack` / `cblas_sgemm_compute`) does the same.

MKL runs with its sequential threading layer: the x86 kernels split work over their own
pool (see _parallel.py) and call MKL from each thread, as they call OpenBLAS; an OpenMP
runtime spinning beside them would slow everything else in the process.

`WORKBENCH_MKL=0` turns it off; `WORKBENCH_MKL=/path/to/libmkl_rt.so` picks a library.
"""

from __future__ import annotations

import ctypes
import glob
import mmap
import os
import site
import sys
import threading

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_A_MATRIX, _B_MATRIX, _PACKED = 161, 162, 151
_SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL

_lock = threading.Lock()
_state: dict[str, object] = {}


def _candidates() -> list[str]:
    """Where the `mkl` wheel puts libmkl_rt: <prefix>/lib of the environment (or the user's)."""
    prefixes = [sys.prefix, sys.exec_prefix, getattr(site, "USER_BASE", None) or ""]
    found: list[str] = []
    for prefix in dict.fromkeys(p for p in prefixes if p):
        found += sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")), reverse=True)
    return found


def _load() -> ctypes.CDLL | None:
    choice = os.environ.get("WORKBENCH_MKL", "").strip()
    if choice.lower() in ("0", "off", "no", "false"):
        _state["why"] = "turned off by WORKBENCH_MKL"
        return None
    paths = [choice] if choice else _candidates()
    if not paths:
        _state["why"] = "the mkl package is not installed (pip install 'workbench[mkl]')"
        return None
    errors = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            # before any other MKL call: no OpenMP threads of its own (see the docstring)
            lib.MKL_Set_Threading_Layer(ctypes.c_int(_SEQUENTIAL))
            _bind(lib)
        except (OSError, AttributeError) as e:
            errors.append(f"{path}: {e}")
            continue
        _state["path"] = path
        return lib
    _state["why"] = "could not load MKL: " + "; ".join(errors)
    return None


def _bind(lib: ctypes.CDLL) -> None:
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    lib.cblas_sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    lib.cblas_sgemm.restype = None
    lib.cblas_sgemm_pack_get_size.argtypes = [i, i, i, i]
    lib.cblas_sgemm_pack_get_size.restype = ctypes.c_size_t
    lib.cblas_sgemm_pack.argtypes = [i, i, i, i, i, i, f, p, i, p]
    lib.cblas_sgemm_pack.restype = None
    lib.cblas_sgemm_compute.argtypes = [i, i, i, i, i, i, p, i, p, i, f, p, i]
    lib.cblas_sgemm_compute.restype = None


def library() -> ctypes.CDLL | None:
    """The loaded libmkl_rt, or None (`why()` says why); loaded once per process."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"] = _load()
    return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    return library() is not None


def why() -> str:
    """Why MKL is not in use ("" when it is)."""
    return "" if available() else str(_state.get("why", ""))


def version() -> str | None:
    lib = library()
    if lib is None:
        return None
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, ctypes.c_int(len(buf)))
    return buf.value.decode(errors="replace").strip()


def _operand(x: np.ndarray) -> tuple[int, int]:
    """(transpose flag, leading dimension) of a 2-D float32 view for row-major CBLAS: rows
    of unit-stride elements (_NO_TRANS), or the transpose of such (_TRANS). A dimension of
    size 1 has no stride to honour, so e.g. (P, 1) is both (row-major is taken)."""
    m, n = x.shape
    s0, s1 = (s // 4 for s in x.strides)
    if (n <= 1 or s1 == 1) and (m <= 1 or s0 >= n):
        return _NO_TRANS, s0 if m > 1 else max(1, n)
    if (m <= 1 or s0 == 1) and (n <= 1 or s1 >= m):
        return _TRANS, s1 if n > 1 else max(1, m)
    raise ValueError(f"MKL GEMM needs a row- or column-major view, got strides {x.strides}")


def sgemm(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    """c = a @ b for 2-D float32 views, each row- or column-major (a column-major c is
    computed as c^T = b^T a^T)."""
    lib = library()
    assert lib is not None, why()
    tc, ldc = _operand(c)
    if tc == _TRANS:  # c^T is row-major with the same leading dimension
        a, b, c = b.T, a.T, c.T
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        c[...] = 0.0
        return
    ta, lda = _operand(a)
    tb, ldb = _operand(b)
    lib.cblas_sgemm(
        _ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
        0.0, c.ctypes.data, ldc,
    )  # fmt: skip


def _output_ld(c: np.ndarray) -> int:
    trans, ld = _operand(c)
    if trans != _NO_TRANS:
        raise ValueError(f"MKL GEMM writes row-major outputs, got strides {c.strides}")
    return ld


def _buffer(nbytes: int) -> np.ndarray:
    """A float32 buffer of `nbytes` in pages of its own: page-aligned, and not marked for
    transparent huge pages as numpy's large arrays are, so that only the pages MKL writes
    count in RSS (`cblas_sgemm_pack_get_size` asks for megabytes more than it fills)."""
    return np.frombuffer(mmap.mmap(-1, max(4, nbytes)), np.float32)


def resident_bytes(buf: np.ndarray) -> int:
    """Bytes of the pages of `buf` (a `_buffer`) that are in memory, by mincore(2); the
    whole buffer where that cannot be asked."""
    pages = -(-buf.nbytes // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.mincore(ctypes.c_void_p(buf.ctypes.data), ctypes.c_size_t(buf.nbytes), vec)
    except (OSError, AttributeError):
        return buf.nbytes
    if rc != 0:
        return buf.nbytes
    return int(np.count_nonzero(np.frombuffer(vec, np.uint8) & 1)) * mmap.PAGESIZE


class PackedB:
    """A constant B (K, N) packed once into MKL's internal layout (the weight of a MatMul,
    or the transposed weight of a convolution); `a @ B` by `product(a, c)` then skips the
    packing every plain GEMM call does.

    MKL lays the pack out for the rows of A it is told (`rows`), and any row count can
    then use it. For one row it pads B to panels of 512 columns, plus 128: K x (512
    ceil(N / 512) + 128) floats, 10x the weight for 64 columns, 1.5x for 768. For two or
    more it fills about the weight itself. (Measured here, one thread, ms, packed for one
    row / for the rows multiplied: 1568x576x64 0.75 / 0.84, 64x768x2304 1.55 / 1.84, but
    98x2304x256 0.76 / 0.72 and 24x4608x512 1.57 / 1.44: either layout can win, so
    selection measures both; see ops_gemm._gemm_builders.) The size MKL reserves is the
    same either way: only the pages it writes count (`resident`)."""

    def __init__(self, b: np.ndarray, rows: int = 1) -> None:
        lib = library()
        assert lib is not None, why()
        self.k, self.n = b.shape
        self.rows = max(1, int(rows))
        trans, ld = _operand(b)
        size = lib.cblas_sgemm_pack_get_size(_B_MATRIX, self.rows, self.n, self.k)
        self.buf = _buffer(int(size))  # MKL's packed data must not move: it never does
        lib.cblas_sgemm_pack(
            _ROW_MAJOR, _B_MATRIX, trans, self.rows, self.n, self.k, 1.0, b.ctypes.data, ld,
            self.buf.ctypes.data,
        )  # fmt: skip
        self._lib = lib

    @property
    def nbytes(self) -> int:
        return self.buf.nbytes

    def resident(self) -> int:
        """Bytes of the pack in memory: the pages MKL wrote (`nbytes` is what it reserved)."""
        return resident_bytes(self.buf)

    def product(self, a: np.ndarray, c: np.ndarray) -> None:
        """c (M, N) = a (M, K) @ B; a row- or column-major, c row-major."""
        m = a.shape[0]
        if m == 0:
            return
        if a.shape[1] != self.k or c.shape != (m, self.n):
            raise ValueError(
                f"packed GEMM of B {self.k}x{self.n}: A {list(a.shape)}, C {list(c.shape)}"
            )
        ta, lda = _operand(a)
        self._lib.cblas_sgemm_compute(
            _ROW_MAJOR, ta, _PACKED, m, self.n, self.k, a.ctypes.data, lda,
            self.buf.ctypes.data, self.n, 0.0, c.ctypes.data, _output_ld(c),
        )  # fmt: skip


__all__ = ["PackedB", "available", "library", "sgemm", "version", "why"]
