"""The notebook's side of the worker: start it, talk to it with a deadline on every call,
and say plainly what happened when it hangs, crashes or is killed.

`LocalWorker` is a child process: `python -m workbench.remote.worker` on an aarch64 host,
`qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11 -m workbench.remote.worker`
on an x86 one. A worker that dies or overruns its deadline is killed and forgotten; the
next call starts a fresh one (sessions are loaded again by `RemoteSession`).
`worker()` is the route in use: the Dask one after `wb.connect(...)`, else the local one.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import errors
from .._cache import cache_dir
from ..engine.backends.base import Availability
from ..errors import WorkbenchError
from . import protocol

START_TIMEOUT = float(os.environ.get("WORKBENCH_ARM_START_TIMEOUT", "600"))  # QEMU boots slowly
TIMEOUT = float(os.environ.get("WORKBENCH_ARM_TIMEOUT", "1800"))  # per request, by default


class WorkerError(WorkbenchError):
    """The worker process could not answer: it hung, crashed, was killed, or mismatches."""


class WorkerTimeout(WorkerError):
    """No answer within the deadline; the worker was stopped."""


class WorkerCrashed(WorkerError):
    """The worker process ended while (or before) answering."""


class UnknownSessionError(WorkerError):
    """The worker does not hold the session (it restarted): load it again."""


class VersionMismatch(WorkerError):
    """Notebook and worker run different workbench or protocol versions."""


def native_host() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name} ({-code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def raise_reply(header: dict[str, Any], where: str) -> None:
    """Turn a failed reply into the matching WorkbenchError (KernelError, FeedError, ...)."""
    kind, msg = header.get("type", "Error"), header.get("error", "")
    if kind == "UnknownSession":
        raise UnknownSessionError(msg)
    cls = getattr(errors, kind, None) or globals().get(kind)
    if isinstance(cls, type) and issubclass(cls, WorkbenchError):
        raise cls(f"{msg} [on {where}]")
    raise WorkbenchError(f"{where} failed: {kind}: {msg}")


class Route(Protocol):
    name: str

    def request(
        self, op: str, header: Mapping[str, Any], arrays: Mapping[str, Any] | None, timeout: float
    ) -> tuple[dict[str, Any], dict[str, np.ndarray | None]]: ...


def worker_command() -> tuple[list[str], dict[str, str], bool]:
    """(argv, environment, emulated) of a local worker on this host."""
    import workbench

    from . import setup

    src = str(Path(workbench.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env.update(WORKBENCH_ARM_WORKER="1", PYTHONNOUSERSITE="1")
    if native_host():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        return [sys.executable, "-m", "workbench.remote.worker"], env, False
    ready, why = setup.status()
    if not ready:
        raise errors.BackendUnavailableError(f"backend 'arm' is unavailable: {why}")
    root = setup.sysroot()
    env.update(
        PYTHONPATH=os.pathsep.join([str(setup.site()), src]),
        NUMBA_CACHE_DIR=str(setup.numba_cache()),  # aarch64 code apart from the host's
        WORKBENCH_ARM_EMULATED="1",
        # measuring algorithms under emulation would pick by QEMU's speed: defaults instead
        WORKBENCH_AUTOTUNE="0",
        NUMBA_NUM_THREADS="1",
        WORKBENCH_THREADS="1",
    )
    # (the host's CPU for numba, set by the x86 kernels or the user, is not the emulated one)
    for var in ("VIRTUAL_ENV", "PYTHONSTARTUP", "NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME"):
        env.pop(var, None)
    argv = [setup.qemu_path() or setup.QEMU, "-L", str(root), str(root / setup.PYTHON)]
    return [*argv, "-m", "workbench.remote.worker"], env, True


class LocalWorker:
    """One worker child process; thread-safe, one request at a time."""

    name = "local arm worker"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.last_request = ""
        self.log_path: Path | None = None
        self.starts = 0
        self._lock = threading.RLock()

    # -- life -----------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        with self._lock:
            if self.alive():
                return self.info
            argv, env, emulated = worker_command()
            logs = cache_dir("arm", "logs")
            self.log_path = logs / f"worker-{os.getpid()}-{self.starts}.log"
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env
                )
            self.starts += 1
            self.last_request = "start"
            t0 = time.monotonic()
            header, _ = self._exchange(None, t0 + timeout, "start", timeout)
            self.info = {**header, "start_s": time.monotonic() - t0, "emulated": emulated}
            return self.info

    def stop(self) -> None:
        with self._lock:
            proc, self.proc = self.proc, None
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()[-6:]
        except (OSError, AttributeError):
            return ""
        return ("; its last words: " + " | ".join(lines)) if lines else ""

    # -- talking --------------------------------------------------------------------------------
    def _exchange(
        self, body: bytes | None, deadline: float, op: str, timeout: float
    ) -> tuple[dict, dict]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            if body is not None:
                protocol.write_frame(proc.stdin.fileno(), body, deadline)
            reply = protocol.read_frame(proc.stdout.fileno(), deadline)
        except protocol.Timeout:
            pid = proc.pid
            self.stop()
            raise WorkerTimeout(
                f"the arm worker (pid {pid}) gave no answer to {op!r} within {timeout:g} s; "
                "it was stopped and a new one starts on the next call"
            ) from None
        except (EOFError, OSError) as e:
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            raise WorkerCrashed(
                f"the arm worker (pid {proc.pid}) ended during {op!r}: {describe_exit(code)} "
                f"({type(e).__name__}); a new one starts on the next call{self._tail()}"
            ) from None
        return protocol.decode(reply)

    def request(
        self,
        op: str,
        header: Mapping[str, Any] | None = None,
        arrays: Mapping[str, Any] | None = None,
        timeout: float = TIMEOUT,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray | None]]:
        with self._lock:
            if not self.alive():
                self.start()
            self.last_request = op
            body = protocol.encode(
                {"op": op, "protocol": protocol.VERSION, **(header or {})}, arrays
            )
            h, a = self._exchange(body, time.monotonic() + timeout, op, timeout)
            if not h.get("ok"):
                raise_reply(h, f"the arm worker ({op})")
            return h, a


_local: LocalWorker | None = None
_remote: Route | None = None  # set by wb.connect


def local_worker() -> LocalWorker:
    global _local
    if _local is None:
        _local = LocalWorker()
    return _local


def set_remote(route: Route | None) -> None:
    global _remote
    _remote = route


def worker() -> Route:
    """The route `arm` sessions use now: Dask after `wb.connect`, else the local worker."""
    return _remote if _remote is not None else local_worker()


def route() -> Availability:
    """Whether `arm` can run from this process, how, and why not (cheap: no worker starts)."""
    if _remote is not None:
        return Availability(True, "remote", f"through {_remote.name}")
    if native_host():
        return Availability(True, "native", "worker process on this aarch64 host")
    from . import setup

    ready, why = setup.status()
    if not ready:
        return Availability(False, "unavailable", why)
    return Availability(
        True,
        "emulated",
        "x86 host: aarch64 worker under QEMU user-mode emulation "
        "(numerics are aarch64's; timings are emulated, relative only)",
    )


__all__ = [
    "LocalWorker",
    "UnknownSessionError",
    "WorkerCrashed",
    "WorkerError",
    "WorkerTimeout",
    "local_worker",
    "route",
    "worker",
    "worker_command",
]
