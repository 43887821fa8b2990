"""Latency of the zoo on a workbench backend vs onnxruntime, measured alternately in one run.

    python benchmarks/latency.py                      # every full-size zoo model, x86, 2 threads
    python benchmarks/latency.py --models resnet50 --repeat 20
    python benchmarks/latency.py --no-reference --no-rss   # the latency table alone

Prints per model: our median, onnxruntime's median (graph optimizations on), their
ratio (ours / onnxruntime: below 1 is faster), and the geometric mean of the ratios;
our plan's compile time on first and on a cached compile (algorithm selection measures
on the first, see backends/x86/autotune.py); the speed-up over `onnx.reference` (1-3
runs: it takes seconds to minutes per run on these models); and the peak RSS of each
engine running the model alone in a fresh process. Batch 1, sequence 128. Medians,
because these machines are noisy; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

THREADS = os.environ.get("WORKBENCH_THREADS", "2")
os.environ["WORKBENCH_THREADS"] = THREADS  # workbench._threads: BLAS, numba, OMP agree on it
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, THREADS)  # before numpy loads (onnxruntime is set below)

import numpy as np  # noqa: E402
from _timing import quiet, timed  # noqa: E402

MODELS = ["resnet50", "mobilenet_v2", "bert_6l", "bert", "gpt2"]


def _ort_session(proto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), opts)


def measure(
    name: str, backend: str, repeat: int, warmup: int, threads: int, block: int = 5, level: int = 3
) -> dict:
    import workbench as wb
    from workbench import zoo
    from workbench.engine.backends.x86 import autotune

    proto = zoo.get(name)
    model = wb.load(proto)
    autotune.reset_budget()  # each model gets the whole measuring budget
    t0 = time.perf_counter()
    sess = wb.Session(model, backend, level=level)
    feeds = sess.random_feeds(seed=0)
    sess.run(feeds)  # selection of nodes whose shapes are symbolic happens on this call
    compile_s = time.perf_counter() - t0
    tuned_s = autotune.stats["seconds"]
    t0 = time.perf_counter()
    wb.Session(model, backend, level=level).run(feeds)  # every choice now from the cache
    cached_s = time.perf_counter() - t0
    ort_sess = _ort_session(proto, threads)
    for _ in range(warmup):
        sess.run(feeds)
        ort_sess.run(None, feeds)
    ours, theirs = [], []
    # Alternate in blocks, so drift in machine load hits both alike; before each block
    # wait until the other engine's worker threads stop spinning (`quiet`: they would tax
    # whichever engine runs next), and drop the block's first run (its threads wake).
    for _ in range(max(1, repeat // block)):
        quiet()
        ours += timed(lambda: sess.run(feeds), block + 1)[1:]
        quiet()
        theirs += timed(lambda: ort_sess.run(None, feeds), block + 1)[1:]
    m_ours, m_ort = float(np.median(ours)), float(np.median(theirs))
    return {
        "model": name,
        "ours_ms": m_ours * 1e3,
        "ort_ms": m_ort * 1e3,
        "ratio": m_ours / m_ort,
        "fallbacks": len(sess.plan.fallbacks),
        "kernels": len(sess.plan.steps),
        "compile_s": compile_s,
        "tuning_s": tuned_s,
        "cached_compile_s": cached_s,
        "ours_s_median": m_ours,
    }


def reference_seconds(name: str, runs: int) -> float:
    """Median seconds of `onnx.reference` on the model (few runs: it is slow)."""
    from onnx.reference import ReferenceEvaluator

    import workbench as wb
    from workbench import zoo

    proto = zoo.get(name)
    feeds = wb.Session(wb.load(proto), "reference").random_feeds(seed=0)
    ev = ReferenceEvaluator(proto)
    return float(np.median(timed(lambda: ev.run(None, feeds), runs)))


def _child_rss(engine: str, folder: str, backend: str, level: int, threads: int) -> None:
    """In a fresh process: load model.onnx and feeds.npz from `folder`, compile, run 3
    times on one engine; print the peak RSS in MiB. VmHWM, not ru_maxrss: Linux carries a
    process's ru_maxrss over from its parent across fork and exec."""
    path = os.path.join(folder, "model.onnx")
    with np.load(os.path.join(folder, "feeds.npz")) as data:
        feeds = {k: data[k] for k in data.files}
    if engine == "ours":
        import workbench as wb

        sess = wb.Session(wb.load(path), backend, level=level)
        for _ in range(3):
            sess.run(feeds)
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, opts)
        for _ in range(3):
            sess.run(None, feeds)
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(hwm / 1024)  # kB -> MiB


def peak_rss_mib(name: str, backend: str, level: int) -> tuple[float, float]:
    """(ours, onnxruntime): peak RSS of each engine on the model, each in its own process
    that reads the model from a file (so neither pays for building it)."""
    import subprocess
    import tempfile

    import onnx

    import workbench as wb
    from workbench import zoo

    with tempfile.TemporaryDirectory() as folder:
        proto = zoo.get(name)
        onnx.save(proto, os.path.join(folder, "model.onnx"))
        feeds = wb.Session(wb.load(proto), "reference").random_feeds(seed=0)
        np.savez(os.path.join(folder, "feeds.npz"), **feeds)
        del proto
        out = []
        for engine in ("ours", "ort"):
            cmd = [sys.executable, __file__, "--rss-child", engine, "--models", folder]
            cmd += ["--backend", backend, "--level", str(level)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out.append(float(res.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="x86")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--block", type=int, default=5, help="runs per engine before switching")
    p.add_argument(
        "--level", type=int, default=3, help="our opt level, 3 = all (onnxruntime: all on)"
    )
    p.add_argument("--reference-runs", type=int, default=1, help="onnx.reference runs (1-3)")
    p.add_argument("--no-reference", action="store_true", help="skip onnx.reference")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    p.add_argument("--rss-child", choices=["ours", "ort"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        _child_rss(args.rss_child, args.models, args.backend, args.level, int(THREADS))
        return 0
    import platform

    import workbench as wb
    from workbench import _threads

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{THREADS} threads, workbench {wb.__version__}, backend {args.backend}, level {args.level}"
    )
    _threads.current()  # the setting the backend applies when it loads
    print(f"# load average before: {os.getloadavg()}; threads: {_threads.info()}")
    head = f"{'model':14} {'ours ms':>9} {'ort ms':>9} {'ratio':>6} {'fallbacks':>10}"
    head += f" {'compile s':>9} {'tuning s':>8} {'cached s':>8}"
    head += f" {'ref s':>8} {'x ref':>7} {'RSS MiB':>8} {'ort RSS':>8}"
    print(head)
    ratios = []
    for name in args.models.split(","):
        r = measure(
            name, args.backend, args.repeat, args.warmup, int(THREADS), args.block, args.level
        )
        ratios.append(r["ratio"])
        ref_s = speedup = rss = ort_rss = float("nan")
        if not args.no_reference:
            ref_s = reference_seconds(name, max(1, min(3, args.reference_runs)))
            speedup = ref_s / r["ours_s_median"]
        if not args.no_rss:
            rss, ort_rss = peak_rss_mib(name, args.backend, args.level)
        print(
            f"{r['model']:14} {r['ours_ms']:9.2f} {r['ort_ms']:9.2f} {r['ratio']:6.2f} "
            f"{r['fallbacks']:>4}/{r['kernels']:<5} {r['compile_s']:9.2f} {r['tuning_s']:8.2f} "
            f"{r['cached_compile_s']:8.2f} {ref_s:8.2f} {speedup:7.1f} {rss:8.0f} {ort_rss:8.0f}",
            flush=True,
        )
    geo = float(np.exp(np.mean(np.log(ratios))))
    print(f"geometric mean of ratios: {geo:.2f}")
    if args.backend == "x86":
        from workbench.engine.backends.x86 import autotune

        # (each is measured again by the next compile: autotune.host_busy)
        print(f"# choices measured while the host was busy, not stored: {autotune.stats['busy']}")
    print(f"# load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
