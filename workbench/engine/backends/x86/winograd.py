"""Winograd convolution F(2x2, 3x3) and F(4x4, 3x3) for 3x3, stride-1, undilated,
ungrouped 2-D Conv (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks").

An output tile of m x m pixels needs an a x a input tile (a = m + 2). With the transform
matrices B^T (a x a), G (a x 3) and A^T (m x a) of the chosen F(m, 3):

    U[xi, c, k] = (G g[k, c] G^T)[xi]          weights, once per node (pre-packed)
    V[xi, t, c] = (B^T d[t, c] B)[xi]          input tiles t (numba)
    M[xi]       = V[xi] @ U[xi]                a*a GEMMs of (tiles x C) @ (C x M) (BLAS)
    y[k, t]     = A^T M[:, t, k] A             output tiles, cropped, plus bias (numba)

F(2, 3) multiplies 16 instead of 36 times per 2x2 tile (2.25x fewer GEMM FLOPs), F(4, 3)
36 instead of 144 (4x). The price is precision: the transforms add and subtract
values of different sizes (B^T of F(4, 3) has entries up to 5, A^T up to 8), so the
float32 rounding error grows with the tile size; see tests/backend/test_x86_algorithms.py
for the tolerance.

The transforms run channels-last, so that every step of them is one vector
multiply-add over a run of contiguous channels (the coefficients' zeros skipped outside
the vector loops): the input is first copied channels-last with its zero padding around
it, and the output tiles of each tile row are copied out while they are in cache (to
NCHW for `conv`, as they are for a channels-last `image` of the FusedConvNHWC kernels),
where the fused epilogue then runs. (A first version ran the transforms along the
tiles of an image row in NCHW: short vector loops and strided reads; at 64 channels of
56x56 its two transforms took 3.9 ms on one thread against 0.3 ms for the GEMMs.)

`image` runs the phases on the kernels' Python pool with numpy's GEMMs; the channels-last
kernels run them as one compiled call on numba's threads with MKL's
(`_native.winograd_call`, from `input_strips` and `_output_tiles` here), 2x faster.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from . import _parallel
from ._numba import CONTRACT, njit, scratch, u64

_GRAIN = 1 << 15  # transformed values per part worth a thread (see _parallel.py)
_TILE = 64  # channels per pass of the channels-last copy (their cache lines stay in L1)

# F(2x2, 3x3): interpolation points 0, 1, -1, infinity
_BT2 = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G2 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
_AT2 = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)

# F(4x4, 3x3): points 0, 1, -1, 2, -2, infinity
_BT4 = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    np.float32,
)
_G4 = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    np.float64,
)
_AT4 = np.array(
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    np.float32,
)

TRANSFORMS = {2: (_BT2, _G2, _AT2), 4: (_BT4, _G4, _AT4)}


def applies(kernel, strides, dilations, group: int) -> bool:
    """Whether Winograd F(m, 3) computes this Conv: 3x3, stride 1, dilation 1, one group."""
    return (
        len(kernel) == 2
        and tuple(kernel) == (3, 3)
        and tuple(strides) == (1, 1)
        and tuple(dilations) == (1, 1)
        and group == 1
    )


def pack_weight(w: np.ndarray, m: int) -> np.ndarray:
    """U = G g G^T per (out, in) channel pair, laid out (a*a, C, M) for the a*a GEMMs.
    Computed in float64 (the 1/6 and 1/24 of F(4, 3) are not float32 numbers)."""
    _, g, _ = TRANSFORMS[m]
    u = np.einsum("ik,mckl,jl->ijcm", g, w.astype(np.float64), g)  # (a, a, C, M)
    a = m + 2
    return np.ascontiguousarray(u.reshape(a * a, w.shape[1], w.shape[0]), dtype=np.float32)


# The transforms written out (B^T and A^T above) on float32 constants, so that numba keeps
# the arithmetic in float32; inlined into the loops of `_apply`.
_2, _4, _5, _8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


@njit(inline="always")
def _bt2(d0, d1, d2, d3):  # pragma: no cover - compiled
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(inline="always")
def _at2(m0, m1, m2, m3):  # pragma: no cover - compiled
    return m0 + m1 + m2, m1 - m2 - m3


@njit(inline="always")
def _bt4(d0, d1, d2, d3, d4, d5):  # pragma: no cover - compiled
    return (
        _4 * d0 - _5 * d2 + d4,
        d3 + d4 - _4 * (d1 + d2),
        d4 - d3 + _4 * (d1 - d2),
        d4 - d2 - _2 * (d1 - d3),
        d4 - d2 + _2 * (d1 - d3),
        _4 * d1 - _5 * d3 + d5,
    )


@njit(inline="always")
def _at4(m0, m1, m2, m3, m4, m5):  # pragma: no cover - compiled
    return (
        m0 + m1 + m2 + m3 + m4,
        m1 - m2 + _2 * (m3 - m4),
        m1 + m2 + _4 * (m3 + m4),
        m1 - m2 + _8 * (m3 - m4) + m5,
    )


@njit(inline="always")
def _load(src, p, step, n):  # pragma: no cover - compiled
    """The n (4 or 6) values src[p + k*step]; the last two are 0 when n is 4."""
    v0, v1 = src[u64(p)], src[u64(p + step)]
    v2, v3 = src[u64(p + 2 * step)], src[u64(p + 3 * step)]
    if n == 6:
        return v0, v1, v2, v3, src[u64(p + 4 * step)], src[u64(p + 5 * step)]
    return v0, v1, v2, v3, v3, v3


@njit(inline="always")
def _store(dst, d, ostep, r):  # pragma: no cover - compiled
    """dst[d + k*ostep] = r[k] for each value of the tuple r."""
    for k in range(len(r)):
        dst[u64(d + k * ostep)] = r[k]


@njit(fastmath=CONTRACT)
def _apply(kind, src, s, step, dst, o, ostep, count):  # pragma: no cover - compiled
    """dst[o + r*ostep + q] = sum_k T[r, k] * src[s + k*step + q] for q < count, with T
    B^T of F(2, 3) (kind 0), A^T of F(2, 3) (1), B^T of F(4, 3) (2) or A^T of F(4, 3) (3):
    each element loads a values once and stores all of T's rows, one loop per kind (the
    kind is fixed inside each). Indexes are whole int64 expressions made u64 at the end:
    numba types uint64 + int64 as float64."""
    if kind == 2:
        for q in range(count):
            d0, d1, d2, d3, d4, d5 = _load(src, s + q, step, 6)
            _store(dst, o + q, ostep, _bt4(d0, d1, d2, d3, d4, d5))
    elif kind == 3:
        for q in range(count):
            d0, d1, d2, d3, d4, d5 = _load(src, s + q, step, 6)
            _store(dst, o + q, ostep, _at4(d0, d1, d2, d3, d4, d5))
    elif kind == 0:
        for q in range(count):
            d0, d1, d2, d3, _, _ = _load(src, s + q, step, 4)
            _store(dst, o + q, ostep, _bt2(d0, d1, d2, d3))
    else:
        for q in range(count):
            d0, d1, d2, d3, _, _ = _load(src, s + q, step, 4)
            _store(dst, o + q, ostep, _at2(d0, d1, d2, d3))


@njit
def _input_tiles(xh, first, c, wp, tw, m, ty0, ty1, rowt, v, ntiles):  # pragma: no cover
    """V[xi, t, :] = (B^T d B)[xi] for the tiles of tile rows ty0..ty1-1 (tile t = ty*tw
    + tx) of one image padded channels-last, (rows, wp, c) flat in xh from tile row
    `first`'s first row; v (a*a, ntiles, c) flat, rowt (a, wp, c) a work array."""
    a = m + 2
    kind = 0 if m == 2 else 2
    row = wp * c  # one row of xh
    plane = ntiles * c  # one xi of v
    for ty in range(ty0, ty1):
        # vertical half on the tile row's whole width: rowt[i] = sum_k B^T[i, k] * xh[ty*m + k]
        _apply(kind, xh, (ty - first) * m * row, row, rowt, 0, row, row)
        # horizontal half: V[i*a + j, t, :] = sum_k B^T[j, k] * rowt[i, tx*m + k, :]
        for tx in range(tw):
            t = ty * tw + tx
            for i in range(a):
                _apply(kind, rowt, i * row + tx * m * c, c, v, i * a * plane + t * c, plane, c)


@njit
def _strip(x, h, w, c, top, left, a, wp, dst):  # pragma: no cover - compiled
    """dst (a, wp, c) = rows top..top+a-1 and columns left..left+wp-1 of x (h, w, c), both
    flat, with zeros where they fall outside x (the conv's padding)."""
    row = wp * c
    j0, j1 = max(0, -left), max(0, min(wp, w - left))  # dst columns inside x
    for r in range(a):
        i, d = top + r, r * row
        if i < 0 or i >= h or j1 <= j0:
            for q in range(row):
                dst[u64(d + q)] = 0.0
            continue
        for q in range(j0 * c):
            dst[u64(d + q)] = 0.0
        src = (i * w + left) * c  # (+ q: the value of dst's q in this row)
        for q in range(j0 * c, j1 * c):
            dst[u64(d + q)] = x[u64(src + q)]
        for q in range(j1 * c, row):
            dst[u64(d + q)] = 0.0


@njit
def input_strips(x, h, w, c, pt, pl, tw, m, ty0, ty1, v, ntiles):  # pragma: no cover
    """`_input_tiles` of tile rows ty0..ty1-1 of one channels-last image x (h, w, c) flat,
    unpadded (top/left pads pt, pl): each tile row's a input rows are first copied with
    their padding into a strip of the thread's own, so no padded copy of the image is
    shared between the parts."""
    a = m + 2
    wp = tw * m + 2
    strip = np.empty(a * wp * c, np.float32)
    rowt = np.empty(a * wp * c, np.float32)
    for ty in range(ty0, ty1):
        _strip(x, h, w, c, ty * m - pt, -pl, a, wp, strip)
        _input_tiles(strip, ty, c, wp, tw, m, ty, ty + 1, rowt, v, ntiles)


@njit
def _output_tiles(
    mo, nm, tw, m, ty0, ty1, oh, ow, bias, tmp, rows, y, ntiles, hwc
):  # pragma: no cover - compiled
    """y[ty*m .. ty*m + m - 1] (one image flat: (nm, oh, ow), or (oh, ow, nm) when hwc) for
    the tile rows ty0..ty1-1, from M (a*a, ntiles, nm) flat: A^T M A plus bias,
    channels-last into rows (m, tw*m, nm), then copied into y row by row. tmp: an (a, m,
    tw, nm) work array."""
    a = m + 2
    kind = 1 if m == 2 else 3
    wide = tw * m
    plane = ntiles * nm  # one xi of M
    span = tw * nm  # one tile row of one xi of M
    for ty in range(ty0, ty1):
        # horizontal half on the whole tile row: tmp[i, cc] = sum_j A^T[cc, j] * M[i*a + j, row]
        for i in range(a):
            _apply(kind, mo, i * a * plane + ty * span, plane, tmp, i * m * span, span, span)
        # vertical half: rows[r, tx*m + cc, :] = sum_i A^T[r, i] * tmp[i, cc, tx, :]
        for cc in range(m):
            for tx in range(tw):
                o = (tx * m + cc) * nm
                _apply(kind, tmp, (cc * tw + tx) * nm, m * span, rows, o, wide * nm, nm)
        for r in range(min(m, oh - ty * m)):
            oy = ty * m + r
            if hwc:  # channels-last: each pixel's run of nm values, cropped to the output
                for q in range(ow):
                    src, dst = (r * wide + q) * nm, (oy * ow + q) * nm
                    for k in range(nm):
                        y[u64(dst + k)] = rows[u64(src + k)] + bias[k]
                continue
            # back to NCHW plus bias, cropped to the output: a block of columns at a time,
            # whose cache lines of rows stay in L1 while every channel's run of y is written
            for q0 in range(0, ow, _TILE):
                q1 = min(q0 + _TILE, ow)
                for k in range(nm):
                    dst = (k * oh + oy) * ow
                    bk = bias[k]
                    for q in range(q0, q1):
                        y[u64(dst + q)] = rows[u64((r * wide + q) * nm + k)] + bk


def _pad_hwc(xv: np.ndarray, pads: tuple[int, int], xh: np.ndarray, c0: int, c1: int) -> None:
    """xh (hp, wp, C) = xv (h, w, C: an NHWC image, or an NCHW one's transposed view) at
    rows pads[0].., columns pads[1].., zeros around it; channels c0..c1-1. numpy's strided
    copy, which releases the GIL: it measured 0.14 ms for 64 x 56 x 56 from NCHW against
    0.36 for a numba loop."""
    (pt, pl), (h, w, _) = pads, xv.shape
    xh[:pt, :, c0:c1] = 0
    xh[pt + h :, :, c0:c1] = 0
    xh[pt : pt + h, :pl, c0:c1] = 0
    xh[pt : pt + h, pl + w :, c0:c1] = 0
    np.copyto(xh[pt : pt + h, pl : pl + w, c0:c1], xv[:, :, c0:c1])


Done = Callable[[int, int], None]  # (r0, r1): output rows r0..r1-1 of the image are written


def image(
    xv: np.ndarray,
    u: np.ndarray,
    bias: np.ndarray,
    m: int,
    pads: tuple[int, int],
    out: tuple[np.ndarray, int, int, int, bool],
    done: Done | None = None,
) -> None:
    """One image by F(m, 3): xv (h, w, C) (see `_pad_hwc`), the packed weight u, top/left
    `pads`, plus bias (length M), into `out` = (y flat, M, OH, OW, hwc): y laid out (M,
    OH, OW), or (OH, OW, M) when hwc. `done(r0, r1)` (a fused epilogue) runs on each part's
    output rows as soon as they are written. The work arrays are the calling thread's
    scratch, taken at the call (so a call bound earlier may run on any thread)."""
    c = xv.shape[2]
    yf, nm, oh, ow, hwc = out
    a = m + 2
    th, tw = -(-oh // m), -(-ow // m)
    tiles = th * tw
    hp, wp = th * m + 2, tw * m + 2
    v = scratch((a * a, tiles, c), "Winograd input tiles")
    mo = scratch((a * a, tiles, nm), "Winograd products", slot=1)
    xh = scratch((hp * wp * c,), "Winograd padded input", slot=2)
    xh3, vf, mf = xh.reshape(hp, wp, c), v.reshape(-1), mo.reshape(-1)
    # four phases, each split over the threads: the copy by channels, the input tiles by
    # tiles, the a*a GEMMs by their index, the output tiles by tile rows
    _parallel.for_ranges(
        lambda lo, hi: _pad_hwc(xv, pads, xh3, lo, hi), c, max(1, _GRAIN // (hp * wp))
    )

    def tiles_in(lo: int, hi: int) -> None:
        rowt = np.empty(a * wp * c, np.float32)
        _input_tiles(xh, 0, c, wp, tw, m, lo, hi, rowt, vf, tiles)

    _parallel.for_ranges(tiles_in, th, max(1, _GRAIN // (a * a * tw * c)))
    _parallel.for_ranges(
        lambda lo, hi: np.matmul(v[lo:hi], u[lo:hi], out=mo[lo:hi]),
        a * a,
        max(1, int(4e6 // (2.0 * nm * c * tiles))),
    )

    def tiles_out(lo: int, hi: int) -> None:
        tmp = np.empty(a * m * tw * nm, np.float32)
        rows = np.empty(m * tw * m * nm, np.float32)
        _output_tiles(mf, nm, tw, m, lo, hi, oh, ow, bias, tmp, rows, yf, tiles, hwc)
        if done is not None:
            done(lo * m, min(hi * m, oh))

    _parallel.for_ranges(tiles_out, th, max(1, _GRAIN // (a * a * tw * nm)))


def conv(
    x: np.ndarray,
    u: np.ndarray,
    bias: np.ndarray,
    m: int,
    pads: tuple[int, int],
    y: np.ndarray,
    post: Callable[[np.ndarray, int, int, int, int, int], None] | None = None,
) -> np.ndarray:
    """y (N, M, OH, OW) = Conv(x (N, C, H, W)) with the packed weight u of F(m, 3) and
    top/left pads `pads` (bottom/right follow from y's size), plus bias (length M).
    `post(y, n, 0, M, q0, q1)` (a fused epilogue) runs on each part's output rows of
    image n, positions q0..q1-1, as soon as they are written."""
    n = x.shape[0]
    nm, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    x4, yf = np.ascontiguousarray(x), y.reshape(n, -1)
    for i in range(n):
        done = None
        if post is not None:
            done = partial(_rows_done, post, y, i, nm, ow)
        image(x4[i].transpose(1, 2, 0), u, bias, m, pads, (yf[i], nm, oh, ow, False), done)
    return y


def _rows_done(post, y: np.ndarray, i: int, nm: int, ow: int, r0: int, r1: int) -> None:
    post(y, i, 0, nm, r0 * ow, r1 * ow)
