"""ARM boards through Dask distributed: `workbench worker` on the board, `wb.connect` here.

    # on the board (aarch64, workbench installed):
    workbench worker --scheduler tcp://HOST:8786 --resources arm=1
    # in the notebook:
    wb.connect("tcp://HOST:8786")
    sess = wb.Session(model, "arm")        # now runs on the board

A request is the same bytes as for the local worker (protocol.py: JSON + .npy, never a
pickled array), submitted as one task with `resources={"arm": 1}`; the Dask worker hands
it to its own worker child process (`client.LocalWorker`: native on the board, QEMU on an
x86 machine), so a kernel that crashes kills that child, not the Dask worker. Every wait
is `future.result(timeout=...)` in short slices: between them the client checks that the
Dask worker running the task is still in the scheduler, so a board that is unplugged or
killed mid-run is reported at once, naming it, instead of a task waiting for a worker that
never comes back. Versions are compared at `connect` and on every request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import WorkbenchError
from . import protocol
from .client import (
    TIMEOUT,
    WorkerCrashed,
    WorkerError,
    WorkerTimeout,
    local_worker,
    raise_reply,
    set_remote,
)

POLL_S = 1.0  # how often a waiting call checks that its Dask worker is still there


def _versions() -> dict[str, Any]:
    import workbench

    return {"workbench": workbench.__version__, "protocol": protocol.VERSION}


def serve_request(body: bytes, client_versions: dict[str, Any]) -> bytes:
    """The Dask task: check versions, hand the request to this machine's worker child."""
    mine = _versions()
    if client_versions != mine:
        return protocol.encode(
            {
                "ok": False,
                "type": "VersionMismatch",
                "error": f"notebook has {client_versions}, the worker has {mine}: install the "
                "same workbench version on both",
            }
        )
    try:
        h, a = protocol.decode(body)
        op = h.pop("op")
        h.pop("protocol", None)
        reply, arrays = local_worker().request(op, h, a, float(h.pop("_timeout", TIMEOUT)))
        return protocol.encode(reply, arrays)
    except WorkbenchError as e:  # a failed request, or this board's worker child died
        return protocol.encode({"ok": False, "type": type(e).__name__, "error": str(e)})


class DaskRoute:
    """Requests to Dask workers that advertise `resource`."""

    def __init__(self, client: Any, address: str, resource: str = "arm") -> None:
        self.client = client
        self.address = address
        self.resource = resource
        self.name = f"Dask scheduler {address} (workers with resource {resource})"
        self.last_request = ""

    def workers(self) -> dict[str, dict[str, Any]]:
        """The scheduler's workers that advertise the resource: address -> info."""
        info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return {w: i for w, i in info.items() if i.get("resources", {}).get(self.resource)}

    def request(
        self,
        op: str,
        header: Mapping[str, Any] | None = None,
        arrays: Mapping[str, Any] | None = None,
        timeout: float = TIMEOUT,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray | None]]:
        self.last_request = op
        if not self.workers():
            raise WorkerError(
                f"no worker of {self.address} advertises resource {self.resource!r}: start one "
                f"with `workbench worker --scheduler {self.address} --resources {self.resource}=1`"
            )
        body = protocol.encode(
            {"op": op, "protocol": protocol.VERSION, "_timeout": timeout, **(header or {})}, arrays
        )
        key = f"workbench-{op}-{uuid.uuid4().hex[:12]}"
        fut = self.client.submit(
            serve_request, body, _versions(), resources={self.resource: 1}, key=key, pure=False
        )
        deadline = time.monotonic() + timeout
        running_on: str | None = None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerTimeout(
                        f"no answer to {op!r} from {self.name} within {timeout:g} s"
                        + (f" (running on {running_on})" if running_on else "")
                    )
                try:
                    reply = fut.result(timeout=min(POLL_S, left))
                    break
                except TimeoutError:
                    pass
                running_on = self._check(key, running_on, op)
        except BaseException:
            fut.cancel()
            raise
        h, a = protocol.decode(reply)
        if not h.get("ok"):
            raise_reply(h, f"the arm worker behind {self.address} ({op})")
        return h, a

    def _check(self, key: str, running_on: str | None, op: str) -> str | None:
        """Which worker runs `key`; raise when that worker has left the scheduler."""
        alive = self.workers()
        if running_on is None:
            for w, keys in self.client.processing().items():
                if key in keys:
                    return w
        elif running_on not in alive:
            raise WorkerCrashed(
                f"the Dask worker {running_on} left {self.address} while running {op!r} "
                "(killed, crashed or disconnected); its sessions are gone, and the next call "
                "loads them on whichever worker advertises the resource then"
            )
        if not alive:
            raise WorkerCrashed(
                f"no worker of {self.address} advertises {self.resource!r} any more "
                f"(the last one left during {op!r})"
            )
        return running_on


def connect(address: str, *, timeout: float = 60.0, resource: str = "arm") -> DaskRoute:
    """Route `backend="arm"` through the Dask scheduler at `address` (e.g. "tcp://board:8786").

    Waits up to `timeout` for a worker advertising `resource`, asks it who it is and
    refuses a worker of another workbench or protocol version. `wb.connect(None)` goes
    back to the local worker.
    """
    from distributed import Client

    client = Client(address, timeout=timeout, set_as_default=False)
    route = DaskRoute(client, address, resource)
    end = time.monotonic() + timeout
    while not route.workers():
        if time.monotonic() > end:
            client.close()
            raise WorkerError(
                f"no worker of {address} advertises resource {resource!r} after {timeout:g} s: "
                f"start one with `workbench worker --scheduler {address} --resources {resource}=1`"
            )
        time.sleep(0.5)
    try:
        h, _ = route.request("hello", timeout=max(timeout, 600.0))  # a QEMU worker boots slowly
    except BaseException:
        client.close()
        raise
    route.info = h
    set_remote(route)
    return route


def disconnect() -> None:
    """Back to the local worker."""
    from .client import _remote

    if isinstance(_remote, DaskRoute):
        _remote.client.close()
    set_remote(None)


def serve(
    scheduler: str, resources: Mapping[str, float], *, name: str | None = None, nanny: bool = False
) -> int:
    """`workbench worker`: a Dask worker (one thread) advertising `resources`; its worker
    child starts right away, so the first request does not wait for it to boot."""
    import asyncio
    import threading

    from distributed import Nanny, Worker

    threading.Thread(target=local_worker().start, daemon=True).start()

    async def main() -> None:
        cls = Nanny if nanny else Worker
        async with cls(scheduler, nthreads=1, resources=dict(resources), name=name) as w:
            await w.finished()

    asyncio.run(main())
    return 0


__all__ = ["DaskRoute", "connect", "disconnect", "serve", "serve_request"]
