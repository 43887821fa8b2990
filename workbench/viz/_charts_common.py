"""Shared machinery of the chart builders: inputs, labels, titles, empty states, parameter docs.

The charts (timing.py, memory_view.py, roofline_view.py, accuracy.py) are flat functions in
the manner of plotly express; what they have in common lives here once: turning "a Profile
or a list of Profiles" into a list, naming each run the same way in every figure (backend,
with "(emulated timing)" where the timings come from an emulator), titles that say which
model, backends and precisions a figure shows, and an honest empty state (a figure that
says why it has nothing to draw, instead of an exception or a blank canvas).

Parameter documentation is written once in `PARAMS` and appended to each chart's docstring
by `@document(...)`, as plotly express builds its docstrings from one table.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import plotly.graph_objects as go

from ..errors import WorkbenchError

if TYPE_CHECKING:
    from ..profiler.compare import Comparison
    from ..profiler.profile import Profile

TEMPLATE = "plotly_white"
EMULATED = "(emulated timing)"

# -- parameter docs, written once -------------------------------------------------------------

PARAMS: dict[str, str] = {
    "profiles": (
        "A `Profile` (`wb.profile(...)`) or a list of them, typically one per backend; "
        "each becomes one series (one lane, one bar colour) labelled by its backend."
    ),
    "profile": "A `Profile` (`wb.profile(...)`) or a list of them.",
    "comparison": "A `Comparison` (`wb.compare(...)`).",
    "backend": (
        "The tested backend to draw (one of `comparison.backends`); None: every backend "
        "of the comparison where the chart can show several, else the first."
    ),
    "kind": (
        '"local" (each kernel\'s own error, its inputs taken from the reference) or '
        '"accumulated" (the tested run\'s value, with everything it inherited upstream).'
    ),
    "by": '"op" (summed per op type) or "node" (one entry per kernel of the plan).',
    "top": 'At most this many nodes or ops are drawn; the rest are summed into "other".',
    "height": "Figure height in pixels (None: sized to the content).",
}


F = TypeVar("F", bound=Callable[..., Any])


def document(*names: str) -> Callable[[F], F]:
    """Append the shared docs of parameters `names` to the function's docstring."""

    def wrap(fn: F) -> F:
        # indented as the docstring's body is, so inspect.getdoc dedents both alike
        lines = ["", "", "    Parameters", "    ----------"]
        for n in names:
            lines += [
                f"    {n}",
                *textwrap.wrap(PARAMS[n], 88, initial_indent=" " * 8, subsequent_indent=" " * 8),
            ]
        fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n".join(lines) + "\n"
        return fn

    return wrap


# -- inputs -----------------------------------------------------------------------------------


def as_profiles(obj: Profile | Iterable[Profile], what: str) -> list[Profile]:
    """One Profile or an iterable of them, as a list; anything else is a clear error."""
    from ..profiler.profile import Profile

    items = [obj] if isinstance(obj, Profile) else list(obj) if _iterable(obj) else [obj]
    bad = [type(p).__name__ for p in items if not isinstance(p, Profile)]
    if bad:
        raise WorkbenchError(
            f"wb.viz.{what} takes a Profile or a list of Profiles (wb.profile(...)), "
            f"got {', '.join(sorted(set(bad)))}"
        )
    return items


def _iterable(obj: Any) -> bool:
    return isinstance(obj, (list, tuple)) or (
        hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, dict))
    )


def as_comparison(obj: Any, what: str) -> Comparison:
    from ..profiler.compare import Comparison

    if not isinstance(obj, Comparison):
        raise WorkbenchError(
            f"wb.viz.{what} takes a Comparison (wb.compare(...)), got {type(obj).__name__}"
        )
    return obj


def pick_backend(comparison: Comparison, backend: str | None) -> str:
    """`backend`, checked against the comparison's tested backends; None: the first."""
    if backend is None:
        return comparison.backends[0]
    if backend not in comparison.backends:
        raise WorkbenchError(
            f"backend {backend!r} is not in this comparison; it has: "
            + ", ".join(comparison.backends)
        )
    return backend


def error_kind(kind: str) -> str:
    """'local' / 'accumulated' (or the column prefix 'acc') -> the column prefix."""
    k = {"local": "local", "accumulated": "acc", "acc": "acc"}.get(kind)
    if k is None:
        raise WorkbenchError(f'kind must be "local" or "accumulated", got {kind!r}')
    return k


# -- labels and titles --------------------------------------------------------------------------


def is_emulated(p: Profile) -> bool:
    """Whether a profile's timings come from an emulator (the ARM backend under QEMU)."""
    return bool(p.meta.get("emulated"))


def lane_labels(profiles: list[Profile]) -> list[str]:
    """One distinct label per profile: its backend, then what tells equal backends apart
    (opt level, precision, a counter), and "(emulated timing)" where that applies."""
    base = [p.backend or "?" for p in profiles]
    labels = list(base)
    for key in ("level", "precision"):
        dup = {b for b in labels if labels.count(b) > 1}
        labels = [
            f"{lab} {_key_text(key, p.meta.get(key))}" if lab in dup else lab
            for lab, p in zip(labels, profiles)
        ]
    seen: dict[str, int] = {}
    out = []
    for lab, p in zip(labels, profiles):
        seen[lab] = seen.get(lab, 0) + 1
        n = labels.count(lab)
        lab = f"{lab} #{seen[lab]}" if n > 1 else lab
        out.append(f"{lab} {EMULATED}" if is_emulated(p) else lab)
    return out


def _key_text(key: str, value: Any) -> str:
    return f"L{value}" if key == "level" else str(value)


def describe_profiles(profiles: list[Profile]) -> str:
    """'tiny_bert: x86 fp32, reference fp32 (emulated timing)' for a title."""
    models = list(dict.fromkeys(p.model for p in profiles))
    runs = ", ".join(
        f"{lab.replace(' ' + EMULATED, '')} {p.meta.get('precision', '')}".rstrip()
        + (f" {EMULATED}" if is_emulated(p) else "")
        for lab, p in zip(lane_labels(profiles), profiles)
    )
    return f"{' / '.join(models)}: {runs}"


def pair_label(comparison: Comparison, backend: str) -> str:
    """'x86 (fp32) vs reference (fp64)'."""
    m = comparison.meta
    prec = m.get("precisions", {}).get(backend, "")
    ref, ref_prec = m.get("reference", "reference"), m.get("reference_precision", "")
    return f"{backend} ({prec}) vs {ref} ({ref_prec})"


def short(name: str, limit: int = 48) -> str:
    """A long node name cut from the left (its end says the most): '…/attention/Softmax'."""
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


# -- figures ------------------------------------------------------------------------------------


def new_figure(title: str, height: int | None = None) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.01, "xanchor": "left"},
        height=height,
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
        hoverlabel={"align": "left"},
    )
    return fig


def empty(fig: go.Figure, why: str) -> go.Figure:
    """The figure's honest empty state: no axes, one centred line saying why."""
    fig.add_annotation(
        text=why,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font={"size": 14, "color": "#555"},
        name="empty",
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=fig.layout.height or 260)
    return fig


def note(fig: go.Figure, text: str) -> go.Figure:
    """A line of small print under the plot (what was left out, where numbers come from)."""
    if text:
        fig.add_annotation(
            text=text,
            x=0,
            y=0,
            xref="paper",
            yref="paper",
            yshift=-52,  # below the x axis title
            xanchor="left",
            yanchor="top",
            align="left",
            showarrow=False,
            font={"size": 11, "color": "#555"},
            name="note",
        )
        lines = text.count("<br>") + 1
        fig.update_layout(margin={"b": 64 + 16 * lines})
    return fig


def annotation_texts(fig: go.Figure) -> list[str]:
    """Every annotation's text (tests and widgets read figures through this)."""
    return [a.text for a in fig.layout.annotations]


def hover_list(items: list[tuple[str, str]], limit: int = 12) -> str:
    """'name  size' lines for a hover box, the first `limit`, then how many more."""
    lines = [f"{short(n, 60)}  {s}" for n, s in items[:limit]]
    if len(items) > limit:
        lines.append(f"… {len(items) - limit} more")
    return "<br>".join(lines)
