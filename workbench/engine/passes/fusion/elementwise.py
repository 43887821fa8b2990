"""Elementwise fusion: trees of elementwise ops -> one `FusedElementwise` node.

    Mul(Mul(0.5, x), Add(1, Tanh(Mul(c, Add(x, Mul(0.044715, Pow(x, 3)))))))
        -> FusedElementwise(x, program=["t0 = Mul(0.5, x0)", "t1 = Pow(x0, 3.0)", ...])

Starting from an elementwise node whose result leaves the group (its reader is no
elementwise op, or several nodes read it), the group takes in the producers of its
operands while every reader of what they produce is already in it: chains, and trees of
them, whose intermediates nobody else needs. Operands from outside become the fused
node's inputs; scalar float32 constants become literals of the program. Runs after every
other fusion (order 90), so GELU, LayerNorm, attention and activation fusions see their
patterns whole first; this one takes what they leave (tanh-GELU when nothing fused it,
residual and mask arithmetic).

A producer stays outside, with the reason recorded, when its result is shaped
differently from the group's output (the fused loop would compute it once per output
element: "broadcast would change the shape of the chain's main input"), when it is not
float32 (only `Cast` to float32 reads other types, and `Where` a bool condition), or when
its op has a run-time operand the kernel cannot take (a Pow exponent, Clip bounds).
"""

from __future__ import annotations

from onnx import TensorProto

from ...backends.reference.ops_fused_elementwise import OPS, format_instr
from ...ir import Graph, Node, Value
from ..cleanup.fold import constant_of
from ..fused_ops import define_op
from ..infra import Change, Pass, PassContext, PassResult, Rejection, origin_of
from ..rules import Match, apply_rewrite, const_value, fused_name, like

FUSED_ELEMENTWISE = define_op(
    "FusedElementwise",
    "A tree of elementwise ops run as one: one pass over the output, intermediates in "
    "registers. `program` lists the ops in order, one string each, "
    "`t<k> = Op(operands, attr=value)`, where an operand is `x<k>` (input k), `t<k>` (an "
    "earlier result) or a float32 number; the last result is Y. Each Op means the ONNX op "
    "of that name: Add Sub Mul Div Pow Max Min (two operands), Relu Neg Abs Exp Log Sqrt "
    "Reciprocal Floor Ceil Sin Cos Tanh Sigmoid Erf Sign Softplus Softsign HardSwish, "
    "LeakyRelu/ThresholdedRelu/Elu/Celu(alpha), Selu(alpha, gamma), HardSigmoid(alpha, "
    "beta), Clip(x, min, max), Where(cond, a, b), Cast(x, to=1). Values are float32 but for "
    "Cast's operand (bool, int or float) and Where's condition (bool). Inputs broadcast "
    "numpy-style to Y's shape.",
    inputs=[("inputs...", "the operands the program reads as x0, x1, ...")],
    outputs=[("Y", "float32, the inputs' broadcast shape")],
    attributes={"program": "strings: the instructions, in order"},
    replaces="chains and trees of elementwise ops whose intermediates have no other reader",
)

PASS_NAME = "elementwise"
RULE = "elementwise_chain"
MIN_NODES = 2
_FLOAT = TensorProto.FLOAT


def _const(v: Value | None, graph: Graph):
    """Fixed data of `v`: an initializer no input overrides, or a Constant node's value."""
    if v is None:
        return None
    c = constant_of(v, graph)
    if c is None and v.producer is not None and v.producer.op_type == "Constant":
        c = const_value(v)
    return c


def _literal(v: Value | None, graph: Graph, rank: int, any_dtype: bool = False) -> float | None:
    """`v` as a program literal: a one-element float32 constant (any number for a Pow
    exponent) whose rank does not raise the result's rank."""
    c = _const(v, graph)
    if (
        c is None
        or c.size != 1
        or c.ndim > rank
        or c.dtype.kind not in ("iuf" if any_dtype else "f")
    ):
        return None
    if not any_dtype and c.dtype.itemsize != 4:
        return None
    return float(c.reshape(-1)[0])


class _Step:
    """A node as a program instruction: op, operands (Values or literals), attributes."""

    __slots__ = ("attrs", "node", "op", "operands")

    def __init__(self, node: Node, operands: list, attrs: dict[str, float]) -> None:
        self.node, self.op, self.operands, self.attrs = node, node.op_type, operands, attrs


def describe(node: Node, graph: Graph, ctx: PassContext) -> _Step | str | None:
    """`node` as a program step; a reason when it is an elementwise op that cannot be one;
    None when it is no elementwise op at all."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in OPS:
        return None
    out = node.outputs[0] if len(node.outputs) == 1 else None
    if out is None or not node.inputs or node.inputs[0] is None:
        return f"{op} has {len(node.outputs)} outputs"
    if out.elem_type != _FLOAT:
        return f"{op} computes {out.dtype or 'an unknown type'}, not float32"
    if out.shape is None or any(d is None for d in out.shape):
        return f"the shape of {out.name!r} is unknown"
    rank = len(out.shape)
    attrs = {k: float(node.attrs.get(k, d)) for k, d in OPS[op].attrs.items()}
    ins = list(node.inputs)
    float_at = list(range(len(ins)))  # operand positions that must be float32
    if op in ("Max", "Min") and len(ins) != 2:
        return f"{op} has {len(ins)} operands; two fuse"
    if op == "Pow":
        e = _literal(ins[1], graph, rank, any_dtype=True)
        if e is None:
            return "Pow exponent is not a constant scalar"
        ins, float_at = [ins[0], e], [0]
    elif op == "Clip":
        lo, hi = float("-inf"), float("inf")
        if ctx.opset < 11:
            lo, hi = float(node.attrs.get("min", lo)), float(node.attrs.get("max", hi))
        else:
            bounds = [*ins[1:3], None, None][:2]
            got = [None if b is None else _literal(b, graph, rank) for b in bounds]
            if any(b is not None and g is None for b, g in zip(bounds, got, strict=True)):
                return "Clip bounds are not constant scalars"
            lo, hi = got[0] if got[0] is not None else lo, got[1] if got[1] is not None else hi
        ins, float_at = [ins[0], lo, hi], [0]
    elif op == "Where":
        if ins[0].elem_type != TensorProto.BOOL:
            return "Where condition is not bool"
        float_at = [1, 2]
    elif op == "Cast":
        src = ins[0].dtype
        if src is None or src.kind not in "biuf" or not src.type.__module__.startswith("numpy"):
            return f"Cast from {src or 'an unknown type'} does not fuse"
        float_at, attrs = [], {"to": float(_FLOAT)}
    operands: list = []
    for i, v in enumerate(ins):
        if not isinstance(v, Value):
            operands.append(v)  # already a literal
            continue
        lit = _literal(v, graph, rank) if i in float_at else None
        if lit is not None:
            operands.append(lit)
            continue
        if i in float_at and v.elem_type != _FLOAT:
            return f"{op} operand {v.name!r} is {v.dtype or 'of unknown type'}, not float32"
        operands.append(v)
    if node.attrs.get("broadcast") and ctx.opset < 7:
        return "legacy broadcast attribute"
    return _Step(node, operands, attrs)


def _fits(shape, out_shape) -> bool:
    """Whether `shape` broadcasts into `out_shape` without changing it."""
    if shape is None or len(shape) > len(out_shape):
        return False
    tail = out_shape[len(out_shape) - len(shape) :]
    return all(d == 1 or (d is not None and d == o) for d, o in zip(shape, tail, strict=True))


def _broadcast(shapes) -> tuple | None:
    """The numpy broadcast of shapes whose dims may be symbolic (None if unknown)."""
    if not shapes:
        return None
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)


class ElementwiseFusion(Pass):
    """Groups elementwise nodes and replaces each group by one FusedElementwise node."""

    name = PASS_NAME
    level = 2
    order = 90
    description = "fuses chains and trees of elementwise ops into one FusedElementwise loop"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes: list[Change] = []
        rejected: list[Rejection] = []
        if not ctx.backend_supports("FusedElementwise"):
            why = f"backend {ctx.backend!r} has no FusedElementwise kernel"
            return PassResult(graph, False, [], [Rejection(self.name, RULE, (), why)])
        steps: dict[int, _Step | str | None] = {}

        def step_of(n: Node) -> _Step | str | None:
            if id(n) not in steps:
                steps[id(n)] = describe(n, graph, ctx)
            return steps[id(n)]

        claimed: set[int] = set()
        for root in list(reversed(graph.nodes)):
            if id(root) in claimed or root.graph is not graph:
                continue
            s = step_of(root)
            if not isinstance(s, _Step):
                continue
            members, misses = self._grow(root, graph, step_of, claimed)
            rejected += [Rejection(self.name, RULE, names, why) for names, why in misses]
            if len(members) < MIN_NODES:
                continue
            claimed.update(id(m) for m in members)
            fused = self._fuse(graph, members, [steps[id(m)] for m in members])
            if isinstance(fused, str):
                names = tuple(m.name for m in members)
                rejected.append(Rejection(self.name, RULE, names, fused))
                continue
            changes.append(fused)
        return PassResult(graph, bool(changes), changes, rejected)

    def _grow(self, root, graph, step_of, claimed):
        """The group rooted at `root`, and the (nodes, reason) of producers left out."""
        out_shape = tuple(root.outputs[0].shape)
        members: dict[int, Node] = {id(root): root}
        misses: dict[int, tuple[tuple[str, ...], str]] = {}
        # the reader of the root's result, if it is an elementwise op that cannot join
        readers = root.outputs[0].consumers()
        if len(readers) == 1 and isinstance(step_of(readers[0]), str):
            misses[id(readers[0])] = ((root.name, readers[0].name), step_of(readers[0]))
        grew = True
        while grew:
            grew = False
            for m in list(members.values()):
                for v in step_of(m).operands:
                    p = v.producer if isinstance(v, Value) else None
                    if p is None or id(p) in members or id(p) in claimed or p.graph is not graph:
                        continue
                    s = step_of(p)
                    if s is None:
                        continue
                    why = s if isinstance(s, str) else self._outside(v, p, members, graph)
                    if why is None and tuple(v.shape) != out_shape:
                        why = (
                            "broadcast would change the shape of the chain's main input: "
                            f"{p.op_type} gives {list(v.shape)}, the chain computes "
                            f"{list(out_shape)}"
                        )
                    if why is not None:
                        misses[id(p)] = ((p.name, m.name), why)
                        continue
                    members[id(p)] = p
                    misses.pop(id(p), None)
                    grew = True
        order = {id(n): i for i, n in enumerate(graph.nodes)}
        ordered = sorted(members.values(), key=lambda n: order[id(n)])
        left_out = [mv for k, mv in misses.items() if k not in members]
        return ordered, left_out

    @staticmethod
    def _outside(v: Value, p: Node, members: dict[int, Node], graph: Graph) -> str | None:
        if any(v is o for o in graph.outputs):
            return f"{p.op_type} output {v.name!r} is a graph output"
        for user in v.consumers():
            if id(user) not in members:
                return f"{p.op_type} output {v.name!r} is also read by {user.op_type} {user.name!r}"
        return None

    def _fuse(self, graph: Graph, members: list[Node], steps: list[_Step]) -> Change | str:
        out = members[-1].outputs[0]
        temps = {id(m.outputs[0]): i for i, m in enumerate(members)}
        inputs: dict[int, Value] = {}
        program = []
        for i, s in enumerate(steps):
            args = []
            for v in s.operands:
                if not isinstance(v, Value):
                    args.append(("c", v))
                elif id(v) in temps:
                    args.append(("t", temps[id(v)]))
                else:
                    if not _fits(v.shape, out.shape):
                        return (
                            "broadcast would change the shape of the chain's main input: "
                            f"{v.name!r} {list(v.shape or '?')} does not fit the result "
                            f"{list(out.shape)}"
                        )
                    args.append(
                        ("x", list(inputs).index(id(v)) if id(v) in inputs else len(inputs))
                    )
                    inputs.setdefault(id(v), v)
            program.append(format_instr(i, s.op, args, s.attrs))
        spans = _broadcast([v.shape for v in inputs.values()])
        if spans != tuple(out.shape):
            return (
                f"the inputs span {list(spans or '?')}, not the result's {list(out.shape)}: "
                "a scalar constant sets the result's rank"
            )
        match = Match(list(members), outputs=[out])
        node = Node(
            "FusedElementwise",
            list(inputs.values()),
            [like(out)],
            {"program": program},
            name=fused_name(match, "FusedElementwise"),
            domain="workbench",
        )
        apply_rewrite(graph, match, [node])
        names = tuple(m.name for m in members)
        return Change(
            self.name, RULE, "fused", names, (node.name,), origin_of(members), "; ".join(program)
        )


PASSES = [ElementwiseFusion()]
