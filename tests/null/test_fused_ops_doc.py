"""docs/fused_ops.md is generated from the `define_op` declarations and must stay current."""

from __future__ import annotations

from pathlib import Path

from workbench.engine.passes import all_passes
from workbench.engine.passes.fused_ops import FUSED_OPS, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "fused_ops.md"


def test_fused_ops_doc_is_current():
    all_passes()  # importing the rule modules declares their ops
    assert FUSED_OPS, "no fused op is declared"
    assert DOC.read_text() == render_markdown(), (
        "docs/fused_ops.md is stale: regenerate it with\n"
        'python -c "from workbench.engine.passes import all_passes; all_passes(); '
        "from workbench.engine.passes.fused_ops import render_markdown; "
        "open('docs/fused_ops.md','w').write(render_markdown())\""
    )
