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

from ._builder import FLOAT32_MIN, Dim, GraphBuilder, LayerNormStyle, check_opset, symbolic_dims


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
            words = b.op("Gather", b.param("weight", b.normal((vocab, hidden), 0.02)), ids)
        with b.scope("token_type_embeddings"):
            token_types = b.op("Gather", b.param("weight", b.normal((type_vocab, hidden), 0.02)), types)
        x = b.op("Add", words, token_types)
        # position_ids[:, :seq_len] of the registered arange buffer.
        buffer = b.param("position_ids", np.arange(max_positions, dtype=np.int64)[None])
        seq_len = b.unsqueeze(b.size(ids, 1), [0])
        zero, one = b.const([0], np.int64), b.const([1], np.int64)
        positions = b.op("Slice", buffer, zero, seq_len, one, one)
        b.annotate(positions, TensorProto.INT64, [1, "sequence"])
        with b.scope("position_embeddings"):
            x = b.op("Add", x, b.op("Gather", b.param("weight", b.normal((max_positions, hidden), 0.02)), positions))
        with b.scope("LayerNorm"):
            return b.layernorm(x, hidden, eps=eps, style=layernorm)


def _extended_mask(b: GraphBuilder, mask: str) -> str:
    """mask[:, None, None, :] -> (1.0 - mask) * float32_min, added to the scores."""
    mask = b.unsqueeze(b.unsqueeze(mask, [1]), [2])
    mask = b.op("Cast", mask, to=TensorProto.FLOAT)
    return b.op("Mul", b.op("Sub", b.const(1.0), mask), b.const(FLOAT32_MIN))


def _self_attention(b: GraphBuilder, x: str, mask: str, hidden: int, heads: int) -> str:
    head_dim = hidden // heads
    with b.scope("self"):
        projections = {}
        for name in ("query", "key", "value"):
            with b.scope(name):
                projections[name] = b.linear(x, hidden, hidden)
        # Reshape with 0 (copy dim) keeps batch/sequence symbolic, as exporters do.
        split_heads = b.const([0, 0, heads, head_dim], np.int64)
        q = b.op("Transpose", b.op("Reshape", projections["query"], split_heads), perm=[0, 2, 1, 3])
        # K goes straight to [batch, heads, head_dim, seq]: permute + transpose(-1, -2) fused.
        k = b.op("Transpose", b.op("Reshape", projections["key"], split_heads), perm=[0, 2, 3, 1])
        v = b.op("Transpose", b.op("Reshape", projections["value"], split_heads), perm=[0, 2, 1, 3])
        scores = b.op("Div", b.op("MatMul", q, k), b.const(math.sqrt(head_dim)))
        probs = b.op("Softmax", b.op("Add", scores, mask), axis=-1)
        context = b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        return b.op("Reshape", context, b.const([0, 0, hidden], np.int64))


def _gelu_erf(b: GraphBuilder, x: str) -> str:
    """Exact GELU as torch exports it: x * (erf(x / sqrt(2)) + 1) * 0.5."""
    erf = b.op("Erf", b.op("Div", x, b.const(1.4142135381698608)))
    return b.op("Mul", b.op("Mul", x, b.op("Add", erf, b.const(1.0))), b.const(0.5))


def _output(
    b: GraphBuilder, x: str, residual: str, fin: int, hidden: int, eps: float, style: LayerNormStyle, out: str | None
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
    check_opset(opset, 13, name)
    if layernorm == "fused":
        check_opset(opset, 17, f"{name} with layernorm='fused'")
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
    if not 0 < seq <= max_positions:
        raise ValueError(f"seq {seq} must be in 1..max_positions ({max_positions})")
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
        f"{heads} heads, intermediate {intermediate}, vocab {vocab}), {layernorm} LayerNorm, "
        f"seeded random weights (seed {seed}); built by workbench.zoo, no download."
    )
    return b.build(doc=doc, dims=symbolic_dims((batch, 1), ("sequence", seq)))


def bert_6l(**kwargs: Any) -> onnx.ModelProto:
    """MiniLM-size BERT: 6 layers, hidden 384, 12 heads (intermediate 1536, ~22.7M parameters)."""
    params: dict[str, Any] = {"layers": 6, "hidden": 384, "heads": 12, "name": "bert_6l", **kwargs}
    return bert(**params)


def tiny_bert(**kwargs: Any) -> onnx.ModelProto:
    """2 layers, hidden 32, 4 heads, seq 8, vocab 100, 16 positions: runs in well under a millisecond."""
    params: dict[str, Any] = {
        "layers": 2,
        "hidden": 32,
        "heads": 4,
        "seq": 8,
        "vocab": 100,
        "max_positions": 16,
        "name": "tiny_bert",
        **kwargs,
    }
    return bert(**params)
