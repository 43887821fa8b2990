"""Elementwise x86 kernels: arithmetic, comparisons, logic, variadic Min/Max/Sum/Mean,
Identity and inference-mode Dropout; also the small helpers the other x86 op modules share.

Everything here is a numpy ufunc with ONNX's multidirectional (numpy-style) broadcasting.
float32 stays float32 (python scalars are weak under NEP 50, numpy scalars are made in the
input's dtype); other standard numpy dtypes are computed generically in their own dtype.
Dtypes numpy only emulates (bfloat16, float8, int4, strings...) are declined so the
reference backend runs them. The kernels write into the arena's buffers when given
(`out=`, see backends/base.py); the arithmetic ones may overwrite a dying input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import deliver, dest
from ._numba import const_input, has_input, input_dtype
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

# -- helpers the other ops_*.py modules share (besides those in _numba.py) ---------------------

FLOATS = "f"
NUMBERS = "iuf"
ANY_STD = "biuf"  # the numpy-native kinds whose arithmetic matches ONNX exactly


def dtypes_ok(node: Node, kinds: str = ANY_STD, idx: Sequence[int] | None = None) -> bool:
    """Whether every known input dtype (at positions `idx`, default all) is a numpy-native
    dtype of one of `kinds`; unknown dtypes are trusted (the common case is float32)."""
    positions = range(len(node.inputs)) if idx is None else idx
    for i in positions:
        dt = input_dtype(node, i)
        if dt is None:
            continue
        # ml_dtypes types (bfloat16, float8, int4...) report kind "V", but check the
        # module too in case one ever claims "f" or "i"
        if dt.kind not in kinds or not dt.type.__module__.startswith("numpy"):
            return False
    return True


def as_array(x: Any) -> np.ndarray:
    """ufuncs on 0-d arrays return numpy scalars; kernels must return arrays."""
    return x if type(x) is np.ndarray else np.asarray(x)


def ints_of(a: Any) -> list[int]:
    """A 1-D int list from an attribute list or a tensor."""
    return [int(v) for v in np.asarray(a).reshape(-1)]


# -- binary arithmetic ------------------------------------------------------------------------


def _legacy_broadcast(node: Node, ctx: CompileContext) -> int | bool | None:
    """Opset <7 `broadcast`/`axis`: returns the axis B aligns to (an int), None for plain
    numpy broadcasting, or False when the node cannot be handled."""
    if ctx.opset >= 7 or not node.attrs.get("broadcast", 0):
        return None
    axis = node.attrs.get("axis")
    if axis is None:
        return None  # suffix alignment == numpy broadcasting
    return int(axis) if int(axis) >= 0 else False


def _with_axis(fn: Callable, axis: int) -> KernelFn:
    """B's dims line up with A's starting at `axis`: pad B's shape with trailing ones."""

    def run(a, b, o=None):
        tail = a.ndim - axis - b.ndim
        if tail > 0:
            b = b.reshape(b.shape + (1,) * tail)
        return fn(a, b, o)

    return run


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero (C semantics), exact for all int64."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.floor_divide(a, b)
        if a.dtype.kind == "i":
            r = np.remainder(a, b)
            q += ((r != 0) & ((a < 0) != (b < 0))).astype(q.dtype)
    return q


def _pow(a: np.ndarray, b: np.ndarray, o: np.ndarray | None = None) -> np.ndarray:
    """Pow's output has the base's dtype. A float32 base takes the exponent as float32
    (no float64 detour); other floats compute in the promoted dtype and round back."""
    if a.dtype == np.float32:
        with np.errstate(all="ignore"):
            return as_array(np.power(a, b.astype(np.float32, copy=False), out=o))
    if a.dtype.kind == "f":
        with np.errstate(all="ignore"):
            return deliver(o, as_array(np.power(a, b).astype(a.dtype, copy=False)))
    if b.dtype.kind == "f":
        with np.errstate(all="ignore"):
            return deliver(o, as_array(np.power(a.astype(np.float64), b).astype(a.dtype)))
    return as_array(np.power(a, b.astype(a.dtype, copy=False), out=o))


@kernels.register(["Add", "Sub", "Mul", "Div", "Pow"], since=1)
def binary(node: Node, ctx: CompileContext) -> KernelFn | None:
    op = node.op_type
    if not dtypes_ok(node, NUMBERS):
        return None
    legacy = _legacy_broadcast(node, ctx)
    if legacy is False:
        return None
    a_dt = input_dtype(node, 0)
    if op == "Pow":
        fn: Callable = _pow
        b = const_input(node, 1)
        if b is not None and b.size == 1 and (a_dt is None or a_dt.kind == "f"):
            e = float(b.reshape(-1)[0])
            if e == 2.0:
                # x**2 is the common case (variance in LayerNorm decompositions)

                def fn(a, b, o=None):
                    if a.dtype.kind != "f" or b.ndim > a.ndim:
                        return _pow(a, b, o)
                    return as_array(np.multiply(a, a, out=o))

            elif e == 0.5:

                def fn(a, b, o=None):
                    if a.dtype.kind != "f" or b.ndim > a.ndim:
                        return _pow(a, b, o)
                    with np.errstate(invalid="ignore"):
                        return as_array(np.sqrt(a, out=o))

    elif op == "Div":
        if a_dt is not None and a_dt.kind in "iu":

            def fn(a, b, o=None):
                return deliver(o, as_array(_int_div(a, b)))

        else:

            def fn(a, b, o=None):
                if a.dtype.kind in "iu":  # (the quotient needs a, b after it is written)
                    return deliver(o, as_array(_int_div(a, b)))
                with np.errstate(divide="ignore", invalid="ignore"):
                    return as_array(np.divide(a, b, out=o))

    else:
        ufunc = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op]

        def fn(a, b, o=None):
            return as_array(ufunc(a, b, out=o))

    run = _binary_run(fn, legacy)
    run.inplace = (0,) if op == "Pow" else (0, 1)  # elementwise: each element read first
    return run


def _binary_run(fn: Callable, legacy_axis: int | None) -> KernelFn:
    """`fn(a, b, o)` writes into `o` when one is given (else allocates)."""
    if legacy_axis is not None:
        fn = _with_axis(fn, legacy_axis)

    def run(a, b, out=None):
        return (fn(a, b, dest(out)),)

    run.writes_out = True
    return run


# -- unary math -------------------------------------------------------------------------------

_UNARY = {
    "Sqrt": (np.sqrt, FLOATS),
    "Exp": (np.exp, FLOATS),
    "Log": (np.log, FLOATS),
    "Neg": (np.negative, "if"),
    "Abs": (np.absolute, NUMBERS),
    "Reciprocal": (np.reciprocal, FLOATS),
}


@kernels.register(list(_UNARY), since=1)
def unary(node: Node, ctx: CompileContext) -> KernelFn | None:
    ufunc, kinds = _UNARY[node.op_type]
    if not dtypes_ok(node, kinds):
        return None

    def run(x, out=None):
        # log(0), sqrt(-1), exp overflow: inf/nan by IEEE rules, as ONNX expects; no warnings
        with np.errstate(all="ignore"):
            return (as_array(ufunc(x, out=dest(out))),)

    run.writes_out, run.inplace = True, (0,)
    return run


# -- comparisons and logic ---------------------------------------------------------------------

_COMPARE = {
    "Equal": np.equal,
    "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal,
    "Less": np.less,
    "LessOrEqual": np.less_equal,
}
_LOGIC = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}


@kernels.register(list(_COMPARE), since=1)
def compare(node: Node, ctx: CompileContext) -> KernelFn | None:
    # Equal on strings (object arrays) needs an explicit bool result
    kinds = ANY_STD + ("O" if node.op_type == "Equal" else "")
    legacy = _legacy_broadcast(node, ctx)
    if not dtypes_ok(node, kinds) or legacy is False:
        return None
    ufunc = _COMPARE[node.op_type]

    def fn(a, b, o=None):
        if a.dtype.kind == "O":
            return deliver(o, as_array(ufunc(a, b, dtype=bool)))
        return as_array(ufunc(a, b, out=o))

    return _binary_run(fn, legacy)


@kernels.register(list(_LOGIC), since=1)
def logic(node: Node, ctx: CompileContext) -> KernelFn | None:
    legacy = _legacy_broadcast(node, ctx)
    if not dtypes_ok(node, "b") or legacy is False:
        return None
    ufunc = _LOGIC[node.op_type]

    def fn(a, b, o=None):
        return as_array(ufunc(a, b, out=o))

    return _binary_run(fn, legacy)


@kernels.register("Not", since=1)
def logical_not(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, "b"):
        return None

    def run(x, out=None):
        return (as_array(np.logical_not(x, out=dest(out))),)

    run.writes_out, run.inplace = True, (0,)
    return run


@kernels.register("Where", since=9)
def where(node: Node, ctx: CompileContext) -> KernelFn | None:
    if not dtypes_ok(node, "b", [0]) or not dtypes_ok(node, ANY_STD + "O", [1, 2]):
        return None

    def run(cond, x, y, out=None):
        o = dest(out)
        if o is None:
            return (as_array(np.where(cond, x, y)),)
        np.copyto(o, y)  # broadcast y, then x where cond holds: np.where's result
        np.copyto(o, x, where=cond)
        return (o,)

    run.writes_out = True
    return run


# -- variadic ---------------------------------------------------------------------------------


@kernels.register(["Min", "Max", "Sum", "Mean"], since=1)
def variadic(node: Node, ctx: CompileContext) -> KernelFn | None:
    op = node.op_type
    if not dtypes_ok(node, NUMBERS if op in ("Min", "Max") else FLOATS):
        return None
    ufunc = {"Min": np.minimum, "Max": np.maximum, "Sum": np.add, "Mean": np.add}[op]
    mean = op == "Mean"

    def run(*xs):
        if len(xs) == 1:
            return (xs[0].copy(),)
        acc = as_array(ufunc(xs[0], xs[1]))
        for x in xs[2:]:
            if acc.shape == np.broadcast_shapes(acc.shape, x.shape):
                ufunc(acc, x, out=acc)  # acc is ours: reuse it
            else:
                acc = ufunc(acc, x)
        if mean:
            acc /= acc.dtype.type(len(xs))
        return (as_array(acc),)

    return run


# -- pass-through -----------------------------------------------------------------------------


@kernels.register("Identity", since=1)
def identity(node: Node, ctx: CompileContext) -> KernelFn | None:
    # also sequences and optionals: passed through as they are
    def run(x):
        return (x,)

    return run


@kernels.register("Dropout", since=1)
def dropout(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Inference: the input itself, and a mask of ones when the node asks for one.

    Opset 12+ takes `training_mode` as an input; anything but a constant false could mean
    training (random masks): declined for the reference backend.
    """
    # (before opset 7, is_test=0 asked for training: an inference engine runs it as a test)
    if has_input(node, 2):
        t = const_input(node, 2)
        if t is None or bool(np.asarray(t).reshape(-1)[0]):
            return None
    want_mask = len(node.outputs) > 1 and bool(node.outputs[1].name)

    if not want_mask:

        def run(x, *_):
            return (x,)

        return run

    def run_mask(x, *_):
        return (x, np.ones(x.shape, dtype=bool))

    return run_mask
