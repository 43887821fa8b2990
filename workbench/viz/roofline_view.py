"""The roofline chart: each kernel placed by arithmetic intensity and achieved GFLOP/s, under
the roof of the machine it ran on.

    wb.viz.roofline(prof)

Both numbers of a kernel come from its row of `Profile.kernels`: intensity = FLOPs / bytes
moved (every input, weights included, plus every output), achieved = FLOPs / median time.
The roof is min(peak GFLOP/s, bandwidth x intensity) with the two machine numbers that
`profiler/machine.py` measured (a float32 matmul through numpy's BLAS, and an array copy
counted as STREAM counts it): the chart says so, since they are not a spec sheet's numbers.
Kernels without a FLOP count, or that do no arithmetic (Reshape, Gather ...), cannot be
placed on log axes and are counted in a note.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

from ._charts_common import (
    as_profiles,
    describe_profiles,
    document,
    empty,
    lane_labels,
    new_figure,
    note,
    short,
)
from ._style import backend_color, fmt_ms, op_color

if TYPE_CHECKING:
    from ..profiler.profile import Profile

_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star")

# where the machine numbers come from, unless the profile's machine says otherwise
_PEAK_SOURCE = "float32 matmul through numpy's BLAS, best of 5"
_BW_SOURCE = "array copy, read + write bytes, best of 5"


def placeable(p: Profile) -> np.ndarray:
    """Which kernels the roofline can place: known FLOPs > 0, bytes > 0, time > 0."""
    k = p.kernels
    flops = k["flops"].to_numpy(np.float64)
    ok = np.isfinite(flops) & (flops > 0)
    return ok & (k["bytes"].to_numpy() > 0) & (k["median_ms"].to_numpy() > 0)


def _roof(m: dict[str, Any]) -> tuple[float, float] | None:
    peak, bw = m.get("peak_gflops"), m.get("mem_gbps")
    return (float(peak), float(bw)) if peak and bw else None


@document("profile", "height")
def roofline(profiles: Profile | Iterable[Profile], height: int | None = None) -> go.Figure:
    """Kernels by arithmetic intensity (FLOP/byte) against achieved GFLOP/s, log-log, under
    the roofline of the machine each profile ran on (its `machine` numbers: measured peak
    GFLOP/s and memory bandwidth, labelled with how they were measured). Marker area
    follows the kernel's share of the time; hover names node, op, time and the share of
    the roof it reached. With one profile the colours are op types; with several, each
    profile has its backend's colour and its own marker symbol.
    """
    ps = as_profiles(profiles, "roofline")
    labels = lane_labels(ps)
    fig = new_figure(f"Roofline: {describe_profiles(ps)}", height)
    notes: list[str] = []
    xs_all: list[float] = []
    ys_all: list[float] = []
    for j, (p, lab) in enumerate(zip(ps, labels)):
        k = p.kernels
        ok = placeable(p)
        unknown = k.loc[k["flops"].isna(), "node"].tolist()
        no_math = int((k["flops"] == 0).sum())
        if unknown:
            shown = ", ".join(short(n, 40) for n in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            notes.append(f"{lab}: {len(unknown)} kernels with unknown FLOPs: {shown}{more}")
        if no_math:
            notes.append(f"{lab}: {no_math} kernels do no arithmetic (0 FLOPs: data movement)")
        rest = int((~ok).sum()) - len(unknown) - no_math
        if rest:
            notes.append(f"{lab}: {rest} kernels with no bytes or no measurable time")
        if not ok.any():
            continue
        r = k[ok]
        x = (r["flops"] / r["bytes"]).to_numpy(np.float64)
        y = (r["flops"] / (r["median_ms"] / 1e3) / 1e9).to_numpy(np.float64)
        xs_all += x.tolist()
        ys_all += y.tolist()
        roof = _roof(p.machine)
        share = y / np.minimum(roof[0], x * roof[1]) * 100 if roof else np.full(len(x), np.nan)
        size = 7 + 28 * np.sqrt(r["median_ms"].to_numpy() / max(p.kernels_ms, 1e-12))
        custom = np.stack(
            [
                r["node"].to_numpy(object),
                r["op"].to_numpy(object),
                [fmt_ms(t) for t in r["median_ms"]],
                [f"{s:.1f}%" if math.isfinite(s) else "?" for s in share],
                [lab] * len(r),
            ],
            axis=-1,
        )
        hover = (
            "%{customdata[0]}<br>%{customdata[1]} on %{customdata[4]}: %{customdata[2]}<br>"
            "%{x:.3g} FLOP/byte, %{y:.3g} GFLOP/s (%{customdata[3]} of the roof)<extra></extra>"
        )
        if len(ps) == 1:  # one profile: colour by op type, one legend entry per op
            ops = r["op"].to_numpy(object)
            for op in dict.fromkeys(ops):
                m = ops == op
                fig.add_scatter(
                    name=op,
                    x=x[m],
                    y=y[m],
                    mode="markers",
                    marker={"color": op_color(op), "size": size[m], "line_width": 0.5},
                    customdata=custom[m],
                    hovertemplate=hover,
                )
        else:
            fig.add_scatter(
                name=lab,
                x=x,
                y=y,
                mode="markers",
                marker={
                    "color": backend_color(p.backend),
                    "symbol": _SYMBOLS[j % len(_SYMBOLS)],
                    "size": size,
                    "line_width": 0.5,
                },
                customdata=custom,
                hovertemplate=hover,
            )
    if not xs_all:
        empty(fig, "no kernel has known FLOPs, bytes and time: nothing to place")
        return note(fig, "<br>".join(notes))

    lo = min(xs_all) / 4
    hi = max(xs_all) * 4
    roofs = list(dict.fromkeys(r for r in (_roof(p.machine) for p in ps) if r))
    for peak, bw in roofs:
        ridge = peak / bw
        lo, hi = min(lo, ridge / 4), max(hi, ridge * 4)
    top = max([*ys_all, *(peak for peak, _ in roofs)])
    bottom = min(ys_all) / 4
    for i, (peak, bw) in enumerate(roofs):
        m = next(p.machine for p in ps if _roof(p.machine) == (peak, bw))
        ridge = peak / bw
        gx = np.array([lo, ridge, hi])
        fig.add_scatter(
            name="roof" if len(roofs) == 1 else f"roof {i + 1}",
            x=gx,
            y=np.minimum(peak, gx * bw),
            mode="lines",
            line={"color": "#222", "width": 2},
            hovertemplate="roof: %{y:.3g} GFLOP/s at %{x:.3g} FLOP/byte<extra></extra>",
        )
        cpu = m.get("cpu", "this machine")
        when = f", measured {m['measured_at'][:10]}" if m.get("measured_at") else ""
        fig.add_annotation(
            x=1,  # the right edge: at x=hi rounding can put it just off the axis, hidden
            xref="x domain",
            y=math.log10(peak),
            xanchor="right",
            yanchor="bottom",
            showarrow=False,
            text=f"peak {peak:.3g} GFLOP/s ({m.get('peak_source', _PEAK_SOURCE)}{when})",
            font={"size": 11},
            name="peak",
        )
        # on the sloped part of the roof, where the y range shows it
        at = min(max(math.sqrt(lo * ridge), bottom * 2 / bw), ridge)
        fig.add_annotation(
            x=math.log10(at),
            y=math.log10(at * bw),
            xanchor="left",
            yanchor="bottom",
            showarrow=False,
            text=f"bandwidth {bw:.3g} GB/s ({m.get('bandwidth_source', _BW_SOURCE)})",
            font={"size": 11},
            name="bandwidth",
        )
        notes.insert(0, f"roof: measured on {cpu} with {m.get('threads', '?')} threads in use")
    if not roofs:
        notes.insert(0, "no roof: the profile's machine has no measured peak and bandwidth")
    fig.update_xaxes(type="log", title_text="arithmetic intensity (FLOP / byte moved)")
    fig.update_yaxes(
        type="log",
        title_text="achieved GFLOP/s",
        range=[math.log10(bottom), math.log10(top * 3)],
    )
    fig.update_layout(hovermode="closest", height=height or 520)
    note(fig, "<br>".join(notes))
    return fig


__all__ = ["placeable", "roofline"]
