"""ipywidgets/anywidget dashboards over models, profiles and comparisons."""
