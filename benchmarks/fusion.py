"""x86 latency at opt level 0 and level 2 for each zoo model, in one run: what fusion buys.

    python benchmarks/fusion.py [--models resnet50,mobilenet_v2] [--repeat 10]

Prints per model: node counts at both levels, the median latency of each (alternating
blocks of runs, so drift hits both alike), and the speed-up level0 / level2. On this
machine onnxruntime's own graph optimizations gain 2.2x on MobileNetV2 and 1.37x on
ResNet-50; level 2 should never be slower than level 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "2")

import numpy as np  # noqa: E402

MODELS = ["resnet50", "mobilenet_v2", "bert_6l", "bert", "gpt2"]


def _block(fn, n: int) -> list[float]:
    out = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out[1:]  # the first run after switching pays for the other's cache state


def measure(name: str, repeat: int, block: int = 5) -> dict:
    import workbench as wb
    from workbench import zoo

    model = wb.load(zoo.get(name))
    s0 = wb.Session(model, "x86", level=0)
    s2 = wb.Session(model, "x86", level=2)
    feeds = s0.random_feeds(seed=0)
    s0.run(feeds)
    s2.run(feeds)
    t0, t2 = [], []
    for _ in range(max(1, repeat // block)):
        t0 += _block(lambda: s0.run(feeds), block)
        t2 += _block(lambda: s2.run(feeds), block)
    m0, m2 = float(np.median(t0)), float(np.median(t2))
    return {
        "model": name,
        "nodes0": len(s0.plan.steps),
        "nodes2": len(s2.plan.steps),
        "ms0": m0 * 1e3,
        "ms2": m2 * 1e3,
        "speedup": m0 / m2,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)
    print(f"{'model':14} {'nodes L0':>9} {'nodes L2':>9} {'L0 ms':>9} {'L2 ms':>9} {'speed-up':>9}")
    for name in args.models.split(","):
        r = measure(name, args.repeat)
        print(
            f"{r['model']:14} {r['nodes0']:9d} {r['nodes2']:9d} {r['ms0']:9.2f} {r['ms2']:9.2f} "
            f"{r['speedup']:8.2f}x",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
