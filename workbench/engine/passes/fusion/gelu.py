"""GELU fusion: the Erf and Tanh decompositions exporters write -> one `Gelu` node.

    Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5)                       -> Gelu(x)
    Mul(Mul(0.5, x), Add(1, Tanh(Mul(c, Add(x, Mul(0.044715, Pow(x, 3)))))))
                                                    -> Gelu(x, approximate="tanh")

The 0.5 may multiply first, last or the (1 + erf) term; x / sqrt(2) may be written
x * 0.70710678; x**3 may be Pow(x, 3) or x*x*x; every Mul and Add is matched in either
operand order. From opset 20 the result is the standard `Gelu`, below it
`workbench.Gelu` (same attribute). Constants must agree within 1e-4 (relative), else the
candidate is refused with the reason: "Erf input is x/1.5, not x/sqrt(2)".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from ...ir import Node, Value
from ..fused_ops import define_op
from ..infra import PassContext
from ..rules import Match, Rule, RulePass, fused_name, like, producer, scalar

GELU = define_op(
    "Gelu",
    "Gaussian error linear unit, y = x * Phi(x), elementwise. With approximate='none' "
    "y = 0.5 x (1 + erf(x / sqrt(2))); with 'tanh' "
    "y = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). The same as the standard "
    "Gelu of opset 20, for models of older opsets.",
    inputs=[("X", "input tensor")],
    outputs=[("Y", "output tensor, shaped like X")],
    attributes={"approximate": "string: 'none' (exact, Erf) or 'tanh'"},
    replaces="Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5) and the tanh form",
)

RTOL = 1e-4
SQRT_HALF = math.sqrt(0.5)
TANH_SCALE = math.sqrt(2.0 / math.pi)
TANH_CUBIC = 0.044715


def near(value: float | None, expected: float, rtol: float = RTOL) -> bool:
    """Whether a constant is `expected` within `rtol` (relative)."""
    return value is not None and abs(value - expected) <= rtol * abs(expected)


def absorb_producers(
    nodes: Iterable[Node],
    keep: Iterable[Value | None] = (),
    accept: Callable[[Node], bool] | None = None,
) -> list[Node]:
    """`nodes` plus the producers of their inputs that only they use, transitively,
    among those `accept` allows (default: Constant nodes), except the producers of
    `keep` (the fused node's own inputs, which must stay computed).

    Exporters write every scalar as its own Constant node; once the pattern is fused
    those would be left behind, dead, so the match takes them along (and they appear
    in its provenance). A constant still read elsewhere is left in place.
    """
    accept = accept or (lambda n: n.op_type == "Constant" and not n.inputs)
    kept = {id(v) for v in keep if v is not None}
    found = list(dict.fromkeys(nodes))
    inside = {id(n) for n in found}
    grew = True
    while grew:
        grew = False
        for n in list(found):
            for v in n.inputs:
                p = None if v is None or id(v) in kept else v.producer
                if p is None or id(p) in inside or not accept(p):
                    continue
                graph_outputs = p.graph.outputs if p.graph is not None else []
                if all(
                    o not in graph_outputs and all(id(u) in inside for u, _ in o.uses)
                    for o in p.outputs
                ):
                    found.insert(0, p)
                    inside.add(id(p))
                    grew = True
    return found


def _single_use(v: Value) -> bool:
    return len(v.uses) == 1


# Below, inner nodes may have other readers: the pass then refuses the candidate, saying
# which output is read elsewhere. Only the grouping of the product needs single use.


def _operands(node: Node, op_type: str | tuple[str, ...]) -> list[tuple[Node, Value]]:
    """(producer, the other operand) for each operand of a binary `node` made by `op_type`."""
    out = []
    a, b = node.inputs[0], node.inputs[1]
    for mine, other in ((a, b), (b, a)):
        p = producer(mine, op_type)
        if p is not None:
            out.append((p, other))
    return out


class GeluRule(Rule):
    """Anchored at the outermost Mul; see the module docstring for the forms."""

    name = "gelu"
    anchor = ("Mul",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        # The product x * 0.5 * (1 + f(...)), nested two deep in any grouping: expand
        # each operand of the anchor that is a Mul used only here, one level.
        factors: list[Value] = []
        inner: list[Node] = []
        for v in node.inputs:
            p = producer(v, "Mul")
            if p is not None and _single_use(v):
                factors += p.inputs
                inner.append(p)
            else:
                factors.append(v)
        if len(factors) != 3:
            return None
        unit = [f for f in factors if _unit_term(f) is not None]
        consts = [f for f in factors if scalar(f) is not None]
        if len(unit) != 1 or len(consts) != 1:
            return None
        (x,) = [f for f in factors if f is not unit[0] and f is not consts[0]]
        add, fn, one = _unit_term(unit[0])
        values = {"x": x, "half": scalar(consts[0]), "one": one, "fn": fn.op_type}
        nodes = [*inner, add, fn]
        problem = (_erf_arg if fn.op_type == "Erf" else _tanh_arg)(fn.inputs[0], x, nodes)
        values["problem"] = problem
        return Match(absorb_producers([*nodes, node], [x]), values, [node.outputs[0]])

    def check(self, match: Match, ctx: PassContext) -> str | None:
        v = match.values
        if v["problem"]:
            return v["problem"]
        if not near(v["half"], 0.5):
            return f"GELU product scales by {v['half']:g}, not 0.5"
        if not near(v["one"], 1.0):
            return f"{v['fn']} term adds {v['one']:g}, not 1"
        std = ctx.opset >= 20
        ok = (
            ctx.backend_supports("Gelu", domain="", opset=ctx.opset)
            if std
            else ctx.backend_supports("Gelu")
        )
        if not ok:
            op = "Gelu" if std else "workbench.Gelu"
            return f"backend {ctx.backend!r} has no kernel for {op}"
        return None

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        approximate = "none" if match.values["fn"] == "Erf" else "tanh"
        domain = "" if ctx.opset >= 20 else "workbench"
        return [
            Node(
                "Gelu",
                [match.values["x"]],
                [like(match.outputs[0])],
                {"approximate": approximate},
                name=fused_name(match, "Gelu"),
                domain=domain,
            )
        ]


def _unit_term(v: Value) -> tuple[Node, Node, float] | None:
    """`1 + Erf(..)` or `1 + Tanh(..)`: (the Add, the Erf/Tanh node, the added constant)."""
    add = producer(v, "Add")
    if add is None:
        return None
    for fn, other in _operands(add, ("Erf", "Tanh")):
        c = scalar(other)
        if c is not None:
            return add, fn, c
    return None


def _erf_arg(arg: Value, x: Value, nodes: list[Node]) -> str | None:
    """Erf's input must be x / sqrt(2) or x * (1 / sqrt(2)); adds the matched node."""
    div = producer(arg, ("Div", "Mul"))
    if div is None:
        return "Erf input is not x / sqrt(2)"
    nodes.insert(0, div)
    if div.op_type == "Div":
        c = scalar(div.inputs[1])
        factor, src = (None if not c else 1.0 / c), div.inputs[0]
        shown = f"x/{c:g}" if c is not None else "x divided by a non-constant"
    else:
        pairs = [(a, scalar(b)) for a, b in (div.inputs, div.inputs[::-1]) if scalar(b) is not None]
        src, factor = pairs[0] if pairs else (div.inputs[0], None)
        shown = f"x*{factor:g}" if factor is not None else "x times a non-constant"
    if src is not x:
        return f"Erf reads {src.name!r}, but the product multiplies {x.name!r}"
    if not near(factor, SQRT_HALF):
        return f"Erf input is {shown}, not x/sqrt(2)"
    return None


def _tanh_arg(arg: Value, x: Value, nodes: list[Node]) -> str | None:
    """Tanh's input must be sqrt(2/pi) * (x + 0.044715 * x^3); adds the matched nodes."""
    outer = producer(arg, "Mul")
    if outer is None:
        return "Tanh input is not sqrt(2/pi) * (x + 0.044715 x^3)"
    scaled = [(p, scalar(c)) for p, c in _operands(outer, "Add") if scalar(c) is not None]
    if not scaled:
        return "Tanh input is not sqrt(2/pi) * (x + 0.044715 x^3)"
    add, scale = scaled[0]
    nodes[:0] = [add, outer]
    cubic = None
    for mul, other in _operands(add, "Mul"):
        if other is x:
            cubic = mul
    if cubic is None:
        return f"Tanh input does not add a cubic term to {x.name!r}"
    nodes.insert(0, cubic)
    terms = [(p, scalar(c)) for p, c in _operands(cubic, ("Pow", "Mul")) if scalar(c) is not None]
    if not terms:
        return "the cubic term is not 0.044715 * x^3"
    power, coef = terms[0]
    problem = _cube(power, x, nodes)
    if problem:
        return problem
    if not near(scale, TANH_SCALE):
        return f"Tanh input scales by {scale:g}, not sqrt(2/pi)"
    if not near(coef, TANH_CUBIC):
        return f"the cubic term is {coef:g} x^3, not 0.044715 x^3"
    return None


def _cube(node: Node, x: Value, nodes: list[Node]) -> str | None:
    """`node` must compute x^3: Pow(x, 3), Mul(Mul(x, x), x) or Mul(x, Mul(x, x))."""
    nodes.insert(0, node)
    if node.op_type == "Pow":
        e = scalar(node.inputs[1])
        if node.inputs[0] is not x:
            return f"Pow reads {node.inputs[0].name!r}, not {x.name!r}"
        if e is None:
            return "Pow exponent is not constant"
        return None if near(e, 3.0) else f"Pow exponent is {e:g}, not 3"
    for sq, other in _operands(node, "Mul"):
        if other is x and sq.inputs[0] is x and sq.inputs[1] is x:
            nodes.insert(0, sq)
            return None
    return "the cubic term is not x^3"


PASSES = [
    RulePass(
        "gelu_fusion",
        [GeluRule()],
        level=2,
        order=10,
        description="Erf and Tanh GELU decompositions -> Gelu",
    )
]
