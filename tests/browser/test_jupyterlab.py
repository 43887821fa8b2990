"""JupyterLab end to end: `%workbench` opens the Explorer, its figures render in Chromium,
and a click on a graph node fills the detail panel.

A real server (`python -m jupyter lab` on 127.0.0.1, a random token, no port retries) serves
a notebook written here; Chromium opens it, runs every cell through the app's command
registry (`--expose-app-in-browser`), waits for plotly's DOM, clicks a point of the graph's
"nodes" trace with the mouse and waits for the panel to name that node. The screenshot
docs/images/explorer.png in the README comes from this test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MODEL = "tiny_resnet"
CELLS = [
    "%load_ext workbench\nimport time\nt0 = time.perf_counter()",
    f"ex = %workbench {MODEL} --backends x86 --repeat 3\nt1 = time.perf_counter()",
    "ex.profile()\nt2 = time.perf_counter()\nex.compare()\nt3 = time.perf_counter()\n"
    "assert ex.error == '', ex.error\n"
    "print(f'kernel s: explorer {t1 - t0:.1f}, profile {t2 - t1:.1f}, compare {t3 - t2:.1f}')",
]
# user settings of the throwaway JupyterLab: no news or update toasts over the screenshot,
# and every cell attached to the DOM (windowing would detach the ones out of view)
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
START_TIMEOUT_S = 90
RUN_TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, str(path))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A JupyterLab server on a free port of 127.0.0.1, its config and data in tmp_path."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (the notebook's kernel)")
    root = tmp_path / "notebooks"
    root.mkdir()
    _write_notebook(root / "explorer.ipynb")
    config = tmp_path / "jupyter-config"
    for name, values in SETTINGS.items():
        f = config / "lab" / "user-settings" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        WORKBENCH_RUNS=str(tmp_path / "runs"),
        # the kernelspec says "python": make it this interpreter
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    token, port = secrets.token_hex(16), _free_port()
    log = (tmp_path / "jupyterlab.log").open("w")
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--expose-app-in-browser",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.terminals_enabled=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"jupyter lab exited with {proc.returncode}:\n"
                    + (tmp_path / "jupyterlab.log").read_text()[-3000:]
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter lab did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield {"base": base, "token": token, "log": tmp_path / "jupyterlab.log", "root": root}
    finally:
        proc.terminate()  # the server stops its kernels on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# JS: point `i` of the graph's node trace, in page pixels; null when it is not drawn.
_POINT_JS = """
([i]) => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => g.layout && g.layout.meta && g.layout.meta.kind === 'graph');
  if (!gd) return null;
  const meta = gd.layout.meta;
  const t = meta.node_trace ?? gd.data.findIndex(d => d.name === 'nodes');
  const tr = gd.data[t], fl = gd._fullLayout;
  const xa = fl['xaxis' + (tr.xaxis || 'x').slice(1)];
  const ya = fl['yaxis' + (tr.yaxis || 'y').slice(1)];
  const n = tr.x.length;
  if (i === null) return n;
  const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
  const px = box.left + xa.l2p(tr.x[i]), py = box.top + ya.l2p(tr.y[i]);
  const inside = px > box.left && px < box.right && py > box.top && py < box.bottom;
  return {x: px, y: py, inside, name: String(tr.customdata[i][0])};
}
"""


# a plotly chart other than the graph has drawn its SVG
_CHART_DRAWN_JS = """
() => [...document.querySelectorAll('.js-plotly-plot')]
  .some(g => g.querySelector('.main-svg') && g.data && g.data.length
             && !(g.layout && g.layout.meta && g.layout.meta.kind === 'graph'))
"""

_KERNEL_IDLE_JS = """
() => { const w = jupyterapp.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session
                  && w.sessionContext.session.kernel;
        return k && k.status === 'idle'; }
"""

_SCROLL_TO_EXPLORER_JS = """
() => [...document.querySelectorAll('.js-plotly-plot')]
  .find(g => g.layout && g.layout.meta && g.layout.meta.kind === 'graph')
  .closest('.jp-OutputArea-output').scrollIntoView({block: 'start'})
"""

_SCROLL_TO_GRAPH_JS = """
() => [...document.querySelectorAll('.js-plotly-plot')]
  .find(g => g.layout && g.layout.meta && g.layout.meta.kind === 'graph')
  .scrollIntoView({block: 'center'})
"""


def _outputs_with_errors(page: Any) -> list[str]:
    """Error outputs and tracebacks anywhere in the notebook's model."""
    cells = page.evaluate("() => jupyterapp.shell.currentWidget.context.model.toJSON().cells")
    bad = []
    for c in cells:
        for o in c.get("outputs", []):
            text = json.dumps(o)
            if o.get("output_type") == "error" or "Traceback" in text:
                bad.append(text[:2000])
    return bad


def _stdout(page: Any) -> str:
    cells = page.evaluate("() => jupyterapp.shell.currentWidget.context.model.toJSON().cells")
    return "".join(
        "".join(o.get("text", ""))
        for c in cells
        for o in c.get("outputs", [])
        if o.get("name") == "stdout"
    )


def _wait_until_run(page: Any, n_cells: int) -> None:
    """Every code cell has an execution count and none is queued or running."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    js = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                  .map(e => e.textContent.trim())"""
    while True:
        prompts = page.evaluate(js)  # "[3]:" once run, "[*]:" while queued or running
        if len(prompts) >= n_cells and all(p[1:-2].strip().isdigit() for p in prompts):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cells did not finish in {RUN_TIMEOUT_S} s: {prompts}")
        page.wait_for_timeout(500)


def test_explorer_in_jupyterlab(page: Any, lab: dict[str, Any], tmp_path: Path) -> None:
    p = page.page
    t0 = time.monotonic()

    def stage(what: str) -> None:  # shown with the failure: where the time went
        print(f"[{time.monotonic() - t0:6.1f}s] {what}")

    p.goto(f"{lab['base']}/lab/tree/explorer.ipynb?token={lab['token']}")
    p.wait_for_function("() => window.jupyterapp && jupyterapp.shell.currentWidget", timeout=60000)
    p.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=60000)
    # wait for the kernel before running: a run queued on a starting kernel can be lost
    p.wait_for_function(_KERNEL_IDLE_JS, timeout=60000)
    stage("kernel idle")
    p.evaluate("() => jupyterapp.shell.collapseLeft()")
    p.evaluate("() => jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait_until_run(p, len(CELLS))
    stage("all cells ran")
    assert _outputs_with_errors(p) == []

    print(_stdout(p))
    # the graph (drawn again after the profile) and at least one chart (Timing tab)
    p.wait_for_function(f"() => ({_POINT_JS})([null]) > 0", timeout=60000)
    p.wait_for_function(_CHART_DRAWN_JS, timeout=60000)
    n = p.evaluate(_POINT_JS, [None])
    assert n and n > 3, f"graph's node trace not found or nearly empty: {n}"

    panel = p.locator(".widget-html-content", has_text="click a node in the graph")
    assert panel.count() == 1, "the detail panel's initial text is missing"
    panel = panel.element_handle()
    p.evaluate(_SCROLL_TO_GRAPH_JS)
    # a node in the plot area and on screen: try from the middle of the graph outwards
    target = None
    for i in sorted(range(n), key=lambda i: abs(i - n // 2)):
        pt = p.evaluate(_POINT_JS, [i])
        if pt and pt["inside"] and 0 < pt["y"] < 880 and 0 < pt["x"] < 1380:
            target = pt
            break
    assert target is not None, "no graph node is visible on screen"
    p.mouse.move(target["x"], target["y"])
    p.wait_for_timeout(200)  # plotly picks the clicked point from its hover state
    p.mouse.click(target["x"], target["y"])
    # the kernel answers the click: the panel's text changes to that node
    p.wait_for_function(
        "([el, name]) => el.textContent.includes(name)", arg=[panel, target["name"]], timeout=60000
    )
    assert "click a node in the graph" not in panel.text_content()
    stage(f"the detail panel shows {target['name']}")
    assert _outputs_with_errors(p) == []
    p.wait_for_function(_KERNEL_IDLE_JS, timeout=60000)
    # the README's picture: the dashboard from its header, no hover label over it
    p.mouse.move(5, 450)
    p.evaluate(_SCROLL_TO_EXPLORER_JS)
    p.wait_for_timeout(800)  # let the highlight and the histogram draw
    shot = page.screenshot("explorer.png", tmp_path)
    assert shot.stat().st_size < 400_000


REPO_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# plotly figures that drew their SVG, and how many
_FIGURES_DRAWN_JS = """
() => [...document.querySelectorAll('.js-plotly-plot')]
  .filter(g => g.querySelector('.main-svg') && g.data && g.data.length).length
"""


def test_fusion_notebook_renders_its_figures(page: Any, lab: dict[str, Any]) -> None:
    """Lesson 02 of the course, run in JupyterLab: every cell runs and its figures draw."""
    import nbformat

    src = REPO_NOTEBOOKS / "02_fusion_passes.ipynb"
    nb = nbformat.read(str(src), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # the figures it shows (each such cell shows one): the fusion view at least
    n_figures = sum("wb.viz." in c.source for c in code)
    assert n_figures >= 1, "lesson 02 should show the fusion view"
    shutil.copyfile(src, lab["root"] / src.name)
    p = page.page
    p.goto(f"{lab['base']}/lab/tree/{src.name}?token={lab['token']}")
    p.wait_for_function("() => window.jupyterapp && jupyterapp.shell.currentWidget", timeout=60000)
    p.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=60000)
    p.wait_for_function(_KERNEL_IDLE_JS, timeout=60000)
    p.evaluate("() => jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait_until_run(p, len(code))
    assert _outputs_with_errors(p) == []
    # windowing is off (the lab fixture's settings), so every output is in the DOM
    p.wait_for_function(f"() => ({_FIGURES_DRAWN_JS})() >= {n_figures}", timeout=60000)
