"""FLOPs and bytes moved per kernel, computed from its node and the shapes it ran on.

Conventions (those of the usual model tables, so resnet50 comes out at 8.18 GFLOPs):

- Conv, ConvTranspose, Gemm, MatMul: 2 x multiply-adds; a bias or C input adds 1 per output.
- Fused ops of the `workbench` domain: their GEMM work as above plus their epilogue, 1 per
  output element for each bias, residual or elementwise step and an activation's own cost.
- Elementwise ops: 1 per output element (n-1 for variadic Sum/Max/Min/Mean).
- Reductions: 1 per input element (ReduceMean adds a division per output); Softmax 5 per
  element (max, subtract, exp, sum, divide); LayerNorm 7 per element and 2 per row
  (the arithmetic of its decomposed ONNX form); BatchNormalization 2 per element (a scale
  and a shift once the statistics are folded); pools 1 per window element per output.
- Data movement (Reshape, Transpose, Gather, Concat, Cast, ...): 0.
- An op no rule knows: NaN, so sums stay honest (pandas skips it) and the gap is visible.

Bytes moved = bytes of every input (weights included) + bytes of every output: what a
kernel must at least touch, the denominator of its arithmetic intensity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.ir import Node


@dataclass(frozen=True)
class Spec:
    """What the profiler keeps of a tensor a kernel read or wrote."""

    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __str__(self) -> str:
        return "x".join(map(str, self.shape)) if self.shape else "scalar"


def spec_of(x: Any) -> Spec | None:
    """The Spec of an array (numpy or device), a sequence of them, or None."""
    if x is None:
        return None
    if isinstance(x, list):  # a sequence value: shape is its length, bytes its items'
        items = [spec_of(i) for i in x]
        return Spec((len(x),), "sequence", sum(s.nbytes for s in items if s is not None))
    shape = tuple(int(d) for d in getattr(x, "shape", ()))
    dtype = np.dtype(getattr(x, "dtype", np.asarray(x).dtype))
    nbytes = getattr(x, "nbytes", None)
    return Spec(
        shape, dtype.name, int(nbytes if nbytes is not None else math.prod(shape) * dtype.itemsize)
    )


Specs = Sequence["Spec | None"]
Rule = Callable[[Node, Specs, Specs], float]
_RULES: dict[str, Rule] = {}  # "Op" for ONNX ops, "workbench:Op" for the fused domain


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for op in ops:
            _RULES[op] = fn
        return fn

    return deco


def _size(specs: Specs, i: int) -> int:
    return specs[i].size if i < len(specs) and specs[i] is not None else 0


def _has(specs: Specs, i: int) -> bool:
    return i < len(specs) and specs[i] is not None


def _out(outs: Specs) -> int:
    return _size(outs, 0)


# -- GEMM-like work --------------------------------------------------------------------------


def conv_macs(x: Spec, w: Spec, y: Spec) -> int:
    """Each output element is a dot product over C/group x kernel window = prod(W[1:])."""
    return y.size * math.prod(w.shape[1:])


def conv_transpose_macs(x: Spec, w: Spec) -> int:
    """Each input element scatters into C_out/group x kernel window outputs = prod(W[1:])."""
    return x.size * math.prod(w.shape[1:])


def gemm_macs(a: Spec, y: Spec, trans_a: bool) -> int:
    k = a.shape[0] if trans_a else a.shape[-1]
    return y.size * k


def matmul_macs(a: Spec, y: Spec) -> int:
    """Output [..., M, N] (a 1-d operand drops its axis); each element sums over K = A[-1]."""
    return y.size * a.shape[-1]


@rule("Conv", "ConvInteger", "QLinearConv")
def _conv(node: Node, ins: Specs, outs: Specs) -> float:
    w_at = 3 if node.op_type == "QLinearConv" else 1
    bias = _out(outs) if node.op_type == "Conv" and _has(ins, 2) else 0
    return 2.0 * conv_macs(ins[0], ins[w_at], outs[0]) + bias


@rule("ConvTranspose")
def _conv_transpose(node: Node, ins: Specs, outs: Specs) -> float:
    bias = _out(outs) if _has(ins, 2) else 0
    return 2.0 * conv_transpose_macs(ins[0], ins[1]) + bias


@rule("Gemm")
def _gemm(node: Node, ins: Specs, outs: Specs) -> float:
    trans_a = bool(node.attrs.get("transA", 0))
    epilogue = _out(outs) if _has(ins, 2) else 0  # + beta * C
    return 2.0 * gemm_macs(ins[0], outs[0], trans_a) + epilogue


@rule("MatMul", "MatMulInteger", "QLinearMatMul")
def _matmul(node: Node, ins: Specs, outs: Specs) -> float:
    return 2.0 * matmul_macs(ins[0], outs[0])


# -- activations and elementwise ---------------------------------------------------------------

# Per-element cost of an activation, counted as its ONNX decomposition's op count.
ACTIVATION_COST: dict[str, int] = {
    "": 0,
    "none": 0,
    "Relu": 1,
    "LeakyRelu": 1,
    "Clip": 1,
    "Relu6": 1,
    "Sigmoid": 1,
    "Tanh": 1,
    "HardSigmoid": 1,
    "HardSwish": 1,
    "Softplus": 1,
    "Elu": 1,
    "Selu": 1,
    "Gelu": 5,  # x * 0.5 * (1 + erf(x / sqrt 2)): Div, Erf, Add, Mul, Mul
    "GeluTanh": 8,  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): 8 ops
    "FastGelu": 8,
    "SiLU": 2,  # x * Sigmoid(x)
    "Silu": 2,
    "Swish": 2,
}

ELEMENTWISE = {
    "Abs", "Acos", "Acosh", "Add", "And", "Asin", "Asinh", "Atan", "Atanh", "BitShift",
    "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Ceil", "Celu", "Clip", "Cos",
    "Cosh", "Div", "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu", "Greater", "GreaterOrEqual",
    "HardSigmoid", "HardSwish", "IsInf", "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "Mish", "Mod", "Mul", "Neg", "Not", "Or", "PRelu", "Pow", "Reciprocal", "Relu", "Round",
    "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Sub",
    "Tan", "Tanh", "ThresholdedRelu", "Where", "Xor", "Swish",
}  # fmt: skip

MOVEMENT = {
    "Cast", "CastLike", "Compress", "Concat", "ConcatFromSequence", "Constant",
    "ConstantOfShape", "DepthToSpace", "Dropout", "Expand", "EyeLike", "Flatten", "Gather",
    "GatherElements", "GatherND", "Identity", "NonZero", "OneHot", "Optional",
    "OptionalGetElement", "OptionalHasElement", "Pad", "Range", "Reshape", "ReverseSequence",
    "Scatter", "ScatterElements", "ScatterND", "SequenceAt", "SequenceConstruct",
    "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "Shape", "Size",
    "Slice", "SpaceToDepth", "Split", "SplitToSequence", "Squeeze", "Tile", "Transpose",
    "Trilu", "Unsqueeze", "QuantizeLinear", "DequantizeLinear",
}  # fmt: skip

for _op in ELEMENTWISE:
    _RULES.setdefault(_op, lambda node, ins, outs: float(_out(outs)))
for _op in MOVEMENT:
    _RULES.setdefault(_op, lambda node, ins, outs: 0.0)


@rule("Gelu")
def _gelu(node: Node, ins: Specs, outs: Specs) -> float:
    tanh = str(node.attrs.get("approximate", "none")) == "tanh"
    return float(_out(outs) * ACTIVATION_COST["GeluTanh" if tanh else "Gelu"])


@rule("Sum", "Max", "Min", "Mean")
def _variadic(node: Node, ins: Specs, outs: Specs) -> float:
    n = sum(1 for s in ins if s is not None)
    return float(_out(outs) * max(n - 1, 1) + (_out(outs) if node.op_type == "Mean" else 0))


@rule("BatchNormalization")
def _batchnorm(node: Node, ins: Specs, outs: Specs) -> float:
    return 2.0 * _out(outs)


@rule("CumSum")
def _cumsum(node: Node, ins: Specs, outs: Specs) -> float:
    return float(_out(outs))


# -- reductions and normalizations -------------------------------------------------------------


@rule("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ArgMax", "ArgMin")
def _reduce(node: Node, ins: Specs, outs: Specs) -> float:
    return float(_size(ins, 0))


@rule("ReduceMean")
def _reduce_mean(node: Node, ins: Specs, outs: Specs) -> float:
    return float(_size(ins, 0) + _out(outs))


@rule("ReduceSumSquare", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp")
def _reduce_two(node: Node, ins: Specs, outs: Specs) -> float:
    # a square (or exp) and an add per input element; a sqrt or log per output
    final = 0 if node.op_type == "ReduceSumSquare" else _out(outs)
    return float(2 * _size(ins, 0) + final)


@rule("Softmax", "LogSoftmax")
def _softmax(node: Node, ins: Specs, outs: Specs) -> float:
    return 5.0 * _out(outs)


def layernorm_flops(x: Spec, axis: int, scale: bool, bias: bool) -> float:
    """mean, subtract, square, mean, normalize per element (5), + scale and bias;
    + epsilon and sqrt per normalized row."""
    axis = axis % len(x.shape) if x.shape else 0
    rows = math.prod(x.shape[:axis])
    return float(x.size * (5 + scale + bias) + 2 * rows)


@rule("LayerNormalization")
def _layernorm(node: Node, ins: Specs, outs: Specs) -> float:
    axis = int(node.attrs.get("axis", -1))
    return layernorm_flops(ins[0], axis, _has(ins, 1), _has(ins, 2))


@rule(
    "InstanceNormalization", "GroupNormalization", "MeanVarianceNormalization", "RMSNormalization"
)
def _other_norms(node: Node, ins: Specs, outs: Specs) -> float:
    return 7.0 * _out(outs)


@rule("LRN")
def _lrn(node: Node, ins: Specs, outs: Specs) -> float:
    size = int(node.attrs.get("size", 1))
    return float(_out(outs) * (size + 4))  # window sum of squares, scale, pow, divide


# -- pools and resampling ----------------------------------------------------------------------


@rule("MaxPool", "AveragePool", "LpPool", "MaxRoiPool", "workbench:MaxPoolNHWC")
def _pool(node: Node, ins: Specs, outs: Specs) -> float:
    window = math.prod(node.attrs.get("kernel_shape", [1]))
    per = 2 if node.op_type == "LpPool" else 1
    tail = _out(outs) if node.op_type == "AveragePool" else 0  # the division
    return float(_out(outs) * window * per + tail)


@rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(node: Node, ins: Specs, outs: Specs) -> float:
    tail = _out(outs) if node.op_type == "GlobalAveragePool" else 0
    return float(_size(ins, 0) + tail)


@rule("Resize", "Upsample")
def _resize(node: Node, ins: Specs, outs: Specs) -> float:
    mode = str(node.attrs.get("mode", "nearest"))
    if mode == "nearest":
        return 0.0
    x, y = ins[0], outs[0]
    axes = sum(1 for a, b in zip(x.shape, y.shape) if a != b) or 1
    per_axis = 3 if mode == "linear" else 8  # a lerp; cubic: 4 taps, multiply-add each
    return float(y.size * per_axis * axes)


# -- recurrent ---------------------------------------------------------------------------------


@rule("RNN", "GRU", "LSTM")
def _rnn(node: Node, ins: Specs, outs: Specs) -> float:
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[node.op_type]
    x, w = ins[0], ins[1]  # X [seq, batch, input], W [dirs, gates*hidden, input]
    seq, batch, inp = x.shape[0], x.shape[1], x.shape[2]
    if int(node.attrs.get("layout", 0)) == 1:
        batch, seq = seq, batch
    dirs, hidden = w.shape[0], w.shape[1] // gates
    gemm = 2.0 * seq * batch * dirs * gates * hidden * (inp + hidden)
    pointwise = seq * batch * dirs * hidden * gates * 3  # bias adds, activations, state updates
    return gemm + pointwise


# -- the workbench domain (passes/fused_ops.py) ------------------------------------------------


def _activation(node: Node) -> int:
    act = node.attrs.get("activation", "")
    act = act.decode() if isinstance(act, bytes) else str(act)
    return ACTIVATION_COST.get(act, 1)


@rule("workbench:FusedConv", "workbench:FusedConvNHWC")  # (FLOPs do not depend on the layout)
def _fused_conv(node: Node, ins: Specs, outs: Specs) -> float:
    y = _out(outs)
    extra = sum(1 for i in range(2, len(ins)) if ins[i] is not None)  # bias, residual
    return 2.0 * conv_macs(ins[0], ins[1], outs[0]) + y * (extra + _activation(node))


@rule("workbench:FusedGemm")
def _fused_gemm(node: Node, ins: Specs, outs: Specs) -> float:
    y = _out(outs)
    extra = sum(1 for i in range(2, len(ins)) if ins[i] is not None)
    trans_a = bool(node.attrs.get("transA", 0))
    return 2.0 * gemm_macs(ins[0], outs[0], trans_a) + y * (extra + _activation(node))


@rule("workbench:FusedMatMul")
def _fused_matmul(node: Node, ins: Specs, outs: Specs) -> float:
    y = _out(outs)
    extra = sum(1 for i in range(2, len(ins)) if ins[i] is not None)
    return 2.0 * matmul_macs(ins[0], outs[0]) + y * (extra + _activation(node))


@rule("workbench:Attention")
def _attention(node: Node, ins: Specs, outs: Specs) -> float:
    """softmax(Q K^T * scale + mask) V per head, on 3-d projections Q [b, sq, h*d],
    K [b, sk, h*d], V [b, sk, h*dv]: two batched GEMMs over b*h*sq*sk scores (the heads
    split h*d between them, so the product is 2*b*sq*sk*h*d either way), then per score the
    scale, the mask add (or the causal select) and the softmax (5)."""
    q, k, v = ins[0], ins[1], ins[2]
    b, sq, hd = q.shape
    sk, hdv = k.shape[1], v.shape[-1]
    heads = int(node.attrs.get("num_heads", 1))
    scores = b * heads * sq * sk
    masks = int(_has(ins, 3)) + int(bool(node.attrs.get("causal", 0)))
    return 2.0 * b * sq * sk * hd + 2.0 * b * sq * sk * hdv + scores * (1 + masks + 5)


@rule("workbench:Gelu")
def _wb_gelu(node: Node, ins: Specs, outs: Specs) -> float:
    return _gelu(node, ins, outs)


@rule("workbench:LayerNorm")
def _wb_layernorm(node: Node, ins: Specs, outs: Specs) -> float:
    axis = int(node.attrs.get("axis", -1))
    return layernorm_flops(ins[0], axis, _has(ins, 1), _has(ins, 2))


@rule("workbench:FusedElementwise")
def _fused_elementwise(node: Node, ins: Specs, outs: Specs) -> float:
    """One per output element per instruction of its program (a Cast is data movement)."""
    program = node.attrs.get("program", [])
    lines = [program] if isinstance(program, (str, bytes)) else list(program)
    steps = sum(1 for line in lines if "= Cast(" not in str(line))
    return float(_out(outs) * steps)


# -- entry points ------------------------------------------------------------------------------


def rule_for(node: Node) -> Rule | None:
    if node.domain in ("", "ai.onnx"):
        return _RULES.get(node.op_type)
    # the workbench domain first; other domains (com.microsoft) reuse our rule of that name
    return _RULES.get(f"workbench:{node.op_type}") or _RULES.get(node.op_type)


def node_flops(node: Node, inputs: Specs, outputs: Specs) -> float:
    """FLOPs of one run of `node` on tensors of these specs; NaN when no rule knows it."""
    fn = rule_for(node)
    if fn is None:
        return math.nan
    try:
        return float(fn(node, inputs, outputs))
    except (IndexError, AttributeError, TypeError, ValueError, ZeroDivisionError):
        # a shape the rule did not expect (an omitted input, a scalar): unknown, not wrong
        return math.nan


def node_bytes(inputs: Specs, outputs: Specs) -> int:
    """Bytes read (every input, weights included) plus bytes written."""
    return sum(s.nbytes for s in (*inputs, *outputs) if s is not None)


__all__ = [
    "ACTIVATION_COST",
    "Spec",
    "conv_macs",
    "gemm_macs",
    "matmul_macs",
    "node_bytes",
    "node_flops",
    "rule",
    "spec_of",
]
