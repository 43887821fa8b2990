"""HuggingFace ``BertModel`` (no pooler) as ``torch.onnx.export`` emits it.

Embeddings are Gathers whose position ids are a buffer sliced to the runtime
sequence length; the attention mask becomes the additive "extended mask"
``(1 - mask) * float32_min``; GELU is the exact Erf form; LayerNorm is either
decomposed into the nine ops the exporter writes below opset 17 or a single
LayerNormalization node.
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


def _embeddings(
    b: GraphBuilder,
    ids: str,
    types: str,
    *,
    vocab: int,
    hidden: int,
    max_positions: int,
    type_vocab: int,
    eps: float,
    layernorm: LayerNormStyle,
) -> str:
    with b.scope("embeddings"):
        with b.scope("word_embeddings"):
            words = b.embedding(ids, vocab, hidden)
        with b.scope("token_type_embeddings"):
            x = b.op("Add", words, b.embedding(types, type_vocab, hidden))
        # position_ids[:, :seq_len] of the registered arange buffer.
        buffer = b.param("position_ids", np.arange(max_positions, dtype=np.int64)[None])
        seq_len = b.unsqueeze(b.size(ids, 1), [0])
        zero, one = b.const([0], np.int64), b.const([1], np.int64)
        positions = b.op("Slice", buffer, zero, seq_len, one, one)
        b.annotate(positions, TensorProto.INT64, [1, "sequence"])
        with b.scope("position_embeddings"):
            x = b.op("Add", x, b.embedding(positions, max_positions, hidden))
        with b.scope("LayerNorm"):
            return b.layernorm(x, hidden, eps=eps, style=layernorm)


def _extended_mask(b: GraphBuilder, mask: str) -> str:
    """mask[:, None, None, :] -> (1.0 - mask) * float32_min, added to the scores."""
    mask = b.unsqueeze(b.unsqueeze(mask, [1]), [2])
    mask = b.op("Cast", mask, to=TensorProto.FLOAT)
    return b.op("Mul", b.op("Sub", b.const(1.0), mask), b.const(FLOAT32_MIN))


def _self_attention(b: GraphBuilder, x: str, mask: str, hidden: int, heads: int) -> str:
    with b.scope("self"):
        projections = {}
        for name in ("query", "key", "value"):
            with b.scope(name):
                projections[name] = b.linear(x, hidden, hidden)
        q = b.split_heads(projections["query"], hidden, heads)
        k = b.split_heads(projections["key"], hidden, heads, keys=True)
        v = b.split_heads(projections["value"], hidden, heads)
        scores = b.op("Div", b.op("MatMul", q, k), b.const(math.sqrt(hidden // heads)))
        probs = b.op("Softmax", b.op("Add", scores, mask), axis=-1)
        return b.merge_heads(b.op("MatMul", probs, v), hidden)


def _gelu_erf(b: GraphBuilder, x: str) -> str:
    """Exact GELU as torch exports it: x * (erf(x / sqrt(2)) + 1) * 0.5."""
    erf = b.op("Erf", b.op("Div", x, b.const(1.4142135381698608)))
    return b.op("Mul", b.op("Mul", x, b.op("Add", erf, b.const(1.0))), b.const(0.5))


def _output(
    b: GraphBuilder,
    x: str,
    residual: str,
    fin: int,
    hidden: int,
    eps: float,
    style: LayerNormStyle,
    out: str | None,
) -> str:
    """BertSelfOutput / BertOutput: dense, residual Add, LayerNorm."""
    with b.scope("dense"):
        x = b.linear(x, fin, hidden)
    x = b.op("Add", x, residual)
    with b.scope("LayerNorm"):
        return b.layernorm(x, hidden, eps=eps, style=style, out=out)


def bert(
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    seq: int = 128,
    vocab: int = 30522,
    intermediate: int | None = None,
    batch: Dim = "batch",
    layernorm: LayerNormStyle = "decomposed",
    opset: int = 17,
    *,
    max_positions: int = 512,
    type_vocab: int = 2,
    eps: float = 1e-12,
    seed: int = 0,
    name: str = "bert",
) -> onnx.ModelProto:
    """BERT encoder (bert-base by default, ~109M parameters incl. embeddings, no pooler).

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64
    [batch, sequence]; output ``last_hidden_state`` float32
    [batch, sequence, hidden]. ``seq`` is the default recorded for the
    symbolic ``sequence`` dim (at most ``max_positions``). ``layernorm`` is
    ``"decomposed"`` (ReduceMean ... Add, as exported below opset 17) or
    ``"fused"`` (LayerNormalization, opset >= 17).
    """
    check_transformer(
        name,
        opset=opset,
        layernorm=layernorm,
        hidden=hidden,
        heads=heads,
        seq=seq,
        positions=("max_positions", max_positions),
    )
    intermediate = 4 * hidden if intermediate is None else intermediate

    b = GraphBuilder(name, opset=opset, seed=seed)
    shape = [batch, "sequence"]
    ids = b.input("input_ids", TensorProto.INT64, shape)
    mask = b.input("attention_mask", TensorProto.INT64, shape)
    types = b.input("token_type_ids", TensorProto.INT64, shape)

    x = _embeddings(
        b,
        ids,
        types,
        vocab=vocab,
        hidden=hidden,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=eps,
        layernorm=layernorm,
    )
    mask = _extended_mask(b, mask)
    with b.scope("encoder"):
        for i in range(layers):
            final = "last_hidden_state" if i == layers - 1 else None
            with b.scope(f"layer.{i}"):
                with b.scope("attention"):
                    context = _self_attention(b, x, mask, hidden, heads)
                    with b.scope("output"):
                        x = _output(b, context, x, hidden, hidden, eps, layernorm, None)
                with b.scope("intermediate"):
                    with b.scope("dense"):
                        h = b.linear(x, hidden, intermediate)
                    with b.scope("intermediate_act_fn"):
                        h = _gelu_erf(b, h)
                with b.scope("output"):
                    x = _output(b, h, x, intermediate, hidden, eps, layernorm, final)
    if layers == 0:
        x = b.op("Identity", x, out="last_hidden_state")
    b.output("last_hidden_state", TensorProto.FLOAT, [batch, "sequence", hidden])

    doc = (
        f"{name}: HuggingFace BertModel encoder without pooler ({layers} layers, hidden {hidden}, "
        f"{heads} heads, intermediate {intermediate}, vocab {vocab}), {layernorm} LayerNorm"
    )
    return b.build(doc=doc, dims=symbolic_dims((batch, 1), ("sequence", seq)))


def bert_6l(**kwargs: Any) -> onnx.ModelProto:
    """MiniLM-size BERT: 6 layers, hidden 384, 12 heads (intermediate 1536, ~22.6M parameters)."""
    return bert(**{"layers": 6, "hidden": 384, "heads": 12, "name": "bert_6l", **kwargs})


def tiny_bert(**kwargs: Any) -> onnx.ModelProto:
    """2 layers, hidden 32, 4 heads, seq 8, vocab 100, 16 positions: runs in under a millisecond."""
    tiny = {"layers": 2, "hidden": 32, "heads": 4, "seq": 8, "vocab": 100, "max_positions": 16}
    return bert(**{**tiny, "name": "tiny_bert", **kwargs})
