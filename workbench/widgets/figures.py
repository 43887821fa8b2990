"""Plotly figures inside ipywidgets: static ones as light outputs, interactive ones reused.

A `go.FigureWidget` is an anywidget whose front-end code (plotly.js, about 5 MB) travels
as a synced trait of every instance, so each one costs megabytes over the kernel's comm
and a module evaluation in the browser. The dashboard therefore keeps the FigureWidgets
it needs clicks from (the graph, the fusion view) and refills them in place
(`refill`), and shows every other chart as an `Output` holding the plotly mime bundle,
which JupyterLab's plotly renderer draws like any `fig.show()`.
"""

from __future__ import annotations

import json

import ipywidgets as widgets
import plotly.graph_objects as go

MIME = "application/vnd.plotly.v1+json"
CONFIG = {"displaylogo": False, "responsive": True}


def _title(fig: go.Figure) -> str:
    title = fig.layout.title.text if fig.layout.title else None
    return title or "plotly figure"


def static(fig: go.Figure) -> widgets.Output:
    """`fig` as an Output widget holding its plotly mime bundle (no widget code shipped)."""
    data = json.loads(fig.to_json())  # plotly's own encoder: numpy arrays as typed arrays
    data["config"] = dict(CONFIG)
    out = widgets.Output()
    out.outputs = (
        {
            "output_type": "display_data",
            "data": {MIME: data, "text/plain": f"<{_title(fig)}>"},
            "metadata": {},
        },
    )
    out.figure = fig  # the figure itself, for code and tests that read it
    return out


def refill(widget: go.FigureWidget | None, fig: go.Figure) -> go.FigureWidget:
    """`fig` shown in `widget` (its traces and layout replaced), or in a new FigureWidget
    when there is none yet. Click callbacks belong to traces: register them again."""
    if widget is None:
        return go.FigureWidget(fig)
    widget.data = ()  # plotly allows removing traces by assignment, adding by add_traces
    widget.layout = fig.layout
    widget.add_traces(list(fig.data))
    return widget


__all__ = ["MIME", "refill", "static"]
