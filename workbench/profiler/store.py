"""The run store: every profile and comparison lands in a folder of its own as soon as it is done.

    <root>/<UTC timestamp>-<kind>-<model>-<short id>/
        meta.json          what ran, where, with what (model hash, backend, machine, versions)
        <table>.csv        one per DataFrame; column dtypes are recorded in meta.json
        <array>.npy        raw arrays (timestamps, tensors)

`root` is `$WORKBENCH_RUNS`, else `workbench._cache.cache_dir("runs")`. A run is written into
a hidden temporary folder and renamed into place, so a crash or a failed write never leaves
half a run: a folder either holds a whole run or does not exist. `runs()` lists what is
there, `load_run(path)` brings one back, so a restarted notebook loses nothing measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._cache import cache_dir
from ..errors import WorkbenchError

if TYPE_CHECKING:
    import pandas as pd  # imported where used: `import workbench` stays free of pandas

_PACKAGES = ("workbench", "numpy", "onnx", "numba", "pandas", "onnxruntime")


def runs_root() -> Path:
    """Where runs are stored: `$WORKBENCH_RUNS` or the workbench cache's `runs/` (created)."""
    root = os.environ.get("WORKBENCH_RUNS")
    if root:
        path = Path(root).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return cache_dir("runs")


def package_versions() -> dict[str, str | None]:
    """Versions of workbench, numpy, onnx, numba, pandas, onnxruntime (None: absent), python."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = sys.version.split()[0]
    return out


def model_hash(model: Any) -> str:
    """A sha256 that identifies a model: of its file when it was read from bytes or a file,
    else of its graph (node ops, names, attributes, wiring) and its weights' bytes."""
    digest = getattr(model, "sha256", "")
    if digest:
        return digest
    graph = getattr(model, "graph", model)
    h = hashlib.sha256()
    for v in graph.initializers.values():
        h.update(f"{v.name}|{v.const.dtype}|{v.const.shape}".encode())
        h.update(np.ascontiguousarray(v.const).view(np.uint8).reshape(-1).data)
    for n in graph.walk():
        ins = ",".join("" if v is None else v.name for v in n.inputs)
        outs = ",".join(v.name for v in n.outputs)
        attrs = sorted((k, repr(a)) for k, a in n.attrs.items() if not hasattr(a, "nodes"))
        h.update(f"{n.domain}:{n.op_type}|{n.name}|{ins}|{outs}|{attrs}".encode())
    return h.hexdigest()


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_.")[:limit] or "model"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None  # JSON has no NaN or infinity
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)  # paths, timestamps, enums


# Column dtypes a CSV keeps faithfully once told what they were.
_KINDS = {"i": "int64", "u": "int64", "f": "float64", "b": "bool"}


def _table_schema(df: pd.DataFrame) -> dict[str, Any]:
    columns = {}
    for col, dt in df.dtypes.items():
        columns[str(col)] = _KINDS.get(dt.kind, "str")
    return {"columns": columns}


def _write_table(df: pd.DataFrame, folder: Path, name: str) -> dict[str, Any]:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise WorkbenchError(f"table {name!r} is a {type(df).__name__}, not a pandas DataFrame")
    index: list[str] = []
    if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None:
        index = [str(n) if n is not None else f"level_{i}" for i, n in enumerate(df.index.names)]
        df = df.reset_index(names=index)
    schema = _table_schema(df)
    schema["index"] = index
    schema["file"] = f"{name}.csv"
    df.to_csv(folder / schema["file"], index=False)
    return schema


def _read_table(folder: Path, schema: dict[str, Any]) -> pd.DataFrame:
    import pandas as pd

    # pandas 3 parses floats exactly by default (and deprecates asking); older ones must ask
    exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    columns: dict[str, str] = schema.get("columns", {})
    floats = [c for c, k in columns.items() if k == "float64"]
    dtypes = {c: (str if k == "str" else k) for c, k in columns.items() if k != "float64"}
    df = pd.read_csv(
        folder / schema["file"],
        dtype=dtypes,
        keep_default_na=False,  # an empty string stays one ...
        na_values={c: ["", "nan", "NaN"] for c in floats},  # ... a missing float is NaN
        **exact,
    )
    for c in floats:
        df[c] = df[c].astype("float64")
    if schema.get("index"):
        df = df.set_index(schema["index"])
        if df.index.names == [f"level_{i}" for i in range(df.index.nlevels)]:
            df.index.names = [None] * df.index.nlevels
    return df


def save_run(
    kind: str,
    model_name: str,
    meta: dict,
    tables: dict[str, pd.DataFrame],
    arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write one run into a new folder of the store and return the folder.

    `meta` is merged over what the store adds: kind, model, created, id, machine, package
    versions (a `model_hash` and `backend` given in `meta` are kept as given). Everything
    is written into a temporary folder first and renamed at the end: on any failure the
    temporary folder is removed and the error re-raised, so no partial run is left behind.
    """
    from .machine import machine_info

    root = runs_root()
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.3f}"[1:] + "Z"
    run_id = uuid.uuid4().hex[:8]
    name = f"{stamp}-{_slug(kind, 20)}-{_slug(model_name)}-{run_id}"
    tmp = root / f".tmp-{name}"
    full: dict[str, Any] = {
        "kind": kind,
        "model": model_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f"{now % 1:.6f}"[1:]
        + "Z",
        "id": run_id,
        "backend": None,
        "model_hash": None,
        "versions": package_versions(),
    }
    full.update(meta)
    if not full.get("machine"):
        full["machine"] = machine_info(measure=False)  # cached numbers only: never slow here
    used: set[str] = set()

    def file_stem(key: str) -> str:  # names that slug alike still get files of their own
        stem, n = _slug(key), 1
        while stem.lower() in used:
            stem, n = f"{_slug(key)}_{n}", n + 1
        used.add(stem.lower())
        return stem

    try:
        tmp.mkdir(parents=True)
        full["tables"] = {t: _write_table(df, tmp, file_stem(t)) for t, df in tables.items()}
        full["arrays"] = {}
        for a, arr in (arrays or {}).items():
            file = f"{file_stem(a)}.npy"
            np.save(tmp / file, np.asarray(arr), allow_pickle=False)
            full["arrays"][a] = file
        (tmp / "meta.json").write_text(json.dumps(_jsonable(full), indent=1))
        final = root / name
        os.rename(tmp, final)  # atomic on one filesystem: the run appears whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def resolve_run(path: str | os.PathLike) -> Path:
    """A run folder from a path, or a folder name (or its unique id suffix) in the store."""
    p = Path(path).expanduser()
    if (p / "meta.json").is_file():
        return p
    root = runs_root()
    if (root / str(path) / "meta.json").is_file():
        return root / str(path)
    found = [
        d for d in root.iterdir() if d.name.endswith(f"-{path}") and not d.name.startswith(".")
    ]
    if len(found) == 1:
        return found[0]
    raise WorkbenchError(f"no run at {str(path)!r} (runs are stored under {root})")


def load_run(
    path: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """(meta, tables, arrays) of a stored run."""
    folder = resolve_run(path)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"run {folder}: unreadable meta.json: {e}") from None
    tables = {t: _read_table(folder, schema) for t, schema in meta.get("tables", {}).items()}
    arrays = {
        a: np.load(folder / file, allow_pickle=False) for a, file in meta.get("arrays", {}).items()
    }
    meta["path"] = str(folder)
    return meta, tables, arrays


def runs(kind: str | None = None, model: str | None = None) -> pd.DataFrame:
    """Every stored run, oldest first: path, kind, model, backend, created, and the numbers of
    its `summary` (latency, kernels, GFLOPs ...), one column each."""
    import pandas as pd

    rows = []
    root = runs_root()
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not (d / "meta.json").is_file():
            continue
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads((d / "meta.json").read_text())
            if (kind and meta.get("kind") != kind) or (model and meta.get("model") != model):
                continue
            row = {
                "path": str(d),
                "kind": meta.get("kind"),
                "model": meta.get("model"),
                "backend": meta.get("backend"),
                "created": pd.Timestamp(meta.get("created")),
            }
            summary = meta.get("summary") or {}
            row.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            rows.append(row)
    columns = ["path", "kind", "model", "backend", "created"]
    df = pd.DataFrame(rows, columns=columns if not rows else None)
    return df.sort_values("created", ignore_index=True) if rows else df


__all__ = [
    "load_run",
    "model_hash",
    "package_versions",
    "resolve_run",
    "runs",
    "runs_root",
    "save_run",
]
