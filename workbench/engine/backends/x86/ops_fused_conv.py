"""x86 kernels of the fused ops of the `workbench` domain: FusedConv, FusedGemm, FusedMatMul.

The heavy part runs through the plain x86 kernels, built here for a bias-free copy of the
node: Conv through ops_conv (its 1x1, im2col, grouped and depthwise algorithms and packed
weights), Gemm and MatMul through ops_gemm (BLAS with the constant operand prepared once).
Then one numba pass over their fresh output, in place, adds the bias and the residual `Z`
and applies the activation while each element sits in a register: the *epilogue*. The
unfused graph made a pass and a new array for the bias, the Add and the activation each.
FusedConv hands its epilogue to the conv (`post=`), which runs it on each block of the
output right after making it, while the block is still in cache; so does MatMul (each
thread's block of the product); Gemm runs it after the product, its rows split over the
threads when the activation is costly. ops_conv_nhwc.py runs the same epilogue on the
channels-last convolutions.

The epilogue computes in float32 as the plain kernels do, with two exceptions made for
speed: exp is a vectorizable polynomial (libm's is a call per element), and exact Gelu
goes through erfc in float32 in one vectorized pass (`_gelu_erfc`). All stay within a few
float32 ulp of the exact functions. The activations are those of the
`activation` attribute (see passes/fusion/activation.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from llvmlite import ir as llvm_ir
from numba import types
from numba.extending import intrinsic

from ...ir import Node, Value
from ..base import CompileContext
from . import _parallel, autotune
from ._numba import CONTRACT, all_f32, const_input, declines_dtype, njit, u64
from ._table import kernels
from .ops_conv import conv as plain_conv
from .ops_gemm import gemm as plain_gemm
from .ops_gemm import matmul as plain_matmul

if TYPE_CHECKING:
    from ..base import KernelFn

# activation name -> (its code in the epilogue, default parameters)
ACTIVATIONS: dict[str, tuple[int, tuple[float, ...]]] = {
    "": (0, ()),
    "Relu": (1, ()),
    "LeakyRelu": (2, (0.01,)),
    "Clip": (3, (-math.inf, math.inf)),
    "Sigmoid": (4, ()),
    "HardSigmoid": (5, (0.2, 0.5)),
    "HardSwish": (6, ()),
    "SiLU": (7, ()),
    "Gelu": (8, ()),
    "GeluTanh": (9, ()),
}
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")

# numba folds module-level numpy scalars into the code as float32 constants; Python floats
# would turn the float32 arithmetic below into float64
_ZERO, _ONE, _HALF = np.float32(0.0), np.float32(1.0), np.float32(0.5)
_INF = np.float32(np.inf)
_SIXTH = np.float32(1.0 / 6.0)  # HardSwish's alpha, as the x86 HardSwish kernel uses it
_GELU_A = np.float32(0.044715)
_GELU_2C = np.float32(2.0 * math.sqrt(2.0 / math.pi))
_TWO = np.float32(2.0)
_SQRT_HALF = np.float32(math.sqrt(0.5))

# exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 (ln 2 split in two so k ln 2 is
# exact), exp(r) by Cephes' expf polynomial, 2^k as two float32 powers of two made from
# their bits (one would overflow at k = 128 and could not reach subnormal results): within
# 2 float32 ulp of exp, checked against float64 exp at 2M points in [-87, 88]. libm's expf
# is a call LLVM cannot vectorize without SVML; this is plain arithmetic, and vectorizes.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_EXP_P = [np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                  4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)]  # fmt: skip
_P0, _P1, _P2, _P3, _P4, _P5 = _EXP_P
# beyond these exp is inf (float32 max is e^88.7228) or below the smallest subnormal
_EXP_HI, _EXP_LO = np.float32(88.72284), np.float32(-103.97282)


@intrinsic
def _f32_from_bits(typingctx, bits):  # pragma: no cover - compiled
    """The float32 whose bit pattern is the int32 `bits` (2^k from k + 127 << 23)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always")
def _pow2(k):  # pragma: no cover - compiled
    """2^k for -126 <= k <= 127: the exponent field alone."""
    return _f32_from_bits((k + np.int32(127)) << np.int32(23))


@intrinsic
def _bits_of_f32(typingctx, x):  # pragma: no cover - compiled
    """The int32 bit pattern of the float32 `x`."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.IntType(32))

    return types.int32(types.float32), codegen


@njit(inline="always")
def _exp(x):  # pragma: no cover - compiled
    return _exp_split(x, _ZERO)


@njit(inline="always")
def _exp_split(hi, lo):  # pragma: no cover - compiled
    """exp(hi + lo) for a small `lo`, hi's digits kept whole in the reduction r = hi + lo -
    k ln 2: hi - k ln2_hi is exact, so an argument whose own float32 rounding would cost
    ulps (a rounded -x^2/2 of 50 is off by up to 2e-6, and exp's relative error is that)
    can come in two parts. `_exp(x)` is `_exp_split(x, 0)`: the same operations as before."""
    x = hi + lo
    big, tiny = x > _EXP_HI, x < _EXP_LO
    x = _EXP_HI if big else x  # (k in range: the result is replaced below anyway)
    x = _EXP_LO if tiny else x
    k = np.floor(x * _LOG2E + _HALF)
    r = (hi - k * _LN2_HI) + lo - k * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    k1 = np.int32(k) >> np.int32(1)
    k2 = np.int32(k) - k1
    e = (p * r * r + r + _ONE) * _pow2(k1) * _pow2(k2)
    e = _INF if big else e
    return _ZERO if tiny else e


# erfc(a) = t exp(-a^2 + R(t)), t = 1 / (1 + a/2), for 0 <= a <= 10.1 (beyond, float32
# erfc is 0): R is the degree-9 least-squares Chebyshev fit of log(erfc(a) / t) + a^2 in t
# on [1/6.05, 1] (from math.erfc at 2000 Chebyshev nodes; its largest error 5e-8, converted
# to powers of t, rounded to float32). The form of Numerical Recipes' erfcc, fitted anew.
_R = (-1.2654505, 0.9986839, 0.38620144, 0.0366987, -0.0048869164)
_R += (-0.06871341, -0.7102144, 1.1672064, -0.6852698, 0.14574456)
_R0, _R1, _R2, _R3, _R4, _R5, _R6, _R7, _R8, _R9 = (np.float32(c) for c in _R)
_ERFC_A_MAX = np.float32(10.1)
_GELU_X_MAX = np.float32(14.5)  # |x| / sqrt 2 past _ERFC_A_MAX: clamped, and finite
_HIGH_12 = np.int32(-4096)  # keeps a float32's sign, exponent and first 12 significand bits


@njit(inline="always")
def _gelu_erfc(x):  # pragma: no cover - compiled
    """Exact Gelu x/2 (1 + erf(x / sqrt 2)) = x/2 erfc(-x / sqrt 2), in float32.

    With a = |x| / sqrt 2 and E = erfc(a): 1 + erf = E for x < 0 and 2 - E above, so
    neither side cancels (1 + erf(-3 / sqrt 2) would lose 9 bits to the sum). -a^2 = -x^2/2
    is passed to exp in two parts: xh (x's first 12 bits) squares exactly, the rest is
    small. Within 6 float32 ulp of the float64 formula on [-15, 15] (measured at 600k
    points); NaN stays NaN and +-inf give inf and NaN, as x/2 erfc(-x / sqrt 2) does."""
    ax = abs(x)
    ax = _GELU_X_MAX if ax > _GELU_X_MAX else ax
    a = ax * _SQRT_HALF
    a = _ERFC_A_MAX if a > _ERFC_A_MAX else a
    t = _ONE / (_ONE + _HALF * a)
    r = (((_R9 * t + _R8) * t + _R7) * t + _R6) * t + _R5
    r = ((((r * t + _R4) * t + _R3) * t + _R2) * t + _R1) * t + _R0
    xh = _f32_from_bits(_bits_of_f32(ax) & _HIGH_12)
    xl = ax - xh  # exact; x^2 = xh^2 + xl (2 xh + xl), the first term exact in float32
    e = t * _exp_split(-_HALF * xh * xh, r - _HALF * xl * (xh + xh + xl))
    return _HALF * x * (e if x < _ZERO else _TWO - e)


# -- the epilogue -------------------------------------------------------------------------------
# One loop per activation, each simple enough for LLVM to vectorize; with one loop holding
# a branch on the activation LLVM kept the branch inside and vectorized nothing (3-20x
# slower). Each runs over one row of the output (one channel of one image, or one GEMM
# row) right after the bias and the residual were added to it, while it is still in cache.
@njit(inline="always")
def _activate(y, lo, hi, act, p0, p1):  # pragma: no cover - compiled
    """y[lo:hi] = act(y[lo:hi]) in place."""
    if act == 1:  # Relu (a NaN stays NaN)
        for i in range(lo, hi):
            v = y[u64(i)]
            y[u64(i)] = _ZERO if v < _ZERO else v
    elif act == 2:  # LeakyRelu(alpha=p0)
        for i in range(lo, hi):
            v = y[u64(i)]
            y[u64(i)] = v if v >= _ZERO else v * p0
    elif act == 3:  # Clip(min=p0, max=p1); min > max gives max everywhere, as numpy's clip
        for i in range(lo, hi):
            v = y[u64(i)]
            v = p0 if v < p0 else v
            y[u64(i)] = p1 if v > p1 else v
    elif act == 4:  # Sigmoid
        for i in range(lo, hi):
            y[u64(i)] = _ONE / (_ONE + _exp(-y[u64(i)]))
    elif act == 5:  # HardSigmoid(alpha=p0, beta=p1)
        for i in range(lo, hi):
            h = y[u64(i)] * p0 + p1
            h = _ZERO if h < _ZERO else h
            y[u64(i)] = _ONE if h > _ONE else h
    elif act == 6:  # HardSwish: x * HardSigmoid(x; 1/6, 1/2)
        for i in range(lo, hi):
            v = y[u64(i)]
            h = v * _SIXTH + _HALF
            h = _ZERO if h < _ZERO else h
            y[u64(i)] = v * (_ONE if h > _ONE else h)
    elif act == 7:  # SiLU: x * Sigmoid(x)
        for i in range(lo, hi):
            v = y[u64(i)]
            y[u64(i)] = v * (_ONE / (_ONE + _exp(-v)))
    elif act == 8:  # exact Gelu: x/2 (1 + erf(x / sqrt 2))
        for i in range(lo, hi):
            y[u64(i)] = _gelu_erfc(y[u64(i)])
    elif act == 9:  # tanh Gelu: x/2 (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi)(x + 0.044715x^3)
        for i in range(lo, hi):
            v = y[u64(i)]
            u2 = (v * v * _GELU_A + _ONE) * v * _GELU_2C
            y[u64(i)] = v / (_ONE + _exp(-u2))


@njit(fastmath=CONTRACT)
def _epilogue_channels(y, b, z, nb, nc, p, act, p0, p1):  # pragma: no cover - compiled
    """y[n, c, q] = act(y[n, c, q] + b[c] + z[n, c, q]) in place, for y of shape
    (nb, nc, p) flat; an empty z means no residual."""
    has_z = z.size > 0
    for n in range(nb):
        for c in range(nc):
            bv = b[c]
            base = (n * nc + c) * p
            if has_z:
                for q in range(p):
                    i = u64(base + q)
                    y[i] = y[i] + bv + z[i]
            else:
                for q in range(p):
                    i = u64(base + q)
                    y[i] = y[i] + bv
            _activate(y, base, base + p, act, p0, p1)


@njit(fastmath=CONTRACT)
def _epilogue_rows(y, b, z, rows, cols, act, p0, p1):  # pragma: no cover - compiled
    """y[r, c] = act(y[r, c] + b[c] + z[r, c]) in place, for y of shape (rows, cols) flat;
    an empty z means no residual."""
    has_z = z.size > 0
    for r in range(rows):
        base = r * cols
        if has_z:
            for c in range(cols):
                i = u64(base + c)
                y[i] = y[i] + b[c] + z[i]
        else:
            for c in range(cols):
                i = u64(base + c)
                y[i] = y[i] + b[c]
        _activate(y, base, base + cols, act, p0, p1)


@njit(fastmath=CONTRACT)
def _epilogue_tile(y, b, z, cols, r0, r1, c0, c1, act, p0, p1):  # pragma: no cover - compiled
    """y[r, c] = act(y[r, c] + b[c] + z[r, c]) in place for rows r0..r1-1 and columns
    c0..c1-1 of y and z, flat (rows, cols); an empty z means no residual. One part's block
    of a FusedMatMul or of a channels-last conv (rows: pixels, columns: channels)."""
    has_z = z.size > 0
    for r in range(r0, r1):
        base = r * cols
        if has_z:
            for c in range(c0, c1):
                y[u64(base + c)] += b[u64(c)] + z[u64(base + c)]
        else:
            for c in range(c0, c1):
                y[u64(base + c)] += b[u64(c)]
        _activate(y, base + c0, base + c1, act, p0, p1)


@njit(fastmath=CONTRACT)
def _epilogue_block(y, b, z, p, c0, c1, q0, q1, act, p0, p1):  # pragma: no cover - compiled
    """y[c, q] = act(y[c, q] + b[c] + z[c, q]) in place for channels c0..c1-1 and positions
    q0..q1-1 of one image (y, z flat (channels, p)); an empty z means no residual."""
    has_z = z.size > 0
    for c in range(c0, c1):
        bv = b[c]
        base = c * p
        if has_z:
            for q in range(base + q0, base + q1):
                y[u64(q)] = y[u64(q)] + bv + z[u64(q)]
        else:
            for q in range(base + q0, base + q1):
                y[u64(q)] = y[u64(q)] + bv
        _activate(y, base + q0, base + q1, act, p0, p1)


# The epilogue split over the threads (see _parallel.py): by channels of each image, or by
# rows. A handoff costs ~20 us: a part is worth one from ~16k elements of an activation
# with exp or erf (~1-5 ns each), but only from ~256k of an add or a clamp (~0.2 ns each,
# bound by memory, which two threads share).
_COSTLY = (4, 7, 8, 9)


def _grain(act: int) -> int:
    return 1 << 14 if act in _COSTLY else 1 << 18


def epilogue_channels(y, b, z, nb, nc, p, act, p0, p1) -> None:
    """`_epilogue_channels` with the channels split over the threads."""
    has_z = z.size > 0

    def part(lo: int, hi: int) -> None:
        for n in range(nb):
            a, e = (n * nc + lo) * p, (n * nc + hi) * p
            _epilogue_channels(y[a:e], b[lo:hi], z[a:e] if has_z else z, 1, hi - lo, p, act, p0, p1)

    _parallel.for_ranges(part, nc, max(1, _grain(act) // max(1, p * nb)))


def epilogue_rows(y, b, z, rows, cols, act, p0, p1) -> None:
    """`_epilogue_rows` with the rows split over the threads."""
    has_z = z.size > 0

    def part(lo: int, hi: int) -> None:
        a, e = lo * cols, hi * cols
        _epilogue_rows(y[a:e], b, z[a:e] if has_z else z, hi - lo, cols, act, p0, p1)

    _parallel.for_ranges(part, rows, max(1, _grain(act) // max(1, cols)))


# -- helpers of the factories ------------------------------------------------------------------
_EMPTY = np.empty(0, np.float32)


class Epilogue:
    """A product's fused epilogue as data: o2[r, c] = act(o2[r, c] + bias[c] + z[r, c]) on
    a block of o2 (rows, cols), z flat of o2's size or empty. Called as a `post(o2, r0, r1,
    c0, c1)` of ops_gemm it runs `_epilogue_tile`; being data, the compiled parts of
    _native.py run it too, with no Python between a block's product and its epilogue."""

    __slots__ = ("act", "bias", "p0", "p1", "z")

    def __init__(self, bias: np.ndarray, z: np.ndarray, act: tuple) -> None:
        self.bias, self.z = bias, z
        self.act, self.p0, self.p1 = act

    def __call__(self, o2: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> None:
        _epilogue_tile(
            o2.reshape(-1), self.bias, self.z, o2.shape[1], r0, r1, c0, c1,
            self.act, self.p0, self.p1,
        )  # fmt: skip


class ImageEpilogue(Epilogue):
    """A FusedConv's epilogue as data: y[n, c, q] = act(y[n, c, q] + bias[c] + z[n, c, q])
    on a block of image n of the output y (N, M, ...), z (N, M*positions) or empty. Called
    as ops_conv's `post(y, n, c0, c1, q0, q1)` (channels c0..c1-1, positions q0..q1-1)."""

    __slots__ = ()

    def image_z(self, n: int) -> np.ndarray:
        return self.z if self.z.size == 0 else self.z[n]

    def __call__(self, y, n, c0, c1, q0, q1) -> None:  # type: ignore[override]
        m = self.bias.size
        p = y.size // (y.shape[0] * m)
        yn = y.reshape(y.shape[0], -1)[n]
        _epilogue_block(
            yn, self.bias, self.image_z(n), p, c0, c1, q0, q1, self.act, self.p0, self.p1
        )


def activation_of(node: Node) -> tuple[int, np.float32, np.float32] | None:
    """(code, p0, p1) of the node's activation, or None when the attributes are not ones
    the epilogue knows (the reference kernel then says what is wrong)."""
    name = node.attrs.get("activation", "")
    if isinstance(name, bytes):
        name = name.decode()
    if name not in ACTIVATIONS:
        return None
    code, defaults = ACTIVATIONS[name]
    params = [float(p) for p in node.attrs.get("activation_params", defaults)]
    if len(params) != len(defaults):
        return None
    params += [0.0, 0.0]
    return code, np.float32(params[0]), np.float32(params[1])


def _plain(op_type: str, node: Node, n_inputs: int, attrs: dict, ctx: CompileContext):
    """The plain x86 kernel for `op_type` on the node's first inputs. The copies of the
    input values keep the fused node's graph out of it (a Node registers itself as a use)."""
    ins = [None if v is None else v.detached() for v in node.inputs[:n_inputs]]
    plain = Node(op_type, ins, [Value(node.outputs[0].name)], attrs, name=node.name)
    opset = ctx.opsets.get("", 17)
    return {"Conv": plain_conv, "Gemm": plain_gemm, "MatMul": plain_matmul}[op_type](
        plain, CompileContext(ctx.backend, opset, ctx.precision, ctx.opsets, ctx.functions)
    )


def _call(plain, out, *args, **kwargs) -> tuple:
    """The plain kernel, writing into the memory planner's buffer when one is given (the
    fused kernel says `writes_out` only when the plain one does; see backends/base.py):
    the epilogue then works in that buffer in place."""
    if out is None or out[0] is None:
        return plain(*args, **kwargs)
    return plain(*args, out=out, **kwargs)


def _plain_residual(z: np.ndarray | None, shape: tuple | None) -> bool:
    """Whether the residual Z (if any) can be read in blocks as it is: a contiguous,
    writeable float32 array of the output's static `shape` (else the conv runs first and
    the whole-output epilogue broadcasts Z)."""
    if z is None:
        return True
    ok = z.dtype == np.float32 and z.flags.c_contiguous and z.flags.writeable
    return ok and shape is not None and z.shape == shape


def _owned(y: np.ndarray) -> np.ndarray:
    """The plain kernels return fresh C-contiguous arrays; anything else is copied before
    the epilogue writes into it (a float64 one too: the epilogue computes in float32)."""
    if y.flags.c_contiguous and y.flags.writeable and y.dtype == np.float32:
        return y
    return np.array(y, dtype=np.float32, order="C")


def _finish(y: np.ndarray, res: np.ndarray, out) -> np.ndarray:
    """The epilogue's result in the plain kernel's dtype, in the given buffer if any."""
    if y is res:
        return y
    y = y.astype(res.dtype, copy=False)
    if out is not None and out[0] is not None:
        np.copyto(out[0], y)
        return out[0]
    return y


# numba compiles one version of the epilogue per set of array types, and a read-only array
# (a memory-mapped weight, a broadcast view) is a type of its own: b and z are always
# handed over writeable, so one compiled version serves every call.
def _full(a: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`a` broadcast to `shape` as a flat float32 array (empty when absent)."""
    if a is None:
        return _EMPTY
    if a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable:
        return a.reshape(-1)
    try:
        return np.array(np.broadcast_to(a, shape), dtype=np.float32).reshape(-1)
    except ValueError:
        raise ValueError(
            f"{what} of shape {list(a.shape)} does not broadcast to {list(shape)}"
        ) from None


def _vector(a: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """A per-channel (or per-column) vector of length n, zeros when absent (a copy)."""
    if a is None:
        return np.zeros(n, np.float32)
    if a.size not in (1, n) or any(d != 1 for d in a.shape[:-1]):
        raise ValueError(f"{what} of shape {list(a.shape)} is not a vector of {n} values")
    return np.array(np.broadcast_to(a.reshape(-1), (n,)), dtype=np.float32)


def _declines(node: Node, *positions: int) -> bool:
    return any(declines_dtype(node, i) for i in positions)


# -- the kernels ----------------------------------------------------------------------------------
@kernels.register("FusedConv", domain="workbench", since=1)
def fused_conv(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Y = act(Conv(X, W) + B + Z): the x86 Conv without its bias, then the epilogue."""
    act = activation_of(node)
    if act is None or _declines(node, 0, 1, 2, 3):
        return None
    attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRS}
    conv = _plain("Conv", node, 2, attrs, ctx)
    if conv is None:
        return None
    b_const = const_input(node, 2)
    bias = None if b_const is None else np.array(b_const.reshape(-1), dtype=np.float32)
    shape = node.outputs[0].shape
    static = shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)
    out_shape = tuple(shape) if static else None

    def run(x, w, b=None, z=None, out=None):
        m = w.shape[0]
        if getattr(conv, "takes_post", False) and all_f32(x, w) and _plain_residual(z, out_shape):
            # the epilogue on each block of the output as soon as the conv has made it,
            # while the block is still in cache (one pass over memory instead of two)
            bv = bias if bias is not None and bias.size == m else _vector(b, m, "FusedConv B")
            zz = _EMPTY if z is None else z.reshape(z.shape[0], -1)
            (res,) = _call(conv, out, x, w, post=ImageEpilogue(bv, zz, act))
            return (res,)
        (res,) = _call(conv, out, x, w)
        y = _owned(res)
        m = y.shape[1]
        bv = bias if bias is not None and bias.size == m else _vector(b, m, "FusedConv bias B")
        zz = _full(z, y.shape, "FusedConv residual Z")
        per_channel = y.size // max(1, y.shape[0] * m)  # output pixels
        epilogue_channels(y.reshape(-1), bv, zz, y.shape[0], m, per_channel, *act)
        return (_finish(y, res, out),)

    run.algorithm = f"{getattr(conv, 'algorithm', 'default')}+epilogue"
    run.writes_out = getattr(conv, "writes_out", False)
    _relay(conv, run)
    return run


def _relay(plain: KernelFn, run: KernelFn) -> None:
    """The plain kernel's algorithm selection, shown on the fused kernel too."""
    if hasattr(plain, "listeners"):
        autotune.relay(plain, run, "+epilogue")


@kernels.register("FusedGemm", domain="workbench", since=1)
def fused_gemm(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Y = act(alpha A'B' + beta C): the x86 Gemm without C, then the epilogue (a C that
    is one row is the epilogue's bias; any other shape its residual)."""
    act = activation_of(node)
    if act is None or _declines(node, 0, 1, 2):
        return None
    attrs = {k: v for k, v in node.attrs.items() if k in ("alpha", "transA", "transB")}
    gemm = _plain("Gemm", node, 2, attrs, ctx)
    if gemm is None:
        return None
    beta = float(node.attrs.get("beta", 1.0))
    c_const = const_input(node, 2)
    row_bias = None  # a constant C of one row, scaled by beta once
    if c_const is not None and c_const.ndim <= 2 and (c_const.ndim < 2 or c_const.shape[0] == 1):
        row_bias = np.array(c_const * np.float32(beta), dtype=np.float32).reshape(-1)

    def run(a, b, c=None, out=None):
        (res,) = _call(gemm, out, a, b)
        y = _owned(res)
        rows, cols = y.shape
        zz = _EMPTY
        if c is None or beta == 0.0:
            bv = np.zeros(cols, np.float32)
        elif row_bias is not None:
            bv = row_bias if row_bias.size == cols else _vector(row_bias, cols, "FusedGemm C")
        elif c.ndim < 2 or c.shape[0] == 1:
            bv = _vector(c * np.float32(beta), cols, "FusedGemm C")
        else:
            bv = np.zeros(cols, np.float32)
            zz = _full(c * np.float32(beta), y.shape, "FusedGemm C")
        epilogue_rows(y.reshape(-1), bv, zz, rows, cols, *act)
        return (_finish(y, res, out),)

    run.algorithm = f"{getattr(gemm, 'algorithm', 'gemm')}+epilogue"
    run.writes_out = getattr(gemm, "writes_out", False)
    run.baked = getattr(gemm, "baked", ())
    _relay(gemm, run)
    return run


@kernels.register("FusedMatMul", domain="workbench", since=1)
def fused_matmul(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Y = act(MatMul(A, B) + Bias), Bias along the last dim: the x86 MatMul, then the
    epilogue over the output as rows of its last dim."""
    act = activation_of(node)
    if act is None or _declines(node, 0, 1, 2):
        return None
    matmul = _plain("MatMul", node, 2, {}, ctx)
    if matmul is None:
        return None
    b_const = const_input(node, 2)
    bias = None if b_const is None else np.array(b_const.reshape(-1), dtype=np.float32)

    def run(a, b, bias_in=None, out=None):
        given = bias if bias is not None else bias_in
        if getattr(matmul, "takes_post", False) and a.ndim >= 2 and all_f32(a, b):
            # the epilogue on each part's block as soon as its product is done, on the
            # same thread, while the block is in that core's cache (no second pass)
            post = Epilogue(_bias_vector(given, b.shape[-1]), _EMPTY, act)
            return _call(matmul, out, a, b, post=post)
        (res,) = _call(matmul, out, a, b)
        y = _owned(res)
        cols = y.shape[-1] if y.ndim else 1
        bv = _bias_vector(given, cols)
        epilogue_rows(y.reshape(-1), bv, _EMPTY, y.size // max(1, cols), cols, *act)
        return (_finish(y, res, out),)

    def bind(a, b, bias_in=None, out=None):
        if a.ndim < 2 or not all_f32(a, b):
            return None
        given = bias if bias is not None else bias_in
        post = Epilogue(_bias_vector(given, b.shape[-1]), _EMPTY, act)
        if given is bias_in and given is not None and post.bias is not given:
            return None  # (a bias given at run time, copied per call)
        return matmul.bind(a, b, out=out, post=post)

    run.algorithm = f"{getattr(matmul, 'algorithm', 'default')}+epilogue"
    run.writes_out = getattr(matmul, "writes_out", False)
    run.baked = getattr(matmul, "baked", ())  # (B: its shape and dtype are read, not data)
    if getattr(matmul, "takes_post", False):
        run.bind = bind
    _relay(matmul, run)
    return run


def _bias_vector(given: np.ndarray | None, cols: int) -> np.ndarray:
    """FusedMatMul's Bias as the epilogue reads it: float32, writeable, one per column."""
    ready = given is not None and given.size == cols and given.ndim <= 1
    if ready and given.dtype == np.float32 and given.flags.writeable:
        return given
    return _vector(given, cols, "FusedMatMul Bias")
