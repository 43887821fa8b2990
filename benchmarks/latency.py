"""Latency of the zoo on a workbench backend vs onnxruntime, measured alternately in one run.

    python benchmarks/latency.py                      # every full-size zoo model, x86, 2 threads
    python benchmarks/latency.py --models resnet50 --repeat 20

Prints per model: our median, onnxruntime's median (graph optimizations on), their
ratio (ours / onnxruntime: below 1 is faster), and the geometric mean of the ratios.
Batch 1, sequence 128. Medians, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

THREADS = "2"
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, THREADS)  # before numpy/numba load: one thread setting for all

import numpy as np  # noqa: E402

MODELS = ["resnet50", "mobilenet_v2", "bert_6l", "bert", "gpt2"]


def _ort_session(proto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), opts)


def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(
    name: str, backend: str, repeat: int, warmup: int, threads: int, block: int = 5, level: int = 2
) -> dict:
    import workbench as wb
    from workbench import zoo

    proto = zoo.get(name)
    model = wb.load(proto)
    sess = wb.Session(model, backend, level=level)
    feeds = sess.random_feeds(seed=0)
    ort_sess = _ort_session(proto, threads)
    for _ in range(warmup):
        sess.run(feeds)
        ort_sess.run(None, feeds)
    ours, theirs = [], []
    # Alternate in blocks, so drift in machine load hits both alike, and drop each block's
    # first run: BLAS worker threads keep spinning for a while after a call and would tax
    # whichever engine runs right after the other.
    for _ in range(max(1, repeat // block)):
        ours += _timed(lambda: sess.run(feeds), block + 1)[1:]
        theirs += _timed(lambda: ort_sess.run(None, feeds), block + 1)[1:]
    m_ours, m_ort = float(np.median(ours)), float(np.median(theirs))
    return {
        "model": name,
        "ours_ms": m_ours * 1e3,
        "ort_ms": m_ort * 1e3,
        "ratio": m_ours / m_ort,
        "fallbacks": len(sess.plan.fallbacks),
        "kernels": len(sess.plan.steps),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="x86")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--block", type=int, default=5, help="runs per engine before switching")
    p.add_argument("--level", type=int, default=2, help="our opt level (onnxruntime: all on)")
    args = p.parse_args(argv)
    import platform

    import workbench as wb

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{THREADS} threads, workbench {wb.__version__}, backend {args.backend}, level {args.level}"
    )
    print(f"{'model':14} {'ours ms':>10} {'ort ms':>10} {'ratio':>7} {'fallbacks':>10}")
    ratios = []
    for name in args.models.split(","):
        r = measure(
            name, args.backend, args.repeat, args.warmup, int(THREADS), args.block, args.level
        )
        ratios.append(r["ratio"])
        print(
            f"{r['model']:14} {r['ours_ms']:10.2f} {r['ort_ms']:10.2f} {r['ratio']:7.2f} "
            f"{r['fallbacks']:>4}/{r['kernels']:<5}",
            flush=True,
        )
    geo = float(np.exp(np.mean(np.log(ratios))))
    print(f"geometric mean of ratios: {geo:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
