"""Where workbench keeps what it computes once per machine (numba's compiled kernels...)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$WORKBENCH_CACHE` or the XDG cache folder, /workbench, then `parts`; created."""
    root = os.environ.get("WORKBENCH_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(xdg) / "workbench"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure_numba_cache() -> None:
    """numba writes its on-disk cache beside the source by default, which fails for a
    read-only install; point it at our cache folder unless the user chose one."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        with contextlib.suppress(OSError):  # no writable home: numba's default applies
            os.environ["NUMBA_CACHE_DIR"] = str(cache_dir("numba"))
