"""Kernels whose parts run on numba's threads (backends/x86/_native.py): each compiled path
gives exactly what the pool gives on the same parts (the same MKL calls and epilogue), and
matches numpy in float64, on odd shapes, both operand layouts, with and without an
epilogue; the switch that turns it off. Skips, saying why, without MKL or without a numba
threading layer."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import numpy as np
import pytest

from workbench import _threads
from workbench.engine.backends.x86 import _mkl, _native, _parallel, ops_conv
from workbench.engine.backends.x86.ops_fused_conv import _EMPTY, Epilogue, ImageEpilogue
from workbench.engine.backends.x86.ops_gemm import _gemm_builders

pytestmark = [
    pytest.mark.skipif(not _mkl.available(), reason=f"no MKL here: {_mkl.why()}"),
    pytest.mark.skipif(not _native.available(), reason=f"no numba threads: {_native.why()}"),
]
rng = np.random.default_rng(11)
ACTS = {"none": (0, 0.0, 0.0), "relu": (1, 0.0, 0.0), "clip": (3, -0.5, 0.7)}


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def act_tuple(name: str) -> tuple:
    code, p0, p1 = ACTS[name]
    return code, np.float32(p0), np.float32(p1)


def act_numpy(y: np.ndarray, name: str) -> np.ndarray:
    code, p0, p1 = ACTS[name]
    if code == 1:
        return np.maximum(y, 0.0)
    if code == 3:
        return np.clip(y, p0, p1)
    return y


@pytest.fixture
def two_threads():
    saved = _threads.current()
    _threads.apply(2)
    try:
        with _parallel.always_split():  # parts on the smallest shapes too
            yield
    finally:
        _threads.apply(saved)


@contextlib.contextmanager
def pool_only():
    """Within the block the kernels take the pool's path, as where numba has no threads."""
    saved = _native._state["ok"]
    _native._state["ok"] = False
    try:
        yield
    finally:
        _native._state["ok"] = saved


@pytest.mark.parametrize(
    ("m", "k", "n"), [(1, 1, 1), (7, 33, 5), (130, 70, 333), (257, 19, 40), (1200, 24, 256)]
)
@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("residual", [False, True])
def test_packed_products_match_the_pool_and_numpy(two_threads, m, k, n, act, residual):
    a, b, bias = f32(m, k), f32(k, n), f32(n)
    z = f32(m * n) if residual else _EMPTY
    want = a.astype(np.float64) @ b.astype(np.float64) + bias
    want = act_numpy(want + (z.reshape(m, n) if residual else 0.0), act)
    builders = _gemm_builders(b, rows=2)  # (few rows: offered the depth split too)
    for name in ("mkl_packed", "mkl_packed_padded", "mkl_packed_cols", "mkl_packed_k"):
        fn = builders[name]()
        for aa in (a, np.ascontiguousarray(a.T).T):  # row-major A, and A as a transpose
            got = np.full((m, n), np.nan, np.float32)
            fn(aa, got, Epilogue(bias, z, act_tuple(act)))
            pool = np.full((m, n), np.nan, np.float32)
            with pool_only():
                fn(aa, pool, Epilogue(bias, z, act_tuple(act)))
            np.testing.assert_array_equal(got, pool)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_the_compiled_path_is_the_one_taken(two_threads):
    a, b = f32(70, 9), f32(9, 40)
    packed = _mkl.PackedB(b)
    got = np.empty((70, 40), np.float32)
    call = _native.packed_rows_call(packed, a, got, None, grain=1)
    assert call is not None
    call()
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)
    # a Python callable as the epilogue, or an output it cannot address, is the pool's
    assert _native.packed_rows_call(packed, a, got, lambda *args: None, grain=1) is None
    transposed = np.empty((40, 70), np.float32).T
    assert _native.packed_rows_call(packed, a, transposed, None, grain=1) is None
    with pool_only():
        assert _native.packed_rows_call(packed, a, got, None, grain=1) is None


@pytest.mark.parametrize(("m", "k", "p"), [(5, 3, 300), (64, 27, 257), (13, 40, 30), (3, 1, 7)])
@pytest.mark.parametrize("act", ["none", "clip"])
@pytest.mark.parametrize("residual", [False, True])
def test_conv_gemm_matches_the_pool_and_numpy(two_threads, m, k, p, act, residual):
    """Image 1 of a batch of 2 (by output positions from 256 of them, else by channels)."""
    w2, x2, bias = f32(m, k), f32(k, p), f32(m)
    z = f32(2, m * p) if residual else _EMPTY
    post = ImageEpilogue(bias, z, act_tuple(act))
    want = w2.astype(np.float64) @ x2.astype(np.float64) + bias[:, None]
    want = act_numpy(want + (z[1].reshape(m, p) if residual else 0.0), act)
    outs = []
    for native in (True, False):
        y = np.full((2, m, p), np.nan, np.float32)
        with contextlib.nullcontext() if native else pool_only():
            ops_conv.mkl_conv_gemm(w2, x2, y[1], post, 1, y)
        assert np.isnan(y[0]).all()  # image 0 untouched
        outs.append(y[1])
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("c", [13, 32])  # the loops, and the 3x3 kernel's vectors of 16
@pytest.mark.parametrize("in_kernel", [False, True])
def test_depthwise_matches_the_pool_and_numpy(two_threads, stride, c, in_kernel):
    """With a residual the Clip runs in the epilogue after it; without one the kernel
    clamps each value as it stores it (`clamp_of`) and no epilogue runs."""
    from workbench.engine.backends.x86 import depthwise_nhwc

    h, wd, pad = 9, 11, 1
    x, w, bias, zero = f32(h, wd, c), f32(c, 1, 3, 3), f32(c), np.zeros(c, np.float32)
    oh, ow = (h + 2 * pad - 3) // stride + 1, (wd + 2 * pad - 3) // stride + 1
    z = np.zeros(0, np.float32) if in_kernel else f32(oh * ow * c)
    wt = depthwise_nhwc.pack_weight(w).reshape(-1)
    xp = np.pad(x.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)))
    want = np.zeros((oh, ow, c)) + bias
    for a in range(3):
        for e in range(3):
            win = xp[a : a + stride * oh : stride, e : e + stride * ow : stride]
            want += win * w[:, 0, a, e]
    want = np.clip(want + (0 if in_kernel else z.reshape(oh, ow, c)), -0.5, 0.7)
    clip = act_tuple("clip")
    bounds = depthwise_nhwc.clamp_of(*clip) if in_kernel else depthwise_nhwc.NO_CLAMP
    outs = []
    for native in (True, False):
        y = np.full(oh * ow * c, np.nan, np.float32)
        args = (
            x.reshape(-1), wt, bias, h, wd, c, 3, 3, stride, stride, 1, 1, pad, pad, ow,
            y, *depthwise_nhwc.runs(wt.reshape(9, c), bias, stride), *bounds,
        )  # fmt: skip
        with contextlib.nullcontext() if native else pool_only():
            _native.depthwise_call(args, oh, 1, (z, zero, *clip, not in_kernel))()
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0].reshape(oh, ow, c), want, rtol=1e-4, atol=1e-4)


def test_environment_switch():
    code = "from workbench.engine.backends.x86 import _native as n; print(n.available(), n.why())"
    env = {"WORKBENCH_NATIVE_THREADS": "0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("False") and "WORKBENCH_NATIVE_THREADS" in out
