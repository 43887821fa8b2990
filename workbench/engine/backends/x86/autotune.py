"""Fast-Run-style algorithm selection for the x86 kernels (after MegEngine's Fast Run):
measure every candidate algorithm of a node on its real shapes, keep the fastest, and
remember the choice on disk so that the next process does not measure again.

A kernel factory hands `select` its candidates as *builders*: `build() -> fn`, where
building does the algorithm's compile-time work (packing the weight its way) and
`fn(*inputs, out)` computes into `out`. `select` measures each (a warm-up call, then up to
`REPS` timed calls within `BUDGET_S`, the median), measures the fastest again side by side
(`confirm`: this host's speed drifts between two candidates' turns), builds only the
winner for keeps, and returns it with a `Choice` that says what was measured.

Each timed call comes right after a parallel loop on numba's threads
(`_previous_kernel`), as a node's call in a model comes after the kernel before it: a
candidate on the Python pool then shares the cores with those threads' spinning.

A choice measured while the host runs slower than it can (`host_busy`: a fixed loop
timed before and after, against the least it ever took here) is used but not stored,
so the next compile measures again: these VMs have spells at half speed that do not
slow every candidate alike.

Time is not the only cost: a candidate may hold memory of its own (MKL's packed copy of a
weight, a transposed copy, Winograd's transformed weights), which it tells by a `held()`
attribute on its function (bytes resident). Among the candidates within `MEMORY_SLACK` of
the fastest time (closer than these machines' noise between runs), the one holding the
least memory wins: a packed copy must buy more speed than that to be kept. (MKL's pack
laid out for one row of A pads B to a multiple of 512 columns, plus 128, so a 384x384
weight's `mkl_packed_padded` is 1.7x the weight, where `mkl_packed` is about 1x.)

Measuring one node again and again keeps its weights in cache, which a model never does:
by the next run the other nodes' data has evicted them. A candidate that reads its own
weights in a way that cannot hide that read behind its arithmetic says how many bytes it
streams (a `streamed()` attribute), and selection takes their read at the memory
bandwidth measured once per process (`bandwidth`) as the least time it can take in a
model: its time is the larger of the two (a roofline; the read and the arithmetic
overlap). Winograd does: its a*a GEMMs each read one slice of the transformed weights
against few tiles (all of them charged: a thread's share let F(2, 3) in at 7x7 x 512,
where it then took 1.8 ms in the model). So do the GEMMs and direct kernels: all of
B once per part where their threads split A's rows (or the pixels: each part reads the
same lines), a share of B per thread where they split its columns or depth, so on few rows
the split that reads B once wins. ResNet-50's 7x7 512 -> 2048 1x1 convs tied hot (0.474
ms by rows, 0.475 by columns) and took 0.84-0.87 ms by rows in the model, 0.50-0.52 by
columns; its classifier (2048 -> 1000, one row) read all of B on OpenBLAS's one thread in
0.67 ms, charged as the two-thread kernel until shares were (0.44-0.52; onnxruntime 0.35).
Charging the read on top of the hot time instead of the larger of the two was tried
again with shares: MobileNetV2 1.08-1.11x onnxruntime -> 1.18-1.25, reverted. (Adding
the read's time, as this did first, overcharged Winograd once its phases ran on numba's
threads: ResNet-50's 256 channels at 14x14, F(2, 3) with 4
MiB, measured 0.55 ms hot + 0.31 charged against 1.0 for windows + MKL's packed GEMM, and
took 0.61-0.70 in the model, where windows + GEMM took 0.87-0.94. At 7x7 x 512, 16 MiB
of F(2, 3) cannot be read in the 1.4 ms it takes hot, and the floor keeps it out.)

Settings (environment, or `settings(...)` as a context manager):

- ``WORKBENCH_AUTOTUNE=0``: no measuring; every node takes its heuristic default.
- ``WORKBENCH_BUSY_RATIO=0``: every measured choice is stored, however slow the host
  was while measuring (default 3: see `host_busy`).
- ``WORKBENCH_MEMORY_SLACK=0``: the fastest candidate wins whatever memory it holds
  (default 0.03: 3% slower is as fast, when it holds at least `MEMORY_SAVING` less).
- ``WORKBENCH_ALGORITHM=winograd_f4`` or ``Conv=winograd_f2,MatMul=gemm_t``: force an
  algorithm (for teaching: watch what each costs); a node without that candidate keeps
  its own choice.

Choices are cached in `cache_dir("autotune")/<machine>.json`, keyed by op, shapes,
attributes, dtype and thread count; the machine is the CPU model and architecture.
Nodes cheaper than `MIN_FLOPS` are not worth measuring (noise would decide) and take the
default; so do nodes met after `PROCESS_BUDGET_S` of timed calls in this process. `stats`
counts measurements and cache hits (tests and the benchmark read it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .... import _threads
from ...._cache import cache_dir
from . import _mkl, _numba

REPS = 3  # timed calls per candidate at most (after one warm-up call)
BUDGET_S = 0.05  # measuring time per candidate at most, warm-up excluded
MIN_FLOPS = 4e6  # below this a node takes the heuristic default without measuring
# The candidates are measured one after another, each for a few milliseconds, and this
# host's speed changes by 1.5x from one moment to the next: a slow spell after the first
# candidate once chose BERT's plain GEMM (0.96 ms) over MKL's packed one (1.10 then, 0.62
# side by side), 1.4x slower in the model. So the candidates within FINAL_RATIO of the
# fastest are measured again in turns, FINAL_ROUNDS rounds, as many of them as hold at
# most FINAL_MIB together (they are built at once: GPT-2's logits pack 150 MiB each).
FINAL_RATIO = 1.5
FINAL_ROUNDS = 5
FINAL_MIB = 256.0
# measuring time of one process at most: past it, nodes not in the cache take their
# default (source "budget"), so a first compile of a big model on a busy machine stays
# bounded; WORKBENCH_AUTOTUNE_BUDGET (seconds) changes it. Only timed calls count: the
# warm-up calls compile the candidates' kernels on a machine whose numba cache is empty,
# and counting them spent the budget on ResNet-50's stem (every other conv took its
# default on a fresh machine).
PROCESS_BUDGET_S = float(os.environ.get("WORKBENCH_AUTOTUNE_BUDGET", "8"))
# a candidate this much slower than the fastest (relative) still counts as fast: the one
# holding the least memory among those wins
MEMORY_SLACK = float(os.environ.get("WORKBENCH_MEMORY_SLACK", "0.03"))
# ... when it holds at least this share less than the fastest. MKL's packs of one weight
# for a split by rows and by columns differ by a few KiB (4.01 and 4.02 MiB for ResNet-50's
# 512 -> 2048 1x1 conv at 7x7), which chose the split by rows, 0.81-0.85 ms in the model
# against 0.58 by columns (each thread then reads half the weight, not all of it). Not
# more: the leaner of two near-equals is often the one reading fewer bytes in the model
# too (at 10%, BERT's 768 -> 3072 took MKL's one-row pack, 9.38 MiB, over the split by
# columns, 9.02, 1% faster hot; BERT-base and GPT-2 ran 3-6% slower)
MEMORY_SAVING = 0.01

# A probe of the host this much slower than its best says the host is busy: what selection
# measures then is used but not stored (see `host_busy`); 0 turns the check off. (The
# probe took 17-21 us in this VM's usual spells, 8.5 at its fastest: the half-speed
# spells that slow every candidate alike are kept.)
BUSY_RATIO = float(os.environ.get("WORKBENCH_BUSY_RATIO", "3"))

# part of every cache key: bumped when the candidates' implementations change, so that
# choices measured on the old ones are not reused
CACHE_VERSION = 26

Builder = Callable[[], Callable[..., Any]]

_lock = threading.Lock()
_settings: dict[str, Any] = {"enabled": None, "force": None}
stats: dict[str, float] = {"measured": 0, "cache_hits": 0, "seconds": 0.0, "busy": 0}


@dataclass
class Choice:
    """What selection decided for one node and shape: the algorithm, how (measured;
    "measured, busy": not stored, see `host_busy`; cache, forced, disabled, small: below
    MIN_FLOPS, only: one candidate, budget: the process's measuring time was spent), the
    median milliseconds of every candidate measured (now or when the cache was filled),
    and the MiB each held of its own."""

    algorithm: str
    source: str
    candidates: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    cold: dict[str, float] = field(default_factory=dict)  # ms the streamed bytes' read takes


# -- settings -----------------------------------------------------------------------------------
def enabled() -> bool:
    if _settings["enabled"] is not None:
        return bool(_settings["enabled"])
    return os.environ.get("WORKBENCH_AUTOTUNE", "1").strip().lower() not in ("0", "false", "off")


def _parse_force(text: str) -> dict[str, str]:
    """ "alg" -> {"*": alg}; "Conv=a,MatMul=b" -> {"Conv": a, "MatMul": b}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        op, sep, alg = part.partition("=")
        out[op.strip() if sep else "*"] = (alg if sep else op).strip()
    return out


def forced(op: str) -> str | None:
    """The algorithm forced for `op` (or for every op), if any."""
    force = _settings["force"]
    if force is None:
        force = _parse_force(os.environ.get("WORKBENCH_ALGORITHM", ""))
    return force.get(op) or force.get("*")


@contextlib.contextmanager
def settings(
    enabled: bool | None = None, force: str | Mapping[str, str] | None = None
) -> Iterator[None]:
    """Within the block, selection is on or off (`enabled`) and/or `force`s an algorithm
    ("winograd_f2", or {"Conv": "im2col_gemm"}); plans compiled inside keep their choice."""
    old = dict(_settings)
    if enabled is not None:
        _settings["enabled"] = enabled
    if force is not None:
        _settings["force"] = _parse_force(force) if isinstance(force, str) else dict(force)
    try:
        yield
    finally:
        _settings.update(old)


# -- the disk cache -------------------------------------------------------------------------------
def machine_key() -> str:
    from ....profiler.machine import cpu_model  # numpy and the stdlib only

    slug = "".join(ch if ch.isalnum() else "-" for ch in cpu_model()).strip("-").lower()
    return f"{slug[:60]}-{platform.machine().lower()}"


def cache_path() -> Path:
    return cache_dir("autotune") / f"{machine_key()}.json"


_memory: dict[str, dict[str, Any]] = {}
_loaded: set[Path] = set()


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _entries() -> dict[str, Any]:
    path = cache_path()
    if path not in _loaded:
        _memory.update(_load(path))
        _loaded.add(path)
    return _memory


def _store(key: str, entry: dict[str, Any]) -> None:
    _memory[key] = entry
    path = cache_path()
    # (another process may have added entries since; those of other CACHE_VERSIONs go:
    # never read again, they made each store rewrite ~0.9 MB here for 85 live entries)
    merged = {k: v for k, v in _load(path).items() if _current(k)}
    merged[key] = entry
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(merged, indent=0, sort_keys=True))
        os.replace(tmp, path)  # atomic: concurrent writers each leave valid JSON


def _current(key: str) -> bool:
    """Whether a stored key is of this CACHE_VERSION (`cache_key` puts it sixth)."""
    try:
        parts = json.loads(key)
    except ValueError:
        return False
    return isinstance(parts, list) and len(parts) > 5 and parts[5] == CACHE_VERSION


def clear_memory() -> None:
    """Forget what was read from disk (tests; the files stay)."""
    _memory.clear()
    _loaded.clear()


def cache_key(op: str, shapes: Any, attrs: Any, dtype: str = "float32") -> str:
    # (MKL's presence too: its candidates join the contest when it is installed)
    from . import _native  # (imports kernels that import this module)

    # (and whether parts run on numba's threads: it changes which candidate is fastest)
    key = [op, shapes, attrs, dtype, _threads.current(), CACHE_VERSION, _mkl.available()]
    key.append(_native.available())
    # (and numba's vector width: 512-bit vectors speed the numba kernels, not MKL's)
    key.append(512 if _numba.VECTOR_FEATURES else "default")
    return json.dumps(key, sort_keys=True, default=str)


# -- measuring ----------------------------------------------------------------------------------
def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def reset_budget() -> None:
    """Give this process a fresh PROCESS_BUDGET_S of measuring (e.g. per model compiled)."""
    stats["seconds"] = 0.0


def measure(fn: Callable[..., Any], args: tuple, best: float = math.inf) -> float:
    """Median seconds of `fn(*args)`: one warm-up call (numba loads its code, BLAS wakes its
    threads, pages fault in), then up to REPS calls within BUDGET_S; a candidate already 3x
    slower than `best` on its first timed call is not timed further."""
    clock, before = time.perf_counter, _previous_kernel()
    fn(*args)
    times: list[float] = []
    stop = clock() + BUDGET_S
    for _ in range(REPS):
        before()
        t0 = clock()
        fn(*args)
        times.append(clock() - t0)
        if clock() > stop or times[0] > 3 * best:
            break
    stats["seconds"] += sum(times)
    return _median(times)


def select(
    op: str,
    key: str,
    builders: Mapping[str, Builder],
    default: str,
    make_args: Callable[[], tuple],
    flops: float = math.inf,
) -> tuple[str, Callable[..., Any], Choice]:
    """The algorithm for one node and shape among `builders` (name -> builder), its built
    function and the `Choice`. `make_args()` gives the arguments a candidate is timed on
    (inputs of the real shapes and an output array)."""
    names = list(builders)
    if default not in builders:
        raise ValueError(f"{op}: default algorithm {default!r} not among {names}")
    want = forced(op)
    if want in builders:
        return want, builders[want](), Choice(want, "forced")
    if len(names) == 1:
        return default, builders[default](), Choice(default, "only")
    if not enabled():
        return default, builders[default](), Choice(default, "disabled")
    if flops < MIN_FLOPS:
        return default, builders[default](), Choice(default, "small")
    with _lock:
        entry = _entries().get(key)
    if entry is not None and entry.get("algorithm") in builders:
        stats["cache_hits"] += 1
        alg = entry["algorithm"]
        ms, mib = dict(entry.get("ms", {})), dict(entry.get("mib", {}))
        return alg, builders[alg](), Choice(alg, "cache", ms, mib, dict(entry.get("cold", {})))
    if stats["seconds"] >= PROCESS_BUDGET_S:
        return default, builders[default](), Choice(default, "budget")
    busy = host_busy()
    args = make_args()
    ms: dict[str, float] = {}
    mib: dict[str, float] = {}
    cold: dict[str, float] = {}
    best = math.inf
    for name in names:
        fn = builders[name]()
        t = measure(fn, args, best)
        nbytes = streamed(fn)  # (after its first call: packs and products are made there)
        floor = nbytes / bandwidth() if nbytes else 0.0  # its weights' read, cold in a model
        t = max(t, floor)
        ms[name] = round(t * 1e3, 4)
        mib[name] = round(held(fn) / 2**20, 3)
        if floor:
            cold[name] = round(floor * 1e3, 4)
        best = min(best, t)
        del fn  # its packed weight goes now; the winner is built again below
    finalists = _finalists(ms, mib)
    if len(finalists) > 1:  # measured again side by side: the host's noise hits them alike
        built = {name: builders[name]() for name in finalists}
        ms.update(confirm(built, args, {n: cold.get(n, 0.0) / 1e3 for n in finalists}))
        del built
    choice = pick(ms, mib)
    stats["measured"] += 1
    if busy or host_busy():  # used now, measured again by the next compile
        stats["busy"] += 1
        return choice, builders[choice](), Choice(choice, "measured, busy", ms, mib, cold)
    entry = {"algorithm": choice, "ms": ms, "mib": mib, **({"cold": cold} if cold else {})}
    with _lock:
        _store(key, entry)
    return choice, builders[choice](), Choice(choice, "measured", ms, mib, cold)


def host_busy() -> bool:
    """Whether the host is slower now than it can be: a fixed vector loop (`_probe`) took
    more than BUSY_RATIO times the least it ever took on this machine (kept in the cache
    file with the choices; a faster time becomes the new least).

    Why: this VM's two vCPUs now and then run at half speed or worse (load not ours).
    Selection measures every candidate then, not alike: the GEMMs on numba's threads,
    whose parts meet at a spinning barrier, lost more than those on the Python pool.
    MobileNetV2 measured in such a spell kept OpenBLAS for 10 of its 1x1 convs (0.62
    against MKL's 0.79 ms for 196x64 by 64x384, usually 0.34 against 0.16), which in the
    model took 0.35-0.50 ms against MKL's 0.12-0.23: its bound kernels 12.4 ms a run
    against 10.7. A choice measured while the host is busy is used but not stored."""
    if BUSY_RATIO <= 0:
        return False
    seconds = _probe()
    if seconds is None:
        return False
    key = cache_key("Probe", [], {})
    with _lock:
        least = _entries().get(key, {}).get("seconds")
        if least is None or seconds < least:
            _store(key, {"seconds": seconds})
            least = seconds
    return seconds > BUSY_RATIO * least


def _probe() -> float | None:
    """Seconds of `_native.probe_seconds`; None where the numba kernels do not run here."""
    from . import _native  # (imports kernels that import this module)

    return _native.probe_seconds() if _native.available() else None


def _finalists(ms: Mapping[str, float], mib: Mapping[str, float]) -> list[str]:
    """The candidates `confirm` measures again: those within FINAL_RATIO of the fastest,
    fastest first, as long as together they hold at most FINAL_MIB (the fastest always)."""
    best = min(ms.values())
    names: list[str] = []
    total = 0.0
    for name in sorted(ms, key=ms.__getitem__):
        total += mib.get(name, 0.0)
        if ms[name] > best * FINAL_RATIO or (names and total > FINAL_MIB):
            break
        names.append(name)
    return names


def confirm(
    fns: Mapping[str, Callable[..., Any]], args: tuple, charge: Mapping[str, float]
) -> dict[str, float]:
    """Median ms of each of `fns` (at least its floor in `charge`, seconds) timed in turns:
    a warm-up call each, then rounds of one call each, `FINAL_ROUNDS` of them (at least 3
    within BUDGET_S per candidate)."""
    clock, before = time.perf_counter, _previous_kernel()
    for fn in fns.values():
        fn(*args)
    times: dict[str, list[float]] = {name: [] for name in fns}
    stop = clock() + BUDGET_S * len(fns)
    for r in range(FINAL_ROUNDS):
        for name, fn in fns.items():
            before()
            t0 = clock()
            fn(*args)
            times[name].append(clock() - t0)
        if r >= 2 and clock() > stop:
            break
    stats["seconds"] += sum(sum(t) for t in times.values())
    return {n: round(max(_median(t), charge.get(n, 0.0)) * 1e3, 4) for n, t in times.items()}


def _previous_kernel() -> Callable[[], None]:
    """What runs before each timed call, untimed: a parallel loop on numba's threads, as
    the kernel before this one in a model most often is (the convolutions, MKL's GEMMs
    and the fused kernels run their parts there). Its threads then spin for a while
    (_threads.GOMP_SPINCOUNT), and a candidate whose parts run on the kernels' Python pool
    (_parallel.py: the OpenBLAS GEMMs) shares the cores with them; timed alone, after its
    own calls, it did not. MobileNetV2's 576 -> 96 1x1 conv (14x14, 2 threads): the
    OpenBLAS GEMM 0.21-0.35 ms alone, 0.32-0.53 after the depthwise conv before it (a
    direct 1x1 conv on numba's threads, 384 -> 96 after its depthwise, 0.15-0.18 either
    way); selection had picked the GEMM (0.283 against the direct kernel's 0.304 ms
    alone), and in the model it took 0.55-0.63, the direct kernel 0.23-0.27."""
    from . import _native  # (imports kernels that import this module)

    if not _native.available() or _threads.current() < 2:
        return _nothing
    return _native.spin_up


def _nothing() -> None:
    pass


def held(fn: Callable[..., Any]) -> int:
    """Bytes of memory `fn` holds of its own (its `held()`, when it has one; else none)."""
    count = getattr(fn, "held", None)
    return int(count()) if callable(count) else 0


def streamed(fn: Callable[..., Any]) -> int:
    """Bytes `fn` reads from memory per call in a model that its own timing, hot in cache,
    does not show (its `streamed()`, when it has one; else none)."""
    count = getattr(fn, "streamed", None)
    return int(count()) if callable(count) else 0


_BANDWIDTH: list[float] = []


def bandwidth() -> float:
    """Bytes per second one thread reads from memory: the best of three sums over 64 MiB
    (several times any cache here), measured once per process when a candidate first
    streams bytes (a cache hit measures nothing)."""
    if not _BANDWIDTH:
        import numpy as np

        a = np.ones(1 << 24, np.float32)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            np.add.reduce(a)
            times.append(time.perf_counter() - t0)
        _BANDWIDTH.append(a.nbytes / max(min(times), 1e-6))
    return _BANDWIDTH[0]


def pick(ms: Mapping[str, float], mib: Mapping[str, float]) -> str:
    """The winner: the fastest median, unless a candidate within MEMORY_SLACK of it holds
    at least MEMORY_SAVING less memory (then the least memory held among those, the faster
    of equals)."""
    fastest = min(ms, key=lambda n: (ms[n], mib.get(n, 0.0)))
    near = [n for n in ms if ms[n] <= ms[fastest] * (1.0 + MEMORY_SLACK)]
    leanest = min(near, key=lambda n: (mib.get(n, 0.0), ms[n]))
    saved = mib.get(fastest, 0.0) - mib.get(leanest, 0.0)
    return leanest if saved >= MEMORY_SAVING * mib.get(fastest, 0.0) and saved > 0 else fastest


def announce(run: Any, choice: Choice, suffix: str = "") -> None:
    """Record `choice` on a kernel function for whoever shows it: `run.algorithm` (plus
    `suffix`, e.g. "+epilogue" for a fused kernel), `run.candidates` (name -> median ms),
    `run.choice`; then tell `run.listeners` (the backend updates the plan's Kernel)."""
    run.algorithm = choice.algorithm + suffix
    run.candidates = dict(choice.candidates)
    run.candidates_mib = dict(choice.memory)
    run.candidates_cold = dict(choice.cold)
    run.choice = choice
    for listener in getattr(run, "listeners", ()):
        listener(choice)


def relay(inner: Any, outer: Any, suffix: str) -> None:
    """Make `outer` (a fused kernel built around `inner`) announce `inner`'s choices."""
    outer.listeners = []
    inner.listeners.append(lambda ch: announce(outer, ch, suffix))
    if getattr(inner, "choice", None) is not None:
        announce(outer, inner.choice, suffix)


__all__ = [
    "Choice",
    "announce",
    "bandwidth",
    "cache_key",
    "cache_path",
    "enabled",
    "forced",
    "host_busy",
    "measure",
    "relay",
    "reset_budget",
    "select",
    "settings",
    "stats",
    "streamed",
]
