"""Real `torch.onnx.export` files load and run, and agree with torch and onnxruntime.

- opset 17 through the TorchScript exporter (`dynamo=False`), one file;
- opset 18 through the dynamo exporter (needs onnxscript), weights in `model.onnx.data`.

Each export happens once per module (the dynamo exporter takes ~10 s); the files are then
run on `reference` and `x86` at a batch (and sequence) size other than the one exported
with, so the dynamic axes must have stayed symbolic.

Needs `pip install torch onnxscript` (CPU torch is enough); skipped otherwise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import workbench as wb
from workbench.testing import assert_close

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

pytestmark = pytest.mark.torch

BACKENDS = ["reference", "x86"]


class ConvNet(torch.nn.Module):
    """conv + bn + relu + global average pool + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3)))


class Encoder(torch.nn.Module):
    """A pre-norm transformer encoder layer written out (multi-head attention, GELU MLP).

    `torch.nn.TransformerEncoderLayer` does not trace with the TorchScript exporter in
    torch 2.13 (`scaled_dot_product_attention(): argument 'is_causal' must be bool, not
    Tensor`), so the opset-17 export uses this one; the dynamo export runs both.
    """

    def __init__(self, d: int = 16, heads: int = 2, ffn: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.out = torch.nn.Linear(d, d)
        self.ln1 = torch.nn.LayerNorm(d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.fc1 = torch.nn.Linear(d, ffn)
        self.fc2 = torch.nn.Linear(ffn, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, s, self.heads, hd).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))


def _conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    m = ConvNet()
    with torch.no_grad():  # non-trivial running statistics, so BN is not an identity
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return Encoder().eval()


def _nn_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return layer.eval()


# name -> (module factory, example input at export, input at run time, forward's arg name)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple, tuple, str]] = {
    "convnet": (_conv_net, (2, 3, 8, 8), (3, 3, 8, 8), "x"),
    "encoder": (_encoder, (2, 5, 16), (3, 7, 16), "x"),
    "nn_encoder": (_nn_encoder, (2, 5, 16), (3, 7, 16), "src"),
}


def _export(name: str, folder: Path, dynamo: bool) -> Path:
    make, example_shape, _, arg = MODELS[name]
    module = make()
    example = (torch.randn(*example_shape),)
    path = folder / "model.onnx"
    rank = len(example_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter from both exporters
        if dynamo:
            dims = {0: torch.export.Dim("batch")}
            if rank == 3:
                dims[1] = torch.export.Dim("seq")
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=True,
                opset_version=18,
                external_data=True,
                input_names=["x"],
                output_names=["y"],
                dynamic_shapes={arg: dims},
                verbose=False,
            )
        else:
            axes = {0: "batch", 1: "seq"} if rank == 3 else {0: "batch"}
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": axes, "y": axes},
            )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, bool], Path]:
    """`exported(name, dynamo) -> path`, exporting each (model, exporter) pair once."""
    cache: dict[tuple[str, bool], Path] = {}

    def get(name: str, dynamo: bool) -> Path:
        if dynamo:
            pytest.importorskip(
                "onnxscript", reason="the dynamo exporter needs onnxscript (pip install onnxscript)"
            )
        key = (name, dynamo)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{name}-{'dynamo' if dynamo else 'torchscript'}")
            cache[key] = _export(name, folder, dynamo)
        return cache[key]

    return get


def _check(path: Path, name: str, backend: str, opset: int) -> None:
    import onnxruntime

    make, _, run_shape, _ = MODELS[name]
    x = np.random.default_rng(0).standard_normal(run_shape).astype(np.float32)
    with torch.no_grad():
        want = make()(torch.from_numpy(x)).numpy()
    model = wb.load(path)
    assert model.opset() == opset
    assert all(isinstance(d, str) for d in model.graph.inputs[0].shape[:1])  # batch symbolic
    sess = wb.Session(model, backend)
    got = sess.run({"x": x})["y"]
    ort = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_y = ort.run(["y"], {"x": x})[0]
    assert got.shape == want.shape == ort_y.shape
    assert_close(got, want)  # against torch itself
    assert_close(got, ort_y)  # and against onnxruntime


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["convnet", "encoder"])
def test_torchscript_export_opset17_runs_and_matches(exported, name: str, backend: str) -> None:
    path = exported(name, False)
    assert not path.with_name("model.onnx.data").exists()  # one file
    _check(path, name, backend, opset=17)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["convnet", "encoder", "nn_encoder"])
def test_dynamo_export_opset18_external_data_runs_and_matches(
    exported, name: str, backend: str
) -> None:
    path = exported(name, True)
    assert path.with_name("model.onnx.data").exists()
    stored = onnx.load(path, load_external_data=False)
    external = {
        t.name for t in stored.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    }
    assert external, "the dynamo exporter wrote no external tensors"
    model = wb.load(path)
    for t in external:  # memory-mapped, not read
        assert isinstance(model.graph.initializers[t].const, np.memmap), t
    _check(path, name, backend, opset=18)
