"""`workbench report MODEL`: profile, compare and write one self-contained HTML report."""

from __future__ import annotations

import argparse
import sys


def cmd_report(args: argparse.Namespace) -> int:
    from workbench.cli import load_model_arg

    from .report_html import collect, render

    model = load_model_arg(args.model)
    data = collect(
        model,
        backends=args.backends,
        level=args.level,
        precision=args.precision,
        repeat=args.repeat,
        progress=not args.quiet,
    )
    failed = render(data, args.output, progress=not args.quiet)
    print(f"report written to {args.output}")
    if failed:
        print(
            f"workbench: {len(failed)} section(s) could not be drawn: {', '.join(failed)} "
            "(see the error boxes in the report)",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand to the `workbench` command line."""
    from workbench.cli import DEFAULT_MODEL

    p = sub.add_parser("report", help="write one self-contained HTML report of a model")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="ONNX file or zoo model name")
    p.add_argument(
        "--backends",
        help="comma-separated, e.g. x86,reference (default: all available but reference)",
    )
    p.add_argument("-o", "--output", default="report.html", help="where to write the report")
    p.add_argument("--level", type=int, default=2, help="0 none, 1 cleanup, 2 fusions, 3 layout")
    p.add_argument("--precision", default="fp32", help="precision of the backends under test")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per backend")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_report)
