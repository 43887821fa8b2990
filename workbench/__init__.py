"""workbench: a Jupyter-centric workbench for inference optimization.

import workbench as wb
model = wb.load("model.onnx")          # or bytes, or an onnx.ModelProto
sess = wb.Session(model, backend="x86")
outputs = sess.run(feeds)
wb.backends()                          # what can run here, and why not
"""

from __future__ import annotations

import sys
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


def _register_notebook_reprs() -> None:
    """Model, Profile and Comparison show a short HTML summary in notebooks.

    Registered with IPython's HTML formatter by type name, not as `_repr_html_` methods:
    the engine and the profiler never import the widgets (data flows one way), and the
    formatter imports them only when such an object is first displayed."""
    ipython_mod = sys.modules.get("IPython")
    ip = ipython_mod.get_ipython() if ipython_mod is not None else None
    if ip is None:
        return
    html = ip.display_formatter.formatters["text/html"]
    for module, cls, func in (
        ("workbench.engine.model", "Model", "model_html"),
        ("workbench.profiler.profile", "Profile", "profile_html"),
        ("workbench.profiler.compare", "Comparison", "comparison_html"),
    ):
        html.for_type_by_name(module, cls, _lazy_repr(func))


def _lazy_repr(func: str) -> Any:
    def render(obj: Any) -> str:
        from .widgets import reprs

        return getattr(reprs, func)(obj)

    return render


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext workbench`: registers the `%workbench` magic (widgets/magics.py)."""
    from .widgets.magics import load_ipython_extension as load

    load(ipython)
    _register_notebook_reprs()


def __getattr__(name: str):
    # The zoo builds big models with onnx.helper, viz and widgets import plotly and
    # ipywidgets: each is imported only when asked for.
    if name == "connect":  # wb.connect("tcp://HOST:8786"): a remote ARM board via Dask
        from .remote import connect

        return connect
    if name in ("zoo", "viz", "widgets"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


_register_notebook_reprs()

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
    "connect",
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
