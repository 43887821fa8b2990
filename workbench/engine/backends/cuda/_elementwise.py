"""One strided kernel family for every elementwise op: a program of instructions compiled
to one numba.cuda kernel, one thread per output element.

The same generator serves unary and binary ONNX ops (a one-instruction program), the
`workbench.FusedElementwise` programs (intermediates stay in registers), BatchNormalization
(x * scale + shift), and the data movement of Transpose, Slice, Concat and Expand (the
`Identity` program reading or writing with strides and a base offset). Each thread turns
its linear index into coordinates of the output shape and each operand's offset into the
dot product with that operand's element strides (0 where it is broadcast), so numpy
broadcasting is just indexing. Floats are loaded as float32 and computed in float32
registers; the store rounds to the output dtype (float16 storage rounds once per kernel,
which for + - * / is the same result native half arithmetic gives, and more accurate for
exp, tanh, erf: CUDA's own half transcendental functions also go through float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._launch import broadcast_strides, empty, flat, grid, jit_source

Z, ONE = np.float32(0.0), np.float32(1.0)

# op -> (arity, expression over operands {0} {1} {2} and attributes {alpha} ...)
FLOAT_OPS: dict[str, tuple[int, str]] = {
    "Identity": (1, "{0}"),
    "Relu": (1, "max({0}, Z)"),
    "Neg": (1, "-{0}"),
    "Abs": (1, "abs({0})"),
    "Exp": (1, "math.exp({0})"),
    "Log": (1, "math.log({0})"),
    "Sqrt": (1, "math.sqrt({0})"),
    "Reciprocal": (1, "ONE / {0}"),
    "Floor": (1, "math.floor({0})"),
    "Ceil": (1, "math.ceil({0})"),
    "Sin": (1, "math.sin({0})"),
    "Cos": (1, "math.cos({0})"),
    "Tanh": (1, "math.tanh({0})"),
    "Sigmoid": (1, "ONE / (ONE + math.exp(-{0}))"),
    "Erf": (1, "math.erf({0})"),
    "Sign": (1, "(ONE if {0} > Z else (-ONE if {0} < Z else Z))"),
    "Softplus": (1, "(max({0}, Z) + math.log1p(math.exp(-abs({0}))))"),
    "Softsign": (1, "({0} / (ONE + abs({0})))"),
    "HardSwish": (1, "({0} * max(Z, min(ONE, {0} / float32(6.0) + float32(0.5))))"),
    "Mish": (1, "({0} * math.tanh(max({0}, Z) + math.log1p(math.exp(-abs({0})))))"),
    "SiLU": (1, "({0} / (ONE + math.exp(-{0})))"),
    "Gelu": (1, "(float32(0.5) * {0} * (ONE + math.erf({0} * float32(0.7071067811865476))))"),
    "GeluTanh": (
        1,
        "(float32(0.5) * {0} * (ONE + math.tanh(float32(0.7978845608028654) * "
        "({0} + float32(0.044715) * {0} * {0} * {0}))))",
    ),
    "LeakyRelu": (1, "({0} if {0} >= Z else {alpha} * {0})"),
    "ThresholdedRelu": (1, "({0} if {0} > {alpha} else Z)"),
    "Elu": (1, "({0} if {0} >= Z else {alpha} * math.expm1({0}))"),
    "Celu": (1, "(max(Z, {0}) + min(Z, {alpha} * math.expm1({0} / {alpha})))"),
    "Selu": (1, "({gamma} * ({0} if {0} > Z else {alpha} * math.expm1({0})))"),
    "HardSigmoid": (1, "max(Z, min(ONE, {alpha} * {0} + {beta}))"),
    "Add": (2, "({0} + {1})"),
    "Sub": (2, "({0} - {1})"),
    "Mul": (2, "({0} * {1})"),
    "Div": (2, "({0} / {1})"),
    "Pow": (2, "math.pow({0}, {1})"),
    "Max": (2, "max({0}, {1})"),
    "Min": (2, "min({0}, {1})"),
    "PRelu": (2, "({0} if {0} >= Z else {1} * {0})"),
    "Clip": (3, "min(max({0}, {1}), {2})"),
    "Where": (3, "({1} if {0} else {2})"),
    "Cast": (1, "float32({0})"),
}
# ops that also make sense on integers and booleans (no float math)
EXACT_OPS: dict[str, tuple[int, str]] = {
    "Identity": (1, "{0}"),
    "Add": (2, "({0} + {1})"),
    "Sub": (2, "({0} - {1})"),
    "Mul": (2, "({0} * {1})"),
    "Max": (2, "max({0}, {1})"),
    "Min": (2, "min({0}, {1})"),
    "Neg": (1, "-{0}"),
    "Abs": (1, "abs({0})"),
    "Where": (3, "({1} if {0} else {2})"),
    "Equal": (2, "({0} == {1})"),
    "Greater": (2, "({0} > {1})"),
    "GreaterOrEqual": (2, "({0} >= {1})"),
    "Less": (2, "({0} < {1})"),
    "LessOrEqual": (2, "({0} <= {1})"),
    "Not": (1, "(not {0})"),
    "And": (2, "({0} and {1})"),
    "Or": (2, "({0} or {1})"),
    "Xor": (2, "({0} != {1})"),
    "Cast": (1, "{0}"),
}
COMPARE = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor"}


def literal(v: float) -> str:
    v = float(np.float32(v))
    if v != v:
        return "float32(math.nan)"
    if v in (float("inf"), float("-inf")):
        return f"float32({'-' if v < 0 else ''}math.inf)"
    return f"float32({v!r})"


def program_source(
    program: Sequence[tuple[str, Sequence[tuple[str, float]], dict[str, float]]],
    loads: Sequence[str],
    ndim: int,
    exact: bool = False,
) -> str:
    """Source of a kernel running `program` [(op, operands, attrs)]; `loads[k]` is 'f'
    where input k is loaded as float32 and 'r' where it is read raw (ints, bools)."""
    n = len(loads)
    params = "".join(f", x{k}, b{k}, s{k}" for k in range(n))
    lines = [f"def kernel(out, n, shp, ob, os{params}):", "    i = cuda.grid(1)"]
    lines += ["    if i >= n:", "        return", "    r = i", "    po = ob"]
    lines += [f"    p{k} = b{k}" for k in range(n)]
    for d in reversed(range(ndim)):
        lines.append(f"    c = r % shp[{d}]")
        lines.append(f"    r = r // shp[{d}]")
        lines.append(f"    po += c * os[{d}]")
        lines += [f"    p{k} += c * s{k}[{d}]" for k in range(n)]
    for k, kind in enumerate(loads):
        lines.append(f"    v{k} = float32(x{k}[p{k}])" if kind == "f" else f"    v{k} = x{k}[p{k}]")
    table = EXACT_OPS if exact else FLOAT_OPS
    for t, (op, args, attrs) in enumerate(program):
        names = [
            f"v{int(v)}" if kind == "x" else f"t{int(v)}" if kind == "t" else literal(v)
            for kind, v in args
        ]
        _, template = table[op] if op in table else FLOAT_OPS[op]
        fmt = {k: literal(a) for k, a in attrs.items() if k != "to"}
        lines.append(f"    t{t} = {template.format(*names, **fmt)}")
    lines.append(f"    out[po] = t{len(program) - 1}")
    return "\n".join(lines) + "\n"


def run_program(
    program: Sequence[tuple[str, Sequence[tuple[str, float]], dict[str, float]]],
    xs: Sequence[Any],
    out_shape: Sequence[int],
    out_dtype: Any,
    *,
    out: Any = None,
    out_base: int = 0,
    out_strides: Sequence[int] | None = None,
    in_strides: Sequence[Sequence[int]] | None = None,
    in_bases: Sequence[int] | None = None,
    exact: bool = False,
) -> Any:
    """Launch `program` over `out_shape`: inputs broadcast to it (or read with the given
    strides and base offsets), the result written into `out` (a fresh contiguous array by
    default, or a flat array written at `out_base` + coordinates . `out_strides`)."""
    shape = tuple(int(d) for d in out_shape) or (1,)
    result = empty(out_shape, out_dtype) if out is None else out
    n = int(np.prod(shape))
    if n == 0:
        return result
    loads = ["f" if np.dtype(x.dtype).kind == "f" and not exact else "r" for x in xs]
    kernel = jit_source(program_source(program, loads, len(shape), exact), Z=Z, ONE=ONE)
    args: list[Any] = []
    for k, x in enumerate(xs):
        s = in_strides[k] if in_strides else broadcast_strides(x.shape, shape)
        args += [flat(x), int(in_bases[k]) if in_bases else 0, tuple(int(v) for v in s)]
    o_str = tuple(out_strides) if out_strides is not None else broadcast_strides(shape, shape)
    blocks, threads = grid(n)
    kernel[blocks, threads](flat(result), n, shape, int(out_base), o_str, *args)
    return result


def copy_strided(
    x: Any, shape: Sequence[int], in_strides: Sequence[int], base: int = 0, out: Any = None
) -> Any:
    """A contiguous array of `shape` (`out`, or a fresh one) read from `x` at base +
    coordinates . strides (Transpose, Slice, Expand, Tile...)."""
    ident = [("Identity", (("x", 0),), {})]
    return run_program(
        ident, [x], shape, x.dtype, out=out, in_strides=[in_strides], in_bases=[base], exact=True
    )
