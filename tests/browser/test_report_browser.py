"""The HTML report in Chromium: every section draws a plotly figure, no console errors, and a
click on a node of the fusion view changes the highlight.

The report is opened from file:// with the network cut off, so a figure that needs a CDN
fails here. docs/images/report.png in the README comes from this test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from workbench.viz import report_html

SECTION_IDS = [sid for sid, _, _ in report_html.SECTIONS]

# JS: what the fusion view looks like now (marker styles, selections, shapes), to compare
# before and after a click
_FUSION_STATE_JS = """
() => {
  const gd = document.querySelector('#fusion .js-plotly-plot');
  return JSON.stringify([gd.data.map(t => [t.marker, t.selectedpoints, t.line, t.opacity]),
                         gd.layout.shapes, gd.layout.annotations]);
}
"""

# JS: pixel positions of the fusion view's node points (traces whose customdata names nodes)
_FUSION_POINTS_JS = """
() => {
  const gd = document.querySelector('#fusion .js-plotly-plot');
  const fl = gd._fullLayout, out = [];
  const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
  gd._fullData.forEach((tr, t) => {
    if (tr.type !== 'scatter' || !tr.customdata || !tr.x) return;
    const xa = fl['xaxis' + (tr.xaxis || 'x').slice(1)];
    const ya = fl['yaxis' + (tr.yaxis || 'y').slice(1)];
    const drag = gd.querySelector('.' + (tr.xaxis || 'x') + (tr.yaxis || 'y') + ' .nsewdrag')
      || gd.querySelector('.nsewdrag');
    const b = drag.getBoundingClientRect();
    for (let i = 0; i < tr.x.length; i++) {
      const cd = tr.customdata[i];
      const name = Array.isArray(cd) ? cd[0] : cd;
      const key = Array.isArray(cd) && cd.length > 1 ? String(cd[1] || '') : '';
      out.push({trace: t, i, name: String(name), key,
                x: b.left + xa.l2p(tr.x[i]), y: b.top + ya.l2p(tr.y[i])});
    }
  });
  return out;
}
"""


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of tiny_resnet on x86 and the reference, built once for this module."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_RUNS", str(out.parent / "runs"))
        data = report_html.collect(
            "tiny_resnet", backends=["x86", "reference"], repeat=3, progress=False
        )
        failed = report_html.render(data, out, progress=False)
    assert failed == {}, {k: f"{type(e).__name__}: {e}" for k, e in failed.items()}
    return out


def test_report_renders_offline(report_file: Path, page: Any, tmp_path: Path) -> None:
    p = page.page
    requests: list[str] = []
    # offline: anything but the file itself is refused (and recorded)

    def offline(route: Any) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            requests.append(route.request.url)
            route.abort()

    p.route("**/*", offline)
    t0 = time.monotonic()
    p.goto(report_file.as_uri())
    for sid in SECTION_IDS:
        p.wait_for_selector(f"#{sid} .js-plotly-plot .main-svg", timeout=30000)
    print(f"every section drawn in {time.monotonic() - t0:.1f}s")
    for sid in SECTION_IDS:
        assert p.locator(f"#{sid} .error").count() == 0, f"section {sid} shows an error box"
        n = p.locator(f"#{sid} .js-plotly-plot").count()
        drawn = p.locator(f"#{sid} .js-plotly-plot .main-svg").count()
        assert n >= 1 and drawn >= n, f"section {sid}: {drawn} drawn of {n} plots"
    assert requests == [], f"the report fetched from the network: {requests}"

    # a click on a node of the fusion view changes the highlight
    p.locator("#fusion .js-plotly-plot").first.scroll_into_view_if_needed()
    before = p.evaluate(_FUSION_STATE_JS)
    points = [
        pt
        for pt in p.evaluate(_FUSION_POINTS_JS)
        if 120 < pt["y"] < 880 and 0 < pt["x"] < 1380 and pt["name"]  # not under the nav
    ]
    assert points, "no node of the fusion view is on screen"
    # the topmost node of a fusion with partners (a fused node and its originals share a key)
    keys = [q["key"] for q in points]
    fused = [q for q in points if q["key"] and keys.count(q["key"]) > 1]
    assert fused, "no fused node and originals on screen"
    pt = min(fused, key=lambda q: q["y"])
    p.mouse.move(pt["x"], pt["y"])
    p.wait_for_timeout(200)
    p.mouse.click(pt["x"], pt["y"])
    p.wait_for_function(f"(before) => ({_FUSION_STATE_JS})() !== before", arg=before, timeout=5000)
    assert page.errors == [], page.errors

    # the README's picture: the fusion view with that highlight
    p.evaluate("() => document.getElementById('fusion').scrollIntoView()")
    p.mouse.move(5, 5)  # away from the plot: no hover label, no mode bar
    shot = page.screenshot("report.png", tmp_path)
    assert shot.stat().st_size < 400_000
