"""cuda kernels of the normalizations, reductions and pools: BatchNormalization (inference:
x * scale + shift, folded on the host from constant statistics), LayerNormalization and
`workbench.LayerNorm` (one thread per row, fp32 mean and variance), ReduceMean/Sum/Max/Min
and GlobalAverage/MaxPool (one thread per output, fp32 accumulation), MaxPool and
AveragePool in 1-D/2-D (one thread per output)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import dest
from ..common import conv_pads
from ._elementwise import run_program
from ._launch import empty, flat, grid, jit_source, result, strides, writes_out
from ._table import const_of, kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn


@kernels.register("BatchNormalization", since=9)
def batchnorm(node: Node, ctx: CompileContext) -> KernelFn | None:
    stats = [const_of(node, i) for i in range(1, 5)]
    if any(s is None for s in stats) or len(node.outputs) > 1:
        return None
    g, b, mean, var = (s.astype(np.float64) for s in stats)
    eps = float(node.attrs.get("epsilon", 1e-5))
    scale = (g / np.sqrt(var + eps)).astype(np.float32)
    shift = (b - mean * scale).astype(np.float32)
    program = [("Mul", (("x", 0), ("x", 1)), {}), ("Add", (("t", 0), ("x", 2)), {})]
    dev: dict[int, tuple] = {}

    def run(x: Any, *_: Any, out: Any = None) -> tuple:
        rank = len(x.shape)
        if rank not in dev:  # per-channel vectors shaped [C, 1, ...] to broadcast over x
            from ._launch import upload

            shp = (len(scale),) + (1,) * (rank - 2)
            dev[rank] = (upload(scale.reshape(shp)), upload(shift.reshape(shp)))
        s, t = dev[rank]
        return (run_program(program, [x, s, t], x.shape, x.dtype, out=dest(out)),)

    return writes_out(run, (0,))


LAYERNORM = """
def kernel(x, g, b, out, rows, n, eps, has_b):
    i = cuda.grid(1)
    if i >= rows:
        return
    base = i * n
    s = float32(0.0)
    for j in range(n):
        s += float32(x[base + j])
    mean = s / n
    v = float32(0.0)
    for j in range(n):
        d = float32(x[base + j]) - mean
        v += d * d
    inv = float32(1.0) / math.sqrt(v / n + eps)
    for j in range(n):
        y = (float32(x[base + j]) - mean) * inv * float32(g[j])
        if has_b:
            y += float32(b[j])
        out[base + j] = y
"""


@kernels.register("LayerNormalization", since=17)
@kernels.register("LayerNorm", domain="workbench", since=1)
def layernorm(node: Node, ctx: CompileContext) -> KernelFn | None:
    if len([o for o in node.outputs if o.name]) > 1:
        return None  # mean / inv std outputs: the reference makes them
    axis = int(node.attrs.get("axis", -1))
    eps = np.float32(node.attrs.get("epsilon", 1e-5))

    def run(x: Any, g: Any, b: Any = None, out: Any = None) -> tuple:
        a = axis % len(x.shape)
        n = int(np.prod(x.shape[a:]))
        rows = x.size // max(n, 1)
        out = result(out, x.shape, x.dtype)
        if rows:
            k = jit_source(LAYERNORM)
            blocks, threads = grid(rows)
            k[blocks, threads](
                flat(x), flat(g), flat(b if b is not None else g), flat(out), rows, n, eps,
                b is not None,
            )  # fmt: skip
        return (out,)

    return writes_out(run, (0,))  # one thread per row, its elements read before written


# op -> (initial value, accumulation, the output from `acc` and `count`)
REDUCE_OPS = {
    "sum": ("float32(0.0)", "acc += v", "acc"),
    "mean": ("float32(0.0)", "acc += v", "acc / count"),
    "max": ("float32(-math.inf)", "acc = max(acc, v)", "acc"),
    "min": ("float32(math.inf)", "acc = min(acc, v)", "acc"),
    "prod": ("float32(1.0)", "acc *= v", "acc"),
    "l1": ("float32(0.0)", "acc += abs(v)", "acc"),
    "l2": ("float32(0.0)", "acc += v * v", "math.sqrt(acc)"),
    "sumsquare": ("float32(0.0)", "acc += v * v", "acc"),
    # a second pass: the max first (`mx`), so exp never overflows
    "logsumexp": ("float32(0.0)", "acc += math.exp(v - mx)", "mx + math.log(acc)"),
}


def _reduce_source(op: str, nkeep: int, nred: int) -> str:
    init, step, final = REDUCE_OPS[op]
    lines = ["def kernel(x, out, total, kshape, kstr, rshape, rstr, count):"]
    lines += [
        "    i = cuda.grid(1)",
        "    if i >= total:",
        "        return",
        "    r = i",
        "    base = 0",
    ]
    for d in reversed(range(nkeep)):
        lines += [
            f"    c = r % kshape[{d}]",
            f"    r = r // kshape[{d}]",
            f"    base += c * kstr[{d}]",
        ]

    def loop(body: str) -> list[str]:
        out = ["    for j in range(count):", "        r = j", "        p = base"]
        for d in reversed(range(nred)):
            out += [f"        c = r % rshape[{d}]", f"        r = r // rshape[{d}]"]
            out += [f"        p += c * rstr[{d}]"]
        return [*out, "        v = float32(x[p])", f"        {body}"]

    if op == "logsumexp":
        lines += ["    mx = float32(-math.inf)", *loop("mx = max(mx, v)")]
        lines += ["    if mx == float32(-math.inf):", "        mx = float32(0.0)"]
    lines += [f"    acc = {init}", *loop(step), f"    out[i] = {final}"]
    return "\n".join(lines) + "\n"


def reduce(x: Any, axes: list[int] | None, keepdims: bool, op: str, out: Any = None) -> Any:
    rank = len(x.shape)
    red = sorted({a % rank for a in axes}) if axes else list(range(rank))
    keep = [d for d in range(rank) if d not in red]
    src = strides(x.shape)
    out_shape = (
        [1 if d in red else x.shape[d] for d in range(rank)]
        if keepdims
        else [x.shape[d] for d in keep]
    )
    out = empty(out_shape, x.dtype) if out is None else out
    total = out.size
    count = int(np.prod([x.shape[d] for d in red]))
    if total:
        k = jit_source(_reduce_source(op, len(keep), len(red)))
        blocks, threads = grid(total)
        k[blocks, threads](
            flat(x), flat(out), total, tuple(x.shape[d] for d in keep),
            tuple(src[d] for d in keep), tuple(x.shape[d] for d in red),
            tuple(src[d] for d in red), count,
        )  # fmt: skip
    return out


REDUCES = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1"]
REDUCES += ["ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"]


@kernels.register(REDUCES, since=1)
def reduce_kernel(node: Node, ctx: CompileContext) -> KernelFn | None:
    op = node.op_type[6:].lower()
    from_input = (node.op_type == "ReduceSum" and ctx.opset >= 13) or ctx.opset >= 18
    axes = const_of(node, 1) if from_input else node.attrs.get("axes")
    if from_input and len(node.inputs) > 1 and node.inputs[1] is not None and axes is None:
        return None
    keepdims = bool(int(node.attrs.get("keepdims", 1)))
    if axes is not None and len(axes) == 0:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return lambda x, *_: (x,)
        axes = None
    ax = None if axes is None else [int(a) for a in axes]

    def run(x: Any, *_: Any, out: Any = None) -> tuple:
        return (reduce(x, ax, keepdims, op, dest(out)),)

    return writes_out(run)


@kernels.register(["GlobalAveragePool", "GlobalMaxPool"], since=1)
def global_pool(node: Node, ctx: CompileContext) -> KernelFn | None:
    op = "mean" if node.op_type == "GlobalAveragePool" else "max"

    def run(x: Any, out: Any = None) -> tuple:
        return (reduce(x, list(range(2, len(x.shape))), True, op, dest(out)),)

    return writes_out(run)


# count_include_pad divides by the taps inside input + explicit pads (a ceil_mode window
# may reach past the end pad: those taps do not count), else by the taps inside the input
POOL = """
def kernel(x, out, total, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, is_max, incl, peh, pew):
    i = cuda.grid(1)
    if i >= total:
        return
    ow = i % OW
    oh = (i // OW) % OH
    nc = i // (OW * OH)
    acc = float32(-math.inf) if is_max else float32(0.0)
    n = 0
    padded = 0
    for kh in range(KH):
        y = oh * sh - ph + kh * dh
        for kw in range(KW):
            xx = ow * sw - pw + kw * dw
            if y >= 0 and y < H and xx >= 0 and xx < W:
                v = float32(x[(nc * H + y) * W + xx])
                acc = max(acc, v) if is_max else acc + v
                n += 1
            if y >= -ph and y < H + peh and xx >= -pw and xx < W + pew:
                padded += 1
    if is_max:
        out[i] = acc
    elif incl:
        out[i] = acc / max(padded, 1)
    else:
        out[i] = acc / max(n, 1)
"""


def pool_out(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool) -> int:
    """Output length of a pool (the ONNX/PyTorch ceil_mode rule: the last window must start
    inside the input or its begin padding)."""
    room = size + pb + pe - ((k - 1) * d + 1)
    if not ceil:
        return room // s + 1
    o = -(-room // s) + 1
    return o - 1 if (o - 1) * s >= size + pb else o


@kernels.register(["MaxPool", "AveragePool"], since=1)
def pool(node: Node, ctx: CompileContext) -> KernelFn | None:
    if len([o for o in node.outputs if o.name]) > 1:
        return None  # Indices: the reference makes them
    ceil = bool(int(node.attrs.get("ceil_mode", 0)))
    kernel = list(node.attrs["kernel_shape"])
    if len(kernel) not in (1, 2) or int(node.attrs.get("storage_order", 0)):
        return None
    is_max = node.op_type == "MaxPool"
    incl = bool(int(node.attrs.get("count_include_pad", 0)))
    nd = len(kernel)
    st = list(node.attrs.get("strides") or [1] * nd)
    dl = list(node.attrs.get("dilations") or [1] * nd)
    ap = node.attrs.get("auto_pad", "NOTSET")
    ap = ap.decode() if isinstance(ap, bytes) else ap

    def run(x: Any, out: Any = None) -> tuple:
        pads = conv_pads(x.shape[2:], kernel, st, dl, node.attrs.get("pads"), ap)
        if nd == 1:
            geo = (1, x.shape[2], 1, kernel[0], 1, st[0], 1, dl[0], 0, pads[0], 0, pads[1])
        else:
            geo = (*x.shape[2:], *kernel, *st, *dl, *pads)
        H, W, KH, KW, sh, sw, dh, dw, ph, pw, peh, pew = geo
        if ap in ("SAME_UPPER", "SAME_LOWER"):
            OH, OW = -(-H // sh), -(-W // sw)
        else:
            OH, OW = pool_out(H, KH, sh, dh, ph, peh, ceil), pool_out(W, KW, sw, dw, pw, pew, ceil)
        out_shape = (*x.shape[:2], OH, OW) if nd == 2 else (*x.shape[:2], OW)
        out = result(out, out_shape, x.dtype)
        total = out.size
        if total:
            k = jit_source(POOL)
            blocks, threads = grid(total)
            k[blocks, threads](
                flat(x), flat(out), total, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw,
                is_max, incl, peh, pew,
            )  # fmt: skip
        return (out,)

    return writes_out(run)


ARG = """
def kernel(x, out, total, n, inner, is_max, last):
    i = cuda.grid(1)
    if i >= total:
        return
    base = (i // inner) * n * inner + i % inner
    best = float32(x[base])
    k = 0
    for j in range(1, n):
        v = float32(x[base + j * inner])
        better = v > best if is_max else v < best
        if better or (last and v == best):
            best = v
            k = j
    out[i] = k
"""


@kernels.register(["ArgMax", "ArgMin"], since=1)
def argmax(node: Node, ctx: CompileContext) -> KernelFn | None:
    """One thread per output: the first (or, `select_last_index`, the last) extreme along
    `axis`, as int64."""
    axis = int(node.attrs.get("axis", 0))
    keepdims = bool(int(node.attrs.get("keepdims", 1)))
    last = bool(int(node.attrs.get("select_last_index", 0)))
    is_max = node.op_type == "ArgMax"

    def run(x: Any, out: Any = None) -> tuple:
        a = axis % len(x.shape)
        shape = list(x.shape)
        shape[a] = 1
        if not keepdims:
            del shape[a]
        res = result(out, shape, np.int64)
        inner = int(np.prod(x.shape[a + 1 :]))
        if res.size:
            k = jit_source(ARG)
            blocks, threads = grid(res.size)
            k[blocks, threads](flat(x), flat(res), res.size, x.shape[a], inner, is_max, last)
        return (res,)

    return writes_out(run)


INSTANCE_NORM = """
def kernel(x, g, b, out, rows, n, C, eps):
    i = cuda.grid(1)
    if i >= rows:
        return
    base = i * n
    c = i % C
    s = float32(0.0)
    for j in range(n):
        s += float32(x[base + j])
    mean = s / n
    v = float32(0.0)
    for j in range(n):
        d = float32(x[base + j]) - mean
        v += d * d
    scale = float32(g[c]) / math.sqrt(v / n + eps)
    shift = float32(b[c])
    for j in range(n):
        out[base + j] = (float32(x[base + j]) - mean) * scale + shift
"""


@kernels.register("InstanceNormalization", since=6)
def instance_norm(node: Node, ctx: CompileContext) -> KernelFn | None:
    """One thread per (n, c): mean and variance over the spatial dims in fp32."""
    eps = np.float32(node.attrs.get("epsilon", 1e-5))

    def run(x: Any, g: Any, b: Any, out: Any = None) -> tuple:
        res = result(out, x.shape, x.dtype)
        C = x.shape[1]
        rows = x.shape[0] * C
        n = x.size // max(rows, 1)
        if rows and n:
            k = jit_source(INSTANCE_NORM)
            blocks, threads = grid(rows)
            k[blocks, threads](flat(x), flat(g), flat(b), flat(res), rows, n, C, eps)
        return (res,)

    return writes_out(run, (0,))  # one thread per row reads each element before writing it
