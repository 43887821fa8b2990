"""The `workbench` command line.

workbench run [MODEL]            run on every available backend, compare with reference
workbench backends               what can run here, and why not
workbench zoo                    the built-in models
workbench conformance --backend x86
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "resnet18"


def _parse_dims(text: str | None) -> dict[str, int]:
    dims: dict[str, int] = {}
    for part in (text or "").split(","):
        if part.strip():
            key, _, value = part.partition("=")
            dims[key.strip()] = int(value)
    return dims


def load_model_arg(name: str):
    """A path to an .onnx file, or the name of a zoo model."""
    import workbench as wb

    if Path(name).exists() or name.endswith(".onnx"):
        return wb.load(name)
    from workbench import zoo

    if name in zoo.names():
        return wb.load(zoo.get(name))
    raise wb.WorkbenchError(
        f"{name!r} is neither an ONNX file nor a zoo model; zoo models: {', '.join(zoo.names())}"
    )


def _time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _max_diff(got: dict, ref: dict) -> str:
    worst_abs, worst_rel = 0.0, 0.0
    for name, r in ref.items():
        g = np.asarray(got[name], dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if g.shape != r.shape:
            return f"shape {g.shape} != {r.shape}"
        d = float(np.max(np.abs(g - r))) if r.size else 0.0
        mag = float(np.max(np.abs(r))) if r.size else 0.0
        worst_abs = max(worst_abs, d)
        worst_rel = max(worst_rel, d / mag if mag else d)
    return f"{worst_abs:.2e} ({worst_rel:.1e} of max)"


def cmd_run(args: argparse.Namespace) -> int:
    import workbench as wb

    model = load_model_arg(args.model)
    print(model.summary())
    feeds_sess = wb.Session(model, "reference")
    feeds = feeds_sess.random_feeds(_parse_dims(args.dims), seed=args.seed)
    print("feeds: " + ", ".join(f"{k}{list(v.shape)} {v.dtype}" for k, v in feeds.items()))
    wanted = args.backends.split(",") if args.backends else None
    rows, ref_out, skipped = [], None, []
    for info in wb.backends():
        if wanted and info.name not in wanted:
            continue
        if not info.available:
            skipped.append(f"{info.name}: {info.reason}")
            continue
        if info.mode == "emulated" and not wanted:  # minutes under QEMU: only when asked for
            skipped.append(f"{info.name}: emulated here (slow); name it in --backends to run it")
            continue
        t0 = time.perf_counter()
        level = 0 if info.name == "reference" else args.level  # the reference runs as given
        sess = wb.Session(model, info.name, level=level)
        compile_s = time.perf_counter() - t0
        out = sess.run(feeds)  # warm-up (numba compiles here on first use)
        median = _time(lambda s=sess: s.run(feeds), args.repeat)
        if info.name == "reference":
            ref_out = out
        shapes = "; ".join(f"{k}{list(v.shape)}" for k, v in out.items())
        diff = _max_diff(out, ref_out) if ref_out is not None else "-"
        fb = len(sess.plan.fallbacks)
        kernels = f"{len(sess.plan.steps)} ({fb} fallback)"
        timing = f"{median * 1e3:.2f} ms"
        rows.append((info.name, shapes, timing, kernels, diff, f"{compile_s:.2f}s"))
    if args.onnxruntime:
        rows.append(_onnxruntime_row(model, feeds, ref_out, args.repeat))
    headers = ("backend", "outputs", "median", "kernels", "max |diff| vs reference", "compile")
    _print_table(headers, rows)
    for line in skipped:
        print(f"not run: {line}")
    return 0


def _onnxruntime_row(model, feeds, ref_out, repeat: int) -> tuple:
    try:
        import onnxruntime as ort
    except ImportError:
        return ("onnxruntime", "not installed (pip install onnxruntime)", "", "", "", "")
    import workbench as wb

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(wb.to_onnx(model).SerializeToString(), opts)
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, feeds)))
    median = _time(lambda: sess.run(None, feeds), repeat)
    shapes = "; ".join(f"{k}{list(v.shape)}" for k, v in out.items())
    diff = _max_diff(out, ref_out) if ref_out is not None else "-"
    return ("onnxruntime (rival)", shapes, f"{median * 1e3:.2f} ms", "-", diff, "-")


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def cmd_backends(args: argparse.Namespace) -> int:
    import workbench as wb

    for info in wb.backends():
        print(f"{info}  [device {info.device}; precisions {', '.join(info.precisions) or '-'}]")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from workbench import zoo

    for name in zoo.names():
        print(name)
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    from workbench.engine.conformance import run_conformance

    ops = args.ops.split(",") if args.ops else None
    report = run_conformance(args.backend, ops=ops, json_path=args.json, progress=not args.quiet)
    print(report.format())
    if args.json:
        print(f"report written to {args.json}")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    import workbench as wb
    from workbench.engine.passes import optimize

    model = load_model_arg(args.model)
    disabled = args.disable.split(",") if args.disable else ()
    result = optimize(model, args.level, args.backend, disabled=disabled)
    print(result.summary())
    if args.output:
        path = wb.save(result.after, args.output, external_data=args.external_data)
        print(f"optimized model written to {path}")
    return 0


# Subcommands from other parts, each a module with `register(sub)`; a missing one is skipped.
_EXTENSIONS = (
    "workbench.profiler.cli",  # profile
    "workbench.viz.cli",  # report
    "workbench.remote.cli",  # arm setup, worker
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks for workbench errors")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a model on every available backend and compare")
    r.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="ONNX file or zoo model name")
    r.add_argument("--backends", help="comma-separated subset, e.g. reference,x86")
    r.add_argument("--dims", help="values for symbolic dims, e.g. batch=1,sequence=128")
    r.add_argument("--repeat", type=int, default=5, help="timed runs per backend (median)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random feeds")
    r.add_argument("--level", type=int, default=2, help="opt level off the reference backend")
    r.add_argument(
        "--no-onnxruntime", dest="onnxruntime", action="store_false", help="skip the ORT row"
    )
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("backends", help="list backends and whether they are available")
    b.set_defaults(func=cmd_backends)

    z = sub.add_parser("zoo", help="list the built-in models")
    z.set_defaults(func=cmd_zoo)

    c = sub.add_parser("conformance", help="run the ONNX node test cases on a backend")
    c.add_argument("--backend", default="x86")
    c.add_argument("--ops", help="comma-separated op types (default: all)")
    c.add_argument("--json", help="write the JSON report here")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_conformance)

    o = sub.add_parser("optimize", help="run the passes; print what changed; export the result")
    o.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="ONNX file or zoo model name")
    o.add_argument("--level", type=int, default=2, help="0 none, 1 cleanup, 2 fusions, 3 layout")
    o.add_argument("--backend", default="x86", help="the backend the fusions target")
    o.add_argument("--disable", help="comma-separated pass names to skip")
    o.add_argument("-o", "--output", help="write the optimized ONNX model here")
    o.add_argument("--external-data", action="store_true", help="weights in OUTPUT.data")
    o.set_defaults(func=cmd_optimize)

    import importlib

    for name in _EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if not (e.name and name.startswith(e.name)):  # it exists but lacks a dependency
                raise
            continue
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from workbench.errors import WorkbenchError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as e:
        if args.debug:
            raise
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
