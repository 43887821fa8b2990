"""Kernels whose parts run on numba's own threads: every step of a part is compiled code
(MKL's packed GEMM called through a function pointer, the fused epilogue, the
channels-last depthwise loop), so the parts of one call start and end without Python.

Why: the pool of _parallel.py runs each part on a Python thread, which must take the GIL
to start its part and again to report it done. Measured on the 2-vCPU machine (one call,
median us, one thread / our pool's two parts / the same two parts here): a part that does
nothing - / 17-23 / 4; MKL's packed 196x64x384 product 151 / 197 / 93; 3136x24x144
469 / 286-335 / 218. The pool's two threads were slower than one on MobileNetV2's small
products; numba's threads (`parallel=True`, a `prange` over the parts) are not.

The thread team is numba's threading layer, asked for as "threadsafe" (TBB or OpenMP:
kernels may be called from several Python threads at once) unless NUMBA_THREADING_LAYER
says otherwise. Where none loads, or with `WORKBENCH_NATIVE_THREADS=0`, `available()` is
False and the kernels use the pool as before. A part is cut as the pool cuts it
(`_parallel.split`: the same grains, one part per thread, one part inside another part).

OpenMP's threads spin a while after each parallel region before they sleep; without the
spin a part waits for its thread to wake (MobileNetV2 with OMP_WAIT_POLICY=passive: 30.6
ms against 18.9). `workbench._threads` keeps the spin short (GOMP_SPINCOUNT), so that a
run's threads bridge the gap between two kernels but stop soon after the run.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from numba import prange

from .... import _threads
from . import _mkl, _parallel, winograd
from ._mkl import _NO_TRANS, _PACKED, _ROW_MAJOR
from ._numba import CONTRACT, njit, scratch, u64
from .depthwise_nhwc import _depthwise_hwc
from .ops_fused_conv import _EMPTY, Epilogue, ImageEpilogue, _epilogue_block, _epilogue_tile

_lock = threading.Lock()
_state: dict[str, object] = {}


@njit(parallel=True)
def _probe(x):  # pragma: no cover - compiled
    for i in prange(x.size):
        x[i] += 1.0


def available() -> bool:
    """Whether numba's parallel loops run here (checked once per process)."""
    if "ok" not in _state:
        with _lock:
            if "ok" not in _state:
                _state["ok"] = _check()
    return bool(_state["ok"])


def why() -> str:
    """Why `available()` is False ('' when it is True)."""
    return "" if available() else str(_state.get("why", ""))


def _check() -> bool:
    if os.environ.get("WORKBENCH_NATIVE_THREADS", "").strip().lower() in ("0", "off", "no"):
        _state["why"] = "turned off by WORKBENCH_NATIVE_THREADS"
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        # measured on x86 only; the arm backend's emulated worker would spend minutes
        # compiling the parallel loops under qemu
        _state["why"] = f"x86-64 only (this is {platform.machine()})"
        return False
    _threads.current()  # (the layer is chosen and started there)
    try:
        x = np.zeros(4)
        _probe(x)
        ok = bool(np.all(x == 1.0))
    except Exception as e:  # no threading layer loads: the pool does the parts
        _state["why"] = f"numba's threading layer: {e}"
        return False
    if not ok:
        _state["why"] = "numba's parallel loop gave a wrong result"
    return ok


# cblas_sgemm_compute with its pointers as integers, so that compiled code can pass the
# addresses it computes (numba calls a ctypes function pointer given as an argument; the
# pointer itself is never frozen into the cached machine code)
_COMPUTE_T = ctypes.CFUNCTYPE(
    None, *[ctypes.c_int] * 6, ctypes.c_size_t, ctypes.c_int, ctypes.c_size_t, ctypes.c_int,
    ctypes.c_float, ctypes.c_size_t, ctypes.c_int,
)  # fmt: skip


# cblas_sgemm likewise
_SGEMM_T = ctypes.CFUNCTYPE(
    None, *[ctypes.c_int] * 6, ctypes.c_float, ctypes.c_size_t, ctypes.c_int, ctypes.c_size_t,
    ctypes.c_int, ctypes.c_float, ctypes.c_size_t, ctypes.c_int,
)  # fmt: skip


def _sgemm():
    fn = _state.get("sgemm")
    if fn is None:
        address = ctypes.cast(_mkl.library().cblas_sgemm, ctypes.c_void_p).value
        fn = _state["sgemm"] = _SGEMM_T(address)
    return fn


def _compute():
    fn = _state.get("compute")
    if fn is None:
        lib = _mkl.library()
        address = ctypes.cast(lib.cblas_sgemm_compute, ctypes.c_void_p).value
        fn = _state["compute"] = _COMPUTE_T(address)
    return fn


# fmt: off
@njit(fastmath=CONTRACT)
def _packed_part(fp, a, ta, lda, k, buf, n, y, r0, r1, c0, c1, b, z, act, p0, p1,
                 epi):  # pragma: no cover - compiled
    """The block rows r0..r1-1, columns c0..c1-1 of y (rows, n) = A @ B, with B's columns
    c0..c1-1 packed at `buf` (all of B for a part of rows, its range for a part of
    columns), then the epilogue on the block. A is at address `a`: row-major with leading
    dimension lda, or its transpose (ta)."""
    if r1 <= r0 or c1 <= c0:
        return
    first = r0 * lda if ta == _NO_TRANS else r0
    fp(
        _ROW_MAJOR, ta, _PACKED, r1 - r0, c1 - c0, k, u64(a + first * 4), lda, u64(buf), c1 - c0,
        0.0, y.ctypes.data + u64((r0 * n + c0) * 4), n,
    )
    if epi:
        _epilogue_tile(y, b, z, n, r0, r1, c0, c1, act, p0, p1)
# fmt: on


@njit(parallel=True, fastmath=CONTRACT)
def _rows(fp, a, ta, lda, k, buf, n, y, bounds, b, z, act, p0, p1, epi):  # pragma: no cover
    for t in prange(bounds.size - 1):
        lo, hi = bounds[t], bounds[t + 1]
        _packed_part(fp, a, ta, lda, k, buf, n, y, lo, hi, 0, n, b, z, act, p0, p1, epi)


@njit(parallel=True, fastmath=CONTRACT)
def _cols(fp, a, ta, lda, m, k, bufs, n, y, bounds, b, z, act, p0, p1, epi):  # pragma: no cover
    for t in prange(bounds.size - 1):
        lo, hi = bounds[t], bounds[t + 1]
        _packed_part(fp, a, ta, lda, k, bufs[t], n, y, 0, m, lo, hi, b, z, act, p0, p1, epi)


@njit(fastmath=CONTRACT)
def _conv_part(fp, w, x, y, m, k, p, lo, hi, by_cols, b, z, act, p0, p1, epi):  # pragma: no cover
    """A block of one image's y (M, P) = w (M, K) @ x (K, P) (all flat, row-major): the
    columns lo..hi-1 (by_cols) or the rows lo..hi-1, then the epilogue on it."""
    if hi <= lo:
        return
    if by_cols:
        fp(
            _ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, hi - lo, k, 1.0, w.ctypes.data, k,
            x.ctypes.data + u64(lo * 4), p, 0.0, y.ctypes.data + u64(lo * 4), p,
        )  # fmt: skip
        if epi:
            _epilogue_block(y, b, z, p, 0, m, lo, hi, act, p0, p1)
    else:
        fp(
            _ROW_MAJOR, _NO_TRANS, _NO_TRANS, hi - lo, p, k, 1.0, w.ctypes.data + u64(lo * k * 4),
            k, x.ctypes.data, p, 0.0, y.ctypes.data + u64(lo * p * 4), p,
        )  # fmt: skip
        if epi:
            _epilogue_block(y, b, z, p, lo, hi, 0, p, act, p0, p1)


@njit(parallel=True, fastmath=CONTRACT)
def _conv(fp, w, x, y, m, k, p, bounds, by_cols, b, z, act, p0, p1, epi):  # pragma: no cover
    for t in prange(bounds.size - 1):
        _conv_part(fp, w, x, y, m, k, p, bounds[t], bounds[t + 1], by_cols, b, z, act, p0, p1, epi)


def conv_gemm(
    w2: np.ndarray, x2: np.ndarray, y2: np.ndarray, by_cols: bool, parts: list, post, n: int
) -> bool:
    """y2 (M, P) = w2 (M, K) @ x2 (K, P) by MKL, in `parts` of y2's columns (by_cols) or
    rows, each followed by its block of `post` (an ImageEpilogue, for image n of the
    output, or None); False (nothing done) where this path does not apply."""
    epi = _epilogue(post, n)
    if epi is None or not (
        w2.flags.c_contiguous and x2.flags.c_contiguous and y2.flags.c_contiguous
    ):
        return False
    if not parts or not available():
        return not parts
    (m, k), p = w2.shape, x2.shape[1]
    w, x, y = w2.reshape(-1), x2.reshape(-1), y2.reshape(-1)
    if len(parts) == 1:
        _conv_part(_sgemm(), w, x, y, m, k, p, *parts[0], by_cols, *epi)
    else:
        _conv(_sgemm(), w, x, y, m, k, p, _bounds(parts), by_cols, *epi)
    return True


def _epilogue(post: object, image: int | None = None) -> tuple | None:
    """(b, z, act, p0, p1, epi) for the compiled parts: of an `Epilogue` (a product's), or
    of an `ImageEpilogue` for image `image` (a conv's); None for a `post` they cannot run
    (any other Python callable)."""
    if post is None:
        return _EMPTY, _EMPTY, 0, np.float32(0), np.float32(0), False
    if image is None and type(post) is Epilogue:
        return post.bias, post.z, post.act, post.p0, post.p1, True
    if image is not None and type(post) is ImageEpilogue:
        return post.bias, post.image_z(image), post.act, post.p0, post.p1, True
    return None


def _bounds(parts: list[tuple[int, int]]) -> np.ndarray:
    return np.array([lo for lo, _ in parts] + [parts[-1][1]], np.int64)


def packed_rows_call(
    packed: _mkl.PackedB, x2: np.ndarray, o2: np.ndarray, post, grain: int
) -> Callable[[], object] | None:
    """o2 = x2 @ B and `post` on o2, x2's rows split over numba's threads, as a call of no
    arguments with its pointers and parts worked out now (the executor binds it once per
    arena); None where this path does not apply and the caller's pool must do it."""
    epi = _epilogue(post)
    if epi is None or not o2.flags.c_contiguous or not available():
        return None
    m = x2.shape[0]
    if m == 0:
        return _nothing
    ta, lda = _mkl._operand(x2)
    y, buf, a = o2.reshape(-1), packed.buf.ctypes.data, x2.ctypes.data
    parts = _parallel.split(m, grain)
    if len(parts) == 1:
        return partial(
            _packed_part, _compute(), a, ta, lda, packed.k, buf, packed.n, y, 0, m, 0, packed.n,
            *epi,
        )  # fmt: skip
    return partial(_rows, _compute(), a, ta, lda, packed.k, buf, packed.n, y, _bounds(parts), *epi)


def packed_ranges(
    packs: dict, weight: Callable[[], np.ndarray], parts: list, by_rows: bool, rows: int = 2
) -> list[_mkl.PackedB]:
    """The packs of B's column ranges `parts` (or its row ranges: by_rows), each packed
    on its first use into `packs` ((lo, hi) -> PackedB) for products of `rows` rows, from
    `weight()`, B itself or a fresh copy of it: a kernel that owns a copy of its weight
    need not keep it beside the packs (its product's candidates are built from
    `_gemm_builders(bm, source)`)."""
    missing = [part for part in parts if part not in packs]
    if missing:
        bm = weight()
        for lo, hi in missing:
            b = bm[lo:hi] if by_rows else bm[:, lo:hi]
            packs.setdefault((lo, hi), _mkl.PackedB(b, rows))
    return [packs[part] for part in parts]


# fmt: off
@njit(parallel=True, fastmath=CONTRACT)
def _depths(fp, a, ta, lda, m, ks, bufs, n, ys):  # pragma: no cover - compiled
    """Part t: ys[t] (m, n) = A's columns ks[t]..ks[t+1]-1 @ B's rows of that range,
    packed at bufs[t]."""
    for t in prange(bufs.size):
        k0, k1 = ks[t], ks[t + 1]
        first = k0 if ta == _NO_TRANS else k0 * lda
        fp(_ROW_MAJOR, ta, _PACKED, m, n, k1 - k0, u64(a + first * 4), lda, u64(bufs[t]), n,
           0.0, u64(ys[t]), n)


@njit(parallel=True, fastmath=CONTRACT)
def _depth_sums(y, s, n, bounds, b, z, act, p0, p1, epi):  # pragma: no cover - compiled
    """y += the partial products s (parts - 1, m * n), in order, then the epilogue; y's
    rows split over the threads at `bounds`."""
    for t in prange(bounds.size - 1):
        r0, r1 = bounds[t], bounds[t + 1]
        for q in range(s.shape[0]):
            for i in range(r0 * n, r1 * n):
                y[i] += s[q, i]
        if epi:
            _epilogue_tile(y, b, z, n, r0, r1, 0, n, act, p0, p1)
# fmt: on


def _depth_call(head: tuple, tail: tuple) -> None:
    _depths(*head)
    _depth_sums(*tail)


def packed_split_call(
    packs: dict,
    weight: Callable[[], np.ndarray],
    x2: np.ndarray,
    o2: np.ndarray,
    post,
    grain: int,
    depth: bool = False,
    rows: int = 2,
) -> Callable[[], object] | None:
    """o2 = x2 @ B and `post` on o2, B's columns split over numba's threads, or with
    `depth` its rows (the depth K), each range packed once for `rows` rows
    (`packed_ranges`), as a call of no arguments (see `packed_rows_call`); None where the
    pool must do it.

    By depth, each part multiplies its range of x2's columns by its range of B's rows into
    o2 or a partial product of its own, which are then added to o2 in order, rows split,
    before the epilogue. Every part has all of x2's rows and all of B's columns: on few
    rows (7x7 pixels) that keeps MKL as fast as the column split."""
    epi = _epilogue(post)
    if epi is None or not o2.flags.c_contiguous or not available():
        return None
    m, (k, n) = x2.shape[0], (x2.shape[1], o2.shape[1])
    if m == 0:
        return _nothing
    parts = _parallel.split(k if depth else n, grain, align=16)
    packed = packed_ranges(packs, weight, parts, depth, rows)
    bufs = np.array([p.buf.ctypes.data for p in packed], np.uint64)
    ta, lda = _mkl._operand(x2)
    y, a = o2.reshape(-1), x2.ctypes.data
    # (the packed ranges stay alive in `packs`, which the product keeps as long as the call)
    if len(parts) == 1:
        return partial(_packed_part, _compute(), a, ta, lda, k, bufs[0], n, y, 0, m, 0, n, *epi)
    if not depth:
        return partial(_cols, _compute(), a, ta, lda, m, k, bufs, n, y, _bounds(parts), *epi)
    sums = np.empty((len(parts) - 1, m * n), np.float32)  # (kept by the call)
    ys = np.array([y.ctypes.data] + [s.ctypes.data for s in sums], np.uint64)
    head = (_compute(), a, ta, lda, m, _bounds(parts), bufs, n, ys)
    return partial(_depth_call, head, (y, sums, n, _bounds(_parallel.split(m, 1)), *epi))


def _nothing() -> None:
    pass


@njit(parallel=True)
def _clear(x):  # pragma: no cover - compiled
    for i in prange(x.size):
        x[i] = 0.0


_SPIN_PART = np.zeros(64)


@njit(fastmath=CONTRACT)
def _probe_loop(y, reps):  # pragma: no cover - compiled
    for _ in range(reps):
        for i in range(y.size):
            y[i] = y[i] * np.float32(0.999) + np.float32(0.001)


_PROBE = np.ones(1024, np.float32)  # (4 KiB: in L1 throughout)


def probe_seconds() -> float:
    """Least seconds of 5 runs of a fixed vector loop in L1 on the calling thread (~20 us
    here): how fast the host runs this core's code now (autotune.host_busy). One thread,
    not numba's team: a parallel loop's time after any pause was the other vCPU's wake-up
    (140-340 us for what took 10 without one)."""
    _probe_loop(_PROBE, 1)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        _probe_loop(_PROBE, 256)
        best = min(best, time.perf_counter() - t0)
    _PROBE[:] = 1.0
    return best


def spin_up() -> None:
    """A parallel loop of next to no work on numba's threads, which then spin for a while
    as after any kernel's (autotune times its candidates right after one)."""
    _clear(_SPIN_PART)


# fmt: off
@njit(fastmath=CONTRACT)
def _depthwise_part(x, w, b, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, lo, hi, y, wr, br,
                    run, vlo, vhi, z, zero, act, p0, p1, finish):  # pragma: no cover - compiled
    _depthwise_hwc(x, w, b, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, lo, hi, y, wr, br, run,
                   vlo, vhi)
    if finish:  # the bias is in; the residual and activation on these rows
        _epilogue_tile(y, zero, z, c, lo * ow, hi * ow, 0, c, act, p0, p1)


@njit(parallel=True, fastmath=CONTRACT)
def _depthwise(x, w, b, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, bounds, y, wr, br,
               run, vlo, vhi, z, zero, act, p0, p1, finish):  # pragma: no cover - compiled
    for t in prange(bounds.size - 1):
        _depthwise_part(x, w, b, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, bounds[t],
                        bounds[t + 1], y, wr, br, run, vlo, vhi, z, zero, act, p0, p1, finish)
# fmt: on


# fmt: off
@njit(fastmath=CONTRACT)
def _winograd_products(fp, v, u, mo, tiles, c, nm, x0, x1):  # pragma: no cover - compiled
    """M[xi] = V[xi] (tiles, c) @ U[xi] (c, nm) by MKL for xi in x0..x1-1 (all flat)."""
    for xi in range(x0, x1):
        fp(
            _ROW_MAJOR, _NO_TRANS, _NO_TRANS, tiles, nm, c, 1.0,
            v.ctypes.data + u64(xi * tiles * c * 4), c, u.ctypes.data + u64(xi * c * nm * 4), nm,
            0.0, mo.ctypes.data + u64(xi * tiles * nm * 4), nm,
        )


@njit(fastmath=CONTRACT)
def _winograd_outputs(mo, nm, tw, m, ty0, ty1, oh, ow, bias, y, tiles, z, zero, act, p0, p1,
                      finish):  # pragma: no cover - compiled
    """Output tile rows ty0..ty1-1 into y (oh, ow, nm) with the bias, then the residual
    and activation on each tile row's pixels while they are in cache."""
    a = m + 2
    tmp = np.empty(a * m * tw * nm, np.float32)
    rows = np.empty(m * tw * m * nm, np.float32)
    for ty in range(ty0, ty1):
        winograd._output_tiles(mo, nm, tw, m, ty, ty + 1, oh, ow, bias, tmp, rows, y, tiles,
                               True)
        if finish:
            r1 = min(ty * m + m, oh)
            _epilogue_tile(y, zero, z, nm, ty * m * ow, r1 * ow, 0, nm, act, p0, p1)


@njit(parallel=True, fastmath=CONTRACT)
def _winograd(fp, x, h, w, c, pt, pl, u, bias, m, th, tw, oh, ow, nm, v, mo, rows_in, xis,
              rows_out, y, z, zero, act, p0, p1, finish):  # pragma: no cover - compiled
    """One channels-last image by Winograd F(m, 3) in three parallel loops on numba's
    threads: input tiles by tile rows, the a*a products by xi, output tiles by tile rows."""
    tiles = th * tw
    for t in prange(rows_in.size - 1):
        winograd.input_strips(x, h, w, c, pt, pl, tw, m, rows_in[t], rows_in[t + 1], v, tiles)
    for t in prange(xis.size - 1):
        _winograd_products(fp, v, u, mo, tiles, c, nm, xis[t], xis[t + 1])
    for t in prange(rows_out.size - 1):
        _winograd_outputs(mo, nm, tw, m, rows_out[t], rows_out[t + 1], oh, ow, bias, y, tiles,
                          z, zero, act, p0, p1, finish)
# fmt: on


def winograd_call(
    x: np.ndarray,
    u: np.ndarray,
    bias: np.ndarray,
    m: int,
    pads: tuple[int, int],
    out: tuple[np.ndarray, int, int, int],
    tail: tuple,
) -> Callable[[], object] | None:
    """One channels-last image x (h, w, C) by Winograd F(m, 3) with the packed weight u
    into out = (y flat (OH, OW, M), M, OH, OW), plus bias, then the epilogue `tail` (z,
    zero, act, p0, p1, finish) on each tile row: `winograd.image`'s four phases with no
    Python between them, MKL's GEMMs called from numba's threads. A call of no arguments
    (its work arrays taken when it runs); None where this path does not run here."""
    if not (available() and _mkl.available()):
        return None
    h, w, c = x.shape
    y, nm, oh, ow = out
    a = m + 2
    th, tw = -(-oh // m), -(-ow // m)
    grain = max(1, winograd._GRAIN // (a * a * tw * max(c, nm)))
    rows = _bounds(_parallel.split(th, grain))
    xis = _bounds(_parallel.split(a * a, max(1, int(4e6 // (2.0 * nm * c * th * tw)))))
    xf = x.reshape(-1)

    def call() -> None:
        v = scratch((a * a * th * tw * c,), "Winograd input tiles")
        mo = scratch((a * a * th * tw * nm,), "Winograd products", slot=1)
        _winograd(_sgemm(), xf, h, w, c, *pads, u, bias, m, th, tw, oh, ow, nm, v, mo, rows, xis,
                  rows, y, *tail)  # fmt: skip

    return call


def rows_call(
    serial: Callable, parallel: Callable, head: tuple, tail: tuple, rows: int, grain: int
) -> Callable[[], object]:
    """`serial(*head, lo, hi, *tail)` over output rows 0..rows-1 split like the pool's
    parts, as a call of no arguments with its parts worked out now: on numba's threads as
    `parallel(*head, bounds, *tail)` (a prange over the parts) when `available()`, else on
    the pool."""
    parts = _parallel.split(rows, grain)
    if len(parts) > 1 and available():
        return partial(parallel, *head, _bounds(parts), *tail)

    def part(lo: int, hi: int) -> None:
        serial(*head, lo, hi, *tail)

    if len(parts) == 1:
        return partial(part, *parts[0])
    return partial(_parallel.parallel, lambda i: part(*parts[i]), len(parts))


def depthwise_call(args: tuple, rows: int, grain: int, tail: tuple) -> Callable[[], object]:
    """`_depthwise_hwc(*args[:15], lo, hi, *args[15:])` (args[15:]: y, wr, br, run and the
    clamp's bounds) then, when tail[-1] (finish), the epilogue (tail: z, zero, act, p0,
    p1, finish) over output rows (`rows_call`)."""
    return rows_call(_depthwise_part, _depthwise, args[:15], (*args[15:], *tail), rows, grain)


__all__ = [
    "available", "conv_gemm", "depthwise_call", "packed_ranges", "packed_rows_call",
    "packed_split_call", "probe_seconds", "rows_call", "spin_up", "why", "winograd_call",
]  # fmt: skip
