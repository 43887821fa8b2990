"""x86 `workbench.FusedConvNHWC`: the channels-last convolutions of opt level 3.

The channels_last pass (passes/layout/channels_last.py) moves chains of depthwise and 1x1
convolutions (any convolutions, with MKL) to NHWC; this module computes them there, with
no transpose of its own:

- depthwise (one input and one output channel per group, 2-D): `_depthwise_hwc` of
  depthwise_nhwc.py, each output pixel a run of C contiguous values and each tap one
  vector multiply-add per 8 channels; output rows split over the threads, each part's
  rows finished by the fused epilogue (residual, activation) while in cache.
- 1x1, stride 1, no padding, one group: the GEMM pixels x C by C x M, through the
  MatMul machinery of ops_gemm (algorithm selection, MKL's packed weight, a part per
  thread) with the epilogue (bias, residual, activation) on each part's block. With at
  most 160 outputs selection also measures a direct kernel (pointwise_nhwc.py) that
  holds 8 pixels x 32 outputs in registers, which BLAS does poorly on thin products:
  MobileNetV2's 144 -> 24 at 56x56 (with its residual), two threads, in the model 0.43
  -> 0.17 ms; its kernels in all 7.96 -> 7.52 ms.
- any other conv of one group: its windows gathered channels-last (`_windows_hwc`: each
  tap a run of C values), then the same GEMM machinery by the weight as (kh*kw*C, M).
  With 1-4 input channels (the RGB stem) selection also measures a direct conv with no
  windows (direct_nhwc.py), and for a 3x3 stride-1 conv Winograd F(2, 3) and F(4, 3)
  (winograd.py, whose transforms run channels-last anyway), and keeps the fastest.
  ResNet-50's 3x3 convs, two threads, in the model: 64 channels at 56x56 2.35 -> 1.29 ms
  (F(4, 3)), 128 at 28x28 1.49 -> 1.19; at 14x14 and 7x7 windows + GEMM stay.

Grouped convolutions other than depthwise are declined: the pass never emits them
(see `conv_kind` there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from numba import prange

from ..base import bind_scratch, dest, returning
from . import (
    _native,
    _parallel,
    autotune,
    depthwise_nhwc,
    direct_nhwc,
    pointwise_nhwc,
    winograd,
)
from ._numba import all_f32, const_input, njit, scratch, u64
from ._table import kernels
from .ops_conv import _ConvGeom
from .ops_fused_conv import _EMPTY, Epilogue, _declines, _full, _vector, activation_of
from .ops_gemm import _static_rows, _TunedProduct

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


@kernels.register("FusedConvNHWC", domain="workbench", since=1)
def fused_conv_nhwc(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Y = act(Conv(X, W, B) + Z) with X, Y, Z channels-last (see the module docstring)."""
    from ...passes.layout.channels_last import conv_kind

    act = activation_of(node)
    w = const_input(node, 1)
    if act is None or w is None or w.ndim != 4 or _declines(node, 0, 1, 2, 3):
        return None
    attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRS}
    group = int(attrs.get("group", 1))
    xs = node.inputs[0].shape
    nchw = None if xs is None or len(xs) != 4 else (xs[0], xs[3], xs[1], xs[2])
    kind = conv_kind(tuple(w.shape), nchw, attrs, group)
    b_const = const_input(node, 2)
    bias = None if b_const is None else np.array(b_const.reshape(-1), dtype=np.float32)
    if kind == "pointwise":
        run = _pointwise(node, w, bias, act)
        if w.shape[0] <= pointwise_nhwc.MAX_OUTPUTS:
            run = _among(node, w, run, {"direct_1x1_nhwc": partial(_thin, w, bias, act)})
    elif kind == "depthwise":
        run = _depthwise(w, bias, act, attrs, group)
    elif kind == "im2col":
        run = _im2col(node, w, bias, act, attrs)
        others: dict[str, Callable[[], KernelFn]] = {}
        if w.shape[1] <= direct_nhwc.FEW_CHANNELS:
            others["direct_nhwc"] = partial(_direct, w, bias, act, attrs)
        if winograd.applies(w.shape[2:], _ints(attrs, "strides"), _ints(attrs, "dilations"), 1):
            for m in winograd.TRANSFORMS:
                others[f"winograd_f{m}_nhwc"] = partial(_winograd, w, bias, act, attrs, m)
        if others:
            run = _among(node, w, run, others)
    else:
        return None
    run.writes_out = True
    run.baked = (1,)  # W: each kernel holds its own form (packed, reordered, transformed)
    return run


def _stand_in(w: np.ndarray) -> np.ndarray:
    """W's shape and dtype in no memory: the kernels read their own form of it."""
    return np.broadcast_to(np.zeros((), w.dtype), w.shape)


def _geometry(
    x: np.ndarray, c: int, w_shape: tuple, attrs: dict, group: int, geoms: dict
) -> _ConvGeom:
    """x's conv geometry (one per input shape, kept in `geoms`), once x is checked to be
    float32 [N, H, W, C]."""
    if not all_f32(x) or x.ndim != 4 or x.shape[-1] != c:
        raise ValueError(f"FusedConvNHWC: input {list(x.shape)} is not float32 [N, H, W, {c}]")
    g = geoms.get(x.shape)
    if g is None:
        n, h, wd = x.shape[:3]
        g = geoms.setdefault(x.shape, _ConvGeom((n, c, h, wd), w_shape, attrs, group))
    return g


def _output(out, shape: tuple[int, ...]) -> np.ndarray:
    """The planner's buffer for the output when it is a float32 one of the right size."""
    o = dest(out)
    if (
        o is not None
        and o.dtype == np.float32
        and o.flags.c_contiguous
        and o.size == math.prod(shape)
    ):
        return o.reshape(shape)
    return np.empty(shape, np.float32)


def in_place(y: np.ndarray, out, *pairs: tuple[np.ndarray, np.ndarray | None]) -> bool:
    """Whether a call prepared on y and `pairs` (what it reads, the input it was made from)
    can be bound (backends/base.py): y is the given output buffer, not a fresh one, and
    each input is read in its own memory, not from a copy made now."""
    o = dest(out)
    if o is None or not np.shares_memory(y, o):
        return False
    return all(given is None or np.shares_memory(made, given) for made, given in pairs)


def _pointwise(node: Node, w: np.ndarray, bias: np.ndarray | None, act: tuple) -> KernelFn:
    m, c = w.shape[:2]
    wv = node.inputs[1]

    def bm() -> np.ndarray:  # (C, M) as a view of the weight (BLAS and MKL take it transposed)
        return np.asarray(wv.const, dtype=np.float32).reshape(m, c).T

    def operands(x, b, z, out) -> tuple:
        if not all_f32(x) or x.shape[-1] != c:
            raise ValueError(f"FusedConvNHWC: input {list(x.shape)} is not float32 [N, H, W, {c}]")
        shape = (*x.shape[:-1], m)
        y = _output(out, shape)
        x2 = np.ascontiguousarray(x).reshape(-1, c)
        bv = bias if bias is not None else _vector(b, m, "FusedConvNHWC B")
        post = Epilogue(bv, _full(z, shape, "FusedConvNHWC residual Z"), act)
        return y, x2, post

    def run(x, w_, b=None, z=None, out=None):
        y, x2, post = operands(x, b, z, out)
        product(x2, y.reshape(-1, m), post)
        return (y,)

    def bind(x, w_, b=None, z=None, out=None):
        y, x2, post = operands(x, b, z, out)
        if (bias is None and b is not None) or not in_place(y, out, (x2, x), (post.z, z)):
            return None  # (a bias given at run time is copied per call)
        return returning(product.bind(x2, y.reshape(-1, m), post), (y,))

    run.bind = bind
    run.listeners, run.candidates, run.suffix = [], {}, "_nhwc"
    run.algorithm = "gemm_nhwc"
    run.held = lambda: product.held()  # (what autotune weighs against the other kernels)
    run.streamed = lambda: product.streamed()
    # a weight made when needed (ir.Deferred) is the products' own copy; one the graph
    # holds is read as it is
    product = _TunedProduct(
        "MatMul", bm if wv.const_deferred else bm(), run, (c, m), _measured_with(node, bias, act)
    )
    shape = node.inputs[0].shape
    rows = _static_rows(node) if shape is not None and len(shape) == 4 else None
    if rows is not None:
        product.select(rows)
    return run


def _measured_with(node: Node, bias: np.ndarray | None, act: tuple) -> Callable:
    """rows -> the epilogue the node's products run, for their candidates' measuring: its
    bias (zeros if given at run time), activation and, where it has one, a residual."""
    m = node.inputs[1].const_shape[0]
    bv = np.zeros(m, np.float32) if bias is None else bias
    residual = len(node.inputs) > 3 and node.inputs[3] is not None

    def post(rows: int) -> Epilogue:
        z = np.ones(rows * m, np.float32) if residual else _EMPTY
        return Epilogue(bv, z, act)

    return post


@njit
def _windows_hwc(x, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, r0, r1, col):
    """col[p, (a, e, k)] = x[i*sh - pt + a*dh, j*sw - pl + e*dw, k] for the output pixels
    p = (i, j) of rows r0..r1-1 (0 in the padding): each tap a run of C contiguous values
    (x (h, wd, c) and col (pixels, kh*kw*c) flat, col's rows counted from row 0)."""
    kk = kh * kw * c
    run = kw * c  # a window row inside the image with dw == 1: kw*c contiguous values
    for i in range(r0, r1):
        for j in range(ow):
            dst = (i * ow + j) * kk
            j0 = j * sw - pl
            inside = dw == 1 and j0 >= 0 and j0 + kw <= wd
            for a in range(kh):
                ii = i * sh - pt + a * dh
                if inside and 0 <= ii < h:
                    src = (ii * wd + j0) * c
                    d = dst + a * run
                    for k in range(run):
                        col[u64(d + k)] = x[u64(src + k)]
                    continue
                for e in range(kw):
                    jj = j * sw - pl + e * dw
                    d = dst + (a * kw + e) * c
                    if ii < 0 or ii >= h or jj < 0 or jj >= wd:
                        for k in range(c):
                            col[u64(d + k)] = 0.0
                    else:
                        src = (ii * wd + jj) * c
                        for k in range(c):
                            col[u64(d + k)] = x[u64(src + k)]


@njit(parallel=True)
def _windows_parts(x, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, bounds, col):
    """`_windows_hwc` over the output rows bounds[t]..bounds[t + 1]-1, one part a thread
    of numba's team: the product that follows runs there too, and a part on the Python
    pool waited for the vCPU that numba's threads spin on after the product before it."""
    for t in prange(bounds.size - 1):
        _windows_hwc(x, h, wd, c, kh, kw, sh, sw, dh, dw, pt, pl, ow, bounds[t], bounds[t + 1], col)


def _im2col(
    node: Node, w: np.ndarray, bias: np.ndarray | None, act: tuple, attrs: dict
) -> KernelFn:
    """Any 2-D conv of one group: the windows gathered channels-last into a (pixels,
    kh*kw*C) matrix, then one GEMM by the weight as (kh*kw*C, M), which writes NHWC."""
    (m, c, kh, kw), wshape, wv = w.shape, w.shape, node.inputs[1]

    def bm() -> np.ndarray:  # (made for each selection: kept by the algorithms reading it)
        w = wv.const  # (made again if need be: see ir.Deferred)
        return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)).reshape(-1, m), np.float32)

    geoms: dict[tuple, _ConvGeom] = {}

    def steps(x, b, z, out, bound: bool) -> tuple:
        """(y, x and z as the kernels read them, the calls of no arguments that compute y:
        per image its windows, then its product, `bound` to these arrays or not)."""
        g = _geometry(x, c, wshape, attrs, 1, geoms)
        n = x.shape[0]
        shape, p = (n, g.oh, g.ow, m), g.oh * g.ow
        y = _output(out, shape)
        xf = np.ascontiguousarray(x).reshape(n, -1)
        bv = bias if bias is not None else _vector(b, m, "FusedConvNHWC B")
        zz = _full(z, shape, "FusedConvNHWC residual Z")
        # a bound call takes its arena's (this thread's scratch may be in use by another
        # session's kernel when the bound call runs on another thread)
        if bound:
            col = bind_scratch((p, kh * kw * c))
        else:
            col = scratch((p, kh * kw * c), "FusedConvNHWC windows")
        colf = col.reshape(-1)
        grain = max(1, (1 << 15) // max(1, g.ow * kh * kw * c))
        todo: list[Callable[[], object]] = []
        for i in range(n):
            head = (xf[i], g.h, g.w, c, kh, kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.ow)
            z_i = _EMPTY if zz is _EMPTY else zz.reshape(n, -1)[i]
            args = (col, y[i].reshape(p, m), Epilogue(bv, z_i, act))
            todo.append(_native.rows_call(_windows_hwc, _windows_parts, head, (colf,), g.oh, grain))
            todo.append(product.bind(*args) if bound else partial(product, *args))
        return y, xf, zz, todo

    def run(x, w_, b=None, z=None, out=None):
        y, _, _, todo = steps(x, b, z, out, False)
        for call in todo:
            call()
        return (y,)

    def bind(x, w_, b=None, z=None, out=None):
        y, xf, zz, todo = steps(x, b, z, out, True)
        if (bias is None and b is not None) or not in_place(y, out, (xf, x), (zz, z)):
            return None
        return returning(_each(todo), (y,))

    run.bind = bind
    run.listeners, run.candidates, run.suffix = [], {}, "_im2col_nhwc"
    run.algorithm = "gemm_im2col_nhwc"
    run.held = lambda: product.held()  # (what autotune weighs against the other kernels)
    run.streamed = lambda: product.streamed()
    product = _TunedProduct("MatMul", bm, run, (kh * kw * c, m), _measured_with(node, bias, act))
    ys = node.outputs[0].shape
    if ys is not None and len(ys) == 4 and all(isinstance(d, int) and d > 0 for d in ys[1:3]):
        product.select(ys[1] * ys[2])
    return run


def _depthwise(
    w: np.ndarray, bias: np.ndarray | None, act: tuple, attrs: dict, group: int
) -> KernelFn:
    c, wshape = w.shape[0], w.shape  # (the calls keep its shape; the packed weight is theirs)
    wt = depthwise_nhwc.pack_weight(w).reshape(-1)  # (taps, C): a tap of every channel a row
    zero = np.zeros(c, np.float32)
    geoms: dict[tuple, _ConvGeom] = {}
    made: dict[int, tuple] = {}  # stride -> the repeated weights and constant bias

    def runs_for(sw: int, bv: np.ndarray) -> tuple:
        if bv is not bias:  # a bias given at run time: repeated afresh
            return depthwise_nhwc.runs(wt, bv, sw)
        if sw not in made:
            made[sw] = depthwise_nhwc.runs(wt, bv, sw)
        return made[sw]

    def calls(x, b, z, out) -> tuple:
        """(y, x and z as the kernels read them, one call of no arguments per image)."""
        g = _geometry(x, c, wshape, attrs, group, geoms)
        n, h, wd = x.shape[:3]
        shape = (n, g.oh, g.ow, c)
        y = _output(out, shape)
        xf = np.ascontiguousarray(x).reshape(n, -1)
        yf = y.reshape(n, -1)
        bv = bias if bias is not None else _vector(b, c, "FusedConvNHWC B")
        zz = _full(z, shape, "FusedConvNHWC residual Z")
        zn = None if zz is _EMPTY else zz.reshape(n, -1)
        # a Relu or Clip is done as the kernel stores (no residual to add first)
        clamp = depthwise_nhwc.clamp_of(*act) if zn is None else None
        finish = clamp is None
        repeated = (*runs_for(g.sw, bv), *(clamp or depthwise_nhwc.NO_CLAMP))
        grain = max(1, (1 << 16) // max(1, g.kh * g.kw * g.ow * c))
        per_image = []
        for i in range(n):
            args = (
                xf[i], wt, bv, h, wd, c, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.ow,
                yf[i], *repeated,
            )  # fmt: skip
            z_i = _EMPTY if zn is None else zn[i]
            per_image.append(_native.depthwise_call(args, g.oh, grain, (z_i, zero, *act, finish)))
        return y, xf, zz, per_image

    return _image_by_image(calls, bias, "depthwise_nhwc")


def _direct(w: np.ndarray, bias: np.ndarray | None, act: tuple, attrs: dict) -> KernelFn:
    """A conv of few input channels computed directly, no windows gathered (see
    direct_nhwc.py)."""
    (m, c), wshape = w.shape[:2], w.shape
    wp, mp = direct_nhwc.pack_weight(w)
    bp_const = direct_nhwc.pad_bias(bias, m, mp)
    zero = np.zeros(m, np.float32)
    geoms: dict[tuple, _ConvGeom] = {}
    parts = [1]  # of the last call's rows: each part reads all of wp (run.streamed)

    def calls(x, b, z, out) -> tuple:
        """(y, x and z as the kernel reads them, one call of no arguments per image)."""
        g = _geometry(x, c, wshape, attrs, 1, geoms)
        n, h, wd = x.shape[:3]
        parts[0] = n * len(_parallel.split(g.oh, 1))
        shape = (n, g.oh, g.ow, m)
        y = _output(out, shape)
        xf, yf = np.ascontiguousarray(x).reshape(n, -1), y.reshape(n, -1)
        bp = bp_const if bias is not None else direct_nhwc.pad_bias(_vector(b, m, "B"), m, mp)
        zz = _full(z, shape, "FusedConvNHWC residual Z")
        zn = None if zz is _EMPTY else zz.reshape(n, -1)
        finish = act[0] != 0 or zn is not None
        per_image = []
        for i in range(n):
            args = (xf[i], wp, bp, h, wd, c, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl,
                    g.ow, m, yf[i])  # fmt: skip
            z_i = _EMPTY if zn is None else zn[i]
            per_image.append(direct_nhwc.direct_call(args, g.oh, (z_i, zero, *act, finish)))
        return y, xf, zz, per_image

    run = _image_by_image(calls, bias, "direct_nhwc")
    run.held = lambda: wp.nbytes
    run.streamed = lambda: wp.nbytes * parts[0]
    return run


def _thin(w: np.ndarray, bias: np.ndarray | None, act: tuple) -> KernelFn:
    """A 1x1 conv of few output channels computed directly (pointwise_nhwc.py): every
    image's pixels as one run of rows."""
    m, c = w.shape[:2]
    wp, mp = pointwise_nhwc.pack_weight(w)
    bp_const = pointwise_nhwc.pad_bias(bias, m, mp)
    zero = np.zeros(m, np.float32)
    parts = [1]  # of the last call's pixels: each part reads all of wp (run.streamed)

    def calls(x, b, z, out) -> tuple:
        """(y, x and z as the kernel reads them, [the one call of no arguments])."""
        if not all_f32(x) or x.ndim != 4 or x.shape[-1] != c:
            raise ValueError(f"FusedConvNHWC: input {list(x.shape)} is not float32 [N, H, W, {c}]")
        shape = (*x.shape[:-1], m)
        y = _output(out, shape)
        xf = np.ascontiguousarray(x)
        bp = bp_const if bias is not None else pointwise_nhwc.pad_bias(_vector(b, m, "B"), m, mp)
        zz = _full(z, shape, "FusedConvNHWC residual Z")
        finish = act[0] != 0 or zz is not _EMPTY
        pixels = math.prod(shape[:3])
        parts[0] = len(_parallel.split(pixels, pointwise_nhwc.grain(c, m)))
        args = (xf.reshape(-1), wp, bp, c, m, y.reshape(-1))
        z_flat = zz if zz is _EMPTY else zz.reshape(-1)
        return y, xf, zz, [pointwise_nhwc.call(args, pixels, (z_flat, zero, *act, finish))]

    run = _image_by_image(calls, bias, "direct_1x1_nhwc")
    run.held = lambda: wp.nbytes
    run.streamed = lambda: wp.nbytes * parts[0]
    return run


def _image_by_image(calls: Callable, bias: np.ndarray | None, algorithm: str) -> KernelFn:
    """The kernel (run, and its bind) of `calls(x, b, z, out)` -> (y, x and z as the
    kernels read them, one call of no arguments per image)."""

    def run(x, w_, b=None, z=None, out=None):
        y, _, _, per_image = calls(x, b, z, out)
        for call in per_image:
            call()
        return (y,)

    def bind(x, w_, b=None, z=None, out=None):
        y, xf, zz, per_image = calls(x, b, z, out)
        if (bias is None and b is not None) or not in_place(y, out, (xf, x), (zz, z)):
            return None
        return returning(per_image[0] if len(per_image) == 1 else _each(per_image), (y,))

    run.algorithm, run.bind = algorithm, bind
    return run


def _winograd(w: np.ndarray, bias: np.ndarray | None, act: tuple, attrs: dict, m: int) -> KernelFn:
    """A 3x3 stride-1 conv by Winograd F(m, 3) (winograd.py), channels-last in and out: no
    windows gathered, and no transposes around the transforms (they run channels-last)."""
    (nm, c), wshape = w.shape[:2], w.shape
    u = winograd.pack_weight(w, m)
    zero = np.zeros(nm, np.float32)
    geoms: dict[tuple, _ConvGeom] = {}

    def calls(x, b, z, out) -> tuple:
        """(y, x and z as the kernel reads them, one call of no arguments per image)."""
        g = _geometry(x, c, wshape, attrs, 1, geoms)
        n = x.shape[0]
        shape = (n, g.oh, g.ow, nm)
        y = _output(out, shape)
        xf, yf = np.ascontiguousarray(x), y.reshape(n, -1)
        bv = bias if bias is not None else _vector(b, nm, "FusedConvNHWC B")
        zz = _full(z, shape, "FusedConvNHWC residual Z")
        finish = act[0] != 0 or zz is not _EMPTY
        per_image = []
        for i in range(n):
            # residual and activation on each part's rows (the bias is in the tiles)
            z_i = _EMPTY if zz is _EMPTY else zz.reshape(n, -1)[i]
            call = _native.winograd_call(
                xf[i], u, bv, m, (g.pt, g.pl), (yf[i], nm, g.oh, g.ow), (z_i, zero, *act, finish)
            )
            if call is None:  # (no numba threads or no MKL: the phases on the pool)
                done = None
                if finish:
                    done = partial(
                        _rows_epilogue, Epilogue(zero, z_i, act), y[i].reshape(-1, nm), g.ow
                    )
                out_i = (yf[i], nm, g.oh, g.ow, True)
                call = partial(winograd.image, xf[i], u, bv, m, (g.pt, g.pl), out_i, done)
            per_image.append(call)
        return y, xf, zz, per_image

    run = _image_by_image(calls, bias, f"winograd_f{m}_nhwc")
    # the transformed weights, all of them charged as read (autotune.py: at 7x7 x 512 a
    # thread's share charged let F(2, 3) in, which then took 1.8 ms in the model)
    run.held = run.streamed = lambda: u.nbytes
    return run


def _rows_epilogue(epi: Epilogue, y2: np.ndarray, ow: int, r0: int, r1: int) -> None:
    epi(y2, r0 * ow, r1 * ow, 0, y2.shape[1])


def _ints(attrs: dict, name: str) -> tuple[int, ...]:
    return tuple(int(v) for v in (attrs.get(name) or (1, 1)))


def _among(
    node: Node, w: np.ndarray, im2col: KernelFn, others: dict[str, Callable[[], KernelFn]]
) -> KernelFn:
    """Of the GEMM kernel `im2col` (windows + GEMM, or a 1x1's plain GEMM) and the
    `others` (name -> builder: the direct kernels for few input channels or few outputs,
    Winograd for 3x3 stride 1), the one measured fastest on one image of the node's shapes
    (autotune.select: cached on disk, forced by WORKBENCH_ALGORITHM); the GEMM kernel
    where an image's shape is not known when compiling."""
    s = node.inputs[0].shape
    if s is None or len(s) != 4 or not all(isinstance(d, int) and d > 0 for d in s[1:]):
        return im2col
    attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRS}
    g = _ConvGeom((1, s[3], s[1], s[2]), tuple(w.shape), attrs, 1)
    xs, ys = (1, *s[1:]), (1, g.oh, g.ow, w.shape[0])
    z = node.inputs[3] if len(node.inputs) > 3 else None
    b_given = len(node.inputs) > 2 and node.inputs[2] is not None
    gemm = im2col.algorithm  # the product chosen for these shapes when it was built
    builders = {gemm: lambda: im2col, **others}
    flops = 2.0 * math.prod(ys) * math.prod(w.shape[1:])

    def make_args():
        rng = np.random.default_rng(0)
        x = rng.standard_normal(xs, dtype=np.float32)
        b = None if not b_given else rng.standard_normal(w.shape[0], dtype=np.float32)
        zz = None if z is None else rng.standard_normal(ys, dtype=np.float32)
        return x, _stand_in(w), b, zz, np.empty(ys, np.float32)

    key_attrs = {k: node.attrs.get(k) for k in _CONV_ATTRS}
    key = autotune.cache_key("FusedConvNHWC", [list(xs), list(w.shape), gemm], key_attrs)
    _, run, choice = autotune.select("FusedConvNHWC", key, builders, gemm, make_args, flops)
    autotune.announce(run, choice)
    return run


def _each(calls: list) -> Callable[[], None]:
    def each() -> None:
        for call in calls:
            call()

    return each
