"""Chrome trace-event JSON from a Profile, for Perfetto (ui.perfetto.dev) and chrome://tracing.

One "X" (complete) event per kernel per timed run, placed at its measured start with its
measured duration (microseconds from the first run's start). Each backend is a track of its
own: one process for the profile, one thread per backend ("x86", "reference" for the
fallbacks, ...), named by "M" metadata events. A kernel's `args` hold its node, op,
algorithm, shapes, FLOPs and the original ONNX nodes it stands for.

Format: https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .profile import Profile

PID = 1


def chrome_trace_events(prof: Profile) -> list[dict[str, Any]]:
    """The trace events of `prof`: metadata first, then kernels in time order."""
    k = prof.kernels
    backends = list(dict.fromkeys([prof.backend, *k["backend"]]))  # the profiled one first
    tid = {b: i + 1 for i, b in enumerate(backends)}
    events: list[dict[str, Any]] = [
        {
            "name": "process_name",
            "ph": "M",
            "pid": PID,
            "tid": 0,
            "args": {"name": f"{prof.model} on {prof.backend}"},
        }
    ]
    for b, t in tid.items():
        events.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": t, "args": {"name": b}})
        events.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "pid": PID,
                "tid": t,
                "args": {"sort_index": t},
            }
        )
    origin = prof.bounds[0, 0] if len(prof.bounds) else 0.0
    rows = k.to_dict("records")
    for r, run in enumerate(prof.stamps):
        starts = (run[:-1] - origin) * 1e6
        durs = (run[1:] - run[:-1]) * 1e6
        for row, ts, dur in zip(rows, starts, durs):
            flops = row["flops"]
            events.append(
                {
                    "name": row["op"],
                    "cat": "kernel",
                    "ph": "X",
                    "ts": round(float(ts), 3),
                    "dur": round(float(dur), 3),
                    "pid": PID,
                    "tid": tid[row["backend"]],
                    "args": {
                        "run": r,
                        "kernel": int(row["kernel"]),
                        "node": row["node"],
                        "op": row["op"],
                        "algorithm": row["algorithm"],
                        "fallback": bool(row["fallback"]),
                        "inputs": row["in_shapes"],
                        "outputs": row["out_shapes"],
                        "origin": row["origin"],
                        "flops": None if math.isnan(flops) else flops,
                    },
                }
            )
    return events


def write_chrome_trace(prof: Profile, path: str | os.PathLike) -> Path:
    """Write the trace of `prof` to `path` (JSON object format); returns the path."""
    path = Path(path)
    doc = {
        "traceEvents": chrome_trace_events(prof),
        "displayTimeUnit": "ms",
        "otherData": {
            "model": prof.model,
            "backend": prof.backend,
            "repeat": len(prof.runs),
            "run_folder": str(prof.path) if prof.path else None,
        },
    }
    path.write_text(json.dumps(doc))
    return path


__all__ = ["chrome_trace_events", "write_chrome_trace"]
