"""`workbench arm setup`: what an x86 host needs to run the aarch64 worker under QEMU.

Everything lands in `cache_dir("arm")` and is built once; a second call checks and returns:

- `qemu-aarch64-static` (Debian's `qemu-user-static`): checked, never installed here
  (that needs root); the message says which command installs it.
- `sysroot/`: Debian's arm64 `python3.11` and the libraries it loads, fetched with
  `apt-get download -oAPT::Architecture=arm64` against a private apt state (no root, no
  `dpkg --add-architecture`, the system's apt lists untouched), unpacked with `dpkg -x`.
- `site/`: aarch64 wheels of numpy, numba, llvmlite and onnx (+ their dependencies),
  pinned to this host's versions, `pip download --platform manylinux_2_28_aarch64
  --only-binary=:all:`, unpacked (a wheel is a zip; nothing of theirs runs here).
- `setup.json`: what was built, from which versions; a version change rebuilds `site/`.

The numba cache of the aarch64 worker is `cache_dir("numba-aarch64")`, apart from the
host's: numba keys its cache by source file, not by architecture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from .._cache import cache_dir
from ..errors import WorkbenchError

QEMU = "qemu-aarch64-static"
PYTHON = "usr/bin/python3.11"
# Debian bookworm arm64 packages: python3.11 and what its interpreter and stdlib load
DEBS = (
    "python3.11",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "gcc-12-base",
    "libbz2-1.0",
    "libcrypt1",
    "libexpat1",
    "libffi8",
    "liblzma5",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libsqlite3-0",
    "libssl3",
    "libuuid1",
    "zlib1g",
    "libnsl2",
    "libtirpc3",
    "libdb5.3",
    "libgdbm6",
)
# what the worker imports: the engine needs numpy, numba (llvmlite), onnx (protobuf,
# ml_dtypes, typing_extensions come as onnx's dependencies); no pandas, no plotly
WHEELS = ("numpy", "numba", "llvmlite", "onnx")
PLATFORM = "manylinux_2_28_aarch64"


def root() -> Path:
    return cache_dir("arm")


def sysroot() -> Path:
    return root() / "sysroot"


def site() -> Path:
    return root() / "site"


def numba_cache() -> Path:
    return cache_dir("numba-aarch64")


def qemu_path() -> str | None:
    return os.environ.get("WORKBENCH_QEMU") or shutil.which(QEMU)


def pinned() -> dict[str, str]:
    """The host's versions of the wheels the worker needs (the worker must match them)."""
    out = {}
    for name in WHEELS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise WorkbenchError(
                f"{name} is not installed here: nothing to pin the worker to"
            ) from None
    out["python"] = f"{sys.version_info.major}.{sys.version_info.minor}"
    return out


def _stamp() -> dict[str, Any]:
    path = root() / "setup.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def status() -> tuple[bool, str]:
    """(ready, why not): cheap checks only (files present, versions recorded)."""
    if qemu_path() is None:
        return False, (
            f"x86 host without {QEMU}: install Debian's qemu-user-static "
            "(apt-get install qemu-user-static), then run `workbench arm setup`"
        )
    stamp = _stamp()
    if not (sysroot() / PYTHON).exists() or not stamp.get("site"):
        return False, "the aarch64 worker is not set up: run `workbench arm setup`"
    try:
        want = pinned()
    except WorkbenchError as e:
        return False, str(e)
    if stamp.get("versions") != want:
        return False, (
            f"the aarch64 worker was set up for {stamp.get('versions')}, this host has {want}: "
            "run `workbench arm setup` again"
        )
    return True, ""


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise WorkbenchError(f"{what} failed: {e}") from None
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-8:])
        raise WorkbenchError(f"{what} failed (exit {res.returncode}): {' '.join(cmd)}\n{tail}")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _build_sysroot(log) -> int:
    """Download the arm64 .debs with a private apt state and unpack them; bytes fetched."""
    work = root() / "apt"
    for d in ("state/lists/partial", "cache/archives/partial", "debs"):
        (work / d).mkdir(parents=True, exist_ok=True)
    opts = [
        "-oAPT::Architecture=arm64",
        "-oAPT::Architectures=arm64",
        f"-oDir::State={work / 'state'}",
        "-oDir::State::status=/dev/null",
        f"-oDir::Cache={work / 'cache'}",
        "-oDebug::NoLocking=1",  # a private state: the system's dpkg lock is not ours
    ]
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise WorkbenchError("apt-get and dpkg are needed to build the arm64 sysroot (Debian)")
    log("  apt-get update (arm64 package lists, private state)")
    _run(["apt-get", *opts, "update"], "apt-get update for arm64")
    debs = work / "debs"
    for old in debs.glob("*.deb"):
        old.unlink()
    log(f"  apt-get download {len(DEBS)} arm64 packages")
    _run(["apt-get", *opts, "download", *DEBS], "apt-get download (arm64)", cwd=debs)
    tmp = root() / ".sysroot-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    fetched = 0
    for deb in sorted(debs.glob("*.deb")):
        fetched += deb.stat().st_size
        _run(["dpkg", "-x", str(deb), str(tmp)], f"dpkg -x {deb.name}")
    if not (tmp / PYTHON).exists():
        raise WorkbenchError(f"the unpacked packages have no {PYTHON}")
    shutil.rmtree(sysroot(), ignore_errors=True)
    os.rename(tmp, sysroot())  # whole or absent
    shutil.rmtree(debs, ignore_errors=True)
    return fetched


def _build_site(versions: dict[str, str], log) -> int:
    """pip download the pinned aarch64 wheels and unpack them into site/; bytes fetched."""
    wheels = root() / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    reqs = [f"{n}=={versions[n]}" for n in WHEELS]
    py = versions["python"].replace(".", "")
    log(f"  pip download {' '.join(reqs)} for {PLATFORM}")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "-d",
            str(wheels),
            "--platform",
            PLATFORM,
            "--only-binary=:all:",
            "--python-version",
            versions["python"],
            "--implementation",
            "cp",
            "--abi",
            f"cp{py}",
            *reqs,
        ],
        "pip download (aarch64 wheels)",
    )
    tmp = root() / ".site-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    fetched = 0
    for whl in sorted(wheels.glob("*.whl")):
        fetched += whl.stat().st_size
        with zipfile.ZipFile(whl) as z:
            z.extractall(tmp)
    # byte-compile here (a .pyc is the same on every architecture): saves the emulated
    # interpreter from compiling numpy's and numba's sources on its first start
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(tmp)], check=False)
    shutil.rmtree(site(), ignore_errors=True)
    os.rename(tmp, site())
    shutil.rmtree(wheels, ignore_errors=True)
    return fetched


def setup(force: bool = False, log=print) -> dict[str, Any]:
    """Build what is missing; returns {"built": [...], "download_bytes", "seconds", ...}."""
    t0 = time.perf_counter()
    versions = pinned()
    qemu = qemu_path()
    if qemu is None:
        raise WorkbenchError(
            f"{QEMU} not found: install it with `apt-get install qemu-user-static` (Debian/"
            "Ubuntu, as root), or set WORKBENCH_QEMU to its path"
        )
    stamp = {} if force else _stamp()
    built, fetched = [], 0
    if force or not (sysroot() / PYTHON).exists() or not stamp.get("sysroot"):
        log("building the arm64 sysroot (Debian python3.11)")
        fetched += _build_sysroot(log)
        stamp["sysroot"] = {"packages": list(DEBS)}
        built.append("sysroot")
    if force or not stamp.get("site") or stamp.get("versions") != versions:
        log("fetching the aarch64 wheels")
        fetched += _build_site(versions, log)
        stamp["site"] = {"wheels": list(WHEELS), "platform": PLATFORM}
        built.append("site")
    stamp["versions"] = versions
    stamp["qemu"] = qemu
    (root() / "setup.json").write_text(json.dumps(stamp, indent=1))
    numba_cache()
    return {
        "built": built,
        "download_bytes": fetched,
        "seconds": time.perf_counter() - t0,
        "root": str(root()),
        "sysroot_bytes": _size(sysroot()),
        "site_bytes": _size(site()),
        "versions": versions,
        "qemu": qemu,
    }


__all__ = ["numba_cache", "pinned", "qemu_path", "setup", "site", "status", "sysroot"]
