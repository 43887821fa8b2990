"""Where workbench keeps what it computes once per machine (numba's compiled kernels...)."""

from __future__ import annotations

import contextlib
import hashlib
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


_DIGEST: list[str] = []


def source_digest() -> str:
    """A hash of every Python source file of the package (paths and contents), computed
    once per process (~200 files, a few ms).

    Why: numba's disk cache checks only the file of the function it loads, not the files
    of the functions that function calls and inlines. `_native._depthwise` inlines
    `depthwise_nhwc._depthwise_hwc`: after an edit of the latter (or an upgrade that
    changes only it) every cache that had compiled `_native` kept running the old kernel,
    and tests passed a deliberately broken one until run in a fresh cache. Keying the cache
    folder by this digest makes any change of the sources start a fresh one."""
    if not _DIGEST:
        _DIGEST.append(tree_digest(Path(__file__).resolve().parent))
    return _DIGEST[0]


def tree_digest(root: Path) -> str:
    """16 hex digits of a hash of the *.py files under `root`: their paths and contents."""
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def configure_numba_cache() -> None:
    """numba writes its on-disk cache beside the source by default, which fails for a
    read-only install; point it at our cache folder, one per version of the sources
    (`source_digest`), unless the user chose one."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        with contextlib.suppress(OSError):  # no writable home: numba's default applies
            os.environ["NUMBA_CACHE_DIR"] = str(cache_dir("numba", source_digest()))
