"""Fused transformer x86 kernels: `workbench.Gelu`, `workbench.LayerNorm` and
`workbench.Attention` (the ops the fusion passes emit; see `passes/fusion/`).

Gelu is one numba loop per element: exact GELU with the erf polynomial of
`ops_activation` (in float64), the tanh form with an exp made of a polynomial and the
exponent bits (below); neither calls libm, so LLVM vectorizes both. LayerNorm is the
LayerNormalization kernel of `ops_norm` (one numba pass per row) over the last axis.
Attention runs head by head on numba's threads with MKL's GEMMs where both are here
(`attention_heads`); elsewhere it multiplies the heads as strided views of the 3-D
projections (BLAS batched matmul, no Transpose materialized). Either way one numba pass
per score row applies scale, mask and causal limit, takes max, exponentials and sum and
normalizes in place (the row stays in L1 between its loops), and the second product
writes straight into the [b, s, heads, dv] layout of the output.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ....errors import WorkbenchError
from . import _parallel
from ._numba import CONTRACT, F32, declines_dtype, njit, u64
from ._table import kernels
from .ops_activation import _E
from .ops_norm import layer_normalization

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

# numba folds module-level floats into the code (a tuple indexed in a loop it does not)
_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9 = _E[:10]
_E10, _E11, _E12, _E13, _E14, _E15, _E16, _E17, _E18 = _E[10:]

_SQRT_HALF = 0.7071067811865476
_TANH_SCALE = 0.7978845608028654  # sqrt(2 / pi)
_LOG2E, _LN2 = 1.4426950408889634, 0.6931471805599453

# Every polynomial below is split into its even and odd halves (p(t) = e(t^2) + t o(t^2)):
# two independent chains of multiply-adds instead of one Horner chain twice as long, which
# was latency-bound (1.35x slower measured). None calls libm (numba's math.exp is a scalar
# call without SVML), so LLVM vectorizes the loops that use them.


@njit(inline="always")
def _erf(v):  # pragma: no cover - compiled
    """erf(v) in float64 from `ops_activation`'s polynomial in t = a^2 / 8 - 1."""
    a = min(abs(v), 4.0)  # (NaN stays NaN: min keeps its first argument then)
    t = a * a * 0.125 - 1.0
    t2 = t * t
    ev = (((_E18 * t2 + _E16) * t2 + _E14) * t2 + _E12) * t2 + _E10
    ev = ((((ev * t2 + _E8) * t2 + _E6) * t2 + _E4) * t2 + _E2) * t2 + _E0
    od = (((_E17 * t2 + _E15) * t2 + _E13) * t2 + _E11) * t2 + _E9
    od = (((od * t2 + _E7) * t2 + _E5) * t2 + _E3) * t2 + _E1
    e = 1.0 if a >= 4.0 else a * (ev + od * t)  # (the polynomial at 4 is 1 - 2e-8)
    return math.copysign(e, v)


@njit(inline="always")
def _exp64(v):  # pragma: no cover - compiled
    """exp(v) = 2^n e^r, n = round(v / ln 2), |r| <= ln(2) / 2, e^r by its Taylor series to
    r^10 (relative error < 3e-13); 2^n made in the exponent bits. v is clamped to
    [-700, 700], where float32 results are 0 and inf anyway."""
    v = min(max(v, -700.0), 700.0)  # (v first: NaN stays NaN)
    n = np.floor(v * _LOG2E + 0.5)  # (math.floor gives an int64: scalar code)
    r = v - n * _LN2
    r2 = r * r
    ev = (((1 / 3628800 * r2 + 1 / 40320) * r2 + 1 / 720) * r2 + 1 / 24) * r2 + 0.5
    od = (((1 / 362880 * r2 + 1 / 5040) * r2 + 1 / 120) * r2 + 1 / 6) * r2 + 1.0
    p = (ev * r2 + 1.0) + od * r
    return p * np.int64((np.int64(n) + 1023) << 52).view(np.float64)


# Cephes' expf: e^r = 1 + r + r^2 P(r) on |r| <= ln(2) / 2, with ln 2 split in two so
# r = v - n ln 2 is exact (relative error 6e-8 measured against float64 exp).
_P0, _P1, _P2 = F32.type(1.9875691500e-4), F32.type(1.3981999507e-3), F32.type(8.3334519073e-3)
_P3, _P4, _P5 = F32.type(4.1665795894e-2), F32.type(1.6666665459e-1), F32.type(5.0000001201e-1)
_LN2_HI, _LN2_LO = F32.type(0.693359375), F32.type(-2.12194440e-4)
_LOG2E32 = F32.type(_LOG2E)
_EXP32_LOW = F32.type(-86.0)


@njit(inline="always")
def _exp32(v):  # pragma: no cover - compiled
    """exp(v) in float32 for v <= 0 (a max-shifted score). Below -86 it is 0: results under
    float32's smallest normal would be denormals, whose arithmetic traps into microcode
    (a masked BERT row took 5x longer)."""
    tiny = v < _EXP32_LOW
    v = max(v, _EXP32_LOW)
    n = np.floor(v * _LOG2E32 + F32.type(0.5))  # (math.floor gives an int64: scalar code)
    r = v - n * _LN2_HI
    r = r - n * _LN2_LO
    r2 = r * r
    ev = (_P0 * r2 + _P2) * r2 + _P4
    od = (_P1 * r2 + _P3) * r2 + _P5
    p = (ev * r + od) * r2 + r + F32.type(1.0)
    e = p * np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return F32.type(0.0) if tiny else e


@njit(fastmath=CONTRACT)
def _gelu_loop(x, out, tanh):  # pragma: no cover - compiled
    """out = 0.5 x (1 + erf(x / sqrt 2)), or the tanh form, over flat float32 arrays.

    The tanh form is computed as x / (1 + exp(-2u)), the same number (1 + tanh(u) is
    2 / (1 + exp(-2u))) without the cancellation of 1 + tanh(u) for u << 0."""
    if tanh:
        for i in range(x.size):
            v = np.float64(x[u64(i)])
            u = _TANH_SCALE * (v + 0.044715 * v * v * v)
            out[u64(i)] = v / (1.0 + _exp64(-2.0 * u))
    else:
        for i in range(x.size):
            v = np.float64(x[u64(i)])
            out[u64(i)] = 0.5 * v * (1.0 + _erf(v * _SQRT_HALF))


_NO_MASK = np.zeros(1, F32)
# -inf's bits as `_row_max` orders them (0xFF800000 with the lower 31 bits flipped)
_ORDER_INF = np.int32(-2139095041)


@njit(inline="always")
def _row_max(bits, n):  # pragma: no cover - compiled
    """The largest of the first n float32 values whose bits are `bits` (-inf for none),
    found on integers: a float's bits with the lower 31 flipped where the sign is set
    order as the floats do (-inf lowest, then the negatives, -0, +0, the positives, +inf,
    NaN), and LLVM vectorizes an integer maximum, not a float one (numba keeps NaN
    semantics in max and in a compare-select, even with fastmath): 27 us against 258 for
    BERT's 1536 rows of 128 on one thread. A NaN read makes the row NaN either way."""
    top = _ORDER_INF
    for j in range(n):
        i = bits[u64(j)]
        k = i ^ ((i >> np.int32(31)) & np.int32(0x7FFFFFFF))
        top = k if k > top else top
    top = top ^ ((top >> np.int32(31)) & np.int32(0x7FFFFFFF))
    return np.int32(top).view(np.float32)


# reassoc lets LLVM vectorize the sum (a fixed order per shape, so results are
# deterministic), in float32 lanes: a float64 sum converted each term and took the exp
# loop from 0.17 to 0.32 ms on BERT's 1536 rows of 128 (the lanes' partial sums keep its
# error near 1e-7 of the total). The row max is taken on the values' bits (`_row_max`).
@njit(fastmath={"reassoc", "nsz", "contract"})
def _softmax_rows(s, nh, nq, mask, strides, has_mask, scale, causal, offset):  # pragma: no cover
    """Each row of `s` (flat float32 [b * nh * nq rows, nk], in place) becomes
    softmax(row * scale + mask row) over its keys; with `causal`, keys j > i + offset of
    query i are left out (exactly 0). `mask` is flat with element `strides` (b, h, i) of
    its rows, 0 where it broadcasts, and stride 1 along the keys."""
    rows, nk = s.shape
    bits = s.view(np.int32)
    for rix in range(rows):
        row = s[rix]
        i = rix % nq
        n = min(nk, max(i + offset + 1, 0)) if causal else nk
        if has_mask:
            h = rix // nq % nh
            m0 = (rix // (nq * nh)) * strides[0] + h * strides[1] + i * strides[2]
            for j in range(n):
                row[u64(j)] = row[u64(j)] * scale + mask[u64(m0 + j)]
        else:
            for j in range(n):
                row[u64(j)] = row[u64(j)] * scale
        top = _row_max(bits[rix], n)
        total = F32.type(0.0)
        for j in range(n):
            e = _exp32(row[u64(j)] - top)
            row[u64(j)] = e
            total += e
        inv = F32.type(1.0 / total)
        for j in range(n):
            row[u64(j)] *= inv
        for j in range(n, nk):
            row[u64(j)] = 0.0


@kernels.register("Gelu", domain="workbench", since=1)
def gelu(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Exact or tanh GELU in one vectorized pass (float32 in and out)."""
    approximate = node.attrs.get("approximate", "none")
    if approximate not in ("none", "tanh") or declines_dtype(node):
        return None
    tanh = approximate == "tanh"

    def run(x, out=None):
        into, direct = _into(out, x.shape)
        flat = np.ascontiguousarray(x, dtype=F32).reshape(-1)
        y = np.empty(x.shape, F32) if direct is None else direct
        _gelu_loop(flat, y.reshape(-1), tanh)
        return (_deliver(into, y),)

    # writes the memory planner's buffer when given one, which may be x's own: each
    # element is read before it is written (see backends/base.py)
    run.writes_out, run.inplace = True, (0,)
    return run


@kernels.register("LayerNorm", domain="workbench", since=1)
def layer_norm(node: Node, ctx: CompileContext) -> KernelFn | None:
    """The LayerNormalization kernel (one numba pass per row), over the last axis."""
    if int(node.attrs.get("axis", -1)) != -1:
        return None
    return layer_normalization(node, ctx)


@kernels.register("Attention", domain="workbench", since=1)
def attention(node: Node, ctx: CompileContext) -> KernelFn | None:
    """softmax(Q K^T * scale + mask) V per head, on strided views of the projections."""
    if any(declines_dtype(node, i) for i in range(len(node.inputs))):
        return None
    heads = int(node.attrs["num_heads"])
    scale_attr = float(node.attrs.get("scale", 0.0))
    causal = bool(node.attrs.get("causal", 0))

    def run(q, k, v, mask=None, out=None):
        _check_shapes(node, heads, q, k, v, mask)
        q, k, v = (np.asarray(t, dtype=F32) for t in (q, k, v))  # (no copy when float32)
        b, sq, hidden = q.shape
        sk, dv = k.shape[1], v.shape[2] // heads
        d = hidden // heads
        scale = scale_attr or 1.0 / math.sqrt(d)
        if mask is None:
            flat, strides = _NO_MASK, np.zeros(3, np.int64)
        else:
            flat, strides = _mask_rows(mask, (b, heads, sq, sk))
        into, direct = _into(out, (b, sq, heads * dv))
        y = np.empty((b, sq, heads * dv), F32) if direct is None else direct
        sc = F32.type(scale)
        grain = max(1, (1 << 16) // max(1, b * sq * sk))
        softmax = (flat, strides, mask is not None, sc, causal)
        from . import attention_heads  # (imports _softmax_rows from here)

        call = attention_heads.heads_call(q, k, v, y, heads, softmax, grain)
        if call is not None:
            call()
            return (_deliver(into, y),)
        # views: [b, h, sq, d], [b, h, d, sk], [b, h, sk, dv]; matmul runs BLAS on them
        qh = q.reshape(b, sq, heads, d).transpose(0, 2, 1, 3)
        kt = k.reshape(b, sk, heads, d).transpose(0, 2, 3, 1)
        vh = v.reshape(b, sk, heads, dv).transpose(0, 2, 1, 3)
        yh = y.reshape(b, sq, heads, dv).transpose(0, 2, 1, 3)
        scores = np.empty((b, heads, sq, sk), F32)

        def part(lo: int, hi: int) -> None:  # heads lo..hi-1 of every batch item
            np.matmul(qh[:, lo:hi], kt[:, lo:hi], out=scores[:, lo:hi])
            for i in range(b):
                m0 = i * strides[0] + lo * strides[1]
                _softmax_rows(
                    scores[i, lo:hi].reshape(-1, sk), hi - lo, sq, flat[m0:], strides,
                    mask is not None, sc, causal, sk - sq,
                )  # fmt: skip
            # P V written straight into [b, sq, heads, dv]: the merged heads need no copy
            np.matmul(scores[:, lo:hi], vh[:, lo:hi], out=yh[:, lo:hi])

        _parallel.for_ranges(part, heads, grain)
        return (_deliver(into, y),)

    run.writes_out = True  # (not in place: V is read while the output is written)
    return run


def _check_shapes(
    node: Node, heads: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None
) -> None:
    """Q, K, V must be [b, s, heads * dim] with one batch, K and V one length; the mask
    must broadcast to the scores [b, heads, q_seq, kv_seq]."""
    shapes = f"Q {q.shape}, K {k.shape}, V {v.shape}"
    ok = q.ndim == k.ndim == v.ndim == 3 and q.shape[0] == k.shape[0] == v.shape[0]
    ok = ok and k.shape[1] == v.shape[1] and q.shape[2] == k.shape[2]
    if not ok or q.shape[2] % heads or v.shape[2] % heads:
        raise WorkbenchError(
            f"Attention {node.name!r}: {shapes} are not [batch, seq, {heads} heads x dim] "
            "with one batch and one key/value length"
        )
    if mask is None:
        return
    scores = (q.shape[0], heads, q.shape[1], k.shape[1])
    try:
        ok = mask.ndim <= 4 and np.broadcast_shapes(mask.shape, scores) == scores
    except ValueError:
        ok = False
    if not ok:
        raise WorkbenchError(
            f"Attention {node.name!r}: mask {mask.shape} does not broadcast to the scores "
            f"{list(scores)} ({shapes})"
        )


def _mask_rows(mask: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """An additive mask broadcastable to the scores `shape` [b, h, sq, sk], as the softmax
    kernel reads it: flat float32 rows of sk values and the element strides of (b, h, i)
    over them (0 where the mask broadcasts). Only a mask of one value per row gets copied
    out to full rows."""
    m = np.asarray(mask, dtype=F32).reshape((1,) * (4 - mask.ndim) + mask.shape)
    if m.shape[-1] != shape[-1] or not m.flags.c_contiguous:
        m = np.ascontiguousarray(np.broadcast_to(m, (*m.shape[:-1], shape[-1])))
    view = np.broadcast_to(m, shape)
    strides = np.array([st // F32.itemsize for st in view.strides[:3]], np.int64)
    return m.reshape(-1), strides


def _into(out, shape: tuple[int, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """For destination passing (see backends/base.py): (the buffer `out=` gives output 0,
    or None; that buffer again if the kernel can compute straight into it, else None)."""
    into = None if out is None else out[0]
    direct = into is not None and into.shape == tuple(shape) and into.flags.c_contiguous
    return into, (into if direct and into.dtype == F32 else None)


def _deliver(into: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    """`y`, copied into the planner's buffer first when one was given and not used."""
    if into is None or into is y:
        return y
    np.copyto(into, y)
    return into
