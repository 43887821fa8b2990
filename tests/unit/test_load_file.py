"""Loading a file reads each large initializer once, from the file into its own array
(`workbench.engine.onnx_file`): the arrays, the digest and the errors are those of parsing
the whole file, and the walk gives up on what it does not understand."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.engine import onnx_file, onnx_io
from workbench.errors import ModelLoadError

BIG = onnx_file.READ_SEPARATELY_BYTES
PLAIN = onnx_io._PLAIN_TYPES


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "w32": rng.standard_normal((97, 211)).astype(np.float32),  # 81 KB: read separately
        "w16": rng.standard_normal((129, 300)).astype(np.float16),
        "i64": rng.integers(-(2**40), 2**40, size=9001, dtype=np.int64),
        "mask": rng.random(BIG + 3) < 0.5,  # bool, an odd byte count
        "small": rng.standard_normal(7).astype(np.float32),  # stays in the proto
        "shape": np.array([211, 1], np.int64),
    }


def _model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Y = reshape(X @ w32, shape) + ... : every weight is used, so the model runs."""
    nodes = [
        helper.make_node("MatMul", ["X", "w32"], ["mm"]),
        helper.make_node("Add", ["mm", "small_b"], ["mm_b"]),
        helper.make_node("Reshape", ["mm_b", "shape"], ["Y"]),
        helper.make_node("Cast", ["w16"], ["w16_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["w16_f"], ["s16"], keepdims=0),
        helper.make_node("Cast", ["i64"], ["i64_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["i64_f"], ["m64"], keepdims=0),
        helper.make_node("Not", ["mask"], ["nmask"]),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in weights.items() if n != "small"]
    inits.append(numpy_helper.from_array(np.resize(weights["small"], 211), "small_b"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 97])],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, [211, 1]),
            helper.make_tensor_value_info("s16", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("m64", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("nmask", TensorProto.BOOL, [BIG + 3]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_file_loads_the_same_arrays_as_its_proto(tmp_path: Path) -> None:
    proto = _model(_weights())
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    from_file, from_proto = wb.load(path), wb.load(proto)
    for name, v in from_proto.graph.initializers.items():
        got = from_file.graph.initializers[name].const
        assert got.dtype == v.const.dtype and got.shape == v.const.shape, name
        np.testing.assert_array_equal(got, v.const, err_msg=name)
        assert not got.flags.writeable and got.flags.aligned, name
    # the digest is the file's, as when the whole file was read
    assert from_file.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    feeds = {"X": np.random.default_rng(0).standard_normal((1, 97)).astype(np.float32)}
    a = wb.Session(from_file, "reference").run(feeds)
    b = wb.Session(from_proto, "reference").run(feeds)
    for name in b:
        np.testing.assert_array_equal(a[name], b[name])


def test_the_walk_leaves_out_just_the_large_raw_data(tmp_path: Path) -> None:
    weights = _weights()
    proto = _model(weights)
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    light, spans = onnx_file.light_model_bytes(path, PLAIN)
    raw = path.read_bytes()
    names = [t.name for t in proto.graph.initializer]
    large = {n for n, a in weights.items() if a.nbytes >= BIG}
    assert {n for n, s in zip(names, spans) if s is not None} == large
    for name, span in zip(names, spans):
        if span is not None:
            expected = numpy_helper.from_array(weights[name]).raw_data
            assert raw[span.offset : span.offset + span.nbytes] == expected, name
    parsed = onnx.ModelProto()
    parsed.ParseFromString(light)
    assert len(light) <= len(raw) - sum(s.nbytes for s in spans if s is not None)
    for t in parsed.graph.initializer:
        assert t.HasField("raw_data") == (t.name not in large), t.name
    # everything but the raw data survives: names, dims, types, nodes, opsets
    assert [n.op_type for n in parsed.graph.node] == [n.op_type for n in proto.graph.node]
    assert [(t.name, list(t.dims), t.data_type) for t in parsed.graph.initializer] == [
        (t.name, list(t.dims), t.data_type) for t in proto.graph.initializer
    ]
    assert parsed.opset_import == proto.opset_import


def test_a_large_tensor_whose_bytes_do_not_match_its_dims_is_named(tmp_path: Path) -> None:
    proto = _model(_weights())
    t = next(t for t in proto.graph.initializer if t.name == "w32")
    t.dims[1] = 212  # claims 4 * 97 more bytes than it has
    path = tmp_path / "bad.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelLoadError, match=r"tensor 'w32' has 81868 bytes of data but dims"):
        wb.load(path, check=False)


def test_a_file_cut_short_inside_a_weight_is_a_load_error(tmp_path: Path) -> None:
    proto = _model(_weights())
    raw = proto.SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(raw[: len(raw) // 2])  # inside some raw_data: the walk gives up
    assert onnx_file.light_model_bytes(path, PLAIN) is None
    with pytest.raises(ModelLoadError, match=r"cut\.onnx: not a valid ONNX protobuf"):
        wb.load(path)


@pytest.mark.parametrize(
    "content", [b"", b"\x0b\x0c", b"hello, not a model\n", b"\x3a\x05abc"], ids=repr
)
def test_bytes_the_walk_does_not_understand_fall_back(tmp_path: Path, content: bytes) -> None:
    """Empty, a group, text, a length past the end: the ordinary parse's error is given."""
    path = tmp_path / "odd.onnx"
    path.write_bytes(content)
    assert onnx_file.light_model_bytes(path, PLAIN) is None
    with pytest.raises(ModelLoadError, match=r"odd\.onnx: "):
        wb.load(path)


def test_large_weights_inside_a_subgraph_stay_in_the_proto(tmp_path: Path) -> None:
    """Only the main graph's initializers are walked; an If branch's load as before."""
    w = np.arange(BIG // 4 + 5, dtype=np.float32)
    then = helper.make_graph(
        [helper.make_node("Identity", ["tw"], ["o"])],
        "then",
        [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [w.size])],
        [numpy_helper.from_array(w, "tw")],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["tw2"], ["o2"])],
        "else",
        [],
        [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [w.size])],
        [numpy_helper.from_array(w, "tw2")],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["Y"], then_branch=then, else_branch=other)],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [w.size])],
    )
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    _, spans = onnx_file.light_model_bytes(path, PLAIN)
    assert spans == []
    sess = wb.Session(wb.load(path), "reference")
    np.testing.assert_array_equal(sess.run({"c": np.array(False)})["Y"], -w)


def test_large_tensors_of_types_numpy_lays_out_otherwise_stay_in_the_proto(tmp_path: Path):
    """bfloat16 raw data is not numpy's layout of any dtype: it is parsed as before."""
    n = BIG  # 2 bytes each: twice the threshold
    bits = np.random.default_rng(3).integers(0, 2**15, n, dtype=np.uint16)
    t = helper.make_tensor("bf", TensorProto.BFLOAT16, [n], bits.tobytes(), raw=True)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["bf"], ["Y"], to=TensorProto.FLOAT)],
        "g",
        [],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n])],
        [t],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "bf.onnx"
    onnx.save(proto, path)
    assert onnx_file.light_model_bytes(path, PLAIN)[1] == [None]
    got = wb.load(path).graph.initializers["bf"].const
    want = wb.load(proto).graph.initializers["bf"].const
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


def test_a_large_tensor_with_a_negative_dim_is_named(tmp_path: Path) -> None:
    proto = _model(_weights())
    t = next(t for t in proto.graph.initializer if t.name == "i64")
    t.dims[0] = -9001
    path = tmp_path / "neg.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelLoadError, match=r"tensor 'i64' has a negative dim in \[-9001\]"):
        wb.load(path, check=False)
