"""cuda kernels of the elementwise ONNX ops, Gelu and `workbench.FusedElementwise`.

Every op here is a one-instruction program of the strided kernel family in
`_elementwise.py` (FusedElementwise: its whole program, one kernel): one thread per
output element, numpy broadcasting by zero strides. Which table an op uses is decided per
call from the input dtypes: floats compute in float32 registers; integers and booleans use
the exact ops (comparisons, logic, Where, + - * on ints) and keep their dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import helper

from ...ir import Node
from ..base import dest
from ..reference.ops_fused_elementwise import parse_program
from ._elementwise import COMPARE, EXACT_OPS, FLOAT_OPS, run_program
from ._launch import writes_out
from ._table import float_dtype, kernels

if TYPE_CHECKING:
    from ..base import CompileContext, KernelFn

UNARY_DEFAULTS: dict[str, dict[str, float]] = {
    "Relu": {},
    "Neg": {},
    "Abs": {},
    "Exp": {},
    "Log": {},
    "Sqrt": {},
    "Reciprocal": {},
    "Floor": {},
    "Ceil": {},
    "Sin": {},
    "Cos": {},
    "Tanh": {},
    "Sigmoid": {},
    "Erf": {},
    "Sign": {},
    "Softplus": {},
    "Softsign": {},
    "HardSwish": {},
    "Mish": {},
    "LeakyRelu": {"alpha": 0.01},
    "ThresholdedRelu": {"alpha": 1.0},
    "Elu": {"alpha": 1.0},
    "Celu": {"alpha": 1.0},
    "Selu": {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
}
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "PRelu")
VARIADIC = ("Max", "Min", "Sum", "Mean")


def _result_dtype(xs: list[Any]) -> np.dtype:
    return np.result_type(*[np.dtype(x.dtype) for x in xs])


def elementwise(op: str, attrs: dict[str, float] | None = None) -> KernelFn:
    """The run function of a one-instruction program `op` over all its inputs."""
    arity = (FLOAT_OPS.get(op) or EXACT_OPS[op])[0]
    instr = [(op, tuple(("x", k) for k in range(arity)), dict(attrs or {}))]

    def run(*xs: Any, out: Any = None) -> tuple:
        shape = np.broadcast_shapes(*(tuple(x.shape) for x in xs))
        floats = all(np.dtype(x.dtype).kind == "f" for x in xs)
        exact = op in COMPARE or (not floats and op != "Where") or op == "Where"
        if exact and op not in EXACT_OPS:
            raise TypeError(f"{op} on {[str(x.dtype) for x in xs]} has no cuda kernel")
        if op in COMPARE:
            dtype = np.dtype(bool)
        elif op == "Where":
            dtype = _result_dtype(list(xs[1:]))
        else:
            dtype = _result_dtype(list(xs))
        return (run_program(instr, xs, shape, dtype, exact=exact, out=dest(out)),)

    return writes_out(run, range(arity))


for _op, _defaults in UNARY_DEFAULTS.items():

    def _unary(node: Node, ctx: CompileContext, _op: str = _op, _d: dict = _defaults):
        attrs = {k: float(node.attrs.get(k, v)) for k, v in _d.items()}
        return elementwise(_op, attrs)

    kernels.register(_op, since=1)(_unary)


@kernels.register([*BINARY, *sorted(COMPARE - {"Not"}), "Where", "Not"], since=1)
def binary(node: Node, ctx: CompileContext) -> KernelFn | None:
    if node.op_type == "Pow" and ctx.precision == "fp16":
        return None  # powf in float32 then rounded is fine, but Pow's exponent may be int
    return elementwise(node.op_type)


@kernels.register(list(VARIADIC), since=1)
def variadic(node: Node, ctx: CompileContext) -> KernelFn | None:
    n = len(node.inputs)
    if n == 0 or any(v is None for v in node.inputs):
        return None
    op = {"Sum": "Add", "Mean": "Add"}.get(node.op_type, node.op_type)
    program: list[tuple] = [("Identity", (("x", 0),), {})]
    for k in range(1, n):
        program.append((op, (("t", k - 1), ("x", k)), {}))
    if node.op_type == "Mean":
        program.append(("Div", (("t", n - 1), ("c", float(n))), {}))

    def run(*xs: Any, out: Any = None) -> tuple:
        shape = np.broadcast_shapes(*(tuple(x.shape) for x in xs))
        exact = not all(np.dtype(x.dtype).kind == "f" for x in xs)
        dtype = _result_dtype(list(xs))
        return (run_program(program, xs, shape, dtype, exact=exact, out=dest(out)),)

    return writes_out(run, range(n))


@kernels.register("Clip", since=11)
def clip(node: Node, ctx: CompileContext) -> KernelFn | None:
    def run(x: Any, lo: Any = None, hi: Any = None, out: Any = None) -> tuple:
        if np.dtype(x.dtype).kind != "f":
            raise TypeError(f"Clip on {x.dtype} has no cuda kernel")
        xs, args = [x], [("x", 0)]
        for bound, inf in ((lo, -np.inf), (hi, np.inf)):
            if bound is None:
                args.append(("c", inf))
            else:
                args.append(("x", len(xs)))
                xs.append(bound)
        program = [("Clip", tuple(args), {})]
        return (run_program(program, xs, x.shape, x.dtype, out=dest(out)),)

    return writes_out(run, (0,))


@kernels.register("Clip", since=6, until=10)
def clip_attrs(node: Node, ctx: CompileContext) -> KernelFn | None:
    lo, hi = float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    program = [("Clip", (("x", 0), ("c", lo), ("c", hi)), {})]

    def run(x: Any, out: Any = None) -> tuple:
        return (run_program(program, [x], x.shape, x.dtype, out=dest(out)),)

    return writes_out(run, (0,))


@kernels.register(["Identity", "Dropout"], since=1)
def identity(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Inference: both return the input itself (device tensors are never written twice)."""
    if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1].name:
        return None  # the mask output: the reference makes it

    def run(x: Any, *rest: Any) -> tuple:
        return (x,)

    return run


def _cast_target(to: int, precision: str) -> np.dtype:
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    # float tensors are stored in the plan's float dtype (float16 under fp16)
    return float_dtype(precision) if dtype in (np.float32, np.float64) else dtype


@kernels.register(["Cast", "CastLike"], since=6)
def cast(node: Node, ctx: CompileContext) -> KernelFn | None:
    program = [("Cast", (("x", 0),), {})]
    if node.op_type == "Cast":
        to = node.attrs.get("to")
        if to is None:
            return None
        dtype = _cast_target(int(to), ctx.precision)
        if dtype.kind not in "fiub":
            return None

        def run(x: Any, out: Any = None) -> tuple:
            return (run_program(program, [x], x.shape, dtype, exact=True, out=dest(out)),)

        return writes_out(run)

    def run_like(x: Any, like: Any, out: Any = None) -> tuple:
        return (run_program(program, [x], x.shape, like.dtype, exact=True, out=dest(out)),)

    return writes_out(run_like)


@kernels.register("Gelu", since=20)
@kernels.register("Gelu", domain="workbench", since=1)
def gelu(node: Node, ctx: CompileContext) -> KernelFn | None:
    approx = node.attrs.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    return elementwise("GeluTanh" if approx == "tanh" else "Gelu")


@kernels.register("FusedElementwise", domain="workbench", since=1)
def fused_elementwise(node: Node, ctx: CompileContext) -> KernelFn | None:
    instrs = parse_program(node.attrs.get("program", []), len(node.inputs))
    program = [(ins.op, ins.args, ins.attrs) for ins in instrs]
    dtype = float_dtype(ctx.precision)

    def run(*xs: Any, out: Any = None) -> tuple:
        shape = np.broadcast_shapes(*(tuple(x.shape) for x in xs))
        return (run_program(program, xs, shape, dtype, out=dest(out)),)

    return writes_out(run, range(len(node.inputs)))
