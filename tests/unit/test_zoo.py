"""workbench.zoo: every builder yields a valid, runnable, deterministic model.

Expected op and parameter counts come from the real torchvision / HuggingFace
architectures, not from what the builders happen to emit.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from workbench import zoo

TINY_VOCAB = 100  # vocab of tiny_bert and tiny_gpt2
# name -> expected output shape, written with the symbolic dim names.
TINY = {
    "tiny_resnet": ("output", ["batch", 10]),
    "tiny_mobilenet_v2": ("output", ["batch", 10]),
    "tiny_bert": ("last_hidden_state", ["batch", "sequence", 32]),
    "tiny_gpt2": ("logits", ["batch", "sequence", TINY_VOCAB]),
}


def make_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds sized from the model's recorded dim defaults."""
    dims = zoo.dims(model)
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        shape = [
            dims[d.dim_param] if d.dim_param else d.dim_value
            for d in value.type.tensor_type.shape.dim
        ]
        if value.name == "attention_mask":
            feeds[value.name] = np.ones(shape, np.int64)
            feeds[value.name][:, -2:] = 0  # trailing padding
        elif value.name == "token_type_ids":
            feeds[value.name] = np.zeros(shape, np.int64)
            feeds[value.name][:, shape[1] // 2 :] = 1  # a second segment
        elif value.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            feeds[value.name] = rng.integers(0, TINY_VOCAB, shape, dtype=np.int64)
        else:
            feeds[value.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def run(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def assert_counts(model: onnx.ModelProto, **expected: int) -> None:
    counts = Counter(node.op_type for node in model.graph.node)
    assert {op: counts[op] for op in expected} == expected


def parameter_count(model: onnx.ModelProto) -> int:
    """Trainable float parameters, as torch counts them: BN running stats are buffers."""
    return sum(
        int(np.prod(t.dims))
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
        and not t.name.endswith(("running_mean", "running_var"))
    )


def dim_names(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module", params=list(TINY))
def tiny(request: pytest.FixtureRequest) -> tuple[str, onnx.ModelProto]:
    return request.param, zoo.get(request.param)


def test_tiny_is_valid_and_shapes_infer(tiny: tuple[str, onnx.ModelProto]) -> None:
    name, model = tiny
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    output, shape = TINY[name]
    assert [o.name for o in inferred.graph.output] == [output]
    assert dim_names(inferred.graph.output[0]) == shape
    # Every intermediate gets a full shape with the symbolic names kept (no unk__ dims).
    for value in inferred.graph.value_info:
        assert all(
            (isinstance(d, int) and d > 0) or d in ("batch", "sequence") for d in dim_names(value)
        ), value.name


def test_tiny_runs_finite(tiny: tuple[str, onnx.ModelProto]) -> None:
    name, model = tiny
    out = run(model, make_feeds(model))
    dims = zoo.dims(model)
    expected = [dims[d] if isinstance(d, str) else d for d in TINY[name][1]]
    assert list(out.shape) == expected
    assert np.isfinite(out).all()
    assert 0.1 < np.abs(out).max() < 1000


def test_tiny_metadata(tiny: tuple[str, onnx.ModelProto]) -> None:
    name, model = tiny
    assert model.producer_name == "workbench.zoo"
    assert model.graph.name == name
    assert model.doc_string
    expected = {"batch": 1, "sequence": 8} if "sequence" in TINY[name][1] else {"batch": 1}
    assert zoo.dims(model) == expected


def test_tiny_is_deterministic(tiny: tuple[str, onnx.ModelProto]) -> None:
    name, model = tiny
    assert zoo.get(name).SerializeToString() == model.SerializeToString()
    assert zoo.get(name, seed=1).SerializeToString() != model.SerializeToString()


def test_tiny_external_data_roundtrip(tiny: tuple[str, onnx.ModelProto], tmp_path) -> None:
    name, model = tiny
    path = tmp_path / f"{name}.onnx"
    # save_model moves the weights of the proto it is given out to the file: save a copy.
    saved = onnx.ModelProto()
    saved.CopyFrom(model)
    onnx.save_model(
        saved, path, save_as_external_data=True, location=f"{name}.data", size_threshold=0
    )
    assert (tmp_path / f"{name}.data").stat().st_size > 0
    feeds = make_feeds(model)
    np.testing.assert_array_equal(run(str(path), feeds), run(model, feeds))


def test_names_and_get() -> None:
    assert zoo.names() == sorted(zoo.MODELS)
    full = {"resnet18", "resnet50", "mobilenet_v2", "bert", "bert_6l", "gpt2"}
    assert set(zoo.names()) == full | set(TINY)
    with pytest.raises(ValueError, match="no_such_net") as error:
        zoo.get("no_such_net")
    assert "tiny_bert" in str(error.value) and "resnet50" in str(error.value)


def test_exporter_style_names() -> None:
    resnet = zoo.tiny_resnet()
    nodes = {n.name for n in resnet.graph.node}
    params = {t.name for t in resnet.graph.initializer}
    assert {
        "/layer1/layer1.0/conv1/Conv",
        "/layer2/layer2.0/downsample/downsample.0/Conv",
        "/fc/Gemm",
    } <= nodes
    assert {
        "layer1.0.conv1.weight",
        "layer1.0.bn1.running_var",
        "layer2.0.downsample.1.weight",
    } <= params
    bert = zoo.tiny_bert()
    assert "/encoder/layer.0/attention/self/query/MatMul" in {n.name for n in bert.graph.node}
    assert "encoder.layer.1.output.LayerNorm.weight" in {t.name for t in bert.graph.initializer}


def test_bert_fused_layernorm_matches_decomposed() -> None:
    decomposed, fused = zoo.tiny_bert(), zoo.tiny_bert(layernorm="fused")
    assert_counts(fused, LayerNormalization=5, Sqrt=0)
    feeds = make_feeds(decomposed)
    np.testing.assert_allclose(run(fused, feeds), run(decomposed, feeds), rtol=1e-4, atol=1e-4)


def test_bert_ignores_masked_tokens() -> None:
    model = zoo.tiny_bert()
    feeds = make_feeds(model)
    ids = feeds["input_ids"].copy()
    ids[:, -2:] = (ids[:, -2:] + 1) % TINY_VOCAB  # the positions the mask pads out
    before, after = run(model, feeds), run(model, {**feeds, "input_ids": ids})
    np.testing.assert_allclose(after[:, :-2], before[:, :-2], rtol=1e-5, atol=1e-6)


def test_gpt2_is_causal() -> None:
    model = zoo.tiny_gpt2()
    feeds = make_feeds(model)
    ids = feeds["input_ids"].copy()
    ids[:, -1] = (ids[:, -1] + 1) % TINY_VOCAB  # only the last token changes
    before, after = run(model, feeds), run(model, {"input_ids": ids})
    np.testing.assert_allclose(after[:, :-1], before[:, :-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after[:, -1], before[:, -1])


def test_static_batch_and_sequence_default() -> None:
    model = zoo.tiny_bert(batch=2, seq=5)
    assert zoo.dims(model) == {"sequence": 5}
    assert dim_names(model.graph.input[0]) == [2, "sequence"]
    assert run(model, make_feeds(model)).shape == (2, 5, 32)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="opset >= 17"):
        zoo.tiny_bert(layernorm="fused", opset=16)
    with pytest.raises(ValueError, match="divisible"):
        zoo.tiny_gpt2(hidden=30)
    with pytest.raises(ValueError, match="n_positions"):
        zoo.tiny_gpt2(seq=17)


def test_transformer_structure_counts() -> None:
    """Per-layer structure of 12-layer BERT and GPT-2 (narrow, so it builds fast)."""
    small = {"hidden": 64, "heads": 4, "vocab": TINY_VOCAB}
    # 12 layers x (Q, K, V, scores, context, attention out, FFN in, FFN out) MatMuls;
    # embedding LayerNorm + 2 per layer, each one Sqrt, one Pow and two ReduceMeans.
    assert_counts(
        zoo.bert(layers=12, **small),
        Softmax=12,
        Erf=12,
        MatMul=96,
        Sqrt=25,
        Pow=25,
        ReduceMean=50,
        LayerNormalization=0,
    )
    assert_counts(zoo.bert(layers=12, layernorm="fused", **small), LayerNormalization=25, Sqrt=0)
    # ln_1, ln_2 per layer + ln_f; 6 MatMuls per layer + the lm_head.
    assert_counts(
        zoo.gpt2(layers=12, n_positions=128, **small),
        Softmax=12,
        Tanh=12,
        Where=12,
        Split=12,
        Sqrt=25,
        MatMul=73,
    )


@pytest.mark.slow
def test_full_size_cnn_and_minilm() -> None:
    resnet50 = zoo.resnet50()
    # 1 stem + 16 bottlenecks x 3 + 4 downsample projections; ReLU after stem,
    # after the first two convs of each bottleneck and after each residual Add.
    assert_counts(
        resnet50,
        Conv=53,
        BatchNormalization=53,
        Add=16,
        Relu=49,
        MaxPool=1,
        GlobalAveragePool=1,
        Gemm=1,
    )
    assert parameter_count(resnet50) == 25_557_032  # torchvision resnet50

    mobilenet = zoo.mobilenet_v2()
    # stem + 2 (t=1 block) + 16 x 3 + final 1x1; ReLU6 on all but the 17 projections.
    assert_counts(mobilenet, Conv=52, BatchNormalization=52, Clip=35, Add=10, Gemm=1)
    groups = [attr.i for n in mobilenet.graph.node for attr in n.attribute if attr.name == "group"]
    assert len([g for g in groups if g > 1]) == 17  # one depthwise conv per block
    assert parameter_count(mobilenet) == 3_504_872  # torchvision mobilenet_v2

    minilm = zoo.get("bert_6l")
    assert_counts(minilm, Softmax=6, Erf=6, Sqrt=13)
    # all-MiniLM-L6-v2 has 22,713,216 parameters including the 384x384 pooler.
    assert parameter_count(minilm) == 22_713_216 - (384 * 384 + 384)

    for model in (resnet50, mobilenet, minilm):
        onnx.checker.check_model(model, full_check=True)
        out = run(model, make_feeds(model))
        assert np.isfinite(out).all() and 0.1 < np.abs(out).max() < 1000


@pytest.mark.slow
def test_full_size_transformer_parameters() -> None:
    # bert-base-uncased: 109,482,240 with the pooler (768 x 768 + 768).
    assert parameter_count(zoo.bert()) == 109_482_240 - (768 * 768 + 768)
    # gpt2 (small): 124,439,808 with the lm_head tied to wte.
    assert parameter_count(zoo.gpt2()) == 124_439_808
