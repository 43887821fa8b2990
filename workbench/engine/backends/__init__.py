"""The backend registry: every sub-package here that defines `BACKEND` is a backend.

Adding a backend is adding a folder (as in tinygrad's runtime/ops_*.py); nothing is
wired in by hand. A backend whose package fails to import is still listed, as
unavailable, with the import error as its reason.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from ...errors import BackendUnavailableError
from .base import Availability, Backend, CompileContext, Kernel, KernelTable

_REGISTRY: dict[str, Backend] = {}
_BROKEN: dict[str, str] = {}
_ORDER = ("reference", "x86", "cuda", "arm")  # display order; others follow by name


def _discover() -> None:
    if _REGISTRY or _BROKEN:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg:
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as e:  # a broken backend must not take the others down
            _BROKEN[info.name] = f"failed to import: {type(e).__name__}: {e}"
            continue
        backend = getattr(module, "BACKEND", None)
        if isinstance(backend, Backend):
            _REGISTRY[backend.name] = backend


def _rank(name: str) -> tuple[int, str]:
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    mode: str
    reason: str
    device: str
    precisions: tuple[str, ...]
    n_kernels: int

    def __str__(self) -> str:
        state = self.mode if self.available else f"unavailable: {self.reason}"
        extra = f" ({self.reason})" if self.available and self.reason else ""
        return f"{self.name}: {state}{extra}"


def all_backends() -> dict[str, Backend]:
    _discover()
    return {k: _REGISTRY[k] for k in sorted(_REGISTRY, key=_rank)}


def backends() -> list[BackendInfo]:
    """Every known backend, whether it is available here, and if not, why."""
    out = []
    for name, b in all_backends().items():
        try:
            a = b.availability()
        except Exception as e:
            a = Availability(False, "unavailable", f"availability check failed: {e}")
        out.append(
            BackendInfo(
                name,
                a.available,
                a.mode if a.available else "unavailable",
                a.reason,
                b.device,
                b.precisions,
                len(b.kernels.specs()),
            )
        )
    for name, why in sorted(_BROKEN.items(), key=lambda kv: _rank(kv[0])):
        out.append(BackendInfo(name, False, "unavailable", why, "?", (), 0))
    return out


def get_backend(name: str, *, require_available: bool = True) -> Backend:
    """The backend called `name`; raises a clear error if unknown or unavailable here."""
    regs = all_backends()
    if name not in regs:
        if name in _BROKEN:
            raise BackendUnavailableError(f"backend {name!r} {_BROKEN[name]}")
        raise BackendUnavailableError(
            f"unknown backend {name!r}; known backends: {', '.join(regs)}"
        )
    b = regs[name]
    if require_available:
        a = b.availability()
        if not a.available:
            raise BackendUnavailableError(f"backend {name!r} is unavailable: {a.reason}")
    return b


def available_backends() -> list[str]:
    return [info.name for info in backends() if info.available]


__all__ = [
    "Availability",
    "Backend",
    "BackendInfo",
    "CompileContext",
    "Kernel",
    "KernelTable",
    "all_backends",
    "available_backends",
    "backends",
    "get_backend",
]
