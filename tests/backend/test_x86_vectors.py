"""numba's vector width for the x86 kernels (backends/x86/_numba.py `_wide_vectors`): on an
AVX-512 host our kernels are compiled with 512-bit vectors unless the user chose numba's
CPU settings or WORKBENCH_VECTOR_BITS=256; the emulated arm worker never inherits the
host's CPU features. Each check runs in a fresh process: the setting must precede numba's
first compile."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.remote import client, setup

AVX512 = False
if platform.machine().lower() in ("x86_64", "amd64"):
    import llvmlite.binding as ll

    AVX512 = bool(ll.get_host_cpu_features().get("avx512f"))
needs_avx512 = pytest.mark.skipif(not AVX512, reason="needs an x86-64 CPU with AVX-512")

# compiles a multiply-add loop afresh (no cache) and reports the registers its code uses
PROBE = """
import json, numpy as np, numba
from workbench.engine.backends.x86 import _numba
@numba.njit(cache=False)
def axpy(a, x, y):
    for i in range(x.size):
        y[i] += a * x[i]
x = np.ones(1000, np.float32)
axpy(np.float32(2), x, x.copy())
asm = next(iter(axpy.inspect_asm().values()))
print(json.dumps({"set": _numba.VECTOR_FEATURES, "config": numba.config.CPU_FEATURES,
                  "zmm": "zmm" in asm, "ymm": "ymm" in asm}))
"""


def probe(tmp_path: Path, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU", "WORKBENCH_V"))}
    base["NUMBA_CACHE_DIR"] = str(tmp_path / "numba")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_avx512
def test_wide_vectors_by_default(tmp_path):
    got = probe(tmp_path)
    assert got["set"].endswith(",-prefer-256-bit") and "+avx512f" in got["set"]
    assert got["config"] == got["set"]
    assert got["zmm"], "the kernels' loops should use 512-bit registers"


@needs_avx512
def test_256_bits_on_request(tmp_path):
    got = probe(tmp_path, WORKBENCH_VECTOR_BITS="256")
    assert got["set"] == "" and got["config"] is None
    assert got["ymm"] and not got["zmm"]  # (LLVM's own preference on this CPU)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
def test_user_settings_left_alone(tmp_path):
    got = probe(tmp_path, NUMBA_CPU_FEATURES="+sse2,+sse4.1")
    assert got["set"] == "" and got["config"] == "+sse2,+sse4.1"


def test_emulated_arm_worker_drops_host_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx512f,-prefer-256-bit")
    monkeypatch.setenv("NUMBA_CPU_NAME", "cascadelake")
    monkeypatch.setattr(client, "native_host", lambda: False)
    monkeypatch.setattr(setup, "status", lambda: (True, ""))
    monkeypatch.setattr(setup, "sysroot", lambda: tmp_path)
    monkeypatch.setattr(setup, "site", lambda: tmp_path / "site")
    monkeypatch.setattr(setup, "numba_cache", lambda: tmp_path / "cache")
    monkeypatch.setattr(setup, "qemu_path", lambda: "qemu-aarch64-static")
    argv, env, emulated = client.worker_command()
    assert emulated and argv[0] == "qemu-aarch64-static"
    assert "NUMBA_CPU_FEATURES" not in env and "NUMBA_CPU_NAME" not in env


KEY = """
from workbench.engine.backends.x86 import autotune
print(autotune.cache_key("MatMul", [128, 768, 768], {}))
"""


@needs_avx512
def test_a_child_process_keeps_its_parents_setting_and_cache_keys(tmp_path):
    """A workbench process started by one (the benchmark's memory processes) inherits its
    NUMBA_CPU_FEATURES: the same 512-bit code, so the same autotune keys, or it measures
    again what its parent chose (GPT-2's logits packed twice over: +500 MiB peak)."""
    parent = probe(tmp_path)
    assert parent["set"].endswith(",-prefer-256-bit")
    child = probe(tmp_path, NUMBA_CPU_FEATURES=parent["set"])
    assert child["set"] == parent["set"] and child["zmm"]

    def key(**env: str) -> str:
        base = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
        out = subprocess.run(
            [sys.executable, "-c", KEY], env={**base, **env}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    assert key(NUMBA_CPU_FEATURES=parent["set"]) == key()
