"""A model loaded from a file leaves its large weights there (onnx_file.FileConst): read
when asked for, kept only while something holds the array, and an error that names the
tensor when the file changed since. A compiled x86 plan then holds one copy of such a
weight: the kernel's own form (MKL's packed B), or the weight itself where the kernel reads
it as it is (a plain GEMM); the plan's env holds a stand-in of its shape (plan._baked)."""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.engine import onnx_file
from workbench.engine.backends.x86 import _mkl, autotune
from workbench.errors import ModelLoadError

K, N = 96, 200  # 76.8 kB of float32: above onnx_file.READ_SEPARATELY_BYTES


def matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def gemm_model(weight: np.ndarray) -> onnx.ModelProto:
    """Gemm by the weight transposed (transB=1, as torch's Linear exports), with a bias."""
    n, k = weight.shape[1], weight.shape[0]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "wt", "c"], ["y"], transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])],
        [
            numpy_helper.from_array(np.ascontiguousarray(weight.T), "wt"),
            numpy_helper.from_array(np.zeros(n, np.float32), "c"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def weight() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """The byte counts of every weight read from a file from now on."""
    seen: list[int] = []
    real = onnx_file.read_into

    def counting(span, out):
        seen.append(span.nbytes)
        real(span, out)

    monkeypatch.setattr(onnx_file, "read_into", counting)
    return seen


def test_a_large_weight_is_read_when_asked_for_and_kept_only_while_held(tmp_path, weight, reads):
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(weight), path)
    model = wb.load(path)
    v = model.graph.initializers["w"]
    assert v.is_const and v.const_deferred and v.const_shape == (K, N)
    assert reads == []  # loading read no weight, and asking what it is reads none either
    a = v.const
    np.testing.assert_array_equal(a, weight)
    assert not a.flags.writeable
    assert v.const is a and reads == [K * N * 4]  # held: the same array, not read again
    del a
    gc.collect()
    np.testing.assert_array_equal(v.const, weight)
    assert len(reads) == 2  # nobody held it: read again
    assert f"{K * N:,} parameters" in model.summary() and len(reads) == 2


def test_a_small_weight_and_a_model_from_a_proto_are_arrays_in_memory(weight):
    model = wb.load(matmul_model(weight))
    v = model.graph.initializers["w"]
    assert not v.const_deferred and v.const is v.const


def test_a_file_rewritten_after_loading_is_an_error_that_names_the_tensor(tmp_path, weight):
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(weight), path)
    model = wb.load(path)
    onnx.save(matmul_model(weight[:, :150]), path)
    with pytest.raises(ModelLoadError, match=r"m\.onnx: tensor 'w': the file changed since"):
        _ = model.graph.initializers["w"].const


def test_saving_over_the_file_a_model_came_from_keeps_its_weights_first(tmp_path, weight):
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(weight), path)
    model = wb.load(path)
    sess = wb.Session(model, "reference", level=1)  # (its optimized copy shares the weights)
    x = np.ones((3, K), np.float32)
    want = sess.run({"x": x})["y"]
    wb.save(model, path)  # rewrites the file the weights were left in
    np.testing.assert_array_equal(model.graph.initializers["w"].const, weight)
    np.testing.assert_array_equal(wb.Session(sess.model, "reference").run({"x": x})["y"], want)


def test_clones_and_saved_copies_of_a_model_from_a_file_hold_the_same_weights(
    tmp_path, weight, reads
):
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(weight), path)
    model = wb.load(path)
    clone = model.graph.clone()
    assert clone.initializers["w"].const_deferred and reads == []
    wb.save(model, tmp_path / "copy.onnx")
    again = wb.load(tmp_path / "copy.onnx").graph.initializers["w"].const
    np.testing.assert_array_equal(again, weight)


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
@pytest.mark.parametrize("algorithm", ["gemm", "mkl_packed"])
def test_an_x86_plan_keeps_one_copy_of_a_weight_in_its_file(
    tmp_path, monkeypatch, weight, algorithm, op
):
    if algorithm.startswith("mkl") and not _mkl.available():
        pytest.skip(f"MKL's packed GEMM is not available here: {_mkl.why()}")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))  # (an empty autotune cache)
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(weight) if op == "MatMul" else gemm_model(weight), path)
    with autotune.settings(force={op: algorithm}):
        sess = wb.Session(wb.load(path), "x86")
    x = np.random.default_rng(2).standard_normal((3, K)).astype(np.float32)
    y = sess.run({"x": x})["y"]
    assert sess.kernels()[0]["algorithm"].startswith(algorithm)
    np.testing.assert_allclose(y, x @ weight, rtol=1e-5, atol=1e-5)
    w = sess.model.graph.initializers["w" if op == "MatMul" else "wt"]
    stand_in = sess.plan.template[sess.plan.slot[id(w)]]
    assert stand_in.shape == w.const_shape and stand_in.dtype == np.float32
    assert stand_in.strides == (0, 0)  # no memory of its own: the kernel holds the weight
    gc.collect()
    reads: list[int] = []
    real = onnx_file.read_into
    monkeypatch.setattr(onnx_file, "read_into", lambda s, o: (reads.append(1), real(s, o)))
    _ = w.const
    # the plain GEMM reads the weight as it is, so it is held; MKL's packed copy replaces it
    assert len(reads) == (1 if algorithm == "mkl_packed" else 0)
    np.testing.assert_array_equal(sess.run({"x": x})["y"], y)


def conv_bn_model(c: int = 64) -> onnx.ModelProto:
    """Conv 3x3 (c -> c, 147 kB of weight at 64) + BatchNormalization + Relu, then a 1x1
    (c -> 320: 82 kB). Both weights are above onnx_file.READ_SEPARATELY_BYTES."""
    rng = np.random.default_rng(3)
    w3 = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.1
    w1 = rng.standard_normal((320, c, 1, 1)).astype(np.float32) * 0.1
    bn = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c)]
    bn.append(rng.uniform(0.5, 1.5, c))
    inits = [numpy_helper.from_array(w3, "w3"), numpy_helper.from_array(w1, "w1")]
    inits += [numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(bn, "sbmv")]
    nodes = [
        helper.make_node("Conv", ["x", "w3"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Conv", ["r", "w1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 9, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 320, 9, 7])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_conv_weight_with_a_batchnorm_folded_in_is_computed_when_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_model(), path)
    model = wb.load(path)
    sess = wb.Session(model, "x86", level=3)
    x = np.random.default_rng(4).standard_normal((1, 64, 9, 7)).astype(np.float32)
    want = wb.Session(model, "reference").run({"x": x})["y"]
    np.testing.assert_allclose(sess.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)
    weights = [v for v in sess.model.graph.initializers.values() if len(v.const_shape) == 4]
    assert len(weights) == 2 and all(v.const_deferred for v in weights)
    assert any(v.name.endswith("_bn_folded") for v in weights)
    for v in weights:  # the conv kernels hold their own forms; the env only stand-ins
        assert sess.plan.template[sess.plan.slot[id(v)]].strides == (0, 0, 0, 0)


def test_folding_a_batchnorm_into_a_weight_from_its_file_makes_no_wider_copies(tmp_path):
    """The folded weight is computed when needed (at the pack, on the first run): in
    float64, rounded once, but numpy's buffers cast a few thousand elements at a time, so
    the read weight and the folded one are all it holds at once (float64 copies were four
    times the weight: ResNet-50's peak RSS came from them)."""
    import tracemalloc

    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_model(192), path)  # (w3: 1.3 MB)
    from workbench.engine.passes import optimize

    graph = optimize(wb.load(path), 3, "x86").after.graph  # (no plan: nothing holds it)
    (folded,) = [
        v for v in graph.initializers.values() if v.name.endswith("_folded") and v.const_deferred
    ]
    raw = onnx.load(path).graph.initializer
    w3 = numpy_helper.to_array(next(t for t in raw if t.name == "w3")).astype(np.float64)
    s, v = (numpy_helper.to_array(next(t for t in raw if t.name == n)) for n in "sv")
    scale = s.astype(np.float64) / np.sqrt(v.astype(np.float64) + 1e-5)
    tracemalloc.start()
    try:
        w = folded.const
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert w.dtype == np.float32
    assert peak < 2 * w.nbytes + 256 * 1024  # (+ numpy's casting buffers, 8192 elements)
    np.testing.assert_array_equal(w, (w3 * scale[:, None, None, None]).astype(np.float32))


def test_a_one_row_gemm_by_a_weight_in_its_file_streams_it_as_it_is(tmp_path, monkeypatch):
    """A classifier's Gemm (transB) loaded from a file: its weight is the kernel's own copy,
    (N, K) as the single-row kernel reads it, so that kernel is still the default (it
    was OpenBLAS's GEMM for a weight read from a file: 0.74 ms against 0.3-0.4 on
    MobileNetV2's classifier)."""
    from workbench.engine.backends.x86 import _native

    if not _native.available():
        pytest.skip(f"numba's parallel loops do not run here: {_native.why()}")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    w = np.random.default_rng(5).standard_normal((K, N)).astype(np.float32)
    proto = gemm_model(w)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    model = wb.load(path)
    assert model.graph.initializers["wt"].const_deferred
    sess = wb.Session(model, "x86")
    x = np.random.default_rng(6).standard_normal((1, K)).astype(np.float32)
    got = sess.run({"x": x})["y"]
    assert sess.plan.steps[0].kernel.algorithm == "gemv"
    np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-4)
