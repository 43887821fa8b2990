"""The backend group: the same cases on every backend; an absent one is skipped with its reason."""

from __future__ import annotations

import pytest

import workbench as wb

_INFOS = {b.name: b for b in wb.backends()}
DEVICE_BACKENDS = [name for name in _INFOS if name != "reference"]


@pytest.fixture(params=DEVICE_BACKENDS)
def backend(request) -> str:
    info = _INFOS[request.param]
    if not info.available:
        pytest.skip(f"{info.name} backend unavailable here: {info.reason}")
    return info.name


def _gemm_algorithms() -> list:
    """Every candidate of x86's product by a constant matrix (ops_gemm._gemm_builders);
    MKL's are skipped, with the reason, where the `mkl` extra is not installed."""
    from workbench.engine.backends.x86 import _mkl

    plain = ["gemm", "gemm_t", "gemm_bt", "gemm_cols", "gemm_t_cols"]
    no_mkl = pytest.mark.skipif(not _mkl.available(), reason=f"no MKL here: {_mkl.why()}")
    mkl = ["mkl_packed", "mkl_packed_padded", "mkl_packed_cols", "mkl_packed_k"]  # (_k: few rows)
    return plain + [pytest.param(a, marks=no_mkl) for a in mkl]


def pytest_generate_tests(metafunc) -> None:
    """A test that takes `gemm_alg` runs once per GEMM candidate."""
    if "gemm_alg" in metafunc.fixturenames:
        metafunc.parametrize("gemm_alg", _gemm_algorithms())


@pytest.fixture
def split_and_select(tmp_path, monkeypatch):
    """x86 algorithm tests: selection against an empty cache of their own with the default
    settings, on two threads with every kernel's work split (however small), so that the
    split paths of every algorithm meet the tests' odd shapes."""
    from workbench import _threads
    from workbench.engine.backends.x86 import _parallel, autotune

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("WORKBENCH_AUTOTUNE", raising=False)
    monkeypatch.delenv("WORKBENCH_ALGORITHM", raising=False)
    autotune.clear_memory()
    # a fresh process's measuring budget: over the suite the budget would run out (a fresh
    # numba cache compiles every candidate inside it) and selection would stop measuring
    autotune.reset_budget()
    saved = _threads.current()
    _threads.apply(2)
    with _parallel.always_split():
        yield
    _threads.apply(saved)
    autotune.clear_memory()
