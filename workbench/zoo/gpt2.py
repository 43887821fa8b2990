"""HuggingFace ``GPT2LMHeadModel`` (no KV cache) as ``torch.onnx.export`` emits it.

Pre-LN blocks with decomposed LayerNorm, one fused QKV projection split three
ways, a causal mask sliced from a lower-triangular bool buffer and applied
with Where, the tanh "gelu_new", and an lm_head tied to the token embedding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from ._builder import (
    FLOAT32_MIN,
    Dim,
    GraphBuilder,
    LayerNormStyle,
    check_transformer,
    symbolic_dims,
)

CAUSAL_MASK = "causal_mask"


def _attention(
    b: GraphBuilder, x: str, hidden: int, heads: int, layers: int, n_positions: int
) -> str:
    with b.scope("c_attn"):
        qkv = b.linear(x, hidden, 3 * hidden)
    # split(hidden, dim=2): Split takes the sizes as an input since opset 13.
    q, k, v = b.op_n("Split", qkv, b.const([hidden] * 3, np.int64), n_out=3, axis=2)
    q, k, v = (
        b.split_heads(q, hidden, heads),
        b.split_heads(k, hidden, heads, keys=True),
        b.split_heads(v, hidden, heads),
    )
    scores = b.op("Div", b.op("MatMul", q, k), b.const(math.sqrt(hidden // heads)))

    # bias[:, :, key_len - query_len : key_len, :key_len], as HF slices its buffer.
    query_len, key_len = b.unsqueeze(b.size(q, 2), [0]), b.unsqueeze(b.size(k, 3), [0])
    zero = b.const([0], np.int64)
    rows = b.op("Sub", key_len, query_len)
    causal = b.op("Slice", CAUSAL_MASK, rows, key_len, b.const([2], np.int64))
    b.annotate(causal, TensorProto.BOOL, [1, 1, "sequence", n_positions])
    causal = b.op("Slice", causal, zero, key_len, b.const([3], np.int64))
    b.annotate(causal, TensorProto.BOOL, [1, 1, "sequence", "sequence"])
    scores = b.op("Where", causal, scores, b.const(FLOAT32_MIN))

    probs = b.op("Softmax", scores, axis=-1)
    context = b.merge_heads(b.op("MatMul", probs, v), hidden)
    with b.scope("c_proj"):
        # HF scales residual projections by 1/sqrt(2 * n_layer) at init.
        return b.linear(context, hidden, hidden, std=0.02 / math.sqrt(2 * layers))


def _gelu_new(b: GraphBuilder, x: str) -> str:
    """0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))."""
    half_x = b.op("Mul", b.const(0.5), x)
    cubic = b.op("Mul", b.const(0.044715), b.op("Pow", x, b.const(3.0)))
    inner = b.op("Mul", b.const(math.sqrt(2.0 / math.pi)), b.op("Add", x, cubic))
    return b.op("Mul", half_x, b.op("Add", b.const(1.0), b.op("Tanh", inner)))


def gpt2(
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    seq: int = 128,
    vocab: int = 50257,
    n_positions: int = 1024,
    batch: Dim = "batch",
    opset: int = 17,
    *,
    layernorm: LayerNormStyle = "decomposed",
    eps: float = 1e-5,
    seed: int = 0,
    name: str = "gpt2",
) -> onnx.ModelProto:
    """GPT-2 language model (gpt2-small by default, ~124M parameters with the tied lm_head).

    Input ``input_ids`` int64 [batch, sequence]; output ``logits`` float32
    [batch, sequence, vocab]. ``seq`` is the default recorded for the
    symbolic ``sequence`` dim (at most ``n_positions``).
    """
    check_transformer(
        name,
        opset=opset,
        layernorm=layernorm,
        hidden=hidden,
        heads=heads,
        seq=seq,
        positions=("n_positions", n_positions),
    )

    b = GraphBuilder(name, opset=opset, seed=seed)
    ids = b.input("input_ids", TensorProto.INT64, [batch, "sequence"])
    # One lower-triangular buffer serves every layer (HF registers one per layer).
    b.param(CAUSAL_MASK, np.tril(np.ones((n_positions, n_positions), dtype=bool))[None, None])

    with b.scope("transformer"):
        with b.scope("wte"):
            x = b.embedding(ids, vocab, hidden)
            wte = b.param_name("weight")  # tied to lm_head below
        # arange(0, seq_len).unsqueeze(0)
        positions = b.op("Range", b.const(0, np.int64), b.size(ids, 1), b.const(1, np.int64))
        b.annotate(positions, TensorProto.INT64, ["sequence"])
        positions = b.unsqueeze(positions, [0])
        with b.scope("wpe"):
            x = b.op("Add", x, b.embedding(positions, n_positions, hidden))
        for i in range(layers):
            with b.scope(f"h.{i}"):
                with b.scope("ln_1"):
                    h = b.layernorm(x, hidden, eps=eps, style=layernorm)
                with b.scope("attn"):
                    x = b.op("Add", _attention(b, h, hidden, heads, layers, n_positions), x)
                with b.scope("ln_2"):
                    h = b.layernorm(x, hidden, eps=eps, style=layernorm)
                with b.scope("mlp"):
                    with b.scope("c_fc"):
                        h = b.linear(h, hidden, 4 * hidden)
                    with b.scope("act"):
                        h = _gelu_new(b, h)
                    with b.scope("c_proj"):
                        h = b.linear(h, 4 * hidden, hidden, std=0.02 / math.sqrt(2 * layers))
                x = b.op("Add", x, h)
        with b.scope("ln_f"):
            x = b.layernorm(x, hidden, eps=eps, style=layernorm)
    with b.scope("lm_head"):
        # Tied weights: a Transpose of wte rather than a second 38M-float copy.
        b.op("MatMul", x, b.op("Transpose", wte, perm=[1, 0]), out="logits")
    b.output("logits", TensorProto.FLOAT, [batch, "sequence", vocab])

    doc = (
        f"{name}: HuggingFace GPT2LMHeadModel without KV cache ({layers} layers, hidden {hidden}, "
        f"{heads} heads, vocab {vocab}, {n_positions} positions), tied lm_head"
    )
    return b.build(doc=doc, dims=symbolic_dims((batch, 1), ("sequence", seq)))


def tiny_gpt2(**kwargs: Any) -> onnx.ModelProto:
    """2 layers, hidden 32, 4 heads, seq 8, vocab 100, 16 positions."""
    tiny = {"layers": 2, "hidden": 32, "heads": 4, "seq": 8, "vocab": 100, "n_positions": 16}
    return gpt2(**{**tiny, "name": "tiny_gpt2", **kwargs})
