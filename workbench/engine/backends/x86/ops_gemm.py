"""x86 Gemm and MatMul: numpy's matmul (OpenBLAS underneath) with constant operands
prepared once in the factory (transposed, made contiguous, alpha and beta folded in).

Algorithms recorded as `run.algorithm`:

- ``gemm``: Gemm, one BLAS call plus the bias in place.
- ``gemm_flat``: MatMul by a constant 2-D matrix; the batch dimensions of A are folded
  into its rows so that BLAS sees one tall GEMM instead of a loop of small ones.
- ``batched_gemm``: MatMul in general (numpy's batching, broadcasting and 1-D rules).

BLAS writes straight into the arena's buffer when the executor passes `out=` (see
backends/base.py); inputs of another dtype compute fresh and are copied there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..base import deliver, dest
from ._numba import const_input, declines_dtype
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext


@kernels.register("Gemm", since=1)
def gemm(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node) or declines_dtype(node, 1):
        return None
    a = node.attrs
    alpha = float(a.get("alpha", 1.0))
    beta = float(a.get("beta", 1.0))
    trans_a = bool(a.get("transA", 0))
    trans_b = bool(a.get("transB", 0))
    b_const = const_input(node, 1)
    c_const = const_input(node, 2)

    bm = None
    if b_const is not None and b_const.ndim == 2:
        bm = b_const.T if trans_b else b_const
        # alpha folded into B: one pass less per call, at a rounding step of difference
        bm = np.ascontiguousarray(bm * bm.dtype.type(alpha) if alpha != 1.0 else bm)
    cm = None
    if c_const is not None and beta != 0.0:
        cm = np.ascontiguousarray(c_const * c_const.dtype.type(beta) if beta != 1.0 else c_const)

    def run(x, b, c=None, out=None):
        if x.ndim != 2 or b.ndim != 2:
            raise ValueError(f"Gemm needs 2-D A and B, got {list(x.shape)} and {list(b.shape)}")
        xa = x.T if trans_a else x
        o = _same_dtype(dest(out), x, b)
        if bm is not None:
            y = np.matmul(xa, bm, out=o)
        else:
            y = np.matmul(xa, b.T if trans_b else b, out=o)
            if alpha != 1.0:
                y *= y.dtype.type(alpha)
        if c is not None and beta != 0.0:
            bias = cm if cm is not None else (c * c.dtype.type(beta) if beta != 1.0 else c)
            try:
                np.add(y, bias, out=y, casting="unsafe")
            except ValueError:
                raise ValueError(
                    f"Gemm C of shape {list(c.shape)} does not broadcast to {list(y.shape)}"
                ) from None
        return (deliver(dest(out), y.astype(x.dtype, copy=False)) if o is None else o,)

    run.algorithm, run.writes_out = "gemm", True
    return run


def _same_dtype(o: np.ndarray | None, *ins: np.ndarray) -> np.ndarray | None:
    """`o` when BLAS can write its result there: every operand of o's dtype."""
    return o if o is not None and all(a.dtype == o.dtype for a in ins) else None


@kernels.register("MatMul", since=1)
def matmul(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node) or declines_dtype(node, 1):
        return None
    b_const = const_input(node, 1)
    if b_const is not None and b_const.ndim == 2:
        bm = np.ascontiguousarray(b_const)
        k, n = bm.shape

        def run_flat(x, b, out=None):
            o = _same_dtype(dest(out), x, bm)
            if x.ndim < 2:
                y = np.matmul(x, bm, out=o)
                return (deliver(dest(out), y.astype(x.dtype, copy=False)) if o is None else o,)
            if x.shape[-1] != k:
                raise ValueError(f"MatMul shapes {list(x.shape)} and {list(bm.shape)} differ in K")
            y = np.matmul(x.reshape(-1, k), bm, out=None if o is None else o.reshape(-1, n))
            if o is not None:
                return (o,)
            return (deliver(dest(out), y.reshape(*x.shape[:-1], n).astype(x.dtype, copy=False)),)

        run_flat.algorithm, run_flat.writes_out = "gemm_flat", True
        return run_flat
    bc = np.ascontiguousarray(b_const) if b_const is not None else None

    def run(x, b, out=None):
        bb = bc if bc is not None else b
        o = _same_dtype(dest(out), x, bb)
        if o is not None and o.ndim:  # (numpy's matmul gives 1-D @ 1-D as a scalar)
            return (np.matmul(x, bb, out=o),)
        y = np.asarray(np.matmul(x, bb)).astype(x.dtype, copy=False)
        return (deliver(dest(out), y),)

    run.algorithm, run.writes_out = "batched_gemm", True
    return run
