"""The teaching notebooks' shape: listed, titled, public API only, small in git.

Executing them is nbval's job (`pytest --nbval-lax notebooks`); this checks, without a
kernel, what makes them lessons rather than scripts: each one opens with a title, calls the
workbench through its public API and defines no logic of its own, stores outputs only for
the cells nbval checks (as text), and is listed in the README.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
LESSONS = [
    "01_explore_a_model",
    "02_fusion_passes",
    "03_backend_accuracy",
    "04_profiling_and_roofline",
    "05_memory_planning",
    "06_backends",
]
# what a notebook may import: the workbench, and the libraries its lessons build inputs with
ALLOWED_IMPORTS = {"workbench", "numpy", "pandas", "onnx"}
CHECK = "# NBVAL_CHECK_OUTPUT"
MAX_BYTES = 40_000  # a notebook with a plotly figure stored in it is ten times this


def cells(name: str) -> list[dict]:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def python_of(cell: dict) -> str:
    # IPython magics (%load_ext, %workbench) are not Python: blank them out for ast
    return "\n".join("" if ln.lstrip().startswith("%") else ln for ln in source(cell).splitlines())


def test_every_notebook_is_a_lesson():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == LESSONS


@pytest.mark.parametrize("name", LESSONS)
def test_opens_with_a_title(name):
    first = cells(name)[0]
    assert first["cell_type"] == "markdown"
    assert re.match(r"# \d\d · \S", source(first)), source(first)[:80]


@pytest.mark.parametrize("name", LESSONS)
def test_public_api_only_and_no_logic_of_its_own(name):
    for cell in cells(name):
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse(python_of(cell))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                pytest.fail(f"{name}: a notebook defines no logic of its own:\n{source(cell)}")
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                assert mod.split(".")[0] in ALLOWED_IMPORTS, f"{name} imports {mod}"
                assert not any(part.startswith("_") for part in mod.split(".")), (
                    f"{name} imports a private module {mod}"
                )


@pytest.mark.parametrize("name", LESSONS)
def test_outputs_only_on_checked_cells_as_text(name):
    checked = 0
    for cell in cells(name):
        if cell["cell_type"] != "code":
            continue
        if source(cell).startswith(CHECK):
            checked += 1
            for out in cell["outputs"]:
                assert out["output_type"] == "stream", f"{name}: checked outputs are text"
        else:
            assert not cell["outputs"], f"{name}: stored output of an unchecked cell"
    assert checked >= 2, f"{name}: a lesson checks at least two of its results"
    assert (NOTEBOOKS / f"{name}.ipynb").stat().st_size < MAX_BYTES


def test_sanitize_file_parses():
    nbval_plugin = pytest.importorskip("nbval.plugin")
    patterns = nbval_plugin.get_sanitize_patterns((NOTEBOOKS / "sanitize.cfg").read_text())
    assert patterns
    for regex, _ in patterns:
        re.compile(regex)


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in LESSONS if f"{n}.ipynb" not in readme]
    assert not missing, f"README.md does not list: {missing}"
