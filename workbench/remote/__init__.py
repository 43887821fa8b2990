"""Running the engine in another process: the aarch64 worker of the `arm` backend.

protocol.py (npy framing), worker.py (the worker's loop), client.py (starting it, deadlines,
crash reports), session.py (`RemoteSession`), setup.py (`workbench arm setup`), dask.py
(`wb.connect` and `workbench worker` for real ARM boards), cli.py (the commands).
"""

from __future__ import annotations

from typing import Any


def connect(address: str | None, **kwargs: Any) -> Any:
    """Route `backend="arm"` to Dask workers advertising resource `arm` (see dask.py);
    `connect(None)` goes back to the local worker."""
    from . import dask

    if address is None:
        return dask.disconnect()
    return dask.connect(address, **kwargs)


__all__ = ["connect"]
