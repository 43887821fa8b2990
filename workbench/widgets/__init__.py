"""Notebook dashboards over models, profiles and comparisons (ipywidgets, plotly FigureWidget).

    ex = wb.widgets.Explorer("tiny_bert")     # run, profile, compare; click nodes on the graph
    %load_ext workbench                       # then: %workbench tiny_bert --backends x86
    wb.widgets.model_html(model)              # the short HTML summaries behind rich reprs

Modules are imported on first use: `import workbench.widgets` does not pay for ipywidgets.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "Explorer": "explorer",
    "DetailPanel": "detail",
    "node_detail": "detail",
    "model_html": "reprs",
    "profile_html": "reprs",
    "comparison_html": "reprs",
    "load_ipython_extension": "magics",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.widgets' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = sorted(_EXPORTS)
