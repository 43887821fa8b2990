"""x86 kernel of `workbench.FusedElementwise`: the whole program in one numba loop.

For each distinct program we write the Python source of a numba function (one pass over
the output; every operand loaded once per element, every intermediate a register), save
it as a module in the cache folder under a hash of its text, and import it, so numba's
`cache=True` finds the machine code again in the next process. Broadcasting is indexing:
the wrapper merges the output's dims where every operand is contiguous (or broadcast)
across them, down to at most four; each operand gets element strides (0 where it is
broadcast) and the innermost loop is specialized to whether it reads the operand
contiguously or as one value (operands are C-contiguous, so after merging an operand's
innermost stride is 1 where it varies and 0 where it is broadcast: nothing else).

Arithmetic is float32, op by op, as the unfused kernels do it. numba without SVML calls
scalar libm for exp and tanh (measured: 18 ms for tanh over gpt2's 393k MLP activations,
where numpy's SIMD tanh takes 0.4 ms), so Exp, Tanh, Sigmoid, Erf, Elu... use the
branch-free float64 polynomials below, which LLVM vectorizes, rounded to float32 (within
two float32 ulp of the exact value: see tests/unit/test_fusion_elementwise.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numba import types
from numba.core.extending import intrinsic

from ...._cache import cache_dir
from ..base import deliver, dest
from ..reference.ops_fused_elementwise import Instr, format_instr, format_literal, parse_program
from ._numba import njit
from ._table import kernels
from .ops_activation import _E
from .ops_elementwise import ANY_STD

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ...ir import Node
    from ..base import CompileContext, KernelFn

MAX_DIMS = 4  # loop nest depth after merging dims; more is materialized first (rare)

# -- vectorizable float64 helpers the generated kernels inline ----------------------------------


@intrinsic
def _f64_from_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 `bits` (2**n without a libm call)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


_LOG2E, _LN2 = 1.4426950408889634, 0.6931471805599453


@njit(inline="always")
def _exp(x):  # pragma: no cover - compiled
    """exp(x) for float64 x, relative error < 1e-8 (enough for a float32 result): x = n ln2
    + r with |r| <= ln2/2, exp(r) by its degree-8 Taylor polynomial, 2**n from the bits.
    Clamped to [-708, 709], where 2**n is a normal float64; NaN passes through."""
    c = min(max(x, -708.0), 709.0)
    n = np.floor(c * _LOG2E + 0.5)
    r = c - n * _LN2
    p = 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    y = p * _f64_from_bits((np.int64(n) + 1023) << 52)
    return y if x == x else x


@njit(inline="always")
def _tanh(x):  # pragma: no cover - compiled
    """tanh from exp(-2|x|); below |x| = 1/16 its Taylor series, where 1 - e cancels."""
    a = min(abs(x), 20.0)  # tanh(20) is 1.0 in float32 and float64
    e = _exp(-2.0 * a)
    t = (1.0 - e) / (1.0 + e)
    x2 = x * x
    small = a * (1.0 + x2 * (-1.0 / 3 + x2 * (2.0 / 15 + x2 * (-17.0 / 315 + x2 * 62.0 / 2835))))
    t = small if a < 0.0625 else t
    t = -t if x < 0 else t
    return t if x == x else x


@njit(inline="always")
def _sigmoid(x):  # pragma: no cover - compiled
    return 1.0 / (1.0 + _exp(-x))


# the erf polynomial of ops_activation (see `_E` there); numba folds these globals in
_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9 = _E[:10]
_E10, _E11, _E12, _E13, _E14, _E15, _E16, _E17, _E18 = _E[10:]


@njit(inline="always")
def _erf(v):  # pragma: no cover - compiled
    a = min(abs(v), 4.0)
    t = a * a * 0.125 - 1.0
    p = ((_E18 * t + _E17) * t + _E16) * t + _E15
    p = ((p * t + _E14) * t + _E13) * t + _E12
    p = ((p * t + _E11) * t + _E10) * t + _E9
    p = ((p * t + _E8) * t + _E7) * t + _E6
    p = ((p * t + _E5) * t + _E4) * t + _E3
    p = ((p * t + _E2) * t + _E1) * t + _E0
    r = a * p
    r = -r if v < 0 else r
    return r if v == v else v


@njit(inline="always")
def _softplus(x):  # pragma: no cover - compiled
    return max(x, 0.0) + np.log1p(_exp(-abs(x)))


# -- code generation ----------------------------------------------------------------------------


def _f64(helper: str) -> str:
    return f"np.float32({helper}(np.float64({{0}})))"


# op -> expression over operand expressions {0}, {1}, {2} (float32 in, float32 out) and the
# op's attributes {alpha}, {beta}, ... as float32 literals
_EXPR: dict[str, str] = {
    "Add": "({0} + {1})",
    "Sub": "({0} - {1})",
    "Mul": "({0} * {1})",
    "Div": "({0} / {1})",
    "Pow": "({0} ** {1})",
    "Max": "np.maximum({0}, {1})",
    "Min": "np.minimum({0}, {1})",
    "Relu": "np.maximum({0}, ZERO)",
    "Neg": "(-{0})",
    "Abs": "abs({0})",
    "Exp": _f64("_exp"),
    "Log": "np.float32(np.log({0}))",
    "Sqrt": "np.float32(np.sqrt({0}))",
    "Reciprocal": "(ONE / {0})",
    "Floor": "np.floor({0})",
    "Ceil": "np.ceil({0})",
    "Sin": "np.float32(np.sin({0}))",
    "Cos": "np.float32(np.cos({0}))",
    "Tanh": _f64("_tanh"),
    "Sigmoid": _f64("_sigmoid"),
    "Erf": _f64("_erf"),
    "Sign": "np.sign({0})",
    "Softplus": _f64("_softplus"),
    "Softsign": "({0} / (ONE + abs({0})))",
    "LeakyRelu": "({0} if {0} >= ZERO else {0} * {alpha})",
    "ThresholdedRelu": "({0} if {0} > {alpha} else ZERO)",
    "Elu": "({0} if {0} >= ZERO else {alpha} * np.float32(_exp(np.float64({0})) - 1.0))",
    "Celu": (
        "(np.maximum({0}, ZERO) + np.minimum(ZERO, {alpha} * "
        "np.float32(_exp(np.float64({0} / {alpha})) - 1.0)))"
    ),
    "Selu": "({gamma} * ({0} if {0} > ZERO else {alpha} * _f32exp({0}) - {alpha}))",
    "HardSigmoid": "np.maximum(ZERO, np.minimum(ONE, {alpha} * {0} + {beta}))",
    "HardSwish": "({0} * np.maximum(ZERO, np.minimum(ONE, {0} * SIXTH + HALF)))",
    "Clip": "np.minimum(np.maximum({0}, {1}), {2})",
    "Where": "({1} if {0} else {2})",
    "Cast": "np.float32({0})",
}

# x ** c for exponents where a product or a square root is exact enough and far cheaper
_POW = {
    1.0: "{0}",
    2.0: "({0} * {0})",
    3.0: "({0} * {0} * {0})",
    4.0: "(({0} * {0}) * ({0} * {0}))",
    0.5: "np.float32(np.sqrt({0}))",
    -1.0: "(ONE / {0})",
    -0.5: "(ONE / np.float32(np.sqrt({0})))",
}

_HEADER = """\
# generated by workbench.engine.backends.x86.ops_fused_elementwise; program:
{comment}
import numba
import numpy as np

from workbench.engine.backends.x86._numba import njit
from workbench.engine.backends.x86.ops_fused_elementwise import (
    _erf, _exp, _sigmoid, _softplus, _tanh,
)

u64 = numba.uint64


@njit(inline="always")
def _f32exp(x):
    return np.float32(_exp(np.float64(x)))


"""


def _f32_literal(value: float) -> str:
    if np.isfinite(value):
        return f"np.float32({float(np.float32(value))!r})"
    return (
        "np.float32(np.nan)" if np.isnan(value) else f"np.float32({'-' if value < 0 else ''}np.inf)"
    )


def literals(program: Sequence[Instr]) -> list[float]:
    """The program's scalar operands, each once, in order of first use: the kernel reads
    them from an array, so programs differing only in constants share machine code."""
    found: dict[str, float] = {}
    for ins in program:
        for kind, v in ins.args:
            if kind == "c":
                found.setdefault(format_literal(v), v)
    return list(found.values())


def kernel_source(program: Sequence[Instr], n_inputs: int, pattern: str) -> str:
    """The numba module for `program` whose input k is read as `pattern[k]` in the inner
    loop: 'c' contiguous, 'b' one value (broadcast)."""
    names = {format_literal(v): f"k{j}" for j, v in enumerate(literals(program))}

    def operand(kind: str, v: float) -> str:
        if kind == "x":
            return f"a{int(v)}"
        if kind == "t":
            return f"t{int(v)}"
        return names[format_literal(v)]

    body = []
    for i, ins in enumerate(program):
        ops = [operand(kind, v) for kind, v in ins.args]
        template = _EXPR[ins.op]
        if ins.op == "Pow" and ins.args[1][0] == "c" and ins.args[1][1] in _POW:
            template = _POW[ins.args[1][1]]
        attrs = {k: _f32_literal(v) for k, v in ins.attrs.items()}
        body.append(f"t{i} = " + template.format(*ops, **attrs))
    args = ", ".join(f"x{k}, s{k}" for k in range(n_inputs))
    ind = " " * 4
    lines = ["@njit", f"def kernel(out, n0, n1, n2, n3, k{', ' + args if args else ''}):"]
    lines += [
        f"{ind}ZERO = np.float32(0.0)",
        f"{ind}ONE = np.float32(1.0)",
        f"{ind}HALF = np.float32(0.5)",
        f"{ind}SIXTH = {_f32_literal(1 / 6)}",
    ]
    lines += [f"{ind}{name} = k[{j}]" for j, name in enumerate(names.values())]
    lines += [
        f"{ind}o = 0",
        f"{ind}for i0 in range(n0):",
        f"{ind * 2}for i1 in range(n1):",
        f"{ind * 3}for i2 in range(n2):",
    ]
    inner = ind * 5
    for k, how in enumerate(pattern):
        lines.append(f"{ind * 4}b{k} = i0 * s{k}[0] + i1 * s{k}[1] + i2 * s{k}[2]")
        if how == "b":
            lines.append(f"{ind * 4}a{k} = x{k}[u64(b{k})]")
    lines.append(f"{ind * 4}for i3 in range(n3):")
    for k, how in enumerate(pattern):
        if how == "c":
            lines.append(f"{inner}a{k} = x{k}[u64(b{k} + i3)]")
    lines += [inner + line for line in body]
    lines += [f"{inner}out[u64(o + i3)] = t{len(program) - 1}", f"{ind * 4}o += n3"]
    comment = "\n".join(
        f"#   {format_instr(i, ins.op, ins.args, ins.attrs)}" for i, ins in enumerate(program)
    )
    return _HEADER.format(comment=comment) + "\n".join(lines) + "\n"


# the generated modules' names carry a hash of this file: editing the helpers above must
# not leave numba serving machine code that inlined the old ones
_SELF_HASH = hashlib.sha256(Path(__file__).read_bytes() + repr(_E).encode()).hexdigest()[:12]
_LOADED: dict[str, Callable] = {}
_LOCK = threading.Lock()


def load_kernel(source: str) -> Callable:
    """Import (writing it first if needed) the cached module holding `source`."""
    digest = hashlib.sha256((_SELF_HASH + source).encode()).hexdigest()[:20]
    with _LOCK:
        fn = _LOADED.get(digest)
        if fn is not None:
            return fn
        path = cache_dir("fused") / f"fused_{digest}.py"
        if not path.exists() or path.read_text() != source:
            # write-then-rename: a process importing concurrently never sees half a file;
            # an unchanged file keeps its mtime, which numba's cache index is keyed on
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_text(source)
            tmp.replace(path)
        name = f"workbench_fused_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # numba's cache re-imports a kernel's module by name when it loads the machine code
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _LOADED[digest] = fn = module.kernel
        return fn


# -- running ------------------------------------------------------------------------------------


def loop_layout(
    shape: tuple[int, ...], operands: Sequence[tuple[int, ...]]
) -> tuple[list[int], list[list[int]]]:
    """Merge the output's dims into as few loops as the operands allow.

    Returns the loop sizes and, per operand (given by its shape: C-contiguous and
    broadcastable to `shape`), its element stride in each loop (0 where it is broadcast).
    Two neighbouring dims merge when every operand steps across the outer one as it does
    across the whole inner one.
    """
    nd = len(shape)
    per_array = []
    for a in operands:
        s, step = [0] * nd, 1
        for ax in range(len(a) - 1, -1, -1):
            if a[ax] != 1:
                s[nd - len(a) + ax] = step
            step *= a[ax]
        per_array.append(s)
    dims: list[int] = []
    strides: list[list[int]] = [[] for _ in operands]
    for ax in range(nd):
        d = shape[ax]
        if d == 1:
            continue
        if dims and all(st[-1] == s[ax] * d for st, s in zip(strides, per_array, strict=True)):
            dims[-1] *= d
            for st, s in zip(strides, per_array, strict=True):
                st[-1] = s[ax]
        else:
            dims.append(d)
            for st, s in zip(strides, per_array, strict=True):
                st.append(s[ax])
    if not dims:
        dims = [1]
        strides = [[0] for _ in operands]
    return dims, strides


@kernels.register("FusedElementwise", domain="workbench", since=1)
def fused_elementwise(node: Node, ctx: CompileContext) -> KernelFn | None:
    program = parse_program(node.attrs.get("program", []), len(node.inputs))
    if any(ins.op not in _EXPR for ins in program):
        return None
    n = len(node.inputs)
    # operands other than Cast sources and Where conditions must be float32
    loose = {
        int(v) for ins in program if ins.op == "Cast" for kind, v in ins.args[:1] if kind == "x"
    }
    loose |= {int(ins.args[0][1]) for ins in program if ins.op == "Where" and ins.args[0][0] == "x"}
    for k, v in enumerate(node.inputs):
        dt = None if v is None else v.dtype
        if dt is None:
            continue
        if k in loose and (dt.kind not in ANY_STD or not dt.type.__module__.startswith("numpy")):
            return None
        if k not in loose and dt != np.float32:
            return None
    consts = np.array(literals(program), np.float32)
    kernels_by_pattern: dict[str, Callable] = {}
    launches: dict[tuple, tuple] = {}  # operand shapes -> what the loop needs for them

    def launch(shapes: tuple) -> tuple:
        """Result shape, kernel, loop sizes, per-operand strides, whether to materialize."""
        shape = np.broadcast_shapes(*shapes) if shapes else ()
        dims, strides = loop_layout(shape, shapes)
        spread = len(dims) > MAX_DIMS
        if spread:  # broadcast operands are copied out to the full shape: one flat loop
            dims, strides = [int(np.prod(shape))], [[1] for _ in shapes]
        pattern = "".join("c" if s[-1] == 1 else "b" for s in strides)
        fn = kernels_by_pattern.get(pattern)
        if fn is None:
            fn = kernels_by_pattern[pattern] = load_kernel(kernel_source(program, n, pattern))
        pad = MAX_DIMS - len(dims)
        loops = tuple([1] * pad + dims)
        return shape, fn, loops, [tuple([0] * pad + st) for st in strides], spread

    def run(*xs, out=None):
        # (np.ascontiguousarray would turn a 0-d operand 1-d and change the result's rank)
        arrays = [a if (a := np.asarray(x)).flags.c_contiguous else a.copy() for x in xs]
        for k, a in enumerate(arrays):
            if a.dtype == np.float16:  # a Cast source numba cannot load: widening is exact
                arrays[k] = a.astype(np.float32)
        key = tuple(a.shape for a in arrays)
        plan = launches.get(key)
        if plan is None:
            plan = launches[key] = launch(key)
        shape, fn, loops, strides, spread = plan
        given = dest(out)
        if given is not None and given.flags.c_contiguous:
            out = given  # the arena's view: the loop writes straight into it
        else:
            out = np.empty(shape, np.float32)
        if out.size == 0:
            return (deliver(given, out),)
        if spread:
            arrays = [np.ascontiguousarray(np.broadcast_to(a, shape)) for a in arrays]
        args = []
        for a, st in zip(arrays, strides, strict=True):
            args += [a.reshape(-1), st]
        fn(out.reshape(-1), *loops, consts, *args)
        return (deliver(given, out),)

    # each element of every operand is read before that element of the output is written,
    # so a float32 operand of the output's shape may share its memory
    run.writes_out, run.inplace = True, tuple(k for k in range(n) if k not in loose)
    run.algorithm = f"numba loop, {len(program)} ops"
    return run
