"""`wb.load`: paths, bytes and ModelProtos; checker, shape inference, symbolic dims;
external data memory-mapped; files shaped like PyTorch's exports run and match onnxruntime.

The models come from tests/conftest.py (`conv_model`, `transformer_model`): opset 17 in
one file as the TorchScript exporter writes it, opset 18 with weights in
`model.onnx.data` as the dynamo exporter writes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.testing import assert_close

DIMS = {"batch_size": 2, "seq": 5}


def _save(proto: onnx.ModelProto, folder: Path, external: bool) -> Path:
    """Write `proto` the way an exporter does: one file, or weights in model.onnx.data."""
    path = folder / "model.onnx"
    if external:
        onnx.save_model(
            proto,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx.data",
        )
    else:
        onnx.save_model(proto, path)
    return path


# -- sources -----------------------------------------------------------------------------------


def test_path_bytes_and_modelproto_load_the_same_model(conv_model, tmp_path: Path) -> None:
    proto = conv_model()
    path = _save(proto, tmp_path, external=False)
    from_path = wb.load(path)
    from_str = wb.load(str(path))
    from_bytes = wb.load(proto.SerializeToString())
    from_proto = wb.load(proto)
    for m in (from_path, from_str, from_bytes, from_proto):
        assert isinstance(m, wb.Model)
        assert [n.name for n in m.graph.nodes] == [n.name for n in proto.graph.node]
        assert m.opset() == 17
        assert m.producer_name == "pytorch"
    # only a file knows where it came from; a file and its bytes hash the same
    assert from_path.path == path and from_proto.path is None
    assert from_path.sha256 == from_bytes.sha256 != ""
    assert from_path.name == "model"


def test_loading_does_not_modify_the_given_modelproto(transformer_model) -> None:
    proto = transformer_model()
    before = proto.SerializeToString()
    wb.load(proto)
    assert proto.SerializeToString() == before


def test_shapes_are_inferred_for_intermediates(conv_model) -> None:
    model = wb.load(conv_model())
    values = {v.name: v for n in model.graph.nodes for v in n.outputs}
    # shape inference carried the symbolic batch through the whole graph
    assert values["/conv/Conv_output_0"].shape == ("batch_size", 16, 8, 8)
    assert values["/pool/GlobalAveragePool_output_0"].shape == ("batch_size", 16, 1, 1)
    assert values["output"].shape == ("batch_size", 10)
    assert values["output"].dtype == np.float32


def test_the_checker_runs_and_names_the_file(conv_model, tmp_path: Path) -> None:
    proto = conv_model()
    proto.graph.node[0].input[0] = "nowhere"  # reads a value nothing defines
    path = tmp_path / "broken.onnx"
    onnx.save_model(proto, path)
    with pytest.raises(wb.ModelLoadError, match="checker") as info:
        wb.load(path)
    assert str(path) in str(info.value) and "nowhere" in str(info.value)


@pytest.mark.parametrize("backend", ["reference", "x86"])
@pytest.mark.parametrize("make", ["conv_model", "transformer_model"])
def test_symbolic_dims_stay_symbolic_until_feeds_fix_them(
    make: str, backend: str, request: pytest.FixtureRequest
) -> None:
    model = wb.load(request.getfixturevalue(make)())
    first = model.graph.inputs[0]
    assert first.shape[0] == "batch_size"  # a name, not a number guessed at load time
    sess = wb.Session(model, backend)
    name = model.graph.outputs[0].name
    for batch in (1, 3):  # one Session, two batch sizes
        feeds = sess.random_feeds({"batch_size": batch, "seq": 4})
        out = sess.run(feeds)
        assert out[name].shape[0] == batch
    assert first.shape[0] == "batch_size"  # running did not pin the dim


# -- external data -----------------------------------------------------------------------------


def test_external_tensors_are_memory_mapped_not_copied(transformer_model, tmp_path: Path) -> None:
    path = _save(transformer_model(18), tmp_path, external=True)
    stored = onnx.load(path, load_external_data=False)
    external = {t.name for t in stored.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    assert "embed.weight" in external and len(external) >= 5
    model = wb.load(path)
    for name, v in model.graph.initializers.items():
        if name in external:
            assert isinstance(v.const, np.memmap), name
            assert not v.const.flags.owndata and not v.const.flags.writeable, name
        else:
            assert not isinstance(v.const, np.memmap), name
    # and they hold the same numbers as onnx's own loader reads
    for t in onnx.load(path).graph.initializer:
        assert np.array_equal(model.graph.initializers[t.name].const, numpy_helper.to_array(t))


def test_bytes_with_external_data_need_base_dir(transformer_model, tmp_path: Path) -> None:
    path = _save(transformer_model(18), tmp_path, external=True)
    raw = path.read_bytes()
    with pytest.raises(wb.ExternalDataError, match="base_dir"):
        wb.load(raw)
    model = wb.load(raw, base_dir=tmp_path)
    assert isinstance(model.graph.initializers["embed.weight"].const, np.memmap)


# Runs in a fresh interpreter: nothing the test session allocated or mapped counts, and
# each phase (load, compile + run, a control copy) reports its own peak growth.
_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np, onnx
    from onnx import TensorProto, helper, numpy_helper
    import workbench as wb

    def status_mb(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

    def start():
        # Reset the peak to the current RSS (Linux >= 4.0), so the peak we read next is this
        # phase's alone; ru_maxrss could not be reset, and a JIT compile earlier in the
        # process would have hidden everything below its own peak.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_mb("VmRSS:")

    def grown(since):
        return status_mb("VmHWM:") - since

    folder, rows, cols = Path(sys.argv[1]), int(sys.argv[2]), 128
    nbytes = rows * cols * 4
    with open(folder / "model.onnx.data", "wb") as f:
        f.truncate(nbytes + 4 * cols)  # sparse: reading it still costs memory, writing no disk
    def ext(name, dims, offset, length):
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "model.onnx.data"), ("offset", offset), ("length", length)):
            t.external_data.add(key=k, value=str(v))
        return t
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embed.weight", "ids"], ["e"], name="/embed/Gather"),
         helper.make_node("Add", ["e", "bias"], ["y"], name="/Add")],
        "big",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", cols])],
        initializer=[
            ext("embed.weight", [rows, cols], 0, nbytes), ext("bias", [cols], nbytes, 4 * cols)
        ],
    )
    opsets = [helper.make_opsetid("", 18)]
    onnx.save_model(helper.make_model(graph, opset_imports=opsets), folder / "model.onnx")

    # warm up: every lazy import and JIT cache a load and a run touch, on a tiny model
    w = numpy_helper.from_array(np.ones((3, cols), np.float32), "embed.weight")
    b = numpy_helper.from_array(np.ones(cols, np.float32), "bias")
    tiny = helper.make_model(helper.make_graph(
        graph.node, "tiny", graph.input, graph.output, initializer=[w, b]), opset_imports=opsets)
    wb.Session(wb.load(tiny), sys.argv[3]).run({"ids": np.zeros(2, np.int64)})

    base = start()
    model = wb.load(folder / "model.onnx")
    load_mb = grown(base)
    base = start()
    sess = wb.Session(model, sys.argv[3])
    y = sess.run({"ids": np.array([0, 7, rows - 1])})["y"]
    run_mb = grown(base)
    weight = model.graph.initializers["embed.weight"].const
    base = start()
    copy = np.array(weight)  # the control: a real copy must show up in the measurement
    copy_mb = grown(base)
    print(json.dumps({
        "load_mb": load_mb, "run_mb": run_mb, "copy_mb": copy_mb,
        "memmap": isinstance(weight, np.memmap), "shape": list(y.shape),
        "sum": float(copy[0].sum()),
    }))
    """
)


@pytest.mark.parametrize("backend", ["reference", "x86"])
def test_200mb_of_external_weights_load_without_being_read(tmp_path: Path, backend: str) -> None:
    try:  # the measurement resets the peak RSS through /proc (Linux only)
        Path("/proc/self/clear_refs").open("w").close()
    except OSError as e:
        pytest.skip(f"cannot reset the peak RSS here: {e}")
    rows = 409_600  # x 128 float32 = 200 MiB
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path), str(rows), backend],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["memmap"] and got["shape"] == [3, 128]
    assert got["copy_mb"] > 150, got  # the measurement does see a 200 MiB copy ...
    assert got["load_mb"] < 20, got  # ... and loading made none
    assert got["run_mb"] < 20, got  # nor did compiling and a Gather of three rows


# -- files shaped like PyTorch's exports -------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "x86"])
@pytest.mark.parametrize(
    ("opset", "external"),
    [(17, False), (18, True)],
    ids=["opset17-one-file", "opset18-external-data"],
)
@pytest.mark.parametrize("make", ["conv_model", "transformer_model"])
def test_exporter_shaped_files_run_and_match_onnxruntime(
    make: str,
    opset: int,
    external: bool,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    ort_run: Callable[..., dict[str, np.ndarray]],
) -> None:
    path = _save(request.getfixturevalue(make)(opset), tmp_path, external)
    assert (tmp_path / "model.onnx.data").exists() == external
    model = wb.load(path)
    assert model.opset() == opset and model.path == path
    sess = wb.Session(model, backend)
    feeds = sess.random_feeds(DIMS)
    got = sess.run(feeds)
    want = ort_run(str(path), feeds)
    assert set(got) == set(want)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        assert_close(got[name], ref)


def test_opset18_reducemean_axes_input_matches_opset17_attribute(transformer_model) -> None:
    # the same weights at both opsets: the only difference is how ReduceMean gets its axes
    feeds = {"input_ids": np.array([[1, 2, 3], [4, 5, 6]], np.int64)}
    a = wb.Session(wb.load(transformer_model(17)), "reference").run(feeds)
    b = wb.Session(wb.load(transformer_model(18)), "reference").run(feeds)
    assert_close(a["pooled"], b["pooled"])
    assert_close(a["pooled"], a["last_hidden_state"].mean(axis=1, keepdims=True))


def test_external_data_with_offsets_in_one_file(tmp_path: Path) -> None:
    # two tensors in one data file at different offsets, as every exporter writes them
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(3, dtype=np.float32) * 10
    (tmp_path / "w.bin").write_bytes(a.tobytes() + b.tobytes())
    inits = []
    for name, arr, offset in (("a", a, 0), ("b", b, a.nbytes)):
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "w.bin"), ("offset", str(offset)), ("length", str(arr.nbytes))):
            t.external_data.add(key=k, value=v)
        inits.append(t)
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=inits,
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    out = wb.Session(wb.load(path), "x86").run({})
    assert np.array_equal(out["y"], a + b)
