"""What profiling costs: latency with and without the profiler's timed loop, in one process.

    python benchmarks/profiler_overhead.py                       # resnet50, mobilenet_v2
    python benchmarks/profiler_overhead.py --models resnet50 --repeat 60

"Without" is `Session.run(feeds)`; "with" is one run of `wb.profile`'s measuring loop
(`workbench.profiler.profile.measure_once`: the executor's timed loop, a clock stamp and a
backend synchronize after every kernel, the stamps stored). Both run on one compiled session,
alternating in blocks so drift in machine load hits both alike; the first run of each block
is dropped (BLAS threads still spinning from the other side). Prints the medians, their
ratio, the median of the per-block-pair ratios (robust to slow drift) and the ratio of the
two fastest runs (what a loaded machine still lets one compare). With onnxruntime
installed, the same for onnxruntime's own profiler (`enable_profiling`) for scale.
Targets: at most 2% on resnet50, 5% on mobilenet_v2.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile

THREADS = "2"
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, THREADS)  # before numpy/numba load: one thread setting for all

import numpy as np  # noqa: E402
from _timing import timed  # noqa: E402

MODELS = ["resnet50", "mobilenet_v2"]


def _timed(fn, n: int) -> list[float]:
    return timed(fn, n)[1:]  # the first run of a block pays for the switch


def _alternate(plain, profiled, repeat: int, block: int) -> dict:
    a, b, pair = [], [], []
    for _ in range(max(1, repeat // block)):
        x = _timed(plain, block + 1)
        y = _timed(profiled, block + 1)
        a += x
        b += y
        pair.append(np.median(y) / np.median(x))
    ma, mb = float(np.median(a)), float(np.median(b))
    return {
        "plain_ms": ma * 1e3,
        "profiled_ms": mb * 1e3,
        "overhead_pct": (mb / ma - 1) * 100,
        "pair_overhead_pct": (float(np.median(pair)) - 1) * 100,
        # the least disturbed run of each side: what a loaded machine still lets one compare
        "min_overhead_pct": (min(b) / min(a) - 1) * 100,
    }


def measure_ours(name: str, backend: str, level: int, repeat: int, block: int) -> dict:
    import workbench as wb
    from workbench import zoo

    sess = wb.Session(wb.load(zoo.get(name)), backend, level=level)
    out = _overhead_of(sess, repeat, block)
    out["kernels"] = len(sess.plan.steps)
    return out


def per_kernel_cost(n: int = 200, runs: int = 2000, block: int = 50) -> dict:
    """What the timed loop adds per kernel, on a chain of `n` Relu kernels over one float:
    (profiled - plain) / n, from medians of alternating blocks. Times the kernel count of
    a model, it bounds the overhead without a large model's run-to-run noise."""
    from onnx import TensorProto, helper

    import workbench as wb

    names = ["x", *[f"t{i}" for i in range(n - 1)], "y"]
    nodes = [helper.make_node("Relu", [a], [b]) for a, b in itertools.pairwise(names)]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    r = _overhead_of(wb.Session(wb.load(proto), "x86"), runs, block)
    r["us_per_kernel"] = (r["profiled_ms"] - r["plain_ms"]) * 1e3 / n
    return r


def _overhead_of(sess, repeat: int, block: int) -> dict:
    from workbench.profiler.profile import measure_once

    feeds = sess.random_feeds(seed=0)
    n = len(sess.plan.steps)
    stamps = np.empty((block + 1, n + 1))
    bounds = np.empty((block + 1, 2))
    row = [0]

    def profiled():
        measure_once(sess, feeds, stamps, bounds, row[0] % (block + 1))
        row[0] += 1

    for _ in range(3):
        sess.run(feeds)
        profiled()
    return _alternate(lambda: sess.run(feeds), profiled, repeat, block)


def measure_ort(name: str, repeat: int, block: int) -> dict | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from workbench import zoo

    proto = zoo.get(name).SerializeToString()
    sessions = []
    tmp = tempfile.mkdtemp(prefix="ort_prof_")
    for prof in (False, True):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(THREADS)
        opts.inter_op_num_threads = 1
        opts.enable_profiling = prof
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sessions.append(ort.InferenceSession(proto, opts, providers=["CPUExecutionProvider"]))
    inp = sessions[0].get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feeds = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for s in sessions:
        for _ in range(3):
            s.run(None, feeds)
    out = _alternate(
        lambda: sessions[0].run(None, feeds), lambda: sessions[1].run(None, feeds), repeat, block
    )
    sessions[1].end_profiling()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="x86")
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeat", type=int, default=40, help="timed runs per side")
    p.add_argument("--block", type=int, default=5, help="runs per side before switching")
    p.add_argument("--no-onnxruntime", dest="ort", action="store_false")
    args = p.parse_args(argv)
    import workbench as wb

    print(
        f"# {os.cpu_count()} cores, {THREADS} threads, workbench {wb.__version__}, "
        f"backend {args.backend}, level {args.level}, {args.repeat} runs per side, medians"
    )
    print(
        f"{'model':14} {'engine':12} {'plain ms':>10} {'profiled ms':>12} "
        f"{'overhead':>9} {'pairs':>8} {'of mins':>8}"
    )
    cost = per_kernel_cost()
    print(
        f"{'200 x Relu[1]':14} {'workbench':12} {cost['plain_ms']:10.3f} "
        f"{cost['profiled_ms']:12.3f} {cost['overhead_pct']:8.2f}% "
        f"{cost['pair_overhead_pct']:7.2f}% {cost['min_overhead_pct']:7.2f}%"
        f"   = {cost['us_per_kernel']:.3f} us per kernel",
        flush=True,
    )
    for name in args.models.split(","):
        rows = [
            ("workbench", measure_ours(name, args.backend, args.level, args.repeat, args.block))
        ]
        if args.ort:
            r = measure_ort(name, args.repeat, args.block)
            if r is not None:
                rows.append(("onnxruntime", r))
        for engine, r in rows:
            line = (
                f"{name:14} {engine:12} {r['plain_ms']:10.2f} {r['profiled_ms']:12.2f} "
                f"{r['overhead_pct']:8.2f}% {r['pair_overhead_pct']:7.2f}% "
                f"{r['min_overhead_pct']:7.2f}%"
            )
            if "kernels" in r:  # what the per-kernel cost predicts for this many kernels
                predicted = cost["us_per_kernel"] * r["kernels"] / 1e3 / r["plain_ms"] * 100
                line += f"   ({r['kernels']} kernels: {predicted:.3f}% predicted)"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
