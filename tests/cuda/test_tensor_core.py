"""The tensor-core GEMM (`tensor_core.cu`): its CUDA C compiles to PTX with real WMMA
instructions wherever nvcc exists (no GPU needed), and on a GPU with pycuda it matches the
reference within fp16/tf32 tolerance and is the algorithm the GEMM factories pick."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import workbench as wb
from workbench.engine.backends.cuda import fast_gemm
from workbench.testing import assert_close, node_model, run_node

NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed here: the CUDA C is not compiled")
@pytest.mark.parametrize(
    "precision, mma",
    [("fp16", "wmma.mma.sync.aligned.row.row.m16n16k16.f32.f32"),
     ("tf32", "wmma.mma.sync.aligned.row.row.m16n16k8.f32.tf32.tf32.f32")],
)  # fmt: skip
def test_cuda_c_compiles_to_tensor_core_ptx_without_device(tmp_path, precision, mma):
    ptx = tmp_path / "tc.ptx"
    cmd = [NVCC, "-arch=sm_90", "-ptx", *fast_gemm.nvcc_options(precision)]
    done = subprocess.run([*cmd, str(fast_gemm.SOURCE), "-o", str(ptx)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    text = ptx.read_text()
    name = "gemm_tf32" if precision == "tf32" else "gemm_f16"
    assert f".entry {name}(" in text and f".entry peak_{name[5:]}(" in text
    assert mma in text  # tensor-core MMAs, not a scalar loop


def test_simulator_says_why_tensor_cores_are_off():
    why = fast_gemm.why_not("fp16")
    if fast_gemm.enabled("fp16"):
        pytest.skip("a real GPU with pycuda: the tensor-core path is on")
    assert why  # a reason, not an empty string
    a, b = np.ones((16, 16), np.float32), np.ones((16, 16), np.float32)
    model, _ = node_model("MatMul", [a, b])
    sess = wb.Session(wb.load(model, check=False), "cuda", precision="tf32")
    algos = {k["algorithm"] for k in sess.kernels() if k["op"] == "MatMul"}
    assert algos == {"tiled-smem-gemm-tf32"}


R = np.random.default_rng(1)
GEMMS = [
    ("MatMul", [R.standard_normal((2, 40, 48)), R.standard_normal((48, 72))], {}),
    ("Gemm", [R.standard_normal((33, 64)), R.standard_normal((80, 64)), R.standard_normal(80)],
     {"transB": 1, "alpha": 0.5}),
    ("Conv", [R.standard_normal((1, 16, 9, 9)), R.standard_normal((32, 16, 3, 3))],
     {"pads": [1, 1, 1, 1]}),
]  # fmt: skip


@pytest.mark.parametrize("precision", ["fp16", "tf32"])
@pytest.mark.parametrize("case", GEMMS, ids=[c[0] for c in GEMMS])
def test_tensor_core_gemm_matches_reference_on_gpu(case, precision):
    if not fast_gemm.enabled(precision):
        pytest.skip(f"no tensor-core path: {fast_gemm.why_not(precision)}")
    op, ins, attrs = case
    ins = [x.astype(np.float32) for x in ins]
    model, _ = node_model(op, ins, attrs)
    sess = wb.Session(wb.load(model, check=False), "cuda", precision=precision)
    assert any(k["algorithm"].startswith("wmma-tensor-core") for k in sess.kernels())
    (got,) = run_node("cuda", op, ins, attrs, precision=precision)
    (want,) = run_node("reference", op, ins, attrs)
    k = ins[1].shape[1] if op != "Gemm" else ins[0].shape[1]
    # inputs rounded to 11 bits (fp16, tf32): an error ~1e-3 per product, grown by sqrt(k)
    atol = (4e-3 if precision == "fp16" else 2e-3) * np.sqrt(k)
    assert_close(np.asarray(got, np.float32), want, rtol=1e-2, atol=atol, err_msg=op)
