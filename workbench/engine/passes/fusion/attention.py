"""Attention fusion: multi-head scaled dot-product attention as exporters write it -> one
`workbench.Attention` node.

    Q = Transpose(Reshape(q, [b, s, heads, d]), [0, 2, 1, 3])     (V alike)
    K = Transpose(Reshape(k, [b, s, heads, d]), [0, 2, 3, 1])     (or two Transposes)
    Reshape(Transpose(MatMul(Softmax(Add(Div(MatMul(Q, K), sqrt(d)), mask)), V),
            [0, 2, 1, 3]), [b, s, hidden])                -> Attention(q, k, v, mask)

The scale may be a Div or a Mul, after the MatMul or on Q and/or K before it (any
constant: it becomes the `scale` attribute). The mask is optional and is whatever tensor
is added to the scores (BERT adds an extended [b, 1, 1, s] mask). GPT-2's causal form,
Where(tril_buffer[key_len - query_len : key_len, :key_len], scores, -large), becomes
`causal=1`; the shape arithmetic computing the slice is taken into the match. The fused
node reads the 3-D projections [b, s, hidden] (the inputs of the Q/K/V Reshapes) and
produces the final Reshape's output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...ir import Dim, Node, Value
from ..fused_ops import define_op
from ..infra import PassContext
from ..rules import Match, Rule, RulePass, const_value, fused_name, like, producer, scalar
from .gelu import absorb_producers

ATTENTION = define_op(
    "Attention",
    "Multi-head scaled dot-product attention on 3-D projections. Q [b, sq, h*d], "
    "K [b, sk, h*d] and V [b, sk, h*dv] are split into num_heads heads; per head "
    "P = softmax(Q K^T * scale + mask) over the keys, with keys j > i + sk - sq hidden "
    "from query i when causal=1; Y = P V, heads merged back into [b, sq, h*dv].",
    inputs=[
        ("Q", "query projection [batch, q_seq, num_heads * head_dim]"),
        ("K", "key projection [batch, kv_seq, num_heads * head_dim]"),
        ("V", "value projection [batch, kv_seq, num_heads * v_head_dim]"),
        ("mask?", "additive mask, broadcastable to [batch, num_heads, q_seq, kv_seq]"),
    ],
    outputs=[("Y", "[batch, q_seq, num_heads * v_head_dim]")],
    attributes={
        "num_heads": "int: number of heads",
        "scale": "float: factor on Q K^T (1/sqrt(head_dim) in the usual model)",
        "causal": "int: 1 hides key j from query i when j > i + kv_seq - q_seq",
    },
    replaces="Reshape(Transpose(MatMul(Softmax(Add(Div(MatMul(Q, K^T), sqrt(d)), mask)), V)))",
)

# A Where fill at or below this is "minus infinity" for softmax: exp(fill - max) is 0.
LARGE_NEGATIVE = -1e4


def same_dim(a: Dim, b: Dim) -> bool:
    """Two dims known equal: the same int, or the same symbolic name."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return isinstance(a, str) and a != "" and a == b


def _perm(node: Node | None) -> list[int] | None:
    if node is None:
        return None
    perm = node.attrs.get("perm")
    return None if perm is None else [int(p) for p in perm]


def _ints(v: Value | None) -> list[int] | None:
    c = const_value(v)
    return None if c is None else [int(a) for a in np.asarray(c).reshape(-1)]


def _split_heads(r: Node) -> tuple[Value, int, int] | str:
    """A Reshape of [b, s, h*d] into [b, s, h, d]: (the 3-D input, h, d), or why not.

    Proven either by the target ([0, 0, h, d]: dims 0 and 1 copied) or by the inferred
    shapes (dims 0 and 1 the same, the last two static)."""
    src, out = r.inputs[0], r.outputs[0]
    ins, outs = src.shape, out.shape
    bad = f"Reshape {r.name!r} does not split a [batch, seq, hidden] tensor into heads"
    if int(r.attrs.get("allowzero", 0)) or ins is None or len(ins) != 3:
        return bad
    t = _ints(r.inputs[1])
    if t is not None and len(t) == 4 and t[:2] == [0, 0] and t[2] > 0 and t[3] > 0:
        heads, dim = t[2], t[3]
    elif (
        outs is not None
        and len(outs) == 4
        and same_dim(ins[0], outs[0])
        and same_dim(ins[1], outs[1])
        and isinstance(outs[2], int)
        and isinstance(outs[3], int)
    ):
        heads, dim = outs[2], outs[3]
    else:
        return bad
    if isinstance(ins[2], int) and ins[2] != heads * dim:
        return bad
    return src, heads, dim


def _merges_heads(r: Node, heads: int, dim: int) -> bool:
    """Whether a Reshape turns [b, s, h, d] into [b, s, h*d]."""
    ins, outs = r.inputs[0].shape, r.outputs[0].shape
    t = _ints(r.inputs[1])
    if int(r.attrs.get("allowzero", 0)):
        return False
    if t is not None and len(t) == 3 and t[0] == 0 and t[1:] in ([0, heads * dim], [0, -1]):
        return True
    return (
        ins is not None
        and outs is not None
        and len(ins) == 4
        and len(outs) == 3
        and same_dim(ins[0], outs[0])
        and same_dim(ins[1], outs[1])
        and outs[2] == heads * dim
    )


def _shape_only(node: Node, memo: dict[int, bool]) -> bool:
    """Whether `node` computes from shapes and constants alone (Shape, Gather, Concat,
    Slice of a constant buffer, ...): a shape computation the fused op makes moot."""
    key = id(node)
    if key not in memo:
        memo[key] = False  # (a cycle cannot occur; this just bounds the recursion)
        if node.op_type in ("Shape", "Size"):
            memo[key] = True
        elif (
            node.domain in ("", "ai.onnx")
            and not node.op_type.startswith("Random")
            and not any(True for _ in node.subgraphs())
        ):
            memo[key] = all(
                v is None
                or v.is_const
                or (v.producer is not None and _shape_only(v.producer, memo))
                for v in node.inputs
            )
    return memo[key]


class _Walk:
    """The nodes and bindings gathered while matching one candidate, and the first
    reason it does not qualify."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.problem: str | None = None
        self.scale = 1.0

    def fail(self, reason: str) -> None:
        self.problem = self.problem or reason

    def take(self, *nodes: Node) -> None:
        self.nodes += [n for n in nodes if n not in self.nodes]

    def scaled(self, v: Value, what: str) -> Value:
        """Peel Div/Mul by a constant scalar off `v` (folding it into `scale`)."""
        p = producer(v, ("Div", "Mul"))
        if p is None:
            return v
        if p.op_type == "Div":
            c = scalar(p.inputs[1])
            if c is None or c == 0:
                self.take(p)
                self.fail(f"{what} is divided by a non-constant")
                return p.inputs[0]
            self.take(p)
            self.scale /= c
            return p.inputs[0]
        for i in (0, 1):
            c = scalar(p.inputs[1 - i])
            if c is not None:
                self.take(p)
                self.scale *= c
                return p.inputs[i]
        return v  # a Mul by a tensor: not a scale (the caller will say what it found)

    def heads(self, v: Value, key: bool, what: str) -> tuple[Value, int, int, Node] | None:
        """Q/V: Transpose(Reshape(x), [0, 2, 1, 3]); K: perm [0, 2, 3, 1], or [0, 2, 1, 3]
        then [0, 1, 3, 2]. Returns (x, heads, head_dim, the Transpose nearest x)."""
        t = producer(v, "Transpose")
        shaped = f"{what} is not Reshape -> Transpose of a [batch, seq, hidden] tensor"
        if t is None:
            self.fail(shaped)
            return None
        self.take(t)
        first = t
        if key and _perm(t) == [0, 1, 3, 2]:
            first = producer(t.inputs[0], "Transpose")
            if first is None or _perm(first) != [0, 2, 1, 3]:
                self.fail(shaped)
                return None
            self.take(first)
        elif _perm(t) != ([0, 2, 3, 1] if key else [0, 2, 1, 3]):
            self.fail(f"{what} Transpose has perm {_perm(t)}")
            return None
        r = producer(first.inputs[0], "Reshape")
        if r is None:
            self.fail(shaped)
            return None
        self.take(r)
        split = _split_heads(r)
        if isinstance(split, str):
            self.fail(split)
            return None
        return (*split, first)


def _seq_len(v: Value | None, dims: list[tuple[Value, int]]) -> bool:
    """Whether `v` is Unsqueeze(Gather(Shape(t), i), [0]) for a (t, i) in `dims`."""
    unsq = producer(v, "Unsqueeze")
    if unsq is None:
        return False
    axes = _ints(unsq.inputs[1]) if len(unsq.inputs) > 1 else unsq.attrs.get("axes")
    gather = producer(unsq.inputs[0], "Gather")
    if list(axes or []) != [0] or gather is None or int(gather.attrs.get("axis", 0)) != 0:
        return False
    shape = producer(gather.inputs[0], "Shape")
    index = scalar(gather.inputs[1])
    if shape is None or index is None or shape.attrs.get("start") or "end" in shape.attrs:
        return False
    t = shape.inputs[0]
    rank = len(t.shape) if t.shape is not None else None
    for value, axis in dims:
        if value is t and (index == axis or (rank is not None and index + rank == axis)):
            return True
    return False


def _slice(node: Node | None, axis: int) -> tuple[Value, Value] | None:
    """A Slice along `axis` alone with step 1: (starts, ends)."""
    if node is None or len(node.inputs) < 4:
        return None
    axes = _ints(node.inputs[3])
    steps = _ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else [1]
    if axes not in ([axis], [axis - 4]) or steps != [1]:
        return None
    return node.inputs[1], node.inputs[2]


def _causal_buffer(v: Value | None) -> bool:
    """A constant [1, 1, N, N] bool lower-triangular matrix."""
    c = const_value(v)
    if c is None or c.ndim != 4 or c.shape[:2] != (1, 1) or c.shape[2] != c.shape[3]:
        return False
    return bool(np.array_equal(c[0, 0].astype(bool), np.tri(c.shape[2], dtype=bool)))


def _causal(cond: Value, qdims: list[tuple[Value, int]], kdims: list[tuple[Value, int]]) -> bool:
    """Whether `cond` is buffer[.., key_len - query_len : key_len, :key_len] of a causal
    buffer (HF GPT-2): query i then sees keys j <= i + key_len - query_len."""
    outer = producer(cond, "Slice")
    cols = _slice(outer, 3)
    if cols is None or _ints(cols[0]) != [0] or not _seq_len(cols[1], kdims):
        return False
    inner = producer(outer.inputs[0], "Slice")
    rows = _slice(inner, 2)
    if rows is None or not _causal_buffer(inner.inputs[0]) or not _seq_len(rows[1], kdims):
        return False
    sub = producer(rows[0], "Sub")
    return sub is not None and _seq_len(sub.inputs[0], kdims) and _seq_len(sub.inputs[1], qdims)


def _causal_constant(cond: Value, q3: Value, k3: Value) -> bool:
    """A constant condition (static shapes fold the slicing away): [.., Sq, Sk] with
    leading dims 1, true on and below the diagonal that ends at the last key."""
    c = const_value(cond)
    if c is None or c.ndim < 2 or c.ndim > 4 or any(d != 1 for d in c.shape[:-2]):
        return False
    sq, sk = c.shape[-2:]
    if not (q3.shape and k3.shape and q3.shape[1] == sq and k3.shape[1] == sk):
        return False
    tri = np.tri(sq, sk, k=sk - sq, dtype=bool)
    return bool(np.array_equal(c.reshape(sq, sk).astype(bool), tri))


class AttentionRule(Rule):
    """Anchored at the Reshape that merges the heads back into [b, s, hidden]."""

    name = "attention"
    anchor = ("Reshape",)

    def pattern(self, node: Node, ctx: PassContext) -> Match | None:
        merge = producer(node.inputs[0], "Transpose")
        context = producer(merge.inputs[0], "MatMul") if merge is not None else None
        softmax = producer(context.inputs[0], "Softmax") if context is not None else None
        if softmax is None or _perm(merge) != [0, 2, 1, 3]:
            return None
        w = _Walk()
        w.take(softmax, context, merge, node)
        values: dict[str, Any] = {"mask": None, "causal": 0, "fill": None, "cond": None}
        if int(softmax.attrs.get("axis", -1)) not in (-1, 3):
            w.fail(f"Softmax axis is {softmax.attrs['axis']}, not the last axis")
        scores = self._masks(softmax.inputs[0], w, values)
        scores = w.scaled(scores, "the scores")
        qk = producer(scores, "MatMul")
        if qk is None:
            w.fail("Softmax input is not a MatMul of Q and K (scaled, masked)")
            return Match(w.nodes, {**values, "problem": w.problem}, [node.outputs[0]])
        w.take(qk)
        q = w.heads(w.scaled(qk.inputs[0], "Q"), key=False, what="Q")
        k = w.heads(w.scaled(qk.inputs[1], "K"), key=True, what="K")
        v = w.heads(context.inputs[1], key=False, what="V")
        if q and k and v:
            (q3, hq, dq, _), (k3, hk, dk, _), (v3, hv, dv, _) = q, k, v
            if (hq, dq) != (hk, dk) or hv != hq:
                w.fail(f"Q has {hq} heads of {dq}, K {hk} of {dk}, V {hv} of {dv}")
            elif not _merges_heads(node, hv, dv):
                w.fail(f"Reshape {node.name!r} does not merge {hv} heads of {dv}")
            values.update(q=q3, k=k3, v=v3, heads=hq, head_dim=dq)
            if values["cond"] is not None:
                self._check_causal(q, k, w, values)
        values.update(scale=w.scale, problem=w.problem)
        keep = [values.get("q"), values.get("k"), values.get("v"), values["mask"]]
        memo: dict[int, bool] = {}
        nodes = absorb_producers(w.nodes, keep, lambda n: _shape_only(n, memo))
        nodes.remove(node)
        return Match([*nodes, node], values, [node.outputs[0]])

    @staticmethod
    def _masks(z: Value, w: _Walk, values: dict[str, Any]) -> Value:
        """Peel an additive mask (Add) and a causal Where off the Softmax input, in either
        order; returns the scores they were applied to."""
        for _ in range(2):
            p = producer(z, ("Add", "Where"))
            if p is None:
                break
            if p.op_type == "Where" and values["cond"] is None:
                w.take(p)
                values["cond"], values["fill"] = p.inputs[0], scalar(p.inputs[2])
                z = p.inputs[1]
            elif p.op_type == "Add" and values["mask"] is None:
                side = [i for i in (0, 1) if _leads_to_scores(p.inputs[i])]
                if len(side) != 1:
                    break
                w.take(p)
                values["mask"] = p.inputs[1 - side[0]]
                z = p.inputs[side[0]]
            else:
                break
        return z

    @staticmethod
    def _check_causal(q: tuple, k: tuple, w: _Walk, values: dict[str, Any]) -> None:
        (q3, _, _, qt), (k3, _, _, kt) = q, k
        fill = values["fill"]
        if fill is None or fill > LARGE_NEGATIVE:
            shown = "a non-constant" if fill is None else f"{fill:g}"
            w.fail(f"Where fills masked scores with {shown}, not a large negative number")
            return
        # the Transposes' outputs put the sequence at 2 (Q: [b, h, s, d]) and at 3 or 2
        # (K: [b, h, d, s] or [b, h, s, d] before the second Transpose)
        qdims = [(q3, 1), (qt.inputs[0], 1), (qt.outputs[0], 2)]
        kdims = [(k3, 1), (kt.inputs[0], 1)]
        kdims += [(kt.outputs[0], 3 if _perm(kt) == [0, 2, 3, 1] else 2)]
        kdims += [(u.outputs[0], 3) for u, _ in kt.outputs[0].uses if u.op_type == "Transpose"]
        cond = values["cond"]
        if not (_causal(cond, qdims, kdims) or _causal_constant(cond, q3, k3)):
            w.fail("Where condition is not a recognised causal mask")
        elif not (q3.shape and k3.shape and same_dim(q3.shape[1], k3.shape[1])):
            w.fail("causal mask with query and key sequences that may differ in length")
        else:
            values["causal"] = 1

    def check(self, match: Match, ctx: PassContext) -> str | None:
        v = match.values
        if v["problem"]:
            return v["problem"]
        mask = v["mask"]
        if mask is not None and mask.shape is not None and len(mask.shape) > 4:
            return f"mask {mask.name!r} has rank {len(mask.shape)}, more than the scores' 4"
        if not ctx.backend_supports("Attention"):
            return f"backend {ctx.backend!r} has no kernel for workbench.Attention"
        return None

    def rewrite(self, match: Match, ctx: PassContext) -> list[Node]:
        v = match.values
        inputs = [v["q"], v["k"], v["v"]]
        if v["mask"] is not None:
            inputs.append(v["mask"])
        attrs = {"num_heads": int(v["heads"]), "scale": float(v["scale"])}
        if v["causal"]:
            attrs["causal"] = 1
        return [
            Node(
                "Attention",
                inputs,
                [like(match.outputs[0])],
                attrs,
                name=fused_name(match, "Attention"),
                domain="workbench",
            )
        ]


def _leads_to_scores(v: Value, depth: int = 4) -> bool:
    """Whether `v` is Q K^T of two head-split tensors, maybe scaled or masked on the way
    (followed through Div/Mul/Add/Where nodes)."""
    p = producer(v, ("Div", "Mul", "Add", "Where", "MatMul"))
    if p is None:
        return False
    if p.op_type == "MatMul":
        return all(_from_heads(x) for x in p.inputs)
    ahead = {"Where": p.inputs[1:2], "Div": p.inputs[:1]}.get(p.op_type, p.inputs)
    return depth > 0 and any(_leads_to_scores(x, depth - 1) for x in ahead)


def _from_heads(v: Value) -> bool:
    """A Transpose output, or a Div/Mul of one (a scaled Q or K)."""
    if producer(v, "Transpose") is not None:
        return True
    p = producer(v, ("Div", "Mul"))
    return p is not None and any(producer(x, "Transpose") is not None for x in p.inputs)


PASSES = [
    RulePass(
        "attention_fusion",
        [AttentionRule()],
        level=2,
        order=15,
        description="multi-head scaled dot-product attention -> workbench.Attention",
    )
]
