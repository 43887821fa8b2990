"""workbench: a Jupyter-centric workbench for inference optimization.

import workbench as wb
model = wb.load("model.onnx")          # or bytes, or an onnx.ModelProto
sess = wb.Session(model, backend="x86")
outputs = sess.run(feeds)
wb.backends()                          # what can run here, and why not
"""

from __future__ import annotations

from typing import Any

from ._cache import configure_numba_cache

configure_numba_cache()  # before anything imports numba

from .engine import (  # noqa: E402
    Graph,
    Model,
    Node,
    Session,
    Value,
    get_backend,
    load,
    run_model,
    save,
    to_onnx,
)
from .engine.backends import backends  # noqa: E402
from .engine.passes import optimize  # noqa: E402
from .errors import (  # noqa: E402
    AllocationError,
    BackendUnavailableError,
    ExternalDataError,
    FeedError,
    KernelError,
    ModelLoadError,
    UnsupportedOpError,
    WorkbenchError,
)
from .profiler import Comparison, Profile, compare, machine_info, profile, runs  # noqa: E402

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext workbench`: registers the `%workbench` magic (widgets/magics.py)."""
    from .widgets.magics import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str):
    # The zoo builds big models with onnx.helper, viz and widgets import plotly and
    # ipywidgets: each is imported only when asked for.
    if name in ("zoo", "viz", "widgets"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__all__ = [
    "AllocationError",
    "BackendUnavailableError",
    "Comparison",
    "ExternalDataError",
    "FeedError",
    "Graph",
    "KernelError",
    "Model",
    "ModelLoadError",
    "Node",
    "Profile",
    "Session",
    "UnsupportedOpError",
    "Value",
    "WorkbenchError",
    "backends",
    "compare",
    "get_backend",
    "load",
    "machine_info",
    "optimize",
    "profile",
    "run_model",
    "runs",
    "save",
    "to_onnx",
]
