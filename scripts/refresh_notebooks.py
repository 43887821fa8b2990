"""Refresh the stored outputs of the teaching notebooks after an engine change moved a
checked number: execute each notebook, then keep only the outputs of the cells marked
`# NBVAL_CHECK_OUTPUT` (as plain text) and clear the rest, so no plotly blob lands in git.

    python scripts/refresh_notebooks.py notebooks/05_memory_planning.ipynb   # or no args: all

Read the diff before committing: a changed number is a change in behaviour.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECK = "# NBVAL_CHECK_OUTPUT"


def refresh(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        n += 1
        cell.metadata, cell.execution_count = {}, None
        if not cell.source.startswith(CHECK):
            cell.outputs = []
            continue
        bad = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stdout")]
        if bad:
            raise SystemExit(f"{path.name}: a checked cell must only print: {cell.source[:60]!r}")
        text = "".join(o.text for o in cell.outputs)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)] if text else []
        cell.execution_count = n  # nbval refuses outputs of a cell that never ran
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i:02d}"  # stable ids: no churn in git
    nbformat.write(nb, path)
    print(f"{path.name}: refreshed in {time.perf_counter() - t0:.0f} s")


def main(argv: list[str]) -> None:
    for p in [Path(a) for a in argv] or sorted(NOTEBOOKS.glob("0*.ipynb")):
        refresh(p)


if __name__ == "__main__":
    main(sys.argv[1:])
