#!/usr/bin/env bash
# What the cuda backend must show on a real GPU, run on the device machine (see docs/cuda.md).
#
#   scripts/gpu_check.sh tests        # tests/cuda + tests/backend -k cuda, on the GPU   (~3 min)
#   scripts/gpu_check.sh zoo          # every zoo model, cuda fp32 vs reference and ort  (~5 min)
#   scripts/gpu_check.sh precision    # fp16/tf32 errors (wb.compare), tensor-core TFLOP/s (~5 min)
#   scripts/gpu_check.sh bench        # benchmarks/latency_cuda.py vs PyTorch            (~8 min)
#   scripts/gpu_check.sh all          # all four (longer than one 10-minute device call)
#
# Through the device tool, one stage per call (each call runs at most 10 minutes):
#   run(command="scripts/gpu_check.sh tests", carry=["wheels"])
# Everything lands in $OUT (default /tmp/gpu_check): summary.txt plus one log per stage
# (at most 8 files come back). The device image has numba(-cuda), onnx, onnxruntime,
# pandas, torch and cupy but reaches no registry: onnx2torch travels as a wheel in wheels/
# (`pip download onnx2torch --no-deps -d wheels/`), and pycuda, where a wheel of it is
# there too; without pycuda the tensor-core GEMM compiles through CuPy (NVRTC).
set -u
STAGE=${1:-all}
OUT=${OUT:-/tmp/gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/wb_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM

say() { echo "== $*" | tee -a "$OUT/summary.txt"; }

if [ ! -d /tmp/wb_site ]; then
    if ls wheels/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/wb_site \
            wheels/*.whl >>"$OUT/summary.txt" 2>&1 || say "installing wheels/ failed"
    else
        say "no wheels/: PyTorch comparison needs onnx2torch (see docs/cuda.md)"
    fi
fi

say "stage $STAGE on $(hostname) at $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv \
    >>"$OUT/summary.txt" 2>&1
$PY - >>"$OUT/summary.txt" 2>&1 <<'EOF'
import workbench as wb
from workbench.engine.backends import get_backend
print([str(b) for b in wb.backends() if b.name == "cuda"])
print(get_backend("cuda").profile_meta())  # device, tensor cores (on/why not), WMMA peak
EOF

stage_tests() {
    say "tests: pytest tests/cuda tests/backend -k cuda (real GPU, no simulator)"
    timeout 480 $PY -m pytest tests/cuda tests/backend -k cuda -q -rs -p no:cacheprovider \
        >"$OUT/tests.txt" 2>&1
    say "tests exit $? ($(tail -1 "$OUT/tests.txt"))"
}

stage_zoo() {
    say "zoo: cuda fp32 vs reference and onnxruntime, within 1e-4 of max |y|"
    timeout 540 $PY scripts/check_zoo.py --backends cuda >"$OUT/zoo.txt" 2>&1
    say "zoo exit $? ($(tail -1 "$OUT/zoo.txt"))"
}

stage_precision() {
    say "precision: fp16/tf32 errors per zoo model; tensor-core TFLOP/s per GEMM/Conv"
    timeout 540 $PY - >"$OUT/precision.txt" 2>&1 <<'EOF'
import numpy as np

import workbench as wb
from workbench import zoo
from workbench.engine.backends.cuda import fast_gemm

peak = {}
for p in ("fp16", "tf32"):
    if fast_gemm.enabled(p):
        peak[p] = fast_gemm.measure_peak(p)
        print(f"{p}: WMMA peak {peak[p]:.1f} TFLOP/s; tc_gemm 4096^3 "
              f"{fast_gemm.measure_gemm(4096, p):.1f} TFLOP/s")
    else:
        print(f"{p}: tensor cores off: {fast_gemm.why_not(p)}")
for name in ["resnet50", "mobilenet_v2", "bert_6l", "gpt2"]:
    model = wb.load(zoo.get(name))
    ref = wb.Session(model, "reference", precision="fp64")
    feeds = ref.random_feeds(seed=0)
    want = ref.run(feeds)
    for p in ("fp32", "tf32", "fp16"):
        sess = wb.Session(model, "cuda", precision=p, level=2)
        got = sess.run(feeds)
        errs = []
        for k, w in want.items():
            g = np.asarray(got[k], np.float64)
            scale = float(np.abs(w).max()) or 1.0
            errs.append((float(np.abs(g - w).max()), float(np.abs(g - w).max()) / scale))
        worst = max(errs, key=lambda e: e[1])
        print(f"{name:13} {p}: max |err| {worst[0]:.3e}, relative to max |y| {worst[1]:.3e}")
        if p != "fp32":
            prof = wb.profile(sess, repeat=5, warmup=1, save=False, progress=False)
            rows = fast_gemm.achieved(prof, peak)
            print(f"  {len(rows)} GEMM/Conv kernels: {rows['tflop_s'].sum():.1f} TFLOP/s summed, "
                  f"median {rows['tflop_s'].median():.2f}; top 5 by time:")
            print(rows.nlargest(5, "median_ms").to_string(index=False))
try:  # wb.compare per precision, where compare takes "cuda:<precision>" (docs/cuda.md)
    c = wb.compare(zoo.get("bert_6l"), ["cuda", "cuda:fp16", "cuda:tf32"], save=False,
                   progress=False)
    print(c.summary())
except Exception as e:
    print(f"wb.compare with precisions: {type(e).__name__}: {e}")
    c = wb.compare(zoo.get("bert_6l"), ["cuda"], save=False, progress=False)
    print(c.summary())
EOF
    say "precision exit $?"
}

stage_bench() {
    say "bench: benchmarks/latency_cuda.py (ours vs PyTorch, batch 1)"
    timeout 560 $PY benchmarks/latency_cuda.py --repeat 20 --json "$OUT/latency_cuda.json" \
        >"$OUT/bench.txt" 2>&1
    say "bench exit $?"
}

case "$STAGE" in
    tests) stage_tests ;;
    zoo) stage_zoo ;;
    precision) stage_precision ;;
    bench) stage_bench ;;
    all) stage_tests; stage_zoo; stage_precision; stage_bench ;;
    *) echo "usage: $0 tests|zoo|precision|bench|all" >&2; exit 2 ;;
esac
