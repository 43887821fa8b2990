"""Shared fixtures: two small models shaped like PyTorch's ONNX exports, and onnxruntime.

Both builders are plain functions; tests cannot import conftest, so the fixtures
`conv_model` and `transformer_model` hand out the builders (call them with an opset):

- `make_conv_model(opset)`: Conv(3->16, 3x3) + BatchNormalization + Relu +
  GlobalAveragePool + Flatten + Gemm(16->10); input "input" [batch_size, 3, 8, 8].
- `make_transformer_model(opset)`: one encoder layer over token ids (Gather embedding,
  LayerNormalization, 2-head self-attention whose head split goes through the
  Shape/Gather/Concat/Reshape pattern of dynamic-axes exports, Erf GELU MLP), inputs
  "input_ids" [batch_size, seq] int64; outputs "last_hidden_state" and "pooled" (a
  ReduceMean over seq whose axes are an attribute at opset 17 and an input from 18).

Names follow the exporters ("/conv/Conv", "/conv/Conv_output_0", "fc.weight"), so a
test reading node or value names sees what a real export gives it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

# Selection keeps what it measures whatever the host's speed (autotune.host_busy): tests
# that count measurements and cache hits must not see a choice left out of the cache
# because this shared machine was slow for a moment. The check's own tests turn it on.
os.environ.setdefault("WORKBENCH_BUSY_RATIO", "0")

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

HIDDEN, HEADS, FFN, VOCAB = 16, 2, 32, 32


def _f32(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _model(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    # The TorchScript exporter writes IR 8 at opset 17; the dynamo exporter IR 10 at 18+.
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=8 if opset < 18 else 10,
        producer_name="pytorch",
        producer_version="2.13.0",
    )
    onnx.checker.check_model(model)
    return model


def make_conv_model(opset: int = 17) -> onnx.ModelProto:
    """conv + bn + relu + global pool + linear, with a symbolic batch."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(_f32(rng, 16, 3, 3, 3), "conv.weight"),
        numpy_helper.from_array(_f32(rng, 16), "conv.bias"),
        numpy_helper.from_array(1 + _f32(rng, 16, scale=0.1), "bn.weight"),
        numpy_helper.from_array(_f32(rng, 16), "bn.bias"),
        numpy_helper.from_array(_f32(rng, 16), "bn.running_mean"),
        numpy_helper.from_array(1 + np.abs(_f32(rng, 16)), "bn.running_var"),
        numpy_helper.from_array(_f32(rng, 10, 16), "fc.weight"),
        numpy_helper.from_array(_f32(rng, 10), "fc.bias"),
    ]
    node = helper.make_node
    nodes = [
        node(
            "Conv",
            ["input", "conv.weight", "conv.bias"],
            ["/conv/Conv_output_0"],
            name="/conv/Conv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        ),
        node(
            "BatchNormalization",
            ["/conv/Conv_output_0", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
            ["/bn/BatchNormalization_output_0"],
            name="/bn/BatchNormalization",
            epsilon=1e-5,
        ),
        node(
            "Relu", ["/bn/BatchNormalization_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu"
        ),
        node(
            "GlobalAveragePool",
            ["/relu/Relu_output_0"],
            ["/pool/GlobalAveragePool_output_0"],
            name="/pool/GlobalAveragePool",
        ),
        node(
            "Flatten",
            ["/pool/GlobalAveragePool_output_0"],
            ["/Flatten_output_0"],
            name="/Flatten",
            axis=1,
        ),
        node(
            "Gemm",
            ["/Flatten_output_0", "fc.weight", "fc.bias"],
            ["output"],
            name="/fc/Gemm",
            alpha=1.0,
            beta=1.0,
            transB=1,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", 10])],
        initializer=inits,
    )
    return _model(graph, opset)


def make_transformer_model(opset: int = 17) -> onnx.ModelProto:
    """One post-norm-free encoder layer: embeddings, attention, GELU MLP, mean pooling."""
    rng = np.random.default_rng(1)
    hd = HIDDEN // HEADS
    c = numpy_helper.from_array
    inits = [
        c(_f32(rng, VOCAB, HIDDEN, scale=1.0), "embed.weight"),
        c(1 + _f32(rng, HIDDEN, scale=0.1), "ln1.weight"),
        c(_f32(rng, HIDDEN, scale=0.1), "ln1.bias"),
        c(1 + _f32(rng, HIDDEN, scale=0.1), "ln2.weight"),
        c(_f32(rng, HIDDEN, scale=0.1), "ln2.bias"),
        c(_f32(rng, HIDDEN, FFN), "onnx::MatMul_101"),
        c(_f32(rng, FFN), "mlp.fc1.bias"),
        c(_f32(rng, FFN, HIDDEN), "onnx::MatMul_102"),
        c(_f32(rng, HIDDEN), "mlp.fc2.bias"),
        c(np.array(np.sqrt(hd), np.float32), "/attn/Constant_output_0"),
        c(np.array(np.sqrt(2.0), np.float32), "/mlp/act/Constant_output_0"),
        c(np.array(1.0, np.float32), "/mlp/act/Constant_1_output_0"),
        c(np.array(0.5, np.float32), "/mlp/act/Constant_2_output_0"),
        c(np.array(0, np.int64), "/attn/Constant_1_output_0"),
        c(np.array(1, np.int64), "/attn/Constant_2_output_0"),
        c(np.array([HEADS], np.int64), "/attn/Constant_3_output_0"),
        c(np.array([hd], np.int64), "/attn/Constant_4_output_0"),
        c(np.array([HIDDEN], np.int64), "/attn/Constant_5_output_0"),
        c(np.array([0], np.int64), "/Unsqueeze_axes"),
    ]
    for p in ("q", "k", "v", "o"):
        inits.append(c(_f32(rng, HIDDEN, HIDDEN), f"onnx::MatMul_{p}"))
        inits.append(c(_f32(rng, HIDDEN, scale=0.1), f"attn.{p}_proj.bias"))
    node = helper.make_node
    nodes = [
        node(
            "Gather",
            ["embed.weight", "input_ids"],
            ["/embed/Gather_output_0"],
            name="/embed/Gather",
        ),
        node(
            "LayerNormalization",
            ["/embed/Gather_output_0", "ln1.weight", "ln1.bias"],
            ["/ln1/LayerNormalization_output_0"],
            name="/ln1/LayerNormalization",
            axis=-1,
            epsilon=1e-5,
        ),
        # batch and seq as 1-d tensors, the way dynamic-axes exports compute head shapes
        node(
            "Shape",
            ["/ln1/LayerNormalization_output_0"],
            ["/attn/Shape_output_0"],
            name="/attn/Shape",
        ),
        node(
            "Gather",
            ["/attn/Shape_output_0", "/attn/Constant_1_output_0"],
            ["/attn/Gather_output_0"],
            name="/attn/Gather",
            axis=0,
        ),
        node(
            "Gather",
            ["/attn/Shape_output_0", "/attn/Constant_2_output_0"],
            ["/attn/Gather_1_output_0"],
            name="/attn/Gather_1",
            axis=0,
        ),
        node(
            "Unsqueeze",
            ["/attn/Gather_output_0", "/Unsqueeze_axes"],
            ["/attn/Unsqueeze_output_0"],
            name="/attn/Unsqueeze",
        ),
        node(
            "Unsqueeze",
            ["/attn/Gather_1_output_0", "/Unsqueeze_axes"],
            ["/attn/Unsqueeze_1_output_0"],
            name="/attn/Unsqueeze_1",
        ),
        node(
            "Concat",
            [
                "/attn/Unsqueeze_output_0",
                "/attn/Unsqueeze_1_output_0",
                "/attn/Constant_3_output_0",
                "/attn/Constant_4_output_0",
            ],
            ["/attn/Concat_output_0"],
            name="/attn/Concat",
            axis=0,
        ),
        node(
            "Concat",
            ["/attn/Unsqueeze_output_0", "/attn/Unsqueeze_1_output_0", "/attn/Constant_5_output_0"],
            ["/attn/Concat_1_output_0"],
            name="/attn/Concat_1",
            axis=0,
        ),
    ]
    for p in ("q", "k", "v"):
        nodes += [
            node(
                "MatMul",
                ["/ln1/LayerNormalization_output_0", f"onnx::MatMul_{p}"],
                [f"/attn/{p}_proj/MatMul_output_0"],
                name=f"/attn/{p}_proj/MatMul",
            ),
            node(
                "Add",
                [f"attn.{p}_proj.bias", f"/attn/{p}_proj/MatMul_output_0"],
                [f"/attn/{p}_proj/Add_output_0"],
                name=f"/attn/{p}_proj/Add",
            ),
            node(
                "Reshape",
                [f"/attn/{p}_proj/Add_output_0", "/attn/Concat_output_0"],
                [f"/attn/{p}/Reshape_output_0"],
                name=f"/attn/{p}/Reshape",
            ),
            node(
                "Transpose",
                [f"/attn/{p}/Reshape_output_0"],
                [f"/attn/{p}/Transpose_output_0"],
                name=f"/attn/{p}/Transpose",
                perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3],
            ),
        ]
    nodes += [
        node(
            "MatMul",
            ["/attn/q/Transpose_output_0", "/attn/k/Transpose_output_0"],
            ["/attn/MatMul_output_0"],
            name="/attn/MatMul",
        ),
        node(
            "Div",
            ["/attn/MatMul_output_0", "/attn/Constant_output_0"],
            ["/attn/Div_output_0"],
            name="/attn/Div",
        ),
        node(
            "Softmax",
            ["/attn/Div_output_0"],
            ["/attn/Softmax_output_0"],
            name="/attn/Softmax",
            axis=-1,
        ),
        node(
            "MatMul",
            ["/attn/Softmax_output_0", "/attn/v/Transpose_output_0"],
            ["/attn/MatMul_1_output_0"],
            name="/attn/MatMul_1",
        ),
        node(
            "Transpose",
            ["/attn/MatMul_1_output_0"],
            ["/attn/Transpose_output_0"],
            name="/attn/Transpose",
            perm=[0, 2, 1, 3],
        ),
        node(
            "Reshape",
            ["/attn/Transpose_output_0", "/attn/Concat_1_output_0"],
            ["/attn/Reshape_output_0"],
            name="/attn/Reshape",
        ),
        node(
            "MatMul",
            ["/attn/Reshape_output_0", "onnx::MatMul_o"],
            ["/attn/o_proj/MatMul_output_0"],
            name="/attn/o_proj/MatMul",
        ),
        node(
            "Add",
            ["attn.o_proj.bias", "/attn/o_proj/MatMul_output_0"],
            ["/attn/o_proj/Add_output_0"],
            name="/attn/o_proj/Add",
        ),
        node(
            "Add",
            ["/embed/Gather_output_0", "/attn/o_proj/Add_output_0"],
            ["/Add_output_0"],
            name="/Add",
        ),
        node(
            "LayerNormalization",
            ["/Add_output_0", "ln2.weight", "ln2.bias"],
            ["/ln2/LayerNormalization_output_0"],
            name="/ln2/LayerNormalization",
            axis=-1,
            epsilon=1e-5,
        ),
        node(
            "MatMul",
            ["/ln2/LayerNormalization_output_0", "onnx::MatMul_101"],
            ["/mlp/fc1/MatMul_output_0"],
            name="/mlp/fc1/MatMul",
        ),
        node(
            "Add",
            ["mlp.fc1.bias", "/mlp/fc1/MatMul_output_0"],
            ["/mlp/fc1/Add_output_0"],
            name="/mlp/fc1/Add",
        ),
        # GELU as the TorchScript exporter writes it before opset 20: x * 0.5 * (1 + erf(x/√2))
        node(
            "Div",
            ["/mlp/fc1/Add_output_0", "/mlp/act/Constant_output_0"],
            ["/mlp/act/Div_output_0"],
            name="/mlp/act/Div",
        ),
        node("Erf", ["/mlp/act/Div_output_0"], ["/mlp/act/Erf_output_0"], name="/mlp/act/Erf"),
        node(
            "Add",
            ["/mlp/act/Erf_output_0", "/mlp/act/Constant_1_output_0"],
            ["/mlp/act/Add_output_0"],
            name="/mlp/act/Add",
        ),
        node(
            "Mul",
            ["/mlp/fc1/Add_output_0", "/mlp/act/Add_output_0"],
            ["/mlp/act/Mul_output_0"],
            name="/mlp/act/Mul",
        ),
        node(
            "Mul",
            ["/mlp/act/Mul_output_0", "/mlp/act/Constant_2_output_0"],
            ["/mlp/act/Mul_1_output_0"],
            name="/mlp/act/Mul_1",
        ),
        node(
            "MatMul",
            ["/mlp/act/Mul_1_output_0", "onnx::MatMul_102"],
            ["/mlp/fc2/MatMul_output_0"],
            name="/mlp/fc2/MatMul",
        ),
        node(
            "Add",
            ["mlp.fc2.bias", "/mlp/fc2/MatMul_output_0"],
            ["/mlp/fc2/Add_output_0"],
            name="/mlp/fc2/Add",
        ),
        node(
            "Add",
            ["/Add_output_0", "/mlp/fc2/Add_output_0"],
            ["last_hidden_state"],
            name="/Add_1",
        ),
    ]
    # ReduceMean took `axes` as an attribute until opset 17 and as an input from 18.
    if opset < 18:
        nodes.append(
            node("ReduceMean", ["last_hidden_state"], ["pooled"], name="/ReduceMean", axes=[1])
        )
    else:
        inits.append(c(np.array([1], np.int64), "/Constant_axes"))
        nodes.append(
            node(
                "ReduceMean",
                ["last_hidden_state", "/Constant_axes"],
                ["pooled"],
                name="/ReduceMean",
                keepdims=1,
            )
        )
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "seq"])],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch_size", "seq", HIDDEN]
            ),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch_size", 1, HIDDEN]),
        ],
        initializer=inits,
    )
    return _model(graph, opset)


@pytest.fixture
def conv_model() -> Callable[..., onnx.ModelProto]:
    """The builder `make_conv_model(opset=17)`."""
    return make_conv_model


@pytest.fixture
def transformer_model() -> Callable[..., onnx.ModelProto]:
    """The builder `make_transformer_model(opset=17)`."""
    return make_transformer_model


def _ort_run(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime

    src = model if isinstance(model, str) else model.SerializeToString()
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1  # the CI boxes are small and shared
    sess = onnxruntime.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=False))


@pytest.fixture
def ort_run() -> Callable[..., dict[str, np.ndarray]]:
    """`ort_run(model_or_path, feeds) -> {output name: array}` on onnxruntime's CPU provider."""
    pytest.importorskip("onnxruntime")
    return _ort_run


@pytest.fixture
def bare_backend(monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a registered backend with no kernel of its own, for the refusals of
    fusion rules: every fused op is one it cannot run."""
    from workbench.engine import backends
    from workbench.engine.backends.base import Backend

    class Bare(Backend):
        name = "bare"

    backends.all_backends()  # discover the real ones first, then add this one
    monkeypatch.setitem(backends._REGISTRY, "bare", Bare())
    return "bare"
