"""x86 LSTM: the input projections of every time step as one BLAS GEMM, then the
recurrence (hidden-state matvec plus the cell update) in one numba loop per direction.

Supports forward, reverse and bidirectional, layout 0 and 1, initial_h/initial_c,
peepholes and per-batch `sequence_lens` (steps past a sequence's end give zeros in Y and
leave its state alone, as in onnxruntime). Declines custom activations, `clip` and
`input_forget`, which then run on the reference backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ._numba import const_input, declines_dtype, has_input, njit, u64
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext

_DEFAULT_ACTS = ["sigmoid", "tanh", "tanh"]


@njit
def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-float(v)))


@njit
def _tanh(v):
    # through exp in float64: libm's tanh is several times slower, and in double the
    # cancellation near 0 stays far below float32 resolution
    return 2.0 / (1.0 + math.exp(-2.0 * float(v))) - 1.0


@njit
def _lstm_direction(xw, rt, p, h, c, lens, reverse, y, d):
    """Run one direction over all steps.

    xw (T, B, 4H): x_t W^T + Wb + Rb, gates ordered i, o, f, c; rt (H, 4H): R^T;
    p (3, H): peepholes i, o, f; h, c (B, H): the initial state, left holding the final
    one; lens (B,): sequence lengths; y (T, D, B, H): receives direction d's outputs.
    """
    steps, nb, h4 = xw.shape
    nh = h4 // 4
    ndir = y.shape[1]
    xf, rf, pf, hf, cf, yf = xw.ravel(), rt.ravel(), p.ravel(), h.ravel(), c.ravel(), y.ravel()
    gates = np.empty(nb * h4, xw.dtype)
    for s in range(steps):
        for b in range(nb):
            t = lens[b] - 1 - s if reverse else s
            if s < lens[b]:
                xb = (t * nb + b) * h4
                for j in range(h4):
                    gates[u64(b * h4 + j)] = xf[u64(xb + j)]
        # h_{t-1} R^T as rows of R^T scaled and summed, each row read once for the whole
        # batch: the inner loop vectorizes and R stays in cache
        for k in range(nh):
            rb = k * h4
            for b in range(nb):
                hk = hf[u64(b * nh + k)]
                gb = b * h4
                for j in range(h4):
                    gates[u64(gb + j)] += hk * rf[u64(rb + j)]
        for b in range(nb):
            if s >= lens[b]:  # past this sequence's end: Y is zero there and the state stays
                yb = ((s * ndir + d) * nb + b) * nh
                for j in range(nh):
                    yf[u64(yb + j)] = 0.0
                continue
            t = lens[b] - 1 - s if reverse else s
            yb = ((t * ndir + d) * nb + b) * nh
            gb = b * h4
            for j in range(nh):
                cp = float(cf[u64(b * nh + j)])
                gi = _sigmoid(gates[gb + j] + pf[j] * cp)
                gf = _sigmoid(gates[gb + 2 * nh + j] + pf[2 * nh + j] * cp)
                gc = _tanh(gates[gb + 3 * nh + j])
                cn = gf * cp + gi * gc
                go = _sigmoid(gates[gb + nh + j] + pf[nh + j] * cn)
                hn = go * _tanh(cn)
                cf[u64(b * nh + j)] = cn
                hf[u64(b * nh + j)] = hn
                yf[u64(yb + j)] = hn


def _pack_w(w: np.ndarray) -> np.ndarray:
    """(D, 4H, I) -> (D, I, 4H): the right operand of the input GEMM."""
    return np.ascontiguousarray(np.swapaxes(w, 1, 2))


def _pack_b(b: np.ndarray | None, dirs: int, nh: int, dtype) -> np.ndarray:
    """(D, 8H) -> (D, 4H): Wb + Rb, added once per step with the input projection."""
    if b is None:
        return np.zeros((dirs, 4 * nh), dtype)
    return np.ascontiguousarray(b[:, : 4 * nh] + b[:, 4 * nh :])


def _check(name: str, a: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if a is not None and tuple(a.shape) != shape:
        raise ValueError(f"LSTM {name} has shape {list(a.shape)}, expected {list(shape)}")


@kernels.register("LSTM", since=1)
def lstm(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node):
        return None
    a = node.attrs
    direction = a.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        return None
    dirs = 2 if direction == "bidirectional" else 1
    acts = a.get("activations")
    if acts and [s.lower() for s in acts] != _DEFAULT_ACTS * dirs:
        return None
    if a.get("clip") is not None or a.get("input_forget", 0):
        return None
    layout = int(a.get("layout", 0))
    reverse = [False, True] if dirs == 2 else [direction == "reverse"]
    w_const, r_const, b_const = (const_input(node, i) for i in (1, 2, 3))
    wt_c = _pack_w(w_const) if w_const is not None else None
    rt_c = _pack_w(r_const) if r_const is not None else None
    bias_c = None
    if r_const is not None and (b_const is not None or not has_input(node, 3)):
        bias_c = _pack_b(b_const, dirs, r_const.shape[-1], r_const.dtype)

    def run(x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
        if x.ndim != 3:
            raise ValueError(f"LSTM input X must be 3-D, got shape {list(x.shape)}")
        if layout:
            x = np.swapaxes(x, 0, 1)
            h0 = None if h0 is None else np.swapaxes(h0, 0, 1)
            c0 = None if c0 is None else np.swapaxes(c0, 0, 1)
        steps, nb, ni = x.shape
        nh = r.shape[-1]
        dt = x.dtype
        _check("W", w, (dirs, 4 * nh, ni))
        _check("R", r, (dirs, 4 * nh, nh))
        _check("B", b, (dirs, 8 * nh))
        _check("initial_h", h0, (dirs, nb, nh))
        _check("initial_c", c0, (dirs, nb, nh))
        _check("P", p, (dirs, 3 * nh))
        lens = np.full(nb, steps, np.int64)
        if seq_lens is not None:
            _check("sequence_lens", seq_lens, (nb,))
            lens = seq_lens.astype(np.int64)
            if lens.min(initial=0) < 0 or lens.max(initial=0) > steps:
                raise ValueError(f"LSTM sequence_lens {lens.tolist()} outside [0, {steps}]")
        wt = wt_c if wt_c is not None else _pack_w(w)
        rt = rt_c if rt_c is not None else _pack_w(r)
        bias = bias_c if bias_c is not None else _pack_b(b, dirs, nh, dt)
        peep = np.zeros((dirs, 3, nh), dt) if p is None else p.reshape(dirs, 3, nh)
        y = np.empty((steps, dirs, nb, nh), dt)
        hs, cs = [], []
        x2 = np.ascontiguousarray(x).reshape(steps * nb, ni)
        for d in range(dirs):
            xw = np.matmul(x2, wt[d]).reshape(steps, nb, 4 * nh)
            xw += bias[d]
            h = np.zeros((nb, nh), dt) if h0 is None else np.array(h0[d], dt, order="C")
            c = np.zeros((nb, nh), dt) if c0 is None else np.array(c0[d], dt, order="C")
            pd = np.ascontiguousarray(peep[d], dtype=dt)
            _lstm_direction(xw, np.ascontiguousarray(rt[d]), pd, h, c, lens, reverse[d], y, d)
            hs.append(h)
            cs.append(c)
        yh, yc = np.stack(hs), np.stack(cs)
        if layout:
            return (
                np.ascontiguousarray(y.transpose(2, 0, 1, 3)),
                np.ascontiguousarray(yh.transpose(1, 0, 2)),
                np.ascontiguousarray(yc.transpose(1, 0, 2)),
            )
        return (y, yh, yc)

    run.algorithm = "gemm_recurrent_loop"
    return run
