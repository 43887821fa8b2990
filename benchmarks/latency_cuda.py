"""Latency of the zoo on the cuda backend (fp32, fp16, tf32) vs PyTorch on the same GPU,
measured alternately in one run.

    python benchmarks/latency_cuda.py                       # every full-size zoo model
    python benchmarks/latency_cuda.py --models resnet50 --precisions fp16 --repeat 20
    python benchmarks/latency_cuda.py --json $OUT/latency_cuda.json

Per model and precision: our median end-to-end latency (host feeds in, host outputs out,
as `Session.run` does it), PyTorch's median doing the same work (`torch.from_numpy(..).cuda()`
in, `.cpu()` out, under `inference_mode`) on the network converted from the same ONNX
file by onnx2torch, and their ratio (ours / PyTorch: below 1 is faster), plus the
geometric mean of the ratios per precision. PyTorch runs fp16 as `model.half()` and tf32
with `allow_tf32` on for matmul and cuDNN (off for fp32). Batch 1, sequence 128. The two
engines alternate in blocks, each block's first run dropped, so drift hits both alike.

onnx2torch is pure Python; it declares torchvision but only its NMS and RoiAlign
converters import it, so where torchvision is absent a stub stands in (no zoo model uses
those ops). It is found installed, or as the wheel in wheels/ (put on sys.path as is).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
from _timing import quiet, timed

MODELS = ["resnet50", "mobilenet_v2", "bert_6l", "bert", "gpt2"]
PRECISIONS = ["fp32", "fp16", "tf32"]
ROOT = Path(__file__).resolve().parent.parent


def import_onnx2torch():
    """onnx2torch, installed or from wheels/onnx2torch-*.whl; torchvision stubbed if absent."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

        def _missing(*args, **kwargs):
            raise RuntimeError("torchvision is not installed (NMS/RoiAlign only)")

        ops.roi_align = ops.nms = ops.box_convert = _missing
        tv.ops = ops
        sys.modules.update({"torchvision": tv, "torchvision.ops": ops})
    try:
        import onnx2torch
    except ImportError:
        wheels = sorted(glob.glob(str(ROOT / "wheels" / "onnx2torch-*.whl")))
        if not wheels:
            raise
        sys.path.insert(0, wheels[-1])  # a pure-Python wheel imports from the zip
        import onnx2torch
    return onnx2torch


def torch_runner(proto, feeds: dict, precision: str):
    """A callable running the onnx2torch model once as `Session.run` does (host in/out)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    model = import_onnx2torch().convert(proto).eval().cuda()
    if precision == "fp16":
        model = model.half()
    names = [i.name for i in proto.graph.input if i.name in feeds]

    def cast(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float16) if precision == "fp16" and x.dtype == np.float32 else x

    host = [cast(feeds[n]) for n in names]

    def run():
        with torch.inference_mode():
            out = model(*[torch.from_numpy(x).cuda() for x in host])
            outs = out if isinstance(out, (list, tuple)) else [out]
            return [o.cpu() for o in outs]

    return run


def measure(name: str, precision: str, repeat: int, warmup: int, block: int, torch_too: bool):
    import workbench as wb
    from workbench import zoo

    proto = zoo.get(name)
    t0 = time.perf_counter()
    sess = wb.Session(wb.load(proto), "cuda", precision=precision, level=2)
    feeds = sess.random_feeds(seed=0)
    sess.run(feeds)  # numba compiles every kernel on this first run
    compile_s = time.perf_counter() - t0
    row = {"model": name, "precision": precision, "compile_s": compile_s}
    row["fallbacks"] = len(sess.plan.fallbacks)
    row["tensor_core_kernels"] = sum(
        k["algorithm"].startswith("wmma") or "wmma" in k["algorithm"] for k in sess.kernels()
    )
    theirs_fn = None
    if torch_too:
        try:
            theirs_fn = torch_runner(proto, feeds, precision)
        except Exception as e:  # a converter gap: report it, keep our numbers
            row["torch_error"] = f"{type(e).__name__}: {e}"[:300]
    for _ in range(warmup):
        sess.run(feeds)
        if theirs_fn is not None:
            theirs_fn()
    ours, theirs = [], []
    for _ in range(max(1, repeat // block)):
        quiet()  # (the other engine's threads done spinning: see _timing.quiet)
        ours += timed(lambda: sess.run(feeds), block + 1)[1:]
        if theirs_fn is not None:
            quiet()
            theirs += timed(theirs_fn, block + 1)[1:]
    row["ours_ms"] = float(np.median(ours) * 1e3)
    if theirs:
        row["torch_ms"] = float(np.median(theirs) * 1e3)
        row["ratio"] = row["ours_ms"] / row["torch_ms"]
    mem = sess.memory
    if mem is not None:
        row["arena_mib"] = mem.arena_bytes / 2**20
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--precisions", nargs="*", default=PRECISIONS)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true", help="our latency alone")
    ap.add_argument("--json", help="also write the rows (and the device) as JSON here")
    args = ap.parse_args(argv)

    from workbench.engine.backends import get_backend

    backend = get_backend("cuda", require_available=False)
    avail = backend.availability()
    if not avail.available:
        print(f"cuda unavailable: {avail.reason}")
        return 1
    device = backend.profile_meta()
    print(f"device: {device['device']}; tensor cores: {device.get('tensor_cores')}; "
          f"measured WMMA peak TFLOP/s: {device.get('peak_tflops')}")  # fmt: skip
    if not args.no_torch:
        import torch

        print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    rows = []
    head = f"{'model':<14}{'prec':<6}{'ours ms':>10}{'torch ms':>10}{'ratio':>8}{'tc':>5}{'fb':>4}"
    print(head)
    for name in args.models:
        for precision in args.precisions:
            try:
                row = measure(name, precision, args.repeat, args.warmup, args.block,
                              not args.no_torch)  # fmt: skip
            except Exception as e:
                row = {"model": name, "precision": precision, "error": f"{type(e).__name__}: {e}"}
                print(f"{name:<14}{precision:<6} failed: {row['error'][:200]}")
                rows.append(row)
                continue
            rows.append(row)
            torch_ms = f"{row['torch_ms']:10.3f}" if "torch_ms" in row else f"{'-':>10}"
            ratio = f"{row['ratio']:8.2f}" if "ratio" in row else f"{'-':>8}"
            print(f"{name:<14}{precision:<6}{row['ours_ms']:10.3f}{torch_ms}{ratio}"
                  f"{row['tensor_core_kernels']:5d}{row['fallbacks']:4d}"
                  + (f"  torch: {row['torch_error']}" if "torch_error" in row else ""))  # fmt: skip
    for precision in args.precisions:
        ratios = [r["ratio"] for r in rows if r.get("precision") == precision and "ratio" in r]
        if ratios:
            geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            print(f"geometric mean ratio {precision}: {geo:.2f} over {len(ratios)} models")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
