"""Shared machinery of the figure builders: colours, number formats, hover text.

Every figure in `workbench.viz` takes its colours from here, so an op type or a backend
has the same colour in the graph, the timing charts and the report.
"""

from __future__ import annotations

import hashlib

import plotly.colors as pc

# One colour per backend, fixed so a backend keeps its colour across figures.
BACKEND_COLORS: dict[str, str] = {
    "reference": "#7f7f7f",
    "x86": "#1f77b4",
    "cuda": "#2ca02c",
    "arm": "#d62728",
}

_OP_PALETTE = pc.qualitative.Dark24 + pc.qualitative.Light24

# Fixed colours for the ops that dominate real models, all distinct (a hash into the
# palette collides: LayerNormalization and Unsqueeze once got the same cyan). Fused ops
# take their unfused cousin's hue family so a fused graph still reads at a glance.
_FIXED_OPS: dict[str, str] = {
    "Conv": "#1f77b4",
    "FusedConv": "#0b4f8a",
    "MatMul": "#ff7f0e",
    "Gemm": "#ffbb78",
    "FusedMatMul": "#c45a00",
    "FusedGemm": "#e6a04a",
    "Attention": "#9467bd",
    "Softmax": "#c5b0d5",
    "Add": "#2ca02c",
    "Mul": "#98df8a",
    "Relu": "#d62728",
    "Clip": "#ff9896",
    "Gelu": "#e377c2",
    "Erf": "#f7b6d2",
    "LayerNormalization": "#17becf",
    "LayerNorm": "#0e8c99",
    "BatchNormalization": "#9edae5",
    "Reshape": "#8c564b",
    "Transpose": "#c49c94",
    "Unsqueeze": "#bcbd22",
    "Gather": "#dbdb8d",
    "Concat": "#7f7f7f",
    "MaxPool": "#393b79",
    "GlobalAveragePool": "#637939",
    "FusedElementwise": "#843c39",
}


def backend_color(backend: str) -> str:
    """The backend's colour (a stable pick from the palette for a backend we do not know)."""
    return BACKEND_COLORS.get(backend) or _pick(backend)


def op_color(op: str) -> str:
    """A stable colour per op type: the same op is the same colour in every figure and run."""
    return _FIXED_OPS.get(op) or _pick(op)


def _pick(key: str) -> str:
    # A hash, not the order of appearance, so colours do not shift between models.
    h = int(hashlib.md5(key.encode()).hexdigest()[:8], 16)
    return _OP_PALETTE[h % len(_OP_PALETTE)]


def fmt_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_ms(ms: float | None) -> str:
    """Milliseconds with a precision that suits the size: '0.012 ms', '3.41 ms', '120 ms'."""
    if ms is None or ms != ms:
        return "?"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms:.3f} ms"
