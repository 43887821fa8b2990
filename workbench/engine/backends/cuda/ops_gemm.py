"""cuda kernels of MatMul, Gemm, `workbench.FusedMatMul`/`FusedGemm`/`Attention` and
Softmax/LogSoftmax: the tiled GEMM of `_gemm.py` with its epilogue, and a row kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import dest
from ._gemm import activation_expr, algorithm_name, gemm, tensor_core_precision
from ._launch import broadcast_strides, empty, flat, grid, jit_source, result, strides, writes_out
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn


def _act(node: Node) -> tuple[str, dict[str, float]]:
    act = node.attrs.get("activation", "") or ""
    act = act.decode() if isinstance(act, bytes) else act
    return activation_expr(act, node.attrs.get("activation_params", []) or [])


def matmul(
    A: Any, B: Any, bias: Any, act: tuple, tf32: bool, dtype: Any, into: Any = None, tc: str = ""
) -> Any:
    """numpy matmul semantics (1-D operands promoted, batch dims broadcast), bias along
    the last dim; written into `into` when given (the output's shape)."""
    a_shape, b_shape = tuple(A.shape), tuple(B.shape)
    a2 = a_shape if len(a_shape) > 1 else (1, *a_shape)
    b2 = b_shape if len(b_shape) > 1 else (*b_shape, 1)
    M, K = a2[-2:]
    K2, N = b2[-2:]
    if K != K2:
        raise ValueError(f"MatMul: inner dims differ: {list(a_shape)} x {list(b_shape)}")
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    shape = (*batch, *a_shape[-2:-1], *b_shape[-1:]) if len(b_shape) > 1 else (*batch, M)
    if len(a_shape) == 1 and len(b_shape) > 1:
        shape = (*batch, N)
    res = into if into is not None else empty(shape, dtype)
    out = res.reshape((*batch, M, N))  # a view: the same memory, the GEMM's own shape
    sa = broadcast_strides(a2, (*batch, M, K))
    sb = broadcast_strides(b2, (*batch, K, N))
    nb = len(batch)
    e0 = None
    if bias is not None:
        n_stride = 0 if bias.size == 1 else 1
        e0 = (bias, (0,) * nb, 0, n_stride)
    gemm(
        A, B, out, M, N, K, batch=batch, a=(sa[:nb], sa[nb], sa[nb + 1]),
        b=(sb[:nb], sb[nb], sb[nb + 1]), c=(strides(out.shape)[:nb], N, 1),
        e0=e0, activation=act, tf32=tf32, tensor_cores=tc,
    )  # fmt: skip
    return res


@kernels.register("MatMul", since=1)
@kernels.register("FusedMatMul", domain="workbench", since=1)
def matmul_kernel(node: Node, ctx: CompileContext) -> KernelFn | None:
    act = _act(node) if node.op_type == "FusedMatMul" else ("{0}", {})
    tf32 = ctx.precision == "tf32"
    tc = tensor_core_precision(ctx.precision)

    def run(A: Any, B: Any, bias: Any = None, out: Any = None) -> tuple:
        return (matmul(A, B, bias, act, tf32, A.dtype, dest(out), tc),)

    run.algorithm = algorithm_name("tiled-smem-gemm", ctx.precision, tc)
    return writes_out(run)


@kernels.register("Gemm", since=7)
@kernels.register("FusedGemm", domain="workbench", since=1)
def gemm_kernel(node: Node, ctx: CompileContext) -> KernelFn | None:
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    act = _act(node) if node.op_type == "FusedGemm" else ("{0}", {})
    tf32 = ctx.precision == "tf32"
    tc = tensor_core_precision(ctx.precision)

    def run(A: Any, B: Any, C: Any = None, out: Any = None) -> tuple:
        M, K = (A.shape[1], A.shape[0]) if ta else A.shape
        N = B.shape[0] if tb else B.shape[1]
        out = result(out, (M, N), A.dtype)
        a = ((), 1, M) if ta else ((), K, 1)
        b = ((), 1, K) if tb else ((), N, 1)
        e0 = None
        if C is not None:
            s = broadcast_strides(C.shape, (M, N))
            e0 = (C, (), s[0], s[1])
        gemm(A, B, out, M, N, K, a=a, b=b, c=((), N, 1), alpha=alpha, e0=e0, beta=beta,
             activation=act, tf32=tf32, tensor_cores=tc)  # fmt: skip
        return (out,)

    run.algorithm = algorithm_name("tiled-smem-gemm", ctx.precision, tc)
    return writes_out(run)


def _softmax_source(log: bool) -> str:
    last = "y - mx - math.log(s)" if log else "math.exp(y - mx) / s"
    return f"""
def kernel(x, out, rows, length, inner):
    i = cuda.grid(1)
    if i >= rows:
        return
    base = (i // inner) * length * inner + i % inner
    mx = float32(-math.inf)
    for j in range(length):
        mx = max(mx, float32(x[base + j * inner]))
    s = float32(0.0)
    for j in range(length):
        s += math.exp(float32(x[base + j * inner]) - mx)
    for j in range(length):
        y = float32(x[base + j * inner])
        out[base + j * inner] = {last}
"""


def softmax(x: Any, axis: int, log: bool = False, coerce: bool = False, out: Any = None) -> Any:
    """Softmax over `axis` (opset >= 13), or over all dims from `axis` on (`coerce`, < 13);
    one thread per row, three passes in fp32 (max, sum of exp, write)."""
    shape = tuple(x.shape)
    axis = axis + len(shape) if axis < 0 else axis
    length = int(np.prod(shape[axis:])) if coerce else shape[axis]
    inner = 1 if coerce else int(np.prod(shape[axis + 1 :]))
    rows = int(np.prod(shape)) // max(length, 1)
    out = empty(shape, x.dtype) if out is None else out
    if rows and length:
        kernel = jit_source(_softmax_source(log))
        blocks, threads = grid(rows)
        kernel[blocks, threads](flat(x), flat(out), rows, length, inner)
    return out


@kernels.register(["Softmax", "LogSoftmax"], since=1)
def softmax_kernel(node: Node, ctx: CompileContext) -> KernelFn | None:
    coerce = ctx.opset < 13
    axis = int(node.attrs.get("axis", 1 if coerce else -1))
    log = node.op_type == "LogSoftmax"

    def run(x: Any, out: Any = None) -> tuple:
        return (softmax(x, axis, log, coerce, dest(out)),)

    return writes_out(run, (0,))  # one thread per row reads each element before writing it


@kernels.register("Attention", domain="workbench", since=1)
def attention_kernel(node: Node, ctx: CompileContext) -> KernelFn | None:
    heads = int(node.attrs["num_heads"])
    scale = float(node.attrs.get("scale", 0.0))
    causal = bool(int(node.attrs.get("causal", 0)))
    tf32 = ctx.precision == "tf32"
    tc = tensor_core_precision(ctx.precision)

    def run(Q: Any, K: Any, V: Any, mask: Any = None, out: Any = None) -> tuple:
        b, sq, hd = Q.shape
        sk, hdv = K.shape[1], V.shape[2]
        d, dv = hd // heads, hdv // heads
        s = scale or 1.0 / float(np.sqrt(d))
        scores = empty((b, heads, sq, sk), Q.dtype)
        e0 = None
        if mask is not None:
            ms = broadcast_strides(mask.shape, scores.shape)
            e0 = (mask, ms[:2], ms[2], ms[3])
        # S[b,h] = s * Q[b,:,h] K[b,:,h]^T (+ mask): the heads are strides, not copies
        gemm(
            Q, K, scores, sq, sk, d, batch=(b, heads), a=((sq * hd, d), hd, 1),
            b=((sk * hd, d), 1, hd), c=((heads * sq * sk, sq * sk), sk, 1), alpha=s,
            e0=e0, tf32=tf32, causal=causal, tensor_cores=tc,
        )  # fmt: skip
        probs = softmax(scores, -1, out=scores)  # in place: one thread reads its row first
        out = result(out, (b, sq, hdv), Q.dtype)
        gemm(
            probs, V, out, sq, dv, sk, batch=(b, heads), a=((heads * sq * sk, sq * sk), sk, 1),
            b=((sk * hdv, dv), hdv, 1), c=((sq * hdv, dv), hdv, 1), tf32=tf32, tensor_cores=tc,
        )  # fmt: skip
        return (out,)

    run.algorithm = "gemm-softmax-gemm" + (f" (wmma-{tc})" if tc else "")
    return writes_out(run)
