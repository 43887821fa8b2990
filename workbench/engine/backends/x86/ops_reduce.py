"""Reduction x86 kernels: ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSumExp and
ArgMax/ArgMin.

`axes` is an attribute before opset 18 (ReduceSum: 13) and an optional input after, with
`noop_with_empty_axes` saying whether no axes means "all" or "none". Each reduction is
one numpy call in the input's dtype (float16 accumulates in float32). Reducing over an
empty set gives the op's identity: 0, 1, -inf/+inf (or the integer extremes), and -inf
for LogSumExp. With axes known at compile time, ReduceSum/Mean/Max/Min write straight
into the arena's buffer when the executor passes `out=` (see backends/base.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from math import prod
from typing import TYPE_CHECKING

import numpy as np

from ..base import deliver, dest, returning
from ._numba import const_input, has_input, njit, u64
from ._table import kernels
from .ops_elementwise import ANY_STD, NUMBERS, as_array, dtypes_ok, ints_of

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

_REDUCE = (
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
)


def normalize_axes(axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    """Sorted, unique, non-negative axes; out of range raises."""
    out = set()
    for a in axes:
        a = int(a)
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a rank-{ndim} tensor")
        out.add(a + ndim if a < 0 else a)
    return tuple(sorted(out))


def _acc_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dt == np.float16 else dt


def _extreme(dt: np.dtype, top: bool):
    """The identity of max (top=False: the lowest value) or of min (top=True)."""
    if dt.kind == "b":
        return bool(top)
    if dt.kind == "f":
        return np.inf if top else -np.inf
    info = np.iinfo(dt)
    return info.max if top else info.min


def _empty(x: np.ndarray, axes: tuple[int, ...] | None) -> bool:
    if x.size:
        return False
    dims = range(x.ndim) if axes is None else axes
    return any(x.shape[a] == 0 for a in dims)


def _reduce_fn(op: str):
    """f(x, axes or None for all, keepdims) -> the reduction, in x's dtype."""

    def summed_as_is(x) -> bool:  # (float16 is summed in float32: numpy's own way)
        return x.dtype.kind == "f" and x.dtype == _acc_dtype(x.dtype) and x.size > 0

    def r_sum(x, ax, kd):
        if summed_as_is(x):
            return _sum_into(x, ax, kd, None)
        return np.sum(x, axis=ax, keepdims=kd, dtype=_acc_dtype(x.dtype))

    def r_mean(x, ax, kd):
        if summed_as_is(x):
            return _sum_into(x, ax, kd, None, mean=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.mean(x, axis=ax, keepdims=kd, dtype=_acc_dtype(x.dtype))

    def r_max(x, ax, kd):
        if _empty(x, ax):
            return np.max(x, axis=ax, keepdims=kd, initial=_extreme(x.dtype, False))
        return np.max(x, axis=ax, keepdims=kd)

    def r_min(x, ax, kd):
        if _empty(x, ax):
            return np.min(x, axis=ax, keepdims=kd, initial=_extreme(x.dtype, True))
        return np.min(x, axis=ax, keepdims=kd)

    def r_prod(x, ax, kd):
        return np.prod(x, axis=ax, keepdims=kd, dtype=_acc_dtype(x.dtype))

    def r_l1(x, ax, kd):
        return np.sum(np.abs(x), axis=ax, keepdims=kd, dtype=_acc_dtype(x.dtype))

    def r_sumsq(x, ax, kd):
        return np.sum(np.square(x), axis=ax, keepdims=kd, dtype=_acc_dtype(x.dtype))

    def r_l2(x, ax, kd):
        s = r_sumsq(x, ax, kd)
        return np.sqrt(s) if s.dtype.kind == "f" else np.sqrt(s.astype(np.float64))

    def r_lse(x, ax, kd):
        w = x.astype(np.float32) if x.dtype == np.float16 else x
        m = r_max(w, ax, True)
        m = np.where(np.isfinite(m), m, 0).astype(w.dtype, copy=False)
        with np.errstate(divide="ignore"):
            y = np.log(np.sum(np.exp(w - m), axis=ax, keepdims=True)) + m
        if not kd:
            y = y.reshape([d for i, d in enumerate(y.shape) if ax is not None and i not in ax])
        return y

    return {
        "ReduceSum": r_sum,
        "ReduceMean": r_mean,
        "ReduceMax": r_max,
        "ReduceMin": r_min,
        "ReduceProd": r_prod,
        "ReduceL1": r_l1,
        "ReduceL2": r_l2,
        "ReduceSumSquare": r_sumsq,
        "ReduceLogSumExp": r_lse,
    }[op]


@kernels.register(list(_REDUCE), since=1)
def reduce(node: Node, ctx: CompileContext) -> KernelFn | None:
    op = node.op_type
    kinds = ANY_STD if op in ("ReduceMax", "ReduceMin") else NUMBERS
    if not dtypes_ok(node, kinds, [0]):
        return None
    keepdims = bool(node.attrs.get("keepdims", 1))
    axes_from_input = ctx.opset >= (13 if op == "ReduceSum" else 18)
    noop = axes_from_input and bool(node.attrs.get("noop_with_empty_axes", 0))
    fn = _reduce_fn(op)
    if axes_from_input:
        runtime_axes = has_input(node, 1) and const_input(node, 1) is None
        fixed = ints_of(const_input(node, 1)) if const_input(node, 1) is not None else []
    else:
        runtime_axes = False
        fixed = [int(a) for a in node.attrs.get("axes") or []]

    direct = _DIRECT.get(op)

    def run(x, axes=None, out=None):
        given = ints_of(axes) if runtime_axes and axes is not None else fixed
        o = dest(out)
        if not given:
            if noop:
                return (deliver(o, x.copy()),)
            ax = None
        else:
            ax = normalize_axes(given, x.ndim)
        if o is not None and direct is not None and x.size and _acc_dtype(x.dtype) == x.dtype:
            return (direct(x, ax, keepdims, o),)
        y = fn(x, ax, keepdims)
        return (deliver(o, as_array(y).astype(x.dtype, copy=False)),)

    def bind(x, axes=None, out=None):
        # (a global average pool's mean over (H, W): its checks, views and scale worked
        # out once; in MobileNetV2 and ResNet-50 the call took 57-59 us a run, its kernel
        # 17-22 of them, the rest numpy's checks run with their code cold after the convs)
        o = dest(out)
        if o is None or runtime_axes or op not in ("ReduceSum", "ReduceMean") or not fixed:
            return None
        call = _sum_call(x, normalize_axes(fixed, x.ndim), o, op == "ReduceMean")
        return None if call is None else returning(call, (o,))

    # the output shape must not come from a runtime tensor's values (see base.py)
    run.writes_out = not runtime_axes
    run.bind = bind
    return run


def _sum_call(
    x: np.ndarray, ax: tuple[int, ...], o: np.ndarray, mean: bool
) -> Callable[[], object] | None:
    """`_sum_into(x, ax, ..., o, mean)` as a call of no arguments where `_sum_middle`
    does it (adjacent axes of a contiguous float x, o contiguous of its dtype, values
    after the axes); None elsewhere."""
    block = _block(x, ax)
    if block is None or x.dtype.kind != "f" or _acc_dtype(x.dtype) != x.dtype or not x.size:
        return None
    if o.dtype != x.dtype or block[2] == 1:
        return None
    if not o.flags.c_contiguous or o.size != block[0] * block[2]:
        return None
    scale = x.dtype.type(1.0 / block[1] if mean else 1.0)
    return partial(_sum_middle, x.reshape(-1), *block, o.reshape(-1), scale)


def _block(x: np.ndarray, ax: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """(before, reduced, after): x's sizes around its axes `ax` where these are adjacent
    and x is C-contiguous, so that x is (before, reduced, after) with no copy."""
    if ax is None or not ax or not x.flags.c_contiguous or ax[-1] - ax[0] != len(ax) - 1:
        return None
    shape = x.shape
    return prod(shape[: ax[0]]), prod(shape[ax[0] : ax[-1] + 1]), prod(shape[ax[-1] + 1 :])


def _sum_into(x: np.ndarray, ax, kd: bool, o: np.ndarray | None, mean: bool = False) -> np.ndarray:
    """ReduceSum (ReduceMean) of x into o (a new array where None). Over adjacent axes of
    a contiguous float x, x is (before, reduced, after) and `_sum_middle` adds its rows of
    `after` values with vector adds. (The global average pool of opt level 3, a mean over
    a channels-last image's (H, W): np.mean took 39 us for ResNet-50's 7x7x2048 and one
    add.reduce 26, hot; in the model, with numpy's reduction code cold after the convs,
    add.reduce took 112-160 us on MobileNetV2's 7x7x1280.)"""
    if o is None and _block(x, ax) is not None:
        kept = [1 if i in ax else d for i, d in enumerate(x.shape)]
        o = np.empty(kept if kd else [d for i, d in enumerate(x.shape) if i not in ax], x.dtype)
    call = None if o is None else _sum_call(x, ax, o, mean)
    if call is None:
        if mean:
            return np.mean(x, axis=ax, keepdims=kd, dtype=x.dtype, out=o)
        return np.sum(x, axis=ax, keepdims=kd, dtype=x.dtype, out=o)
    call()
    return o


@njit
def _sum_middle(x, nb, nr, na, y, scale):  # pragma: no cover - compiled
    """y (nb, na) = scale * x (nb, nr, na) summed over its middle axis, both flat: row
    after row added in order, each row one vector loop."""
    for i in range(nb):
        src, dst = i * nr * na, i * na
        for k in range(na):
            y[u64(dst + k)] = x[u64(src + k)]
        for j in range(1, nr):
            row = src + j * na
            for k in range(na):
                y[u64(dst + k)] += x[u64(row + k)]
        if scale != 1.0:
            for k in range(na):
                y[u64(dst + k)] *= scale


# reductions numpy can write into a given array (in the input's own dtype, as `fn` does)
_DIRECT = {
    "ReduceSum": _sum_into,
    "ReduceMean": lambda x, ax, kd, o: _sum_into(x, ax, kd, o, mean=True),
    "ReduceMax": lambda x, ax, kd, o: np.max(x, axis=ax, keepdims=kd, out=o),
    "ReduceMin": lambda x, ax, kd, o: np.min(x, axis=ax, keepdims=kd, out=o),
}


@kernels.register(["ArgMax", "ArgMin"], since=1)
def arg_extreme(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Index of the first (or, with select_last_index, the last) extreme along `axis`."""
    if not dtypes_ok(node, ANY_STD):
        return None
    axis_attr = int(node.attrs.get("axis", 0))
    keepdims = bool(node.attrs.get("keepdims", 1))
    last = bool(node.attrs.get("select_last_index", 0))
    pick = np.argmax if node.op_type == "ArgMax" else np.argmin

    def run(x):
        axis = axis_attr + x.ndim if axis_attr < 0 else axis_attr
        if last:
            i = pick(np.flip(x, axis), axis=axis, keepdims=keepdims)
            i = (x.shape[axis] - 1) - i
        else:
            i = pick(x, axis=axis, keepdims=keepdims)
        return (as_array(i).astype(np.int64, copy=False),)

    return run
