"""ARMv8.2 FP16 arithmetic for the `arm` backend's `fp16` precision, emulated exactly.

What an FP16 core does, and what we do instead:

- *storage*: tensors between kernels are float16. Every float input of a kernel is
  rounded to float16 (weights included: the factory sees rounded constants), and every
  float output is rounded to float16 once (`numpy.astype`, round to nearest even).
- *fp16 accumulation* (`accumulate="fp16"`; FMLA on .8h lanes): in the contractions —
  MatMul, Gemm, Conv (2-D) and their fused forms — each multiply-add is rounded to fp16.
  We compute a*b + acc in float64 (the product of two fp16 is exact there) and round that
  to fp16: one rounding per fused multiply-add, the same result as the hardware FMA, in
  ascending k order. This is numpy code (a loop over k of vector operations), not numba:
  numba has no float16 type on CPU (`NotImplementedError: float16`), so numba never emits
  FP16 instructions, on aarch64 or anywhere else.
- *fp32 accumulation* (`accumulate="fp32"`; FMLAL, ARMv8.2 FHM): fp16 operands, products
  and sums in fp32, the result rounded to fp16. That is exactly the fp32 kernel run on
  fp16-rounded inputs with its output rounded, which is what we run.

Elementwise kernels compute in fp32 and round once; for +, -, *, / and sqrt that equals
the fp16 instruction's correctly rounded result (fp32 has more than 2*11+2 bits).
Reductions inside other kernels (Softmax, LayerNorm, pooling) accumulate in fp32, as
ncnn's and MegEngine's fp16 kernels do; fused Attention's inner products too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_FLOATS = (F16, F32, F64)


def to_fp16_values(a: Any) -> Any:
    """A float array rounded to fp16 and widened back to fp32 (exact): what fp32 code
    reads to compute on fp16 operands. Other values pass through."""
    if isinstance(a, np.ndarray) and a.dtype in _FLOATS:
        return a.astype(F16).astype(F32) if a.dtype != F16 else a.astype(F32)
    return a


def to_fp16(o: Any) -> Any:
    if isinstance(o, np.ndarray) and o.dtype in _FLOATS:
        return o.astype(F16)
    return o


def rounded_node(node: Node) -> Node:
    """A copy of `node` whose float constants are fp16 values (for factories that pack
    weights at compile time). Fresh Values keep the copy out of the graph's use lists."""
    from ...ir import Node, Value

    def val(v: Value | None) -> Value | None:
        if v is None:
            return None
        c = v.const
        if isinstance(c, np.ndarray) and c.dtype in (F32, F64):
            c = c.astype(F16).astype(c.dtype)
        return Value(v.name, v.elem_type, v.shape, const=c)

    copy = Node(
        node.op_type,
        [val(v) for v in node.inputs],
        [Value(v.name, v.elem_type, v.shape) for v in node.outputs],
        dict(node.attrs),
        name=node.name,
        domain=node.domain,
    )
    copy.meta = dict(node.meta)
    return copy


def storage_fp16(run: KernelFn) -> KernelFn:
    """The fp32 kernel `run` on fp16 operands, its float outputs rounded to fp16."""

    def run16(*args: Any) -> tuple:
        outs = run(*[to_fp16_values(a) for a in args])
        return tuple(to_fp16(o) for o in outs)

    run16.algorithm = getattr(run, "algorithm", "default") + ",fp16"
    return run16


# -- fp16 accumulation ---------------------------------------------------------------------------


def matmul_acc16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (numpy broadcasting of batch dims) with every multiply-add rounded to fp16."""
    a64, b64 = np.asarray(a, F64), np.asarray(b, F64)
    vec_a, vec_b = a64.ndim == 1, b64.ndim == 1
    if vec_a:
        a64 = a64[None, :]
    if vec_b:
        b64 = b64[:, None]
    k = a64.shape[-1]
    if b64.shape[-2] != k:
        raise ValueError(f"MatMul shapes {list(a.shape)} and {list(b.shape)} do not match")
    shape = (*np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), a64.shape[-2], b64.shape[-1])
    acc = np.zeros(shape, F16)
    for i in range(k):  # ascending k, one rounding per FMA, like FMLA on .8h lanes
        acc = (acc.astype(F64) + a64[..., :, i, None] * b64[..., None, i, :]).astype(F16)
    if vec_a:
        acc = acc[..., 0, :]
    if vec_b:
        acc = acc[..., 0]
    return acc


def _conv_geometry(node: Node, x: np.ndarray, w: np.ndarray) -> tuple | None:
    a = node.attrs
    if x.ndim != 4 or w.ndim != 4:
        return None
    auto = a.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "VALID"):
        return None
    strides = list(a.get("strides", [1, 1]))
    dil = list(a.get("dilations", [1, 1]))
    pads = [0, 0, 0, 0] if auto == "VALID" else list(a.get("pads", [0, 0, 0, 0]))
    return int(a.get("group", 1)), strides, dil, pads


def conv_acc16(node: Node, x: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """2-D Conv without bias as im2col + `matmul_acc16`; None for forms it does not cover."""
    geo = _conv_geometry(node, x, w)
    if geo is None:
        return None
    group, (sh, sw), (dh, dw), (pt, pl, pb, pr) = geo
    n, _, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(np.asarray(x, F16), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    mg = m // group
    ys = []
    for g in range(group):
        xs = xp[:, g * cg : (g + 1) * cg]
        cols = np.empty((n, cg, kh, kw, oh, ow), F16)
        for i in range(kh):
            for j in range(kw):
                rows = xs[:, :, i * dh : i * dh + sh * oh : sh]
                cols[:, :, i, j] = rows[:, :, :oh, j * dw : j * dw + sw * ow : sw][..., :ow]
        wg = np.asarray(w[g * mg : (g + 1) * mg], F16).reshape(mg, cg * kh * kw)
        ys.append(matmul_acc16(wg, cols.reshape(n, cg * kh * kw, oh * ow)))
    return np.concatenate(ys, axis=1).reshape(n, m, oh, ow)


def _gemm_acc16(node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    at = a.T if node.attrs.get("transA", 0) else a
    bt = b.T if node.attrs.get("transB", 0) else b
    y = matmul_acc16(at, bt)
    alpha = float(node.attrs.get("alpha", 1.0))
    return y if alpha == 1.0 else (y.astype(F32) * np.float32(alpha)).astype(F16)


def _epilogue(node: Node, y16: np.ndarray, bias: Any, z: Any, channels: bool) -> np.ndarray:
    """Bias, residual and activation of a fused op on the fp16 core result, in fp32 (the
    x86 epilogue itself), rounded to fp16 once."""
    from ..x86.ops_fused_conv import (
        _epilogue_channels,
        _epilogue_rows,
        _full,
        _vector,
        activation_of,
    )

    act = activation_of(node)
    y = y16.astype(F32)
    if channels:
        m = y.shape[1]
        bv = _vector(None if bias is None else to_fp16_values(bias), m, "bias")
        zz = _full(None if z is None else to_fp16_values(z), y.shape, "residual")
        _epilogue_channels(
            y.reshape(-1), bv, zz, y.shape[0], m, y.size // max(1, y.shape[0] * m), *act
        )
    else:
        cols = y.shape[-1]
        bv = _vector(None if bias is None else to_fp16_values(bias), cols, "bias")
        zz = _full(None if z is None else to_fp16_values(z), y.shape, "residual")
        _epilogue_rows(y.reshape(-1), bv, zz, y.size // max(1, cols), cols, *act)
    return y.astype(F16)


def acc16_kernel(node: Node, ctx: CompileContext, fallback: KernelFn) -> KernelFn | None:
    """The fp16-accumulating kernel of a contraction node, or None when `node` is not one.
    Shapes it does not cover (3-D conv, auto_pad SAME) run `fallback` (fp32 accumulation)
    and say so in the algorithm name."""
    op = (node.domain, node.op_type)
    if op == ("", "MatMul"):

        def run(a, b):
            return (matmul_acc16(a, b),)

    elif op == ("", "Gemm"):
        beta = float(node.attrs.get("beta", 1.0))

        def run(a, b, c=None):
            y = _gemm_acc16(node, a, b)
            if c is not None and beta != 0.0:
                y = (y.astype(F32) + to_fp16_values(c) * np.float32(beta)).astype(F16)
            return (y,)

    elif op in (("", "Conv"), ("workbench", "FusedConv")):
        fused = node.domain == "workbench"

        def run(x, w, *rest):
            y = conv_acc16(node, x, w)
            if y is None:  # a form im2col here does not cover: fp32 accumulation
                return fallback(x, w, *rest)
            b, z = (*rest, None, None)[:2]
            if fused:
                return (_epilogue(node, y, b, z, channels=True),)
            if b is not None:
                y = (y.astype(F32) + to_fp16_values(b).reshape(1, -1, 1, 1)).astype(F16)
            return (y,)

    elif op == ("workbench", "FusedMatMul"):

        def run(a, b, bias=None):
            return (_epilogue(node, matmul_acc16(a, b), bias, None, channels=False),)

    elif op == ("workbench", "FusedGemm"):
        beta = float(node.attrs.get("beta", 1.0))

        def run(a, b, c=None):
            y = _gemm_acc16(node, a, b)
            if c is None or beta == 0.0:
                return (_epilogue(node, y, None, None, channels=False),)
            c = to_fp16_values(c) * np.float32(beta)
            row = c.ndim < 2 or c.shape[0] == 1
            return (_epilogue(node, y, c if row else None, None if row else c, channels=False),)

    else:
        return None
    run.algorithm = "fp16-acc16 (FMA rounded to fp16, numpy)"
    return run


__all__ = ["acc16_kernel", "conv_acc16", "matmul_acc16", "rounded_node", "storage_fp16"]
