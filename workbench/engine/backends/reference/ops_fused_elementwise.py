"""`workbench.FusedElementwise`: the definition of a fused elementwise program, in numpy.

A program is a list of instructions, one string each, run in order; the last one's result
is the op's output. An instruction names its result, an op and the op's operands:

    t0 = Pow(x0, 3.0)          x<k>: the fused node's input k
    t1 = Mul(0.044715, t0)     t<k>: the result of an earlier instruction
    t2 = LeakyRelu(t1, alpha=0.1)   a number: a float32 scalar; name=number: an attribute

Every op means what the ONNX op of the same name means (`OPS` below, applied in order
with numpy: this backend is the definition the x86 kernel is checked against). Values are
float32 (float64 at fp64 precision); only `Cast(x, to=1)` reads another dtype (bool, int,
float) and `Where`'s first operand is bool. Operands broadcast as numpy broadcasts.

`parse_program` is shared with the pass that writes programs and the kernels that run them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto

from ....errors import WorkbenchError
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn


@dataclass(frozen=True)
class ElementwiseOp:
    """One op a program may use: its operand count, attributes with defaults, numpy body."""

    arity: int
    fn: Callable[..., np.ndarray]
    attrs: dict[str, float] = field(default_factory=dict)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # the overflow-free form onnx.reference uses: exp of a large positive x never runs
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf; math.erf per element is the definition (slow, exact)
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


OPS: dict[str, ElementwiseOp] = {
    "Add": ElementwiseOp(2, np.add),
    "Sub": ElementwiseOp(2, np.subtract),
    "Mul": ElementwiseOp(2, np.multiply),
    "Div": ElementwiseOp(2, np.divide),
    "Pow": ElementwiseOp(2, np.power),
    "Max": ElementwiseOp(2, np.maximum),
    "Min": ElementwiseOp(2, np.minimum),
    "Relu": ElementwiseOp(1, lambda x: np.maximum(x, 0)),
    "Neg": ElementwiseOp(1, np.negative),
    "Abs": ElementwiseOp(1, np.abs),
    "Exp": ElementwiseOp(1, np.exp),
    "Log": ElementwiseOp(1, np.log),
    "Sqrt": ElementwiseOp(1, np.sqrt),
    "Reciprocal": ElementwiseOp(1, np.reciprocal),
    "Floor": ElementwiseOp(1, np.floor),
    "Ceil": ElementwiseOp(1, np.ceil),
    "Sin": ElementwiseOp(1, np.sin),
    "Cos": ElementwiseOp(1, np.cos),
    "Tanh": ElementwiseOp(1, np.tanh),
    "Sigmoid": ElementwiseOp(1, _sigmoid),
    "Erf": ElementwiseOp(1, _erf),
    "Sign": ElementwiseOp(1, np.sign),
    "Softplus": ElementwiseOp(1, lambda x: np.logaddexp(0, x)),
    "Softsign": ElementwiseOp(1, lambda x: x / (1 + np.abs(x))),
    "LeakyRelu": ElementwiseOp(1, lambda x, alpha: np.where(x >= 0, x, x * alpha), {"alpha": 0.01}),
    "ThresholdedRelu": ElementwiseOp(
        1, lambda x, alpha: np.where(x > alpha, x, 0).astype(x.dtype), {"alpha": 1.0}
    ),
    "Elu": ElementwiseOp(
        1, lambda x, alpha: np.where(x >= 0, x, alpha * (np.exp(x) - 1)), {"alpha": 1.0}
    ),
    "Celu": ElementwiseOp(
        1,
        lambda x, alpha: np.maximum(x, 0) + np.minimum(0, alpha * (np.exp(x / alpha) - 1)),
        {"alpha": 1.0},
    ),
    "Selu": ElementwiseOp(
        1,
        lambda x, alpha, gamma: gamma * np.where(x > 0, x, alpha * np.exp(x) - alpha),
        {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
    ),
    "HardSigmoid": ElementwiseOp(
        1,
        lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1).astype(x.dtype),
        {"alpha": 0.2, "beta": 0.5},
    ),
    "HardSwish": ElementwiseOp(1, lambda x: x * np.clip(x * (1 / 6) + 0.5, 0, 1)),
    "Clip": ElementwiseOp(3, lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi)),
    "Where": ElementwiseOp(3, np.where),
    # the cast's target is the compute dtype; `to` must say float32 (checked when parsed)
    "Cast": ElementwiseOp(1, lambda x, to: x, {"to": float(TensorProto.FLOAT)}),
}

_INSTR = re.compile(r"^\s*t(\d+)\s*=\s*([A-Za-z]\w*)\((.*)\)\s*$")


@dataclass(frozen=True)
class Instr:
    """One parsed instruction; operands are ("x", k), ("t", k) or ("c", value)."""

    op: str
    args: tuple[tuple[str, float], ...]
    attrs: dict[str, float]


def format_literal(value: float) -> str:
    """The shortest text that reads back as the same float32 (`0.044715`, `-inf`)."""
    return str(np.float32(value))


def format_instr(
    dst: int, op: str, args: Sequence[tuple[str, float]], attrs: dict[str, float] | None = None
) -> str:
    """`t<dst> = Op(operands, name=value)`, the text `parse_program` reads."""
    parts = [f"{kind}{int(v)}" if kind in "xt" else format_literal(v) for kind, v in args]
    for name, value in (attrs or {}).items():
        text = str(int(value)) if name == "to" else format_literal(value)
        parts.append(f"{name}={text}")
    return f"t{dst} = {op}({', '.join(parts)})"


def parse_program(program: str | Sequence[str], n_inputs: int | None = None) -> list[Instr]:
    """Parse and check a program; raises WorkbenchError naming the bad instruction."""
    lines = [program] if isinstance(program, str) else list(program)
    lines = [s.decode() if isinstance(s, bytes) else str(s) for s in lines]
    if not lines:
        raise WorkbenchError("FusedElementwise: the program is empty")
    out: list[Instr] = []
    for i, line in enumerate(lines):

        def bad(why: str, i: int = i, line: str = line) -> WorkbenchError:
            return WorkbenchError(f"FusedElementwise: instruction {i} {line!r}: {why}")

        m = _INSTR.match(line)
        if m is None:
            raise bad("expected 't<k> = Op(operands)'")
        if int(m.group(1)) != i:
            raise bad(f"instruction {i} must define t{i}")
        op = OPS.get(m.group(2))
        if op is None:
            raise bad(f"unknown op {m.group(2)!r}; known: {', '.join(sorted(OPS))}")
        args: list[tuple[str, float]] = []
        attrs = dict(op.attrs)
        for token in (t.strip() for t in m.group(3).split(",") if t.strip()):
            if "=" in token:
                name, _, text = token.partition("=")
                if name.strip() not in op.attrs:
                    raise bad(f"{m.group(2)} has no attribute {name.strip()!r}")
                attrs[name.strip()] = _number(text, bad)
            elif re.fullmatch(r"[xt]\d+", token):
                k = int(token[1:])
                if token[0] == "t" and k >= i:
                    raise bad(f"{token} is not defined before it is read")
                if token[0] == "x" and n_inputs is not None and k >= n_inputs:
                    raise bad(f"{token} is beyond the node's {n_inputs} inputs")
                args.append((token[0], k))
            else:
                args.append(("c", _number(token, bad)))
        if len(args) != op.arity:
            raise bad(f"{m.group(2)} takes {op.arity} operands, got {len(args)}")
        if m.group(2) == "Cast" and int(attrs["to"]) != TensorProto.FLOAT:
            raise bad("only casts to float32 (to=1) are part of a fused program")
        out.append(Instr(m.group(2), tuple(args), attrs))
    return out


def _number(text: str, bad: Callable[[str], WorkbenchError]) -> float:
    try:
        return float(np.float32(text.strip()))
    except ValueError:
        raise bad(f"{text.strip()!r} is not a number") from None


def evaluate(program: Sequence[Instr], inputs: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Run a parsed program with numpy: each op's definition, in order."""
    temps: list[np.ndarray] = []

    def operand(kind: str, v: float) -> np.ndarray:
        if kind == "x":
            return inputs[int(v)]
        return temps[int(v)] if kind == "t" else np.asarray(v, dtype)

    with np.errstate(all="ignore"):  # inf/nan by IEEE rules, as the unfused ops give them
        for ins in program:
            args = [operand(kind, v) for kind, v in ins.args]
            if ins.op == "Cast":
                result = args[0].astype(dtype)
            else:
                attrs = {k: dtype.type(v) for k, v in ins.attrs.items()}
                result = np.asarray(OPS[ins.op].fn(*args, **attrs))
                if result.dtype != dtype:
                    result = result.astype(dtype)
            temps.append(result)
    return temps[-1]


@kernels.register("FusedElementwise", domain="workbench", since=1)
def fused_elementwise(node: Node, ctx: CompileContext) -> KernelFn | None:
    program = parse_program(node.attrs.get("program", []), len(node.inputs))
    dtype = np.dtype(np.float64 if ctx.precision == "fp64" else np.float32)

    def run(*xs):
        # float inputs compute in the plan's float dtype; Cast and Where read theirs as given
        return (evaluate(program, xs, dtype),)

    return run
