"""ONNX node conformance: the report, the comparison, and pass-count floors per backend.

The floors are what was measured (onnx 1.23, without Pillow: the 9 ImageDecoder cases are
unsupported). A drop below a floor is a regression; raise the floor when counts go up.
For comparison, on the same 1,884 cases with the same comparison: onnx.reference's own
ReferenceEvaluator passes 1,861 and onnxruntime 1.31 passes 1,398.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.engine.conformance import (
    STATUSES,
    CaseResult,
    ConformanceReport,
    collect_cases,
    compare,
    run_conformance,
)

REFERENCE_FLOOR = 1869
X86_FLOOR = 1869
assert X86_FLOOR >= REFERENCE_FLOOR  # x86 falls back to reference, so never fewer


def test_report_on_three_ops(tmp_path):
    # Scan runs natively in the executor, Scatter (opset 10) has our own reference kernel,
    # Bernoulli is random and is a known deviation.
    path = tmp_path / "conf.json"
    report = run_conformance(
        "reference", ops=["Scan", "Scatter", "Bernoulli"], json_path=path, progress=False
    )
    by_op = report.by_op()
    assert set(by_op) == {"Scan", "Scatter", "Bernoulli"}
    assert by_op["Scan"]["pass"] == 4 and by_op["Scatter"]["pass"] == 2
    # a random draw can match the recorded one by chance (small outputs), so only the sum holds
    assert by_op["Bernoulli"]["mismatch"] + by_op["Bernoulli"]["pass"] == 6
    assert by_op["Bernoulli"]["mismatch"] >= 1
    assert sum(report.totals().values()) == len(report.results) == 12

    text = report.format()
    assert "ONNX node conformance on reference: 12 cases" in text
    n_pass = report.totals()["pass"]
    assert f"{n_pass} pass, {12 - n_pass} mismatch, 0 unsupported, 0 error" in text
    assert "Bernoulli" in text and "values differ" in text  # failing op with an example
    assert "known deviations" in text and "random output" in text

    data = json.loads(path.read_text())
    assert data["totals"] == report.totals()
    assert data["by_op"]["Scan"]["pass"] == 4
    assert len(data["cases"]) == 12
    # (the deviations are the cases that did not pass: a chance match is not one)
    missed = {r.name for r in report.results if r.op == "Bernoulli" and r.status != "pass"}
    assert set(data["known_deviations"]) == missed


def test_x86_report_counts_native_passes():
    report = run_conformance("x86", ops=["Relu"], progress=False)
    assert report.passed == 2
    assert report.native_passed is not None and 0 <= report.native_passed <= report.passed
    assert "ran only native kernels" in report.format()


def test_format_lists_errors_and_unsupported_with_an_example():
    report = ConformanceReport("x86", None, seconds=1.0)
    report.results = [
        CaseResult("test_a", "A", "pass", native=True),
        CaseResult("test_b", "B", "error", "KernelError: boom"),
        CaseResult("test_c", "C", "unsupported", "no kernel for C"),
    ]
    text = report.format()
    assert "1 pass, 0 mismatch, 1 unsupported, 1 error" in text
    assert "test_b: KernelError: boom" in text and "test_c: no kernel for C" in text
    assert "1 pass, of which 1 ran only native kernels" in text
    assert list(report.totals()) == list(STATUSES)


def test_compare_like_onnx_runner():
    f = np.array([1.0, 2.0], np.float32)
    assert compare(f, f * (1 + 5e-4), 1e-3, 1e-7) == ""
    assert "values differ" in compare(f, f * 1.01, 1e-3, 1e-7)
    assert "dtype" in compare(f, f.astype(np.float64), 1e-3, 1e-7)
    assert "shape" in compare(f, f[:1], 1e-3, 1e-7)
    assert compare([f, f], [f, f], 1e-3, 1e-7) == ""  # sequences element-wise
    assert "sequence of 1" in compare([f, f], [f], 1e-3, 1e-7)
    assert "a ndarray, expected a list" in compare([f], f, 1e-3, 1e-7)
    assert compare(None, None, 1e-3, 1e-7) == ""  # an empty optional
    strings = np.array(["a", "b"], dtype=object)
    assert compare(strings, np.array(["a", "b"]), 1e-3, 1e-7) == ""
    assert "strings differ" in compare(strings, np.array(["a", "c"]), 1e-3, 1e-7)


def test_collect_cases_filters_by_tested_op():
    cases = collect_cases(["Softmax"])
    assert cases and {c.op for c in cases} == {"Softmax"}
    assert any(c.name.endswith("_expanded") for c in cases)  # the function body counts too


@pytest.mark.conformance
@pytest.mark.parametrize(("backend", "floor"), [("reference", REFERENCE_FLOOR), ("x86", X86_FLOOR)])
def test_conformance_floor(backend, floor):
    report = run_conformance(backend, progress=False)
    assert report.passed >= floor, report.format()


def test_fallbacks_inside_subgraphs_count():
    from types import SimpleNamespace as NS

    from workbench.engine.conformance import _uses_fallback

    def step(fallback, subplans=None):
        def run():
            return ()

        if subplans is not None:
            run.subplans = subplans

        def wrapped():  # as memory_guard.guard_kernel wraps a kernel
            return run()

        wrapped.__wrapped__ = run
        return NS(kernel=NS(fallback=fallback), run=wrapped)

    inner_fallback = NS(steps=[step(True)])
    assert not _uses_fallback(NS(steps=[step(False), step(False, [NS(steps=[step(False)])])]))
    assert _uses_fallback(NS(steps=[step(False), step(False, [inner_fallback])]))
