"""Channels-last chains of convolutions (opt level 3, for backends that prefer it).

MobileNet-style networks alternate 1x1 convolutions and depthwise ones. In NCHW a
depthwise kernel vectorizes along an image row, which is short on the late 14x14 and
7x7 planes; channels-last (NHWC) it vectorizes along the channels, whatever the plane,
and a 1x1 convolution is one plain GEMM (positions x channels by channels x outputs).
Measured on the x86 kernels (one thread, MobileNetV2's depthwise shapes, ms NCHW ->
NHWC): 960x7x7 0.83 -> 0.08, 576x14x14 0.73 -> 0.22, 192x28x28 stride 2 0.43 -> 0.07,
96x112x112 stride 2 1.30 -> 0.59. A transpose per layer would eat that gain, so this
pass moves whole chains: every Conv (or workbench.FusedConv) that is depthwise (one
input and one output channel per group) or 1x1 (stride 1, no padding, one group) joins
the region of the convolutions it reads from or feeds (as input X or residual Z) and
becomes a `workbench.FusedConvNHWC`; so does any other convolution of one group there
(MobileNetV2's 3x3 stem: its windows gathered channels-last, one GEMM that writes NHWC,
so the transpose in is the 3-channel input's, not the stem's 32-channel output's).
Values that enter a region are transposed to NHWC
once; values read outside it (or graph outputs) are transposed back once, under their
own names, so everything outside the region, and every comparison by value name, sees
what it saw before. A GlobalAveragePool of a region's output is done channels-last
instead (a ReduceMean over H and W, then its C values turned to [N, C, 1, 1] under the
pool's output name), so the whole output is never transposed back for it. A 2-D MaxPool
joins the region of the convolutions it reads from or feeds and becomes a
`workbench.MaxPoolNHWC` (max over each window of C-vectors): ResNet's 7x7 stem and its
pool then run channels-last with the rest, and the one transpose in is the 3-channel
image's, not the pool's 64-channel output's. A region
needs two convolutions, and a depthwise one unless the backend's
`channels_last_any_chain` is set (x86 with MKL: its channels-last GEMM, by a weight
packed once, beats its NCHW ones, so ResNets move too); a lone conv would pay two
transposes for one. A FusedConv whose residual broadcasts
stays out (its dims are not the output's to permute).

Runs for backends whose `prefers_channels_last` is set (x86), and only where the backend
has the kernel for the op on the value's dtype.
"""

from __future__ import annotations

import numpy as np
import onnx

from ...ir import Graph, Node, Value
from ..fused_ops import define_op
from ..fusion.activation import ACTIVATION_ATTRS, native_reason
from ..fusion.conv_add_relu import CONV_ATTRS
from ..infra import Change, Pass, PassContext, PassResult, Rejection, origin_of

FUSED_CONV_NHWC = define_op(
    "FusedConvNHWC",
    "FusedConv on channels-last tensors: Y = act(Conv(X, W, B) + Z) with X [N, H, W, C] "
    "and Y, Z [N, OH, OW, M]. The channels_last pass (opt level 3) emits it for depthwise "
    "convolutions and convolutions of one group.",
    inputs=[
        ("X", "[N, H, W, C]"),
        ("W", "[M, C/group, kh, kw], as Conv"),
        ("B?", "[M], as Conv"),
        ("Z?", "residual [N, OH, OW, M] (or broadcast to it), added before act"),
    ],
    outputs=[("Y", "[N, OH, OW, M]")],
    attributes={**CONV_ATTRS, **ACTIVATION_ATTRS},
    replaces="Transpose(FusedConv(Transpose(X), W, B, Transpose(Z)))",
)

_POOL_ATTRS = ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")

MAX_POOL_NHWC = define_op(
    "MaxPoolNHWC",
    "MaxPool on channels-last tensors: X [N, H, W, C] -> Y [N, OH, OW, C], 2-D windows, "
    "no Indices output. The channels_last pass (opt level 3) emits it for a MaxPool "
    "between convolutions of a region (ResNet's stem), which then joins them.",
    inputs=[("X", "[N, H, W, C]")],
    outputs=[("Y", "[N, OH, OW, C]")],
    attributes={
        "auto_pad": "string: as MaxPool (default NOTSET)",
        "ceil_mode": "int: as MaxPool (default 0)",
        "dilations": "ints: as MaxPool",
        "kernel_shape": "ints: as MaxPool (2-D)",
        "pads": "ints: as MaxPool",
        "strides": "ints: as MaxPool",
    },
    replaces="Transpose(MaxPool(Transpose(X)))",
)

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]
RULE = "channels_last"


def conv_kind(w_shape: tuple, x_shape: tuple | None, attrs: dict, group: int) -> str | None:
    """'depthwise', 'pointwise' (1x1, stride 1, no padding, one group), 'im2col' (any
    other 2-D convolution of one group) or None (grouped ones): the convolutions
    FusedConvNHWC computes, from the weight [M, C/group, kh, kw], the input [N, C, H, W]
    (NCHW) and the Conv attributes."""
    if len(w_shape) != 4 or x_shape is None or len(x_shape) != 4:
        return None
    m, cg, kh, kw = w_shape
    c = x_shape[1]
    if group > 1 and cg == 1 and m == group and c == group:
        return "depthwise"
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    strides = [int(s) for s in attrs.get("strides", [1, 1])]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    one = (kh, kw) == (1, 1) and group == 1 and strides == [1, 1] and not any(pads)
    if one and auto_pad in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        return "pointwise"
    return "im2col" if group == 1 else None


def _max_pool(node: Node) -> bool:
    """A 2-D MaxPool of one output (no Indices) in row-major storage on a 4-D input."""
    x = node.inputs[0] if node.inputs else None
    return (
        node.op_type == "MaxPool"
        and node.domain in ("", "ai.onnx")
        and len([v for v in node.outputs if v is not None and v.name]) == 1
        and len(node.attrs.get("kernel_shape") or ()) == 2
        and not node.attrs.get("storage_order", 0)
        and x is not None
        and x.shape is not None
        and len(x.shape) == 4
    )


def _kind(node: Node) -> str | None:
    if _max_pool(node):
        return "pool"
    if node.domain not in ("", "ai.onnx", "workbench"):
        return None
    if (node.domain == "workbench") != (node.op_type == "FusedConv") or node.op_type not in (
        "Conv",
        "FusedConv",
    ):
        return None
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if w is None or not w.is_const:
        return None
    z = node.inputs[3] if len(node.inputs) > 3 else None
    if z is not None and (z.shape is None or tuple(z.shape) != tuple(node.outputs[0].shape or ())):
        return None  # a residual that broadcasts: its dims are not the output's to permute
    return conv_kind(
        tuple(w.shape or ()), node.inputs[0].shape, node.attrs, int(node.attrs.get("group", 1))
    )


def _permuted(v: Value, perm: list[int], name: str) -> Value:
    shape = None if v.shape is None else tuple(v.shape[p] for p in perm)
    return Value(name, v.elem_type, shape)


def _transpose(v: Value, perm: list[int], out: Value, name: str) -> Node:
    node = Node("Transpose", [v], [out], {"perm": perm}, name=name)
    node.meta["origin"] = ()  # made by this pass: stands for no node of the original graph
    node.meta["layout"] = "to NHWC" if perm == TO_NHWC else "to NCHW"
    return node


class _Regions:
    """Union-find over the eligible convolutions, joined where one reads the other."""

    def __init__(self, members: list[Node]) -> None:
        self.parent = {id(n): id(n) for n in members}

    def find(self, k: int) -> int:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def join(self, a: Node, b: Node) -> None:
        self.parent[self.find(id(a))] = self.find(id(b))


def _operands(node: Node) -> list[int]:
    """Input positions that carry activations in the layout: X, and Z of a FusedConv."""
    return [0, 3] if node.op_type == "FusedConv" else [0]


class ChannelsLastPass(Pass):
    name = "channels_last"
    level = 3
    order = 10
    description = "chains of convs (with a depthwise one, or any if the backend gains) -> NHWC"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from ...backends import get_backend

        backend = get_backend(ctx.backend, require_available=False)
        if not getattr(backend, "prefers_channels_last", False):
            return PassResult(graph, False)
        any_chain = bool(getattr(backend, "channels_last_any_chain", False))
        kinds: dict[int, str] = {}
        rejected: list[Rejection] = []
        for n in graph.nodes:
            kind = _kind(n)
            if kind is None:
                continue
            op = "MaxPoolNHWC" if kind == "pool" else "FusedConvNHWC"
            reason = native_reason(ctx, op, n.outputs[0])
            if reason:
                rejected.append(Rejection(self.name, RULE, (n.name,), reason))
                continue
            kinds[id(n)] = kind
        members = [n for n in graph.nodes if id(n) in kinds]
        regions = _Regions(members)
        for n in members:
            for i in _operands(n):
                src = n.inputs[i] if i < len(n.inputs) else None
                if src is not None and src.producer is not None and id(src.producer) in kinds:
                    regions.join(src.producer, n)
        groups: dict[int, list[Node]] = {}
        for n in members:
            groups.setdefault(regions.find(id(n)), []).append(n)
        chosen: set[int] = set()
        for group in groups.values():
            names = tuple(n.name for n in group)
            depthwise = "depthwise" in {kinds[id(n)] for n in group}
            convs = sum(kinds[id(n)] != "pool" for n in group)  # (a pool joins, never alone)
            if convs < 2 or not (depthwise or any_chain):
                why = (
                    "a lone convolution: two transposes would cost more than channels-last saves"
                    if convs < 2
                    else "no depthwise convolution in the chain, and this backend's "
                    "channels-last GEMM gains nothing over its NCHW one"
                )
                rejected.append(Rejection(self.name, RULE, names, why))
                continue
            chosen |= {id(n) for n in group}
        # all regions at once, in graph order: a value two regions read is transposed once
        chosen_nodes = [n for n in members if id(n) in chosen]
        changes = _rewrite(graph, chosen_nodes, self.name, ctx.opset)
        return PassResult(graph, bool(changes), changes, rejected)


def _rewrite(graph: Graph, chosen: list[Node], pass_name: str, opset: int) -> list[Change]:
    """Replace the chosen convolutions (in graph order) with FusedConvNHWC nodes, and
    their MaxPools with MaxPoolNHWC ones."""
    inside = {id(n) for n in chosen}
    nhwc: dict[str, Value] = {}  # NCHW value name -> its channels-last twin
    changes: list[Change] = []
    for old in chosen:
        added: list[str] = []
        ins: list[Value | None] = list(old.inputs) + [None] * (4 - len(old.inputs))
        for i in _operands(old):
            v = ins[i]
            if v is None:
                continue
            twin = nhwc.get(v.name)
            if twin is None:  # enters the region here: one transpose, shared
                twin = _permuted(v, TO_NHWC, f"{v.name}/nhwc")
                t = _transpose(v, TO_NHWC, twin, f"{v.name}/to_nhwc")
                graph.insert_before(old, t)
                added.append(t.name)
                nhwc[v.name] = twin
            ins[i] = twin
        y = old.outputs[0]
        y_nhwc = _permuted(y, TO_NHWC, f"{y.name}/nhwc")
        attrs, op = dict(old.attrs), "FusedConvNHWC"
        if _max_pool(old):
            attrs, op, ins = (
                {k: v for k, v in attrs.items() if k in _POOL_ATTRS},
                "MaxPoolNHWC",
                ins[:1],
            )
        new = Node(
            op,
            ins,
            [y_nhwc],
            attrs,
            name=f"{old.name}/nhwc",
            domain="workbench",
            attr_types={k: t for k, t in old.attr_types.items() if k in attrs},
        )
        new.meta["origin"] = origin_of([old])
        new.meta["fused_from"] = (old.name,)
        graph.insert_before(old, new)
        added.insert(0, new.name)
        nhwc[y.name] = y_nhwc
        for pool in [u for u in y.consumers() if _global_average_pool(u)]:
            changes.append(_pool_channels_last(graph, pool, y_nhwc, pass_name, opset))
        outside = y in graph.outputs or any(id(u) not in inside for u, _ in y.uses)
        if outside:  # read outside the region: back to NCHW, under its own name
            added.append(_back_to_nchw(graph, y_nhwc, y, new).name)
        graph.remove(old, safe=False)
        changes.append(
            Change(pass_name, RULE, "rewritten", (old.name,), tuple(added), origin_of([old]))
        )
    return changes


def _back_to_nchw(graph: Graph, src: Value, y: Value, after: Node) -> Node:
    """A transpose of channels-last `src` to NCHW, inserted after `after`, whose output
    takes y's name and place: every reader of y (and the graph's outputs) reads it."""
    back = Value(y.name, y.elem_type, y.shape, type_proto=y.type_proto)
    back.meta = dict(y.meta)
    t = _transpose(src, TO_NCHW, back, f"{y.name}/to_nchw")
    graph.insert_after(after, t)
    graph.replace_all_uses_with(y, back)
    return t


def _global_average_pool(node: Node) -> bool:
    return node.op_type == "GlobalAveragePool" and node.domain in ("", "ai.onnx")


def _pool_channels_last(
    graph: Graph, pool: Node, x_nhwc: Value, pass_name: str, opset: int
) -> Change:
    """A GlobalAveragePool of a region's output, done channels-last: the mean over H and W
    of [N, H, W, C] (C contiguous: one pass adding rows of C values), [N, 1, 1, C]
    transposed to the pool's [N, C, 1, 1] (C values, no real transpose). The NCHW pool
    needed the whole output transposed back first: MobileNetV2's 1280x7x7, on x86, 80 us
    for the transpose and 85 for the pool, against 28 for this mean."""
    y = pool.outputs[0]
    shape = x_nhwc.shape
    mean_shape = None if shape is None else (shape[0], 1, 1, shape[3])
    mean = Value(f"{y.name}/nhwc", y.elem_type, mean_shape)
    ins, attrs = [x_nhwc], {"keepdims": 1}
    if opset >= 18:  # (axes an input from opset 18 on)
        int64 = onnx.TensorProto.INT64
        axes = Value(f"{y.name}/nhwc_axes", int64, (2,), const=np.array([1, 2], np.int64))
        ins.append(graph.add_initializer(axes))
    else:
        attrs["axes"] = [1, 2]
    reduce = Node("ReduceMean", ins, [mean], attrs, name=f"{pool.name}/nhwc")
    reduce.meta["origin"] = origin_of([pool])
    reduce.meta["fused_from"] = (pool.name,)
    graph.insert_before(pool, reduce)
    t = _back_to_nchw(graph, mean, y, reduce)
    graph.remove(pool, safe=False)
    return Change(
        pass_name, RULE, "rewritten", (pool.name,), (reduce.name, t.name), origin_of([pool])
    )


PASSES = [ChannelsLastPass()]
