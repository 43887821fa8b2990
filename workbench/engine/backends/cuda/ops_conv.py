"""cuda kernels of Conv and `workbench.FusedConv` (1-D and 2-D): im2col + the tiled GEMM,
with bias, residual and activation in the GEMM's epilogue; depthwise convolutions run a
direct kernel (one thread per output, the k*k window in registers), where im2col would
only copy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..common import conv_out_size, conv_pads
from ._elementwise import run_program
from ._gemm import activation_expr, algorithm_name, gemm, tensor_core_precision
from ._launch import broadcast_strides, empty, flat, grid, jit_source, result, writes_out
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

IM2COL = """
def kernel(x, col, total, C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw):
    i = cuda.grid(1)
    if i >= total:
        return
    P = OH * OW
    p = i % P
    k = (i // P) % (C * KH * KW)
    n = i // (P * C * KH * KW)
    c = k // (KH * KW)
    kh = (k // KW) % KH
    kw = k % KW
    y = (p // OW) * sh - ph + kh * dh
    xx = (p % OW) * sw - pw + kw * dw
    if y >= 0 and y < H and xx >= 0 and xx < W:
        col[i] = x[((n * C + c) * H + y) * W + xx]
    else:
        col[i] = 0
"""

DEPTHWISE = """
def kernel(x, w, out, total, C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, mult):
    i = cuda.grid(1)
    if i >= total:
        return
    ow = i % OW
    oh = (i // OW) % OH
    m = (i // (OW * OH)) % (C * mult)
    n = i // (OW * OH * C * mult)
    c = m // mult
    acc = float32(0.0)
    for kh in range(KH):
        y = oh * sh - ph + kh * dh
        if y >= 0 and y < H:
            for kw in range(KW):
                xx = ow * sw - pw + kw * dw
                if xx >= 0 and xx < W:
                    acc += float32(x[((n * C + c) * H + y) * W + xx]) * float32(
                        w[(m * KH + kh) * KW + kw])
    out[i] = acc
"""


def _geometry(node: Node, x_shape: tuple, w_shape: tuple) -> tuple:
    nd = len(x_shape) - 2
    kernel = list(node.attrs.get("kernel_shape") or w_shape[2:])
    st = list(node.attrs.get("strides") or [1] * nd)
    dl = list(node.attrs.get("dilations") or [1] * nd)
    ap = node.attrs.get("auto_pad", "NOTSET")
    ap = ap.decode() if isinstance(ap, bytes) else ap
    pads = conv_pads(x_shape[2:], kernel, st, dl, node.attrs.get("pads"), ap)
    if nd == 1:  # as 2-D with a height of one
        return (1, x_shape[2]), (1, kernel[0]), (1, st[0]), (1, dl[0]), (0, pads[0], 0, pads[1])
    return tuple(x_shape[2:]), tuple(kernel), tuple(st), tuple(dl), tuple(pads)


@kernels.register("Conv", since=1)
@kernels.register("FusedConv", domain="workbench", since=1)
def conv(node: Node, ctx: CompileContext) -> KernelFn | None:
    w = node.inputs[1]
    if w is None or (w.shape is not None and len(w.shape) not in (3, 4)):
        return None
    group = int(node.attrs.get("group", 1))
    name, params = "", []
    if node.op_type == "FusedConv":
        name = node.attrs.get("activation", "") or ""
        name = name.decode() if isinstance(name, bytes) else name
        params = list(node.attrs.get("activation_params", []) or [])
    act = activation_expr(name, params)
    tf32 = ctx.precision == "tf32"
    tc = tensor_core_precision(ctx.precision)

    def run(x: Any, w: Any, b: Any = None, z: Any = None, out: Any = None) -> tuple:
        if len(x.shape) not in (3, 4):
            raise ValueError(f"cuda Conv supports 1-D and 2-D convolutions, got {x.shape}")
        (H, W), (KH, KW), (sh, sw), (dh, dw), (ph, pw, pe_h, pe_w) = _geometry(
            node, tuple(x.shape), tuple(w.shape)
        )
        N, C = x.shape[:2]
        M = w.shape[0]
        OH = conv_out_size(H, KH, sh, dh, ph, pe_h)
        OW = conv_out_size(W, KW, sw, dw, pw, pe_w)
        P = OH * OW
        out_shape = (N, M, OH, OW) if len(x.shape) == 4 else (N, M, OW)
        res = result(out, out_shape, x.dtype)
        out = res.reshape((N, M, P))  # a view: the GEMM's [N, M, OH*OW]
        geo = (H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw)
        if group == C and group > 1 and w.shape[1] == 1 and M % C == 0:
            total = N * M * P
            k = jit_source(DEPTHWISE)
            blocks, threads = grid(total)
            k[blocks, threads](flat(x), flat(w), flat(out), total, C, *geo, M // C)
            _epilogue(out, b, z, name, params, N, M, P)
            return (res,)
        cg, mg = C // group, M // group
        kk = cg * KH * KW
        col = empty((N, C * KH * KW, P), x.dtype)
        total = col.size
        if total:
            k = jit_source(IM2COL)
            blocks, threads = grid(total)
            k[blocks, threads](flat(x), flat(col), total, C, *geo)
        e0 = (b, (0, 0), 1, 0) if b is not None else None
        e1 = None
        if z is not None:  # the residual, broadcast to [N, M, P] and split by group
            zs = broadcast_strides(z.shape, out_shape)
            zs = (zs[0], zs[1], zs[-1]) if len(out_shape) == 3 else (zs[0], zs[1], zs[3])
            e1 = (z, (zs[0], mg * zs[1]), zs[1], zs[2])
        e0 = (b, (0, mg), 1, 0) if b is not None else e0
        # out[n, g] (mg x P) = W[g] (mg x kk) @ col[n, g] (kk x P); batch dims (n, g)
        gemm(
            w, col, out, mg, P, kk, batch=(N, group), a=((0, mg * kk), kk, 1),
            b=((C * KH * KW * P, kk * P), P, 1), c=((M * P, mg * P), P, 1),
            e0=e0, e1=e1, activation=act, tf32=tf32, tensor_cores=tc,
        )  # fmt: skip
        return (res,)

    run.algorithm = algorithm_name("im2col-tiled-gemm", ctx.precision, tc)
    return writes_out(run)


def _epilogue(out: Any, b: Any, z: Any, act: str, params: list, N: int, M: int, P: int) -> None:
    """Bias, residual and activation of the depthwise path, in place (one more pass)."""
    program: list[tuple] = []
    xs = [out]
    prev: tuple = ("x", 0)
    for extra in (b.reshape((M, 1)) if b is not None else None, z):
        if extra is not None:
            xs.append(extra if extra.size != N * M * P else extra.reshape((N, M, P)))
            program.append(("Add", (prev, ("x", len(xs) - 1)), {}))
            prev = ("t", len(program) - 1)
    if act == "Clip":
        lo = params[0] if params else -np.inf
        hi = params[1] if len(params) > 1 else np.inf
        program.append(("Clip", (prev, ("c", lo), ("c", hi)), {}))
    elif act:
        _, attrs = activation_expr(act, params)
        program.append((act, (prev,), attrs))
    if program:
        run_program(program, xs, (N, M, P), out.dtype, out=out)


CONV_TRANSPOSE = """
def kernel(x, w, b, out, total, C, H, W, M, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G, has_b):
    i = cuda.grid(1)
    if i >= total:
        return
    ow = i % OW
    oh = (i // OW) % OH
    m = (i // (OW * OH)) % M
    n = i // (OW * OH * M)
    cg = C // G
    mg = M // G
    g = m // mg
    mm = m % mg
    acc = float32(b[m]) if has_b else float32(0.0)
    for kh in range(KH):
        ty = oh + ph - kh * dh
        if ty < 0 or ty % sh != 0 or ty // sh >= H:
            continue
        y = ty // sh
        for kw in range(KW):
            tx = ow + pw - kw * dw
            if tx < 0 or tx % sw != 0 or tx // sw >= W:
                continue
            xx = tx // sw
            for c in range(g * cg, (g + 1) * cg):
                acc += float32(x[((n * C + c) * H + y) * W + xx]) * float32(
                    w[((c * mg + mm) * KH + kh) * KW + kw])
    out[i] = acc
"""


@kernels.register("ConvTranspose", since=1)
def conv_transpose(node: Node, ctx: CompileContext) -> KernelFn | None:
    """1-D and 2-D, explicit pads and output_padding (auto_pad and output_shape: the
    reference): one thread per output gathers the input taps that land on it."""
    a = node.attrs
    ap = a.get("auto_pad", "NOTSET")
    ap = ap.decode() if isinstance(ap, bytes) else ap
    w = node.inputs[1]
    if ap != "NOTSET" or a.get("output_shape") or (w.shape is not None and len(w.shape) > 4):
        return None
    group = int(a.get("group", 1))

    def run(x: Any, w: Any, b: Any = None, out: Any = None) -> tuple:
        nd = len(x.shape) - 2
        if nd not in (1, 2):
            raise ValueError(f"cuda ConvTranspose supports 1-D and 2-D, got {x.shape}")
        k = list(a.get("kernel_shape") or w.shape[2:])
        st = list(a.get("strides") or [1] * nd)
        dl = list(a.get("dilations") or [1] * nd)
        pads = list(a.get("pads") or [0] * (2 * nd))
        op = list(a.get("output_padding") or [0] * nd)
        sp = list(x.shape[2:])
        outs = [
            st[i] * (sp[i] - 1) + op[i] + (k[i] - 1) * dl[i] + 1 - pads[i] - pads[i + nd]
            for i in range(nd)
        ]
        N, C = x.shape[:2]
        M = w.shape[1] * group
        res = result(out, (N, M, *outs), x.dtype)
        if nd == 1:  # as 2-D with a height of one
            sp, k, st, dl, outs = [1, *sp], [1, *k], [1, *st], [1, *dl], [1, *outs]
            pads = [0, pads[0], 0, pads[1]]
        total = res.size
        if total:
            kern = jit_source(CONV_TRANSPOSE)
            blocks, threads = grid(total)
            kern[blocks, threads](
                flat(x), flat(w), flat(b if b is not None else w), flat(res), total, C, *sp, M,
                *outs, *k, *st, pads[0], pads[1], *dl, group, b is not None,
            )  # fmt: skip
        return (res,)

    run.algorithm = "direct-gather"
    return writes_out(run)
