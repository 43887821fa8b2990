"""Reference definitions of the fused transformer ops of the `workbench` domain: Gelu,
LayerNorm and Attention (see `passes/fusion/{gelu,layernorm,attention}.py`).

Plain numpy, step by step as the op documentation states it, in the input's dtype
(float64 under fp64). These are what the x86 kernels are checked against.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node
    from ..base import CompileContext, KernelFn

_erf = np.vectorize(math.erf, otypes=[np.float64])


@kernels.register("Gelu", domain="workbench", since=1)
def gelu(node: Node, ctx: CompileContext) -> KernelFn | None:
    """0.5 x (1 + erf(x / sqrt 2)), or with approximate='tanh'
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))); evaluated in float64."""
    approximate = node.attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        return None

    def run(x):
        w = x.astype(np.float64)
        if approximate == "none":
            y = 0.5 * w * (1.0 + _erf(w / math.sqrt(2.0)))
        else:
            y = 0.5 * w * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (w + 0.044715 * w**3)))
        return (np.asarray(y, dtype=x.dtype),)

    return run


@kernels.register("LayerNorm", domain="workbench", since=1)
def layer_norm(node: Node, ctx: CompileContext) -> KernelFn | None:
    """(x - mean) / sqrt(var + epsilon) * Scale + B over the last axis."""
    if int(node.attrs.get("axis", -1)) != -1:
        return None
    eps = float(node.attrs.get("epsilon", 1e-5))

    def run(x, scale, bias=None):
        mean = x.mean(axis=-1, keepdims=True)
        d = x - mean
        var = (d * d).mean(axis=-1, keepdims=True)
        y = d / np.sqrt(var + x.dtype.type(eps)) * scale
        if bias is not None:
            y = y + bias
        return (y.astype(x.dtype, copy=False),)

    return run


@kernels.register("Attention", domain="workbench", since=1)
def attention(node: Node, ctx: CompileContext) -> KernelFn | None:
    """Heads split from [b, s, h*d], softmax(Q K^T * scale + mask, causal) V, merged."""
    heads = int(node.attrs["num_heads"])
    scale = float(node.attrs.get("scale", 0.0))
    causal = bool(node.attrs.get("causal", 0))

    def run(q, k, v, mask=None):
        def split(t):
            b, s, hidden = t.shape
            return t.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)

        qh, kh, vh = split(q), split(k), split(v)
        factor = scale if scale else 1.0 / math.sqrt(qh.shape[-1])
        scores = (qh @ kh.transpose(0, 1, 3, 2)) * q.dtype.type(factor)
        if mask is not None:
            scores = scores + mask
        if causal:
            sq, sk = scores.shape[-2:]
            hidden = np.triu(np.ones((sq, sk), dtype=bool), k=sk - sq + 1)
            scores = np.where(hidden, -np.inf, scores)
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        out = (probs @ vh).transpose(0, 2, 1, 3)
        b, s = out.shape[:2]
        return (out.reshape(b, s, -1).astype(q.dtype, copy=False),)

    return run
