"""Winograd convolution F(2x2, 3x3) and F(4x4, 3x3) for 3x3, stride-1, undilated,
ungrouped 2-D Conv (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks").

An output tile of m x m pixels needs an a x a input tile (a = m + 2). With the transform
matrices B^T (a x a), G (a x 3) and A^T (m x a) of the chosen F(m, 3):

    U[xi, k, c] = (G g[k, c] G^T)[xi]          weights, once per node (pre-packed)
    V[xi, c, t] = (B^T d[c, t] B)[xi]          input tiles t (numba)
    M[xi]       = U[xi] @ V[xi]                a*a GEMMs of (M x C) @ (C x tiles) (BLAS)
    y[k, t]     = A^T M[:, k, t] A             output tiles, cropped, plus bias (numba)

F(2, 3) multiplies 16 instead of 36 times per 2x2 tile (2.25x fewer GEMM FLOPs), F(4, 3)
36 instead of 144 (4x). The price is precision: the transforms add and subtract
values of different sizes (B^T of F(4, 3) has entries up to 5, A^T up to 8), so the
float32 rounding error grows with the tile size; see tests/backend/test_x86_algorithms.py
for the tolerance.

Both transforms run row-wise so that numba's innermost loops run over the tiles of a
row: the vertical half of B^T d B on whole padded rows (contiguous), the horizontal half
reading every m-th column. Zero coefficients are skipped outside the inner loops.
"""

from __future__ import annotations

import numpy as np

from . import _parallel
from ._numba import njit, scratch, u64

_GRAIN = 1 << 15  # tile values per part worth a thread (see _parallel.py)

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
    """U = G g G^T per (out, in) channel pair, laid out (a*a, M, C) for the a*a GEMMs.
    Computed in float64 (the 1/6 and 1/24 of F(4, 3) are not float32 numbers)."""
    _, g, _ = TRANSFORMS[m]
    u = np.einsum("ik,mckl,jl->ijmc", g, w.astype(np.float64), g)  # (a, a, M, C)
    a = m + 2
    return np.ascontiguousarray(u.reshape(a * a, w.shape[0], w.shape[1]), dtype=np.float32)


@njit
def _input_transform(x, nc, c0, c1, h, w, pt, pl, th, tw, m, bt, xp, row, v, t0, ntiles):
    """V[xi, c, t0 + ty*tw + tx] for channels c0..c1-1 of one image x (nc, h, w flat); xp
    (nc, hp, wp) is a zero-padded copy made here, row an (a * wp) work array, v (a*a, nc,
    ntiles) flat."""
    a = m + 2
    hp, wp = th * m + 2, tw * m + 2
    # the padded copy: zeros around the image, so the tile loops need no bounds checks
    for c in range(c0, c1):
        for r in range(hp):
            ih = r - pt
            dst = (c * hp + r) * wp
            if ih < 0 or ih >= h:
                for q in range(wp):
                    xp[u64(dst + q)] = 0.0
                continue
            src = (c * h + ih) * w - pl
            for q in range(wp):
                iw = q - pl
                xp[u64(dst + q)] = x[u64(src + q)] if 0 <= iw < w else np.float32(0.0)
    for c in range(c0, c1):
        for ty in range(th):
            base = (c * hp + ty * m) * wp
            # vertical half: row[i, :] = sum_k bt[i, k] * xp[c, ty*m + k, :]
            for i in range(a):
                rb = i * wp
                for q in range(wp):
                    row[u64(rb + q)] = 0.0
                for k in range(a):
                    coef = bt[i, k]
                    if coef != 0.0:
                        src = base + k * wp
                        for q in range(wp):
                            row[u64(rb + q)] += coef * xp[u64(src + q)]
            # horizontal half: v[i*a + j, c, t] = sum_k bt[j, k] * row[i, tx*m + k]
            for i in range(a):
                for j in range(a):
                    dst = ((i * a + j) * nc + c) * ntiles + t0 + ty * tw
                    for tx in range(tw):
                        v[u64(dst + tx)] = 0.0
                    for k in range(a):
                        coef = bt[j, k]
                        if coef != 0.0:
                            rb = i * wp + k
                            for tx in range(tw):
                                v[u64(dst + tx)] += coef * row[u64(rb + tx * m)]


@njit
def _output_transform(mo, nm, k0, k1, oh, ow, th, tw, m, at, bias, tmp, acc, y, t0, ntiles):
    """y[k, :, :] for channels k0..k1-1 (one image, nm x oh x ow flat) from M (a*a, nm,
    ntiles) flat, plus bias; tmp (a * m * tw) and acc (tw) are work arrays."""
    a = m + 2
    for k in range(k0, k1):
        bk = bias[k]
        for ty in range(th):
            tb = t0 + ty * tw
            # horizontal half: tmp[i, c, tx] = sum_j at[c, j] * M[i*a + j, k, t]
            for i in range(a):
                for c in range(m):
                    tb2 = (i * m + c) * tw
                    for tx in range(tw):
                        tmp[u64(tb2 + tx)] = 0.0
                    for j in range(a):
                        coef = at[c, j]
                        if coef != 0.0:
                            src = ((i * a + j) * nm + k) * ntiles + tb
                            for tx in range(tw):
                                tmp[u64(tb2 + tx)] += coef * mo[u64(src + tx)]
            # vertical half: y[k, ty*m + r, tx*m + c] = bias + sum_i at[r, i] * tmp[i, c, tx]
            for r in range(m):
                oy = ty * m + r
                if oy >= oh:
                    break
                dst = (k * oh + oy) * ow
                for c in range(m):
                    # the tiles whose column c lies inside the output
                    ntx = min(tw, (ow - c + m - 1) // m)
                    for tx in range(ntx):
                        acc[u64(tx)] = bk
                    for i in range(a):
                        coef = at[r, i]
                        if coef != 0.0:
                            tb2 = (i * m + c) * tw
                            for tx in range(ntx):
                                acc[u64(tx)] += coef * tmp[u64(tb2 + tx)]
                    for tx in range(ntx):
                        y[u64(dst + tx * m + c)] = acc[u64(tx)]


def conv(
    x: np.ndarray,
    u: np.ndarray,
    bias: np.ndarray,
    m: int,
    pads: tuple[int, int],
    y: np.ndarray,
) -> np.ndarray:
    """y (N, M, OH, OW) = Conv(x (N, C, H, W)) with the packed weight u of F(m, 3) and
    top/left pads `pads` (bottom/right follow from y's size), plus bias (length M)."""
    n, c, h, w = x.shape
    nm, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    a = m + 2
    th, tw = -(-oh // m), -(-ow // m)
    tiles = th * tw
    ntiles = n * tiles
    bt, _, at = TRANSFORMS[m]
    # three work arrays at once: the thread's scratch slots 0 (V), 1 (M) and a small one
    v = scratch((a * a, c, ntiles), "Winograd input tiles")
    mo = scratch((a * a, nm, ntiles), "Winograd products", slot=1)
    hp, wp = th * m + 2, tw * m + 2
    xp = np.empty(c * hp * wp, np.float32)
    xf = np.ascontiguousarray(x).reshape(n, -1)
    vf, mf, yf = v.reshape(-1), mo.reshape(-1), y.reshape(n, -1)
    # three phases, each split over the threads: the input tiles by channels, the a*a
    # GEMMs by their index, the output tiles by output channels
    for i in range(n):

        def tiles_in(lo: int, hi: int, i: int = i) -> None:
            row = np.empty(a * wp, np.float32)
            _input_transform(
                xf[i], c, lo, hi, h, w, pads[0], pads[1], th, tw, m, bt, xp, row, vf,
                i * tiles, ntiles,
            )  # fmt: skip

        _parallel.for_ranges(tiles_in, c, max(1, _GRAIN // (a * a * tiles)))
    _parallel.for_ranges(
        lambda lo, hi: np.matmul(u[lo:hi], v[lo:hi], out=mo[lo:hi]),
        a * a,
        max(1, int(4e6 // (2.0 * nm * c * ntiles))),
    )
    for i in range(n):

        def tiles_out(lo: int, hi: int, i: int = i) -> None:
            tmp, acc = np.empty(a * m * tw, np.float32), np.empty(tw, np.float32)
            _output_transform(
                mf, nm, lo, hi, oh, ow, th, tw, m, at, bias, tmp, acc, yf[i], i * tiles, ntiles
            )

        _parallel.for_ranges(tiles_out, nm, max(1, _GRAIN // (a * a * tiles)))
    return y
