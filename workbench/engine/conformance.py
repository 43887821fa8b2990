"""ONNX node conformance: the ONNX project's node test cases, run against one backend.

The onnx wheel no longer ships the test data, but it ships the generators
(`onnx.backend.test.case.node`): each `expect(...)` call builds a small model with its
inputs and expected outputs. We generate them once, run each through our own stack
(`load` -> `Session` -> the backend's kernels, with the reference fallback where a
backend lacks an op) and compare like onnx's own runner does
(`onnx.backend.test.runner.Runner.assert_similar_outputs`).

    report = run_conformance("x86")
    print(report.format())
    report.to_json("conformance-x86.json")

Every case ends in one status:
  pass         ran and matched (rtol/atol of the case: 1e-3 / 1e-7)
  mismatch     ran, but wrong numbers, shape, dtype or number of outputs
  unsupported  the backend has no kernel for an op and no fallback covers it
  error        anything else raised (the message is kept)
"""

from __future__ import annotations

import json
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

STATUSES = ("pass", "mismatch", "unsupported", "error")
SLOW_SECONDS = 2.0  # cases slower than this are listed in the report

# Cases our engine cannot pass by design, keyed by case name or by op. They still count
# as not passing; the report names the reason so nobody "fixes" them back.
KNOWN_DEVIATIONS: dict[str, str] = {
    "Bernoulli": (
        "random output: the expected values are one draw of numpy's global RNG when the case "
        "was generated (onnx marks these cases informational); no implementation can match"
    ),
}


@dataclass(frozen=True)
class Case:
    """One generated node test case."""

    name: str
    op: str  # the op under test (for *_expanded cases: the op whose function body it runs)
    ops: frozenset[str]  # op types of the model's top-level nodes
    model: onnx.ModelProto
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    rtol: float
    atol: float


@dataclass
class CaseResult:
    name: str
    op: str
    status: str
    message: str = ""
    seconds: float = 0.0
    native: bool | None = None  # on a non-reference backend: ran without fallback kernels


def deviation(result: CaseResult) -> str:
    """Why `result` is a known deviation, or ''."""
    return KNOWN_DEVIATIONS.get(result.name) or KNOWN_DEVIATIONS.get(result.op, "")


_CASES: list[Case] | None = None


def collect_cases(ops: list[str] | None = None) -> list[Case]:
    """The ONNX node test cases, optionally only those testing one of `ops`.

    A case tests the op of its model's node; an `*_expanded` case (the op's function
    body, several nodes) tests the op it was expanded from, so `ops=["Softmax"]` gives
    the Softmax cases and their expansions, not every case whose body holds a Softmax.
    The generators append to a list in onnx's module when first imported and mutate
    module globals, so they run once per process and the result is cached here.
    """
    global _CASES
    if _CASES is None:
        _CASES = _generate()
    if not ops:
        return list(_CASES)
    wanted = set(ops)
    return [c for c in _CASES if c.op in wanted]


def _generate() -> list[Case]:
    from onnx.backend.test.case import node as node_cases

    # The generators draw their inputs from numpy's global RNG: seed it so every run sees
    # the same cases (borderline tolerances cannot flap), and give the caller its state back.
    state = np.random.get_state()
    try:
        np.random.seed(0)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            raw = node_cases.collect_testcases(None)
    finally:
        np.random.set_state(state)
    # `expect` records the node of every non-expanded case under its name; an expanded
    # case is named after it (`<name>_expanded[_verN]`).
    tested = node_cases._existing_names
    cases = []
    for tc in raw:
        base = re.sub(r"_expanded(_ver\d+)?$", "", tc.name)
        node = tested.get(base)
        top = frozenset(n.op_type for n in tc.model.graph.node)
        op = node.op_type if node is not None else (min(top) if top else "?")
        (inputs, outputs) = tc.data_sets[0]
        cases.append(
            Case(
                tc.name,
                op,
                top,
                tc.model,
                tuple(inputs),
                tuple(outputs),
                tc.rtol,
                tc.atol,
            )
        )
    return cases


# -- converting and comparing ----------------------------------------------------------------


def to_value(x: Any) -> Any:
    """A case's input or output as the engine holds it: ndarray, list (sequence) or None."""
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, onnx.SequenceProto):
        return [to_value(e) for e in numpy_helper.to_list(x)]
    if isinstance(x, onnx.OptionalProto):
        return to_value(numpy_helper.to_optional(x))
    if isinstance(x, onnx.MapProto):
        return numpy_helper.to_dict(x)
    if isinstance(x, np.generic):
        return np.asarray(x)
    if isinstance(x, (list, tuple)):
        return [to_value(e) for e in x]
    return x


def compare(expected: Any, got: Any, rtol: float, atol: float, where: str = "output") -> str:
    """'' when `got` matches `expected` as onnx's runner judges it, else why not."""
    if expected is None or got is None:
        return "" if expected is None and got is None else f"{where}: {got!r} != {expected!r}"
    if isinstance(expected, (list, tuple)) or isinstance(got, (list, tuple)):
        if not isinstance(expected, (list, tuple)) or not isinstance(got, (list, tuple)):
            return f"{where}: a {type(got).__name__}, expected a {type(expected).__name__}"
        if len(got) != len(expected):
            return f"{where}: sequence of {len(got)} items, expected {len(expected)}"
        for j, (e, g) in enumerate(zip(expected, got, strict=False)):
            why = compare(e, g, rtol, atol, f"{where}[{j}]")
            if why:
                return why
        return ""
    expected, got = np.asarray(expected), np.asarray(got)
    if got.shape != expected.shape:
        return f"{where}: shape {list(got.shape)}, expected {list(expected.shape)}"
    if expected.dtype == object:  # strings: onnx's runner compares values, not dtypes
        return "" if np.array_equal(got, expected) else f"{where}: strings differ"
    if got.dtype != expected.dtype:
        return f"{where}: dtype {got.dtype}, expected {expected.dtype}"
    if got.dtype.name == "bfloat16":  # numpy cannot promote it: compare in float32
        rtol = max(rtol, 2**-6)  # two bfloat16 ULPs, as onnx's runner allows
        got, expected = got.astype(np.float32), expected.astype(np.float32)
    try:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    except AssertionError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(ln for ln in lines if ln.startswith(("Mismatched", "Max")))
        return f"{where}: values differ ({detail or 'not close'})"
    except TypeError as e:  # dtypes numpy cannot subtract (e.g. float8): compare exactly
        if not np.array_equal(got.view(np.uint8), expected.view(np.uint8)):
            return f"{where}: values differ ({e})"
    return ""


# -- running ---------------------------------------------------------------------------------


def _run_case(case: Case, backend: str, precision: str | None) -> CaseResult:
    from ..errors import BackendUnavailableError, UnsupportedOpError
    from .executor import Session
    from .onnx_io import load

    t0 = time.perf_counter()
    result = CaseResult(case.name, case.op, "pass")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            # the checker costs ~0.1 s for all cases together: keep it
            sess = Session(load(case.model), backend, precision=precision)
            got = _execute(sess, case)
        if backend != "reference":
            result.native = not _uses_fallback(sess.plan)
        expected = [to_value(o) for o in case.outputs]
        if sess.precision == "fp64":  # fp64 widens every float: compare in the case's dtypes
            got = [_narrow_like(g, e) for g, e in zip(got, expected, strict=False)]
        if len(got) != len(expected):
            result.status = "mismatch"
            result.message = f"{len(got)} outputs, expected {len(expected)}"
        else:
            for i, (e, g) in enumerate(zip(expected, got, strict=False)):
                why = compare(e, g, case.rtol, case.atol, f"output {i}")
                if why:
                    result.status, result.message = "mismatch", why
                    break
    except (UnsupportedOpError, BackendUnavailableError) as e:
        result.status, result.message = "unsupported", str(e)
    except Exception as e:  # one broken case must never stop the run
        result.status, result.message = "error", f"{type(e).__name__}: {e}"
    result.seconds = time.perf_counter() - t0
    return result


def _execute(sess: Any, case: Case) -> list[Any]:
    """Run the session on the case's inputs; outputs in the graph's order.

    Tensor-only cases go through `Session.run` as a user's call would. Sequences and
    optionals are placed into the plan's slots directly: `Session.run` checks and
    converts its feeds and results as tensors.
    """
    from .executor import execute
    from .plan import host_cast

    names = [vi.name for vi in case.model.graph.input]
    feeds = {n: to_value(x) for n, x in zip(names, case.inputs, strict=False)}
    outs = [vi.name for vi in case.model.graph.output]
    tensor_io = all(isinstance(v, np.ndarray) for v in feeds.values()) and all(
        vi.type.WhichOneof("value") == "tensor_type" for vi in case.model.graph.output
    )
    if tensor_io:
        result = sess.run(feeds)
        return [result[n] for n in outs]
    backend, precision = sess.backend, sess.precision

    def device(x: Any) -> Any:
        if isinstance(x, list):
            return [device(e) for e in x]
        return None if x is None else backend.to_device(host_cast(x, precision))

    def host(x: Any) -> Any:
        if isinstance(x, list):
            return [host(e) for e in x]
        return None if x is None else backend.to_host(x)

    env = sess.plan.new_env()
    for v, slot in sess.plan.inputs:
        if v.name in feeds:
            env[slot] = device(feeds[v.name])
    execute(sess.plan, env)
    backend.synchronize()
    by_name = {name: host(env[slot]) for name, slot in sess.plan.outputs}
    return [by_name[n] for n in outs]


def _uses_fallback(plan: Any) -> bool:
    """Whether any step, including those inside If/Loop subplans, ran on a fallback kernel."""
    for step in plan.steps:
        if step.kernel.fallback:
            return True
        run = step.run
        while not hasattr(run, "subplans") and hasattr(run, "__wrapped__"):
            run = run.__wrapped__  # e.g. under memory_guard.guard_kernel
        if any(_uses_fallback(p) for p in getattr(run, "subplans", ())):
            return True
    return False


def _narrow_like(got: Any, expected: Any) -> Any:
    if isinstance(got, list) and isinstance(expected, list):
        return [_narrow_like(g, e) for g, e in zip(got, expected, strict=False)]
    if (
        isinstance(got, np.ndarray)
        and isinstance(expected, np.ndarray)
        and got.dtype == np.float64
        and (expected.dtype.kind == "f" or expected.dtype.name.startswith(("bfloat", "float8")))
    ):
        return got.astype(expected.dtype)
    return got


# -- the report ------------------------------------------------------------------------------


@dataclass
class ConformanceReport:
    backend: str
    precision: str | None
    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, int]:
        counts = Counter(r.status for r in self.results)
        return {s: counts.get(s, 0) for s in STATUSES}

    def by_op(self) -> dict[str, dict[str, int]]:
        """op -> {status: count}, ops in name order."""
        table: dict[str, Counter] = {}
        for r in self.results:
            table.setdefault(r.op, Counter())[r.status] += 1
        return {op: {s: table[op].get(s, 0) for s in STATUSES} for op in sorted(table)}

    @property
    def passed(self) -> int:
        return self.totals()["pass"]

    @property
    def native_passed(self) -> int | None:
        """Passing cases that ran without any fallback kernel (None on `reference`)."""
        if self.backend == "reference":
            return None
        return sum(1 for r in self.results if r.status == "pass" and r.native)

    def deviations(self) -> list[CaseResult]:
        return [r for r in self.results if r.status != "pass" and deviation(r)]

    def slow(self) -> list[CaseResult]:
        return sorted(
            (r for r in self.results if r.seconds >= SLOW_SECONDS), key=lambda r: -r.seconds
        )

    def format(self, top: int = 15) -> str:
        """A readable summary: totals, the ops that fail most (one example each), deviations."""
        t = self.totals()
        n = len(self.results)
        prec = f" ({self.precision})" if self.precision else ""
        lines = [
            f"ONNX node conformance on {self.backend}{prec}: {n} cases in {self.seconds:.1f}s",
            "  " + ", ".join(f"{t[s]} {s}" for s in STATUSES),
        ]
        if self.native_passed is not None:
            lines.append(
                f"  {self.backend}: {t['pass']} pass, of which {self.native_passed} ran only "
                "native kernels"
            )
        failing = [(op, c) for op, c in self.by_op().items() if c["pass"] < sum(c.values())]
        failing.sort(key=lambda oc: (-(sum(oc[1].values()) - oc[1]["pass"]), oc[0]))
        if failing:
            lines.append("")
            lines.append(f"  {'op':<28}{'pass':>6}{'mism':>6}{'unsup':>6}{'error':>6}  example")
            for op, c in failing[:top]:
                ex = next(r for r in self.results if r.op == op and r.status != "pass")
                msg = _one_line(f"{ex.name}: {ex.message}", 90)
                lines.append(
                    f"  {op:<28}{c['pass']:>6}{c['mismatch']:>6}{c['unsupported']:>6}"
                    f"{c['error']:>6}  {msg}"
                )
            if len(failing) > top:
                lines.append(f"  ... and {len(failing) - top} more ops with failures")
        devs = self.deviations()
        if devs:
            lines.append("")
            lines.append("  known deviations (counted above as not passing):")
            for why in dict.fromkeys(deviation(r) for r in devs):
                names = [r.name for r in devs if deviation(r) == why]
                lines.append(f"    {_one_line(', '.join(names), 90)}")
                lines.append(f"      {why}")
        slow = self.slow()
        if slow:
            lines.append("")
            lines.append(
                "  slow cases: " + ", ".join(f"{r.name} ({r.seconds:.1f}s)" for r in slow[:5])
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "onnx_version": onnx.__version__,
            "seconds": round(self.seconds, 3),
            "totals": self.totals(),
            "native_passed": self.native_passed,
            "by_op": self.by_op(),
            "known_deviations": {r.name: deviation(r) for r in self.deviations()},
            "cases": [asdict(r) | {"seconds": round(r.seconds, 4)} for r in self.results],
        }

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def run_conformance(
    backend: str,
    *,
    ops: list[str] | None = None,
    json_path: str | Path | None = None,
    progress: bool = True,
    precision: str | None = None,
) -> ConformanceReport:
    """Run the ONNX node test cases (all, or those using `ops`) on `backend`."""
    from .backends import get_backend

    get_backend(backend)  # an unknown or unavailable backend fails here, once, clearly
    if progress and _CASES is None:
        print("generating the ONNX node test cases (~10 s, once per process)...", file=sys.stderr)
    cases = collect_cases(ops)
    report = ConformanceReport(backend, precision)
    t0 = time.perf_counter()
    for case in _progress(cases, progress, backend):
        report.results.append(_run_case(case, backend, precision))
    report.seconds = time.perf_counter() - t0
    if json_path is not None:
        report.to_json(json_path)
    return report


def _progress(cases: list[Case], enabled: bool, backend: str) -> Iterable[Case]:
    if not enabled:
        return cases
    from tqdm.auto import tqdm

    return tqdm(cases, desc=f"conformance {backend}", unit="case")


__all__ = [
    "Case",
    "CaseResult",
    "ConformanceReport",
    "collect_cases",
    "compare",
    "run_conformance",
]
