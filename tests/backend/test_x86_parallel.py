"""The x86 kernels' thread pool (backends/x86/_parallel.py): every part runs once, errors
reach the caller, nested calls run in place, and split kernels match the reference."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from workbench import _threads
from workbench.engine.backends.x86 import _parallel
from workbench.engine.backends.x86.ops_gemm import _gemm_builders
from workbench.testing import assert_close, run_node


@pytest.fixture
def two_threads():
    saved = _threads.current()
    _threads.apply(2)
    try:
        with _parallel.always_split():
            yield
    finally:
        _threads.apply(saved)


def test_every_part_runs_once_on_the_pool(two_threads):
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def part(i: int) -> None:
        with lock:
            seen.append((i, threading.current_thread().name))

    _parallel.parallel(part, 5)
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3, 4]
    names = {name for _, name in seen}
    assert threading.current_thread().name in names
    assert any(name.startswith("workbench-x86-") for name in names)


def test_an_error_in_a_worker_reaches_the_caller_and_the_pool_survives(two_threads):
    def part(i: int) -> None:
        if i == 1:
            raise ValueError("part 1 failed")

    with pytest.raises(ValueError, match="part 1 failed"):
        _parallel.parallel(part, 2)
    out = np.zeros(4)
    _parallel.for_ranges(lambda lo, hi: out.__setitem__(slice(lo, hi), 1.0), 4, 1)
    assert out.tolist() == [1.0] * 4


def test_nested_calls_run_in_place(two_threads):
    inner_threads: list[int] = []

    def part(i: int) -> None:
        inner_threads.append(_parallel.threads())
        _parallel.parallel(lambda j: None, 3)

    _parallel.parallel(part, 2)
    assert inner_threads == [1, 1]
    assert _parallel.threads() == 2


@pytest.mark.parametrize(
    ("total", "parts", "align", "want"),
    [
        (10, 2, 1, [(0, 5), (5, 10)]),
        (10, 3, 1, [(0, 3), (3, 6), (6, 10)]),
        (100, 2, 16, [(0, 48), (48, 100)]),
        (5, 4, 16, [(0, 5)]),
        (0, 2, 1, []),
        (3, 8, 1, [(0, 1), (1, 2), (2, 3)]),
    ],
)
def test_ranges_cover_the_total(total, parts, align, want):
    assert _parallel.ranges(total, parts, align) == want


@pytest.mark.parametrize("order", ["C", "F"])  # F: Gemm's transB, a view of the initializer
@pytest.mark.parametrize("rows", [1, 7, 130])
def test_split_gemm_candidates_match_numpy(two_threads, rows, order):
    rng = np.random.default_rng(rows)
    bm = rng.standard_normal((70, 333), dtype=np.float32)  # odd sizes: uneven parts
    if order == "F":
        bm = np.ascontiguousarray(bm.T).T
    x = rng.standard_normal((rows, 70), dtype=np.float32)
    want = x.astype(np.float64) @ bm.astype(np.float64)
    for name, build in _gemm_builders(bm).items():
        out = np.full((rows, 333), np.nan, np.float32)
        build()(x, out)
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("stride", [1, 2])
def test_split_depthwise_matches_reference(two_threads, stride):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((1, 37, 17, 15), dtype=np.float32)
    w = rng.standard_normal((37, 1, 3, 3), dtype=np.float32)
    b = rng.standard_normal((37,), dtype=np.float32)
    attrs = {"group": 37, "pads": [1, 0, 2, 1], "strides": [stride, stride]}
    got = run_node("x86", "Conv", [x, w, b], attrs, consts=(1, 2))[0]
    ref = run_node("reference", "Conv", [x, w, b], attrs, consts=(1, 2))[0]
    assert_close(got, ref)


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [0, 1, 1, 0], "ceil_mode": 1},
        {"kernel_shape": [3], "strides": [2], "dilations": [2]},
    ],
)
def test_split_maxpool_matches_reference(two_threads, attrs):
    """MaxPool's planes split over the threads (2 images x 5 channels: parts that do not
    start at an image's edge); with Indices asked for it stays one part, also checked."""
    rng = np.random.default_rng(5)
    shape = (2, 5, 11) if len(attrs["kernel_shape"]) == 1 else (2, 5, 9, 11)
    x = rng.standard_normal(shape, dtype=np.float32)
    for outputs in (1, 2):
        got = run_node("x86", "MaxPool", [x], attrs, n_outputs=outputs)
        ref = run_node("reference", "MaxPool", [x], attrs, n_outputs=outputs)
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("name", ["tiny_resnet", "tiny_mobilenet_v2", "tiny_bert"])
def test_zoo_models_split_everywhere_match_reference(two_threads, name):
    """Every kernel split (fused epilogues run block by block inside the conv: residuals,
    Relu, Clip; depthwise, 1x1 and im2col convs; attention by heads) against reference."""
    import workbench as wb
    from workbench import zoo

    model = wb.load(zoo.get(name))
    sess = wb.Session(model, "x86", level=2)
    feeds = sess.random_feeds(seed=3)
    got = sess.run(feeds)
    want = wb.Session(model, "reference", level=0).run(feeds)
    for key, ref in want.items():
        assert_close(got[key], ref, rtol=1e-4, atol=1e-4)
