"""Check every full-size zoo model: x86 == reference == onnxruntime within 1e-4 of max |y|.

    python scripts/check_zoo.py [--models resnet50,bert] [--levels 2,3]   (make check-zoo)

The tiny variants are checked the same way in tests/backend/test_zoo_models.py.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "bert_6l", "bert", "gpt2"]
TOL = 1e-4


def _worst(got: dict, want: dict) -> float:
    worst = 0.0
    for name, w in want.items():
        g = np.asarray(got[name], np.float64)
        if g.shape != w.shape:
            return float("inf")
        mag = float(np.max(np.abs(w))) or 1.0
        worst = max(worst, float(np.max(np.abs(g - w))) / mag)
    return worst


def main(argv=None) -> int:
    import onnxruntime as ort

    import workbench as wb
    from workbench import zoo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--backends", default="x86")
    p.add_argument("--levels", default="2,3", help="opt levels to check each backend at")
    args = p.parse_args(argv)
    failed = 0
    for name in args.models.split(","):
        t0 = time.perf_counter()
        proto = zoo.get(name)
        model = wb.load(proto)
        ref = wb.Session(model, "reference")
        feeds = ref.random_feeds(seed=0)
        want = ref.run(feeds)
        rt = ort.InferenceSession(proto.SerializeToString())
        ort_out = dict(zip([o.name for o in rt.get_outputs()], rt.run(None, feeds)))
        line = [f"{name:13}", f"reference vs ort {_worst(want, ort_out):.1e}"]
        ok = _worst(want, ort_out) <= TOL
        for b in args.backends.split(","):
            for level in (int(v) for v in args.levels.split(",")):
                out = wb.Session(model, b, level=level).run(feeds)
                e_ref, e_ort = _worst(out, want), _worst(out, ort_out)
                ok &= e_ref <= TOL and e_ort <= TOL
                line.append(f"{b}@{level} vs reference {e_ref:.1e}, vs ort {e_ort:.1e}")
        line.append(f"{'ok' if ok else 'FAIL'} ({time.perf_counter() - t0:.1f}s)")
        print("  ".join(line), flush=True)
        failed += not ok
    print(f"{failed} model(s) outside {TOL:g} of max |y|" if failed else "all models match")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
