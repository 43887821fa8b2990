"""`workbench arm setup` and `workbench worker`: the ARM backend's commands.

workbench arm setup [--force]        build the emulated aarch64 worker (cached)
workbench arm status                 whether `arm` runs here, and how
workbench worker --scheduler tcp://HOST:8786 [--resources arm=1]   serve a Dask scheduler
"""

from __future__ import annotations

import argparse


def cmd_arm(args: argparse.Namespace) -> int:
    from . import setup
    from .client import route

    if args.action == "setup":
        res = setup.setup(force=args.force)
        what = ", ".join(res["built"]) or "nothing (already set up)"
        print(
            f"built: {what} in {res['seconds']:.1f} s; "
            f"downloaded {res['download_bytes'] / 2**20:.1f} MiB"
        )
        print(
            f"cache: {res['root']} (sysroot {res['sysroot_bytes'] / 2**20:.0f} MiB, "
            f"wheels {res['site_bytes'] / 2**20:.0f} MiB); qemu: {res['qemu']}"
        )
        print("pinned: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    a = route()
    print(f"arm: {a.mode}" + (f" ({a.reason})" if a.reason else ""))
    return 0 if a.available else 1


def cmd_worker(args: argparse.Namespace) -> int:
    from .dask import serve

    resources = dict(part.split("=", 1) for part in args.resources.split(",") if part)
    return serve(
        args.scheduler,
        {k: float(v) for k, v in resources.items()},
        name=args.name,
        nanny=args.nanny,
    )


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("arm", help="set up or check the ARM backend's aarch64 worker")
    a.add_argument("action", choices=("setup", "status"))
    a.add_argument("--force", action="store_true", help="rebuild even what is cached")
    a.set_defaults(func=cmd_arm)

    w = sub.add_parser("worker", help="serve ARM requests for a Dask scheduler (on a board)")
    w.add_argument("--scheduler", required=True, help="tcp://HOST:8786")
    w.add_argument("--resources", default="arm=1", help="Dask resources to advertise")
    w.add_argument("--name", default=None, help="worker name shown by the scheduler")
    w.add_argument(
        "--nanny", action="store_true", help="restart the worker when it dies (a Dask nanny)"
    )
    w.set_defaults(func=cmd_worker)
