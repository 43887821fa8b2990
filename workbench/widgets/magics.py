"""The `%workbench` line magic: open the Explorer on a model from one notebook line.

    %load_ext workbench
    %workbench tiny_bert                                  # a zoo name
    %workbench model.onnx --backends x86,reference --level 1 --precision fp32
    ex = %workbench resnet18 --repeat 3 --dims batch=2    # the Explorer, to drive from code

The magic displays the Explorer and returns it. When it is the last line of a cell, the
returned Explorer is shown as one line of text rather than a second copy of the dashboard.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..errors import WorkbenchError

USAGE = (
    "%workbench PATH_OR_ZOO_NAME [--backends x86,arm] [--level 2] [--precision fp32] "
    "[--repeat 5] [--dims batch=1,sequence=16] [--no-save]"
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise WorkbenchError(f"%workbench: {message}\nusage: {USAGE}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%workbench", add_help=False, usage=USAGE)
    p.add_argument("model", help="an .onnx path or a zoo name")
    p.add_argument("--backends", default=None, help="comma-separated; default: all available")
    p.add_argument("--level", type=int, choices=(0, 1, 2, 3), default=2)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per profile")
    p.add_argument("--dims", default="", help="symbolic dims, e.g. batch=1,sequence=16")
    p.add_argument("--no-save", action="store_true", help="keep results out of the run store")
    return p


def _dims(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise WorkbenchError(f"%workbench: --dims wants name=int items, got {item!r}")
        out[name.strip()] = int(value)
    return out


def parse(line: str) -> dict[str, Any]:
    """The magic's line as keyword arguments of `Explorer` (plus `model`)."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise WorkbenchError(f"%workbench: {e}\nusage: {USAGE}") from None
    if not words:
        raise WorkbenchError(f"%workbench needs a model\nusage: {USAGE}")
    a = _parser().parse_args(words)
    backends = [b.strip() for b in a.backends.split(",") if b.strip()] if a.backends else None
    if a.repeat < 1:
        raise WorkbenchError(f"%workbench: --repeat must be at least 1, got {a.repeat}")
    return {
        "model": a.model,
        "backends": backends,
        "level": a.level,
        "precision": a.precision,
        "repeat": a.repeat,
        "dims": _dims(a.dims),
        "save": not a.no_save,
    }


def workbench_magic(line: str) -> Any:
    """`%workbench PATH_OR_ZOO_NAME [options]`: display an Explorer and return it."""
    from IPython.core.error import UsageError
    from IPython.display import display

    from .explorer import Explorer

    try:
        kw = parse(line)
        ex = Explorer(kw.pop("model"), **kw)
    except WorkbenchError as e:
        # one line, no traceback: the input was wrong, not the code
        raise UsageError(str(e)) from None
    display(ex)
    _show_once_as_text(ex)
    return ex


def _show_once_as_text(ex: Any) -> None:
    """Until this cell ends, a display of `ex` (the cell's result) is one line of text: the
    dashboard is on screen already. Later displays (`ex` in another cell) show it again."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    ex._repr_as_text = True

    def reset(*_: Any) -> None:
        ex._repr_as_text = False
        shell.events.unregister("post_run_cell", reset)

    shell.events.register("post_run_cell", reset)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext workbench` (through `workbench.load_ipython_extension`): registers the
    `%workbench` line magic."""
    ipython.register_magic_function(workbench_magic, magic_kind="line", magic_name="workbench")


__all__ = ["USAGE", "load_ipython_extension", "parse", "workbench_magic"]
