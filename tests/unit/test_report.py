"""The HTML report: one self-contained file, every section, error boxes for what failed.

The slow half (optimize, profile, compare) runs once per module on tiny_resnet with two
backends; each test renders from those results.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import workbench as wb
from workbench.viz import report_html

SECTION_IDS = ("summary", "graph", "fusion", "timing", "memory", "roofline", "accuracy")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> report_html.ReportData:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_RUNS", str(tmp_path_factory.mktemp("runs")))
        return report_html.collect(
            "tiny_resnet", backends=["x86", "reference"], repeat=2, progress=False
        )


def _sections(text: str) -> dict[str, str]:
    """section id -> its HTML."""
    parts = re.split(r'<section id="([^"]+)">', text)
    return {parts[i]: parts[i + 1].split("</section>")[0] for i in range(1, len(parts), 2)}


def test_collect_keeps_every_result(data: report_html.ReportData) -> None:
    assert data.errors == {}
    assert set(data.profiles) == {"x86", "reference"}
    for p in data.profiles.values():
        assert p.path is not None and p.path.exists()  # in the run store before any drawing
    assert data.comparison is not None and data.comparison.path.exists()
    assert data.comparison.backends == ["x86"]  # the reference is not compared with itself
    assert data.optimized is not None


def test_report_is_self_contained_with_every_section(
    data: report_html.ReportData, tmp_path: Path
) -> None:
    from plotly.offline import get_plotlyjs

    path = tmp_path / "report.html"
    failed = report_html.render(data, path, progress=False)
    text = path.read_text(encoding="utf-8")
    assert failed == {}, {k: f"{type(e).__name__}: {e}" for k, e in failed.items()}
    assert not re.search(r"<script[^>]*\bsrc=", text)  # nothing fetched: works offline
    assert text.count(get_plotlyjs()[:2000]) == 1  # plotly.js inlined exactly once
    sections = _sections(text)
    assert list(sections) == list(SECTION_IDS)
    for sid, body in sections.items():
        assert "Plotly.newPlot" in body, f"section {sid} has no figure"
        assert 'class="error"' not in body
    summary = sections["summary"]
    assert "tiny_resnet" in summary and "x86" in summary and "reference" in summary
    assert "fp32" in summary
    assert data.profiles["x86"].machine["cpu"] in summary
    # the fusion figure carries its highlight script
    from workbench.viz.fusion_view import FUSION_HIGHLIGHT_JS

    assert FUSION_HIGHLIGHT_JS.replace("{plot_id}", "fusion-fig0") in sections["fusion"]
    assert 'class="divergence"' in sections["accuracy"]


def test_a_failing_section_still_writes_the_others(
    data: report_html.ReportData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken(_: report_html.ReportData) -> list:
        raise RuntimeError("the timing figure broke")

    sections = [(s, t, broken if s == "timing" else b) for s, t, b in report_html.SECTIONS]
    monkeypatch.setattr(report_html, "SECTIONS", sections)
    path = tmp_path / "report.html"
    failed = report_html.render(data, path, progress=False)
    assert list(failed) == ["timing"]
    body = _sections(path.read_text(encoding="utf-8"))
    assert 'id="timing-error"' in body["timing"]
    assert "the timing figure broke" in body["timing"]
    assert "Traceback" in body["timing"]
    assert "Plotly.newPlot" in body["summary"]  # the others are drawn
    assert "section 'timing' failed" in capsys.readouterr().err


def test_a_failed_step_shows_in_the_sections_that_need_it(
    data: report_html.ReportData, tmp_path: Path
) -> None:
    broken = dataclasses.replace(
        data, comparison=None, errors={"compare": wb.WorkbenchError("no memory left")}
    )
    path = tmp_path / "report.html"
    failed = report_html.render(broken, path, progress=False)
    assert list(failed) == ["accuracy"]
    body = _sections(path.read_text(encoding="utf-8"))
    assert "compare failed: WorkbenchError: no memory left" in body["accuracy"]


def test_default_backends_leave_out_the_reference_and_emulated_ones() -> None:
    names = report_html.default_backends()
    native = [b.name for b in wb.backends() if b.available and b.mode != "emulated"]
    assert names == ([b for b in native if b != "reference"] or ["reference"])


def test_unknown_or_unavailable_backend_is_refused() -> None:
    with pytest.raises(wb.WorkbenchError, match="unknown backend 'nope'"):
        report_html.collect("tiny_resnet", backends="nope", progress=False)
    with pytest.raises(wb.WorkbenchError, match="has no precision 'fp8'"):
        report_html.collect("tiny_resnet", backends="x86", precision="fp8", progress=False)
    unavailable = [b for b in wb.backends() if not b.available]
    if unavailable:
        with pytest.raises(wb.WorkbenchError, match="not available here"):
            report_html.collect("tiny_resnet", backends=[unavailable[0].name], progress=False)


def test_cli_writes_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "r.html"
    rc = main(["report", "tiny_resnet", "--backends", "x86", "-o", str(out), "--repeat", "1"])
    assert rc == 0
    assert set(_sections(out.read_text(encoding="utf-8"))) == set(SECTION_IDS)


def test_an_emulated_backend_is_timed_once_and_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pretend x86 runs emulated: its profile gets one timed run and the summary says so
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(report_html, "_modes", lambda: {"x86": "emulated"})
    data = report_html.collect("tiny_resnet", backends=["x86"], repeat=5, progress=False)
    assert len(data.profiles["x86"].runs) == report_html.EMULATED_REPEAT
    report_html.render(data, tmp_path / "r.html", progress=False)
    summary = _sections((tmp_path / "r.html").read_text(encoding="utf-8"))["summary"]
    assert "EMULATED" in summary
