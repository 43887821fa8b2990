"""plotly figure builders: flat functions that read a Model, a Profile or a Comparison.

    wb.viz.graph(model_or_profile_or_comparison, color_by="op")
    wb.viz.fusion_diff(wb.optimize(model))
    wb.viz.kernel_time(profiles), wb.viz.timeline(profiles), wb.viz.memory(profile),
    wb.viz.roofline(profile), wb.viz.error_by_node(comparison),
    wb.viz.error_histogram(comparison, value), wb.viz.time_ratio(profile_a, profile_b)

Each returns a `plotly.graph_objects.Figure`; nothing here runs a kernel. Modules are
imported on first use, so `import workbench` does not pay for plotly.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it. A module never shares a public name: importing
# `viz.graph` as a module would shadow the function `viz.graph` on the package.
_EXPORTS = {
    "graph": "graph_view",
    "graph_node_info": "graph_view",
    "fusion_diff": "fusion_view",
    "fusion_partners": "fusion_view",
    "kernel_time": "timing",
    "timeline": "timing",
    "time_ratio": "timing",
    "memory": "memory_view",
    "roofline": "roofline_view",
    "error_by_node": "accuracy",
    "error_histogram": "accuracy",
    "report": "report_html",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = sorted(_EXPORTS)
