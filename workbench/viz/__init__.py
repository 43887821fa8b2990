"""plotly figure builders: flat functions that read a Profile or a Graph."""
