"""MKL's GEMM through ctypes (backends/x86/_mkl.py): plain and packed products on row- and
column-major views, slices, odd and empty shapes, against numpy in float64; the switch
that turns it off and the message when it is missing. Skips, saying why, where the `mkl`
extra is not installed (`make test` installs it on x86-64)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from workbench.engine.backends.x86 import _mkl

pytestmark = pytest.mark.skipif(not _mkl.available(), reason=f"no MKL here: {_mkl.why()}")
rng = np.random.default_rng(5)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) @ b.astype(np.float64)


def layouts(x: np.ndarray) -> list[np.ndarray]:
    """x as given, as the transpose of a row-major copy, and as a slice of a wider array."""
    wide = np.zeros((x.shape[0], x.shape[1] + 3), np.float32)
    wide[:, 1 : 1 + x.shape[1]] = x
    return [x, np.ascontiguousarray(x.T).T, wide[:, 1 : 1 + x.shape[1]]]


@pytest.mark.parametrize(
    ("m", "k", "n"), [(1, 1, 1), (7, 33, 5), (130, 70, 333), (3, 1, 17), (9, 4, 1), (1, 6, 8)]
)
def test_sgemm_matches_numpy_on_every_layout(m, k, n):
    a, b = f32(m, k), f32(k, n)
    want = exact(a, b)
    for aa in layouts(a):
        for bb in layouts(b):
            c = np.full((m, n), np.nan, np.float32)
            _mkl.sgemm(aa, bb, c)
            np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)
    ct = np.full((n, m), np.nan, np.float32).T  # a column-major output
    _mkl.sgemm(a, b, ct)
    np.testing.assert_allclose(ct, want, rtol=1e-4, atol=1e-4)
    wide = np.full((m + 2, n + 3), np.nan, np.float32)  # a block of a bigger output
    _mkl.sgemm(a, b, wide[1 : m + 1, 2 : n + 2])
    np.testing.assert_allclose(wide[1 : m + 1, 2 : n + 2], want, rtol=1e-4, atol=1e-4)
    assert np.isnan(wide[0]).all() and np.isnan(wide[:, :2]).all()


def test_sgemm_empty_shapes():
    c = np.full((3, 4), np.nan, np.float32)
    _mkl.sgemm(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), c)
    assert (c == 0).all()
    _mkl.sgemm(np.zeros((0, 5), np.float32), f32(5, 4), np.zeros((0, 4), np.float32))


def test_sgemm_refuses_a_view_blas_cannot_read():
    a = f32(6, 8)[::2, ::2]  # neither rows nor columns of unit stride
    with pytest.raises(ValueError, match="row- or column-major"):
        _mkl.sgemm(a, f32(4, 3), np.zeros((3, 3), np.float32))


@pytest.mark.parametrize(("k", "n"), [(1, 1), (70, 333), (384, 17)])
def test_packed_b_serves_any_row_count_and_layout(k, n):
    b = f32(k, n)
    for bb in layouts(b):
        packed = _mkl.PackedB(bb)
        for m in (1, 5, 64, 129):
            a = f32(m, k)
            for aa in layouts(a):
                c = np.full((m, n), np.nan, np.float32)
                packed.product(aa, c)
                np.testing.assert_allclose(c, exact(a, b), rtol=1e-4, atol=1e-4)
    # rows of a bigger output: a thread's part
    a, c = f32(10, k), np.full((10, n), np.nan, np.float32)
    packed.product(a[3:8], c[3:8])
    np.testing.assert_allclose(c[3:8], exact(a[3:8], b), rtol=1e-4, atol=1e-4)
    assert np.isnan(c[:3]).all() and np.isnan(c[8:]).all()


def test_packed_b_names_the_shapes_that_do_not_fit():
    packed = _mkl.PackedB(f32(8, 5))
    with pytest.raises(ValueError, match=r"B 8x5: A \[3, 7\]"):
        packed.product(f32(3, 7), np.zeros((3, 5), np.float32))


def test_version_and_reason():
    assert "Math Kernel Library" in _mkl.version()
    assert _mkl.why() == ""


@pytest.mark.parametrize(
    ("value", "reason"),
    [("0", "turned off by WORKBENCH_MKL"), ("/nowhere/libmkl_rt.so", "could not load MKL")],
)
def test_environment_switch(value, reason):
    code = "from workbench.engine.backends.x86 import _mkl; print(_mkl.available(), _mkl.why())"
    env = {"WORKBENCH_MKL": value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("False") and reason in out
