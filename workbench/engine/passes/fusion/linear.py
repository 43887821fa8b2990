"""`Add(MatMul(A, B), bias) -> workbench.FusedMatMul(A, B, bias)`: a linear layer as one op.

PyTorch and HuggingFace export `nn.Linear` on N-d inputs as MatMul then Add. The fused op
adds the bias in the same pass over the GEMM output that applies an activation, if the
activation rule later gives it one. Only a constant bias that broadcasts along the last
dim (shape [N], [1] or [1, ..., 1, N]) is taken: any other Add (attention masks,
residuals, position tables) keeps its own node. Gemm needs no such rule: it has its bias.
"""

from __future__ import annotations

from ...ir import Node, Value
from ..fused_ops import define_op
from ..infra import PassContext
from ..rules import Match, Rule, RulePass, const_value, fused_name, like, producer
from .activation import ACTIVATION_ATTRS, native_reason

FUSED_MATMUL = define_op(
    "FusedMatMul",
    "MatMul plus a bias along the last dim, then an optional activation: "
    "Y = act(MatMul(A, B) + Bias), numpy-style batched as MatMul. On x86 the bias and the "
    "activation are applied in one pass over the GEMM output.",
    inputs=[
        ("A", "[..., M, K]"),
        ("B", "[..., K, N]"),
        ("Bias?", "[N], [1] or [1, ..., 1, N]: added along the last dim of the product"),
    ],
    outputs=[("Y", "[..., M, N]")],
    attributes=dict(ACTIVATION_ATTRS),
    replaces="act(Add(MatMul(A, B), Bias))",
)


def _shape(v: Value | None) -> tuple | None:
    """`v`'s shape; a constant's without reading its data (a weight may be in its file)."""
    if v is not None and v.is_const:
        return v.const_shape
    c = const_value(v)
    return tuple(c.shape) if c is not None else None if v is None else v.shape


def _rank(v: Value | None) -> int | None:
    shape = _shape(v)
    return None if shape is None else len(shape)


def _width(mm: Node) -> int | None:
    """N, the last dim of the MatMul output, when it is known."""
    for v in (mm.outputs[0], mm.inputs[1]):
        shape = _shape(v)
        if shape and isinstance(shape[-1], int):
            return shape[-1]
    return None


class MatMulAdd(Rule):
    """Add(MatMul(A, B), bias) or Add(bias, MatMul(A, B)) -> FusedMatMul(A, B, bias)."""

    name = "matmul_add"
    anchor = ("Add",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        found = []
        for i in (0, 1):
            mm = producer(node.inputs[i], "MatMul")
            if mm is not None:
                found.append(Match([mm, node], {"matmul": mm, "bias": node.inputs[1 - i]}))
        # MatMul + MatMul: the one beside a constant, if either is
        found.sort(key=lambda m: const_value(m.values["bias"]) is None)
        return found[0] if found else None

    def check(self, match: Match, ctx: PassContext) -> str | None:
        mm, bias = match.values["matmul"], match.values["bias"]
        data = const_value(bias)
        if data is None:
            return f"Add operand {bias.name!r} is not constant"
        ra, rb = _rank(mm.inputs[0]), _rank(mm.inputs[1])
        if rb is None or rb < 2:
            return "MatMul B is not known to be a matrix (or a stack of them)"
        n = _width(mm)
        if n is None:
            return "MatMul output width is unknown"
        out_rank = None if ra is None else max(ra, rb) - (ra == 1)
        shape = list(data.shape)
        along_last = data.ndim >= 1 and shape[-1] in (1, n) and all(d == 1 for d in shape[:-1])
        if not along_last or (data.ndim > 1 and (out_rank is None or data.ndim > out_rank)):
            return f"bias of shape {shape} does not broadcast along the last dim ({n}) alone"
        return native_reason(ctx, "FusedMatMul", mm.outputs[0])

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        mm = match.values["matmul"]
        fused = Node(
            "FusedMatMul",
            [mm.inputs[0], mm.inputs[1], match.values["bias"]],
            [like(match.outputs[0])],
            name=fused_name(match, "FusedMatMul"),
            domain="workbench",
        )
        return [fused]


PASSES = [
    RulePass(
        "linear",
        [MatMulAdd()],
        level=2,
        order=20,
        description="MatMul + Add(constant bias) -> workbench.FusedMatMul",
    )
]
