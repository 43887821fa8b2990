"""`workbench profile MODEL`: time every kernel, print the slowest, say where the run is saved."""

from __future__ import annotations

import argparse


def cmd_profile(args: argparse.Namespace) -> int:
    import pandas as pd

    from workbench.cli import _parse_dims, load_model_arg

    from .profile import profile

    model = load_model_arg(args.model)
    prof = profile(
        model,
        backend=args.backend,
        repeat=args.repeat,
        warmup=args.warmup,
        level=args.level,
        dims=_parse_dims(args.dims),
        progress=False if args.quiet else None,
        name=args.model if not args.model.endswith(".onnx") else None,
    )
    print(prof.summary())
    top = prof.top(args.top)
    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        print(top.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.trace:
        print(f"chrome trace written to {prof.to_chrome_trace(args.trace)}")
    print(f"run saved in {prof.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `profile` subcommand to the `workbench` command line."""
    p = sub.add_parser("profile", help="time every kernel of a model; save the run")
    p.add_argument("model", help="ONNX file or zoo model name")
    p.add_argument("--backend", default="x86")
    p.add_argument("--repeat", type=int, default=20, help="timed runs")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    p.add_argument("--level", type=int, default=2, help="0 none, 1 cleanup, 2 fusions, 3 layout")
    p.add_argument("--dims", help="values for symbolic dims, e.g. batch=1,sequence=128")
    p.add_argument("--top", type=int, default=15, help="how many kernels to print")
    p.add_argument("--trace", help="also write a Chrome trace (Perfetto) here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_profile)
