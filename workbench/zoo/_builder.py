"""Shared graph-building machinery for the zoo builders.

`GraphBuilder` accumulates nodes and initializers the way the PyTorch ONNX
exporter names them: a node made inside the module scopes ``layer1`` >
``layer1.0`` > ``conv1`` is called ``/layer1/layer1.0/conv1/Conv``, its output
``/layer1/layer1.0/conv1/Conv_output_0``, and its weight initializer
``layer1.0.conv1.weight``. Keeping the exporter's naming makes the zoo models
look like the files users bring, so passes, profiles and figures can be
developed against them without any download.

Weights come from one ``numpy.random.default_rng(seed)`` consumed in build
order, so a builder called twice with the same arguments yields byte-identical
models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

Dim = int | str
LayerNormStyle = Literal["decomposed", "fused"]

PRODUCER = "workbench.zoo"
DIMS_KEY = "workbench.dims"
# BN gamma at the end of a residual branch. Trained ResNets/MobileNets end
# their branches with small gammas (torchvision even offers zero_init_residual);
# gamma ~1 would grow the activations at every residual Add through 16 blocks.
RESIDUAL_GAMMA = 0.5
# torch.finfo(torch.float32).min, the mask value HF models use since 4.2x.
FLOAT32_MIN = float(np.finfo(np.float32).min)


class GraphBuilder:
    """Accumulates an ONNX graph with exporter-style names and seeded weights."""

    def __init__(self, name: str, *, opset: int, seed: int) -> None:
        self.name = name
        self.opset = opset
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        # Initializers are written straight into the final ModelProto: copying
        # 440 MB of bert-base weights through make_graph/make_model costs seconds.
        self.model = onnx.ModelProto()
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        # Each entry is (component shown in node names, segment of param names).
        self._scope: list[tuple[str, str]] = []
        self._node_names: dict[str, int] = {}
        self._param_names: set[str] = set()

    # -- naming -----------------------------------------------------------

    @contextmanager
    def scope(self, name: str, param: str | None = None) -> Iterator[None]:
        """Enter a module scope.

        ``name`` is the component shown in node names, ``param`` the segment
        added to parameter names (defaults to ``name``; ``""`` adds none).
        The exporter shows a Sequential child as ``layer1.0`` in node names
        while its parameters read ``layer1.0.conv1.weight``, hence
        ``scope("layer1.0", "0")`` inside ``scope("layer1")``; see :meth:`child`.
        """
        self._scope.append((name, name if param is None else param))
        try:
            yield
        finally:
            self._scope.pop()

    def child(self, index: int) -> AbstractContextManager[None]:
        """Scope of child ``index`` of the current Sequential scope.

        Shown as ``<parent>.<index>`` (``layer1.0``, ``features.1``,
        ``conv.0.0``) with ``<index>`` as the parameter segment.
        """
        return self.scope(f"{self._scope[-1][0]}.{index}", str(index))

    def _node_name(self, op_type: str) -> str:
        base = "/".join(["", *(shown for shown, _ in self._scope), op_type])
        # The exporter de-duplicates repeated ops in one scope as Add, Add_1, ...
        count = self._node_names.get(base, 0)
        self._node_names[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def param_name(self, suffix: str) -> str:
        return ".".join([*(seg for _, seg in self._scope if seg), suffix])

    # -- graph pieces -----------------------------------------------------

    def input(self, name: str, elem_type: int, shape: Sequence[Dim]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, elem_type: int, shape: Sequence[Dim]) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def annotate(self, name: str, elem_type: int, shape: Sequence[Dim]) -> str:
        """Record the shape of an intermediate tensor as value_info.

        For runtime-sliced tensors (position ids, causal mask) onnx shape
        inference only knows the rank; naming the dims, as exporters do in
        value_info, keeps ``sequence`` symbolic through the rest of the graph.
        """
        self.value_info.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: object) -> str:
        """Add a single-output node in the current scope; return its output name."""
        return self.op_n(op_type, *inputs, n_out=1, outs=None if out is None else [out], **attrs)[0]

    def op_n(
        self,
        op_type: str,
        *inputs: str,
        n_out: int,
        outs: Sequence[str] | None = None,
        **attrs: object,
    ) -> list[str]:
        """Add a node with ``n_out`` outputs; return their names."""
        name = self._node_name(op_type)
        outputs = list(outs) if outs is not None else [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))
        return outputs

    def param(self, suffix: str, array: np.ndarray) -> str:
        """Store ``array`` as the initializer ``<scope path>.<suffix>``."""
        name = self.param_name(suffix)
        if name in self._param_names:
            raise ValueError(f"duplicate initializer name {name!r}")
        self._param_names.add(name)
        tensor = self.model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        # raw_data is little-endian by the ONNX spec.
        tensor.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        return name

    def const(self, value: object, dtype: type = np.float32) -> str:
        """A small constant (scalar, shape, axes) as a Constant node, as exporters emit."""
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        return self.op("Constant", value=tensor)

    # -- deterministic weights ---------------------------------------------

    def normal(self, shape: Sequence[int], std: float, mean: float = 0.0) -> np.ndarray:
        # float32 generation straight from the rng: fast enough for 100M+ params.
        array = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        array *= np.float32(std)
        if mean:
            array += np.float32(mean)
        return array

    def uniform(self, shape: Sequence[int], low: float, high: float) -> np.ndarray:
        array = self.rng.random(tuple(shape), dtype=np.float32)
        array *= np.float32(high - low)
        array += np.float32(low)
        return array

    # -- layers (call inside the module's scope) ----------------------------

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        gain: float = 2.0,
    ) -> str:
        """Bias-free Conv (the following BN carries the bias), He-normal weights.

        ``gain=2`` (Kaiming) keeps the second moment through a following ReLU;
        pass ``gain=1`` for a conv whose output is not rectified (residual
        projections), or every block would double the activations.
        """
        fan_in = cin // groups * kernel * kernel
        std = math.sqrt(gain / fan_in)
        weight = self.param("weight", self.normal((cout, cin // groups, kernel, kernel), std))
        pad = (kernel - 1) // 2
        return self.op(
            "Conv",
            x,
            weight,
            dilations=[1, 1],
            group=groups,
            kernel_shape=[kernel, kernel],
            pads=[pad, pad, pad, pad],
            strides=[stride, stride],
        )

    def batchnorm(self, x: str, channels: int, *, gamma: float = 1.0, eps: float = 1e-5) -> str:
        """Inference BatchNormalization with non-trivial statistics.

        Random running stats keep BN from being an identity, so a Conv+BN
        folding pass has something real to fold.
        """
        scale = self.param("weight", self.normal((channels,), 0.1 * gamma, mean=gamma))
        bias = self.param("bias", self.normal((channels,), 0.05))
        mean = self.param("running_mean", self.normal((channels,), 0.1))
        var = self.param("running_var", self.uniform((channels,), 0.5, 1.5))
        # torch exports momentum as 1 - torch_momentum.
        return self.op("BatchNormalization", x, scale, bias, mean, var, epsilon=eps, momentum=0.9)

    def gemm(self, x: str, fin: int, fout: int, *, out: str | None = None) -> str:
        """nn.Linear on a 2-D input: Gemm with the torch [out, in] weight and transB=1.

        std 1/sqrt(fan_in) keeps logits at the scale of the pooled features.
        """
        weight = self.param("weight", self.normal((fout, fin), 1.0 / math.sqrt(fin)))
        bias = self.param("bias", self.normal((fout,), 0.01))
        return self.op("Gemm", x, weight, bias, alpha=1.0, beta=1.0, transB=1, out=out)

    def linear(
        self, x: str, fin: int, fout: int, *, std: float = 0.02, out: str | None = None
    ) -> str:
        """nn.Linear on an N-D input: MatMul + Add.

        The weight is stored [in, out], as the exporter stores the transposed
        torch weight (and as HF's Conv1D stores it natively).
        """
        weight = self.param("weight", self.normal((fin, fout), std))
        bias = self.param("bias", self.normal((fout,), 0.02))
        return self.op("Add", self.op("MatMul", x, weight), bias, out=out)

    def reduce_mean_last(self, x: str) -> str:
        # ReduceMean took axes as an attribute until opset 18, as an input after.
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.const([-1], np.int64), keepdims=1)
        return self.op("ReduceMean", x, axes=[-1], keepdims=1)

    def layernorm(
        self,
        x: str,
        dim: int,
        *,
        eps: float,
        style: LayerNormStyle = "decomposed",
        out: str | None = None,
    ) -> str:
        """LayerNorm over the last axis, decomposed as torch exports it below opset 17."""
        gamma = self.param("weight", self.normal((dim,), 0.02, mean=1.0))
        beta = self.param("bias", self.normal((dim,), 0.02))
        if style == "fused":
            return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=eps, out=out)
        if style != "decomposed":
            raise ValueError(f"layernorm must be 'decomposed' or 'fused', not {style!r}")
        mean = self.reduce_mean_last(x)
        centered = self.op("Sub", x, mean)
        var = self.reduce_mean_last(self.op("Pow", centered, self.const(2.0)))
        std = self.op("Sqrt", self.op("Add", var, self.const(eps)))
        normed = self.op("Div", centered, std)
        return self.op("Add", self.op("Mul", normed, gamma), beta, out=out)

    def embedding(self, ids: str, num: int, dim: int) -> str:
        """nn.Embedding: Gather rows of a [num, dim] table (HF init, std 0.02)."""
        return self.op("Gather", self.param("weight", self.normal((num, dim), 0.02)), ids)

    def split_heads(self, x: str, hidden: int, heads: int, *, keys: bool = False) -> str:
        """[batch, seq, hidden] -> [batch, heads, seq, head_dim].

        Keys go straight to [batch, heads, head_dim, seq]: the exporter merges
        the permute with the later ``transpose(-1, -2)``. The Reshape target
        [0, 0, heads, head_dim] copies batch and seq (0 = keep that dim), as
        exporters write it, so both stay symbolic under shape inference.
        """
        shape = self.const([0, 0, heads, hidden // heads], np.int64)
        perm = [0, 2, 3, 1] if keys else [0, 2, 1, 3]
        return self.op("Transpose", self.op("Reshape", x, shape), perm=perm)

    def merge_heads(self, x: str, hidden: int) -> str:
        """[batch, heads, seq, head_dim] -> [batch, seq, hidden]."""
        x = self.op("Transpose", x, perm=[0, 2, 1, 3])
        return self.op("Reshape", x, self.const([0, 0, hidden], np.int64))

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", x, self.const(list(axes), np.int64))

    def size(self, x: str, axis: int) -> str:
        """``x.size(axis)`` at runtime, as an int64 scalar (Shape -> Gather)."""
        return self.op("Gather", self.op("Shape", x), self.const(axis, np.int64), axis=0)

    # -- result --------------------------------------------------------------

    def build(self, *, doc: str, dims: dict[str, int]) -> onnx.ModelProto:
        """Assemble the model, recording default values of its symbolic dims.

        ``doc`` describes the architecture; provenance is appended here.
        """
        model = self.model
        graph = model.graph
        graph.name = self.name
        graph.node.extend(self.nodes)
        graph.input.extend(self.inputs)
        graph.output.extend(self.outputs)
        graph.value_info.extend(self.value_info)
        opset = model.opset_import.add()
        opset.domain, opset.version = "", self.opset
        # The oldest IR version that carries this opset loads in the most runtimes.
        model.ir_version = helper.find_min_ir_version_for([opset], ignore_unknown=True)
        model.producer_name = PRODUCER
        model.doc_string = (
            f"{doc}; seeded random weights (seed {self.seed}), built by workbench.zoo, no download."
        )
        helper.set_model_props(model, {DIMS_KEY: json.dumps(dims)})
        return model


def symbolic_dims(*defaults: tuple[Dim, int]) -> dict[str, int]:
    """Map each symbolic dim name to its default; static (int) dims are left out.

    ``symbolic_dims((batch, 1))`` gives ``{"batch": 1}`` when ``batch`` is the
    string ``"batch"`` and ``{}`` when the caller fixed it to an int.
    """
    return {dim: value for dim, value in defaults if isinstance(dim, str)}


def check_opset(opset: int, minimum: int, what: str) -> None:
    if opset < minimum:
        raise ValueError(f"{what} needs opset >= {minimum}, got {opset}")


def check_transformer(
    name: str,
    *,
    opset: int,
    layernorm: LayerNormStyle,
    hidden: int,
    heads: int,
    seq: int,
    positions: tuple[str, int],
) -> None:
    """Reject arguments a transformer builder cannot honour, before any weight is drawn."""
    # Unsqueeze and Split take their axes/sizes as inputs from opset 13 on.
    check_opset(opset, 13, name)
    if layernorm == "fused":
        check_opset(opset, 17, f"{name} with layernorm='fused'")
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
    limit_name, limit = positions
    if not 0 < seq <= limit:
        raise ValueError(f"seq {seq} must be in 1..{limit_name} ({limit})")


__all__ = [
    "DIMS_KEY",
    "FLOAT32_MIN",
    "PRODUCER",
    "RESIDUAL_GAMMA",
    "Dim",
    "GraphBuilder",
    "LayerNormStyle",
    "check_opset",
    "check_transformer",
    "symbolic_dims",
]
