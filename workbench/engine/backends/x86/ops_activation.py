"""Activation x86 kernels: Relu and its relatives, Clip, Sigmoid/Tanh, the hard variants,
Erf and Gelu, Softmax/LogSoftmax, Elu, Selu, Softplus and Mish.

Most are a few numpy ufunc passes with `out=` into one buffer: a fresh one, or the
arena's when the executor passes `out=` (see backends/base.py; `run.inplace` marks those
that read each element before writing it, so the buffer may be their input's). Erf and exact Gelu
use numba, as numpy has no erf: float32 Erf is a vectorizable polynomial within one
float32 ulp (see `_E`); float64 Erf and Gelu call libm's double erf/erfc per element.
Softmax stays in numpy on purpose: its cost is the exponentials, numpy's are SIMD and
numba's (without SVML) are scalar; a one-pass numba row kernel measured 2-3x slower than
the four numpy passes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..base import deliver, dest
from ._numba import CONTRACT, const_input, njit
from ._table import kernels
from .ops_elementwise import FLOATS, NUMBERS, as_array, dtypes_ok

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

_NUMBA_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# -- numba kernels ----------------------------------------------------------------------------


# erf(x) = x P(t), t = x^2 / 8 - 1, for |x| <= 4; P is the degree-18 Chebyshev interpolant
# of erf(x)/x as a function of x^2 on [0, 16] (computed from math.erf, converted to powers
# of t; the coefficients stay below 0.36, so Horner in float64 is well conditioned). Its
# relative error is below 4e-10 on [0, 4]: checked against math.erf at every float32 in
# [0, 4], the float32 results are the correctly rounded ones or one ulp off at a rounding
# tie (error < 0.5 ulp + 4e-10). Past 4, float32 erf is 1.0: clamping x there gives it.
_E = (
    0.3535309956434049,
    -0.17657623580039228,
    0.13167511777582963,
    -0.10771029288641266,
    0.09020894134279632,
    -0.07473048679705468,
    0.05988782958300683,
    -0.04574431267502724,
    0.033053291696067265,
    -0.022562558293108114,
    0.014381038744396328,
    -0.008384044276092753,
    0.0047749462205666495,
    -0.0029097129559724944,
    0.0014101528932398749,
    -0.00032551962727953547,
    0.0001732295034487736,
    -0.0002464220145300619,
    9.403816578637098e-05,
)
# numba folds module-level floats into the code; a tuple indexed in a loop it does not
_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9 = _E[:10]
_E10, _E11, _E12, _E13, _E14, _E15, _E16, _E17, _E18 = _E[10:]


@njit(fastmath=CONTRACT)
def _erf_f32(x, out):  # pragma: no cover - compiled
    """out = erf(x) for float32 x: the polynomial above, branch-free so LLVM vectorizes
    it (several times faster than libm's erf per element)."""
    for i in range(x.size):
        v = np.float64(x[i])
        a = math.fabs(v)
        a = 4.0 if a > 4.0 else a  # (NaN stays NaN)
        t = a * a * 0.125 - 1.0
        p = ((_E18 * t + _E17) * t + _E16) * t + _E15
        p = ((p * t + _E14) * t + _E13) * t + _E12
        p = ((p * t + _E11) * t + _E10) * t + _E9
        p = ((p * t + _E8) * t + _E7) * t + _E6
        p = ((p * t + _E5) * t + _E4) * t + _E3
        p = ((p * t + _E2) * t + _E1) * t + _E0
        out[i] = math.copysign(a * p, v)


@njit
def _erf_loop(x, out, gelu):  # pragma: no cover - compiled
    """out = erf(x) (float64 x), or exact Gelu x/2 erfc(-x / sqrt 2), with libm's erf/erfc.

    Gelu goes through erfc, not 1 + erf, which would cancel to nothing for x << 0."""
    for i in range(x.size):
        v = float(x[i])
        if gelu:
            out[i] = 0.5 * v * math.erfc(-v * 0.7071067811865476)
        else:
            out[i] = math.erf(v)


def _lift0(run: KernelFn, inplace: tuple[int, ...] = ()) -> KernelFn:
    """Run a 0-d input as shape (1,): ufuncs on 0-d arrays return scalars, which `out=`
    cannot take; the kernels below can then always write in place. `run(x, o)` writes into
    `o` when given; the result takes `out=` (see backends/base.py)."""

    def wrapped(x, out=None):
        o = dest(out)
        if x.ndim == 0:
            y = run(x.reshape(1), None if o is None else o.reshape(1))
            return (o if o is not None else y.reshape(()),)
        return (run(x, o),)

    wrapped.writes_out, wrapped.inplace = True, inplace
    return wrapped


# -- Relu family ------------------------------------------------------------------------------


@kernels.register("Relu", since=1)
def relu(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, "if"):
        return None

    def run(x, out=None):
        return (as_array(np.maximum(x, x.dtype.type(0), out=dest(out))),)

    run.writes_out, run.inplace = True, (0,)
    return run


@kernels.register("LeakyRelu", since=1)
def leaky_relu(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, FLOATS):
        return None
    alpha = float(node.attrs.get("alpha", 0.01))
    # for alpha <= 1, max(x, alpha x) is x for x > 0 and alpha x below: one buffer, two passes
    pick = np.maximum if alpha <= 1.0 else np.minimum

    def run(x, o):
        y = np.multiply(x, alpha, out=o)
        pick(x, y, out=y)
        return y

    return _lift0(run)


@kernels.register("PRelu", since=1)
def prelu(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, NUMBERS):
        return None

    def run(x, slope, out=None):
        o = dest(out)
        if o is not None and o.shape != x.shape:
            o = None  # slope widens the result: computed fresh, then copied
        y = np.multiply(x, slope, out=o)
        if y.shape == x.shape and y.dtype == x.dtype and y.ndim:
            np.copyto(y, x, where=x >= 0)
            return (deliver(dest(out), y) if o is None else y,)
        y = as_array(np.where(x < 0, y, x).astype(x.dtype, copy=False))
        return (deliver(dest(out), y),)

    run.writes_out = True
    return run


@kernels.register("Clip", since=1)
def clip(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Clip: min/max attributes before opset 11, optional scalar inputs from 11 on.

    When min > max every value becomes max (numpy's clip order gives exactly that)."""
    if not dtypes_ok(node, NUMBERS):
        return None
    if ctx.opset < 11:
        lo = node.attrs.get("min")
        hi = node.attrs.get("max")
        bounds = (None if lo is None else float(lo), None if hi is None else float(hi))

        def run_attrs(x, out=None):
            return (_clip(x, *bounds, dest(out)),)

        run_attrs.writes_out, run_attrs.inplace = True, (0,)
        return run_attrs
    lo_c, hi_c = const_input(node, 1), const_input(node, 2)
    lo_fixed, hi_fixed = _scalar(lo_c), _scalar(hi_c)

    def run(x, lo=None, hi=None, out=None):
        a = lo_fixed if lo_c is not None else _scalar(lo)
        b = hi_fixed if hi_c is not None else _scalar(hi)
        return (_clip(x, a, b, dest(out)),)

    run.writes_out, run.inplace = True, (0,)
    return run


def _scalar(a: np.ndarray | None):
    """A bound given as a tensor (scalar or [1]); empty or absent means no bound."""
    return None if a is None or a.size == 0 else a.reshape(-1)[0]


def _clip(x: np.ndarray, lo, hi, o: np.ndarray | None = None) -> np.ndarray:
    if lo is None and hi is None:
        return deliver(o, x) if o is not None else x.copy()
    # bounds in x's own dtype: a float64 scalar would promote a float32 result
    lo = None if lo is None else x.dtype.type(lo)
    hi = None if hi is None else x.dtype.type(hi)
    return as_array(np.clip(x, lo, hi, out=o))


# -- smooth activations ------------------------------------------------------------------------


@kernels.register("Sigmoid", since=1)
def sigmoid(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, FLOATS):
        return None

    def run(x, o):
        y = np.negative(x, out=o)
        with np.errstate(over="ignore"):  # exp(-x) -> inf gives the right 0
            np.exp(y, out=y)
        y += 1
        np.reciprocal(y, out=y)
        return y

    return _lift0(run, inplace=(0,))


@kernels.register("Tanh", since=1)
def tanh(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, FLOATS):
        return None

    def run(x, out=None):
        return (as_array(np.tanh(x, out=dest(out))),)

    run.writes_out, run.inplace = True, (0,)
    return run


@kernels.register(["HardSigmoid", "HardSwish"], since=1)
def hard_sigmoid(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, FLOATS):
        return None
    swish = node.op_type == "HardSwish"
    alpha = 1.0 / 6.0 if swish else float(node.attrs.get("alpha", 0.2))
    beta = 0.5 if swish else float(node.attrs.get("beta", 0.5))

    def run(x, o):
        y = np.multiply(x, alpha, out=o)
        y += beta
        np.clip(y, 0, 1, out=y)
        if swish:  # (reads x again: not in place)
            y *= x
        return y

    return _lift0(run, inplace=() if swish else (0,))


@kernels.register("Erf", since=9)
def erf(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, FLOATS):
        return None
    return _erf_kernel(gelu=False)


@kernels.register("Gelu", since=20)
def gelu(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, FLOATS):
        return None
    approximate = node.attrs.get("approximate", "none")
    if approximate == "none":
        return _erf_kernel(gelu=True)
    if approximate != "tanh":
        return None
    c = math.sqrt(2.0 / math.pi)

    def run(x, o):
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        y = np.multiply(x, x, out=o)
        y *= 0.044715
        y += 1
        y *= x
        y *= c
        np.tanh(y, out=y)
        y += 1
        y *= x
        y *= 0.5
        return y

    return _lift0(run)


def _erf_kernel(gelu: bool) -> KernelFn:
    def run(x, out=None):
        work = x if x.dtype in _NUMBA_FLOATS else x.astype(np.float32)
        if not work.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-d)
            work = work.copy()
        o = dest(out)
        y = o if o is not None and o.dtype == work.dtype else np.empty_like(work)
        if work.dtype == np.float32 and not gelu:
            _erf_f32(work.reshape(-1), y.reshape(-1))
        else:
            _erf_loop(work.reshape(-1), y.reshape(-1), gelu)
        return (y if y is o else deliver(o, y.astype(x.dtype, copy=False)),)

    # not in place: LLVM's runtime alias check sends overlapping arrays down the scalar
    # loop, which made an in-place Erf 2.4x slower than one into a separate buffer
    run.writes_out = True
    return run


@kernels.register(["Elu", "Selu"], since=1)
def elu(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Elu and Selu: max(x, 0) + alpha expm1(min(x, 0)), Selu scaled by gamma."""
    if not dtypes_ok(node, FLOATS):
        return None
    if node.op_type == "Selu":
        alpha = float(node.attrs.get("alpha", 1.67326319217681884765625))
        gamma = float(node.attrs.get("gamma", 1.05070102214813232421875))
    else:
        alpha, gamma = float(node.attrs.get("alpha", 1.0)), 1.0

    def run(x, o):
        y = np.minimum(x, 0, out=o)
        neg = np.expm1(y)
        neg *= alpha
        np.maximum(x, 0, out=y)
        y += neg
        if gamma != 1.0:
            y *= gamma
        return y

    return _lift0(run)


@kernels.register(["Softplus", "Mish"], since=1)
def softplus(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, FLOATS):
        return None
    mish = node.op_type == "Mish"

    def run(x, o):
        # log(1 + exp(x)) without the overflow for large x
        y = np.logaddexp(x, 0, out=o)
        if mish:  # (reads x again: not in place)
            np.tanh(y, out=y)
            y *= x
        return y

    return _lift0(run, inplace=() if mish else (0,))


# -- Softmax ----------------------------------------------------------------------------------


@kernels.register(["Softmax", "LogSoftmax"], since=1)
def softmax(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Before opset 13 the input is coerced to 2-D at `axis` (default 1) and each row is
    normalized; from 13 on it is normalized along `axis` (default -1) alone."""
    if not dtypes_ok(node, FLOATS):
        return None
    log = node.op_type == "LogSoftmax"
    coerce = ctx.opset < 13
    axis_attr = int(node.attrs.get("axis", 1 if coerce else -1))

    def run(x, out=None):
        o = dest(out)
        if x.size == 0 or x.ndim == 0:
            return (deliver(o, np.full(x.shape, 0.0 if log else 1.0, dtype=x.dtype)),)
        axis = axis_attr + x.ndim if axis_attr < 0 else axis_attr
        if coerce:  # rows of the 2-D view: one reduction over its last axis
            x2 = x.reshape(math.prod(x.shape[:axis]), -1)
            o2 = None if o is None else o.reshape(x2.shape)
            y = _softmax_numpy(x2, 1, log, o2)
            return (y.reshape(x.shape) if o is None else o,)
        return (_softmax_numpy(x, axis, log, o),)

    # x is read by the max and the subtraction, before anything is written
    run.writes_out, run.inplace = True, (0,)
    return run


def _softmax_numpy(x: np.ndarray, axis: int, log: bool, out: np.ndarray | None = None):
    """Max-shifted, in x's dtype (numpy's sums are pairwise, so float32 sums stay exact
    to a few ulp). float16 follows onnx.reference step by step: ONNX's expected outputs
    (function bodies run in float16) are rounded that way, and float32 lands an ulp off.
    Written into `out` when given (which may be `x` itself)."""
    y = np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    if log and x.dtype != np.float16:
        y -= np.log(np.sum(np.exp(y), axis=axis, keepdims=True))
        return y
    np.exp(y, out=y)
    y /= np.sum(y, axis=axis, keepdims=True)
    if log:
        np.log(y, out=y)
    return y
