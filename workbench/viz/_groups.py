"""Repeated blocks of a graph (transformer layers, CNN stages) and which of them to collapse.

By name scope first: exporters name nodes by module path (`/encoder/layer.3/attention/...`,
`/layer1/layer1.0/conv1/Conv`); a scope component that ends in an index and has siblings
with the same stem under the same parent is one block of a repeated family. Its id is the
module path in PyTorch's dotted form, redundant prefixes dropped: `encoder.layer.3`,
`layer1.0` (not `layer1.layer1.0`), as in the model's parameter names. Blocks nest
(`layer1` holds `layer1.0`, `layer1.1`).

By structure as a fallback, for graphs whose names carry no scopes: the longest period
with which the op types repeat along the node order, each period one block `block.N`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise

import numpy as np

from ..errors import WorkbenchError

# "layer.3" -> ("layer", 3); "layer1.0" -> ("layer1", 0); "h.11"; "features17"
_INDEXED = re.compile(r"^(.*?)[._]?(\d+)$")
MIN_REPEATS = 3  # a structural period must repeat this often to be called a block
MAX_PERIOD = 400  # ...and be at most this many nodes long


@dataclass
class Groups:
    """Every block found: id -> member node names (in graph order), its parent block, and
    per node the chain of blocks it lies in (outermost first)."""

    members: dict[str, list[str]] = field(default_factory=dict)
    parent: dict[str, str | None] = field(default_factory=dict)
    chain: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "scope"  # "scope" or "structure"

    def ancestors(self, gid: str) -> list[str]:
        out, p = [], self.parent.get(gid)
        while p is not None:
            out.append(p)
            p = self.parent.get(p)
        return out

    def drawn_as(self, collapsed: bool, expand: Iterable[str] = ()) -> dict[str, str]:
        """node name -> the unit drawing it: its own name, or "group:<id>" of the outermost
        block around it that is collapsed. With `collapsed` False every node is itself."""
        if not collapsed:
            return {}
        open_: set[str] = set()
        for gid in expand:
            if gid not in self.members:
                known = ", ".join(sorted(self.members, key=_natural)[:12])
                raise WorkbenchError(
                    f"no block {gid!r} to expand; blocks of this graph: {known or 'none'}"
                    + (" ..." if len(self.members) > 12 else "")
                )
            open_.add(gid)
            open_.update(self.ancestors(gid))  # expanding an inner block opens its parents
        out: dict[str, str] = {}
        for name, chain in self.chain.items():
            for gid in chain:
                if gid not in open_:
                    out[name] = f"group:{gid}"
                    break
        return out


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _scopes(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p]
    return parts[:-1]  # the last part names the op itself


def _dotted(parts: Sequence[str]) -> str:
    """Module path in PyTorch's dotted form: "layer1"/"layer1.0" -> "layer1.0"."""
    pieces: list[str] = []
    for p in parts:
        if pieces and p.startswith(pieces[-1] + "."):
            pieces[-1] = p
        else:
            pieces.append(p)
    return ".".join(pieces)


def find_groups(names: Sequence[str], ops: Sequence[str]) -> Groups:
    """The repeated blocks of a graph given its node names and op types in graph order."""
    groups = scope_groups(names)
    if not groups.members:
        groups = structure_groups(names, ops)
    return groups


@lru_cache(maxsize=4096)
def _stem(comp: str) -> str:
    """ "layer.3" -> "layer"; "" for a component without an index (one regex per name)."""
    m = _INDEXED.match(comp)
    return m.group(1) if m else ""


def scope_groups(names: Sequence[str]) -> Groups:
    scopes = [_scopes(n) for n in names]
    # (parent path, stem) -> distinct indexed components seen there
    families: dict[tuple[tuple[str, ...], str], set[str]] = {}
    for parts in scopes:
        for d, comp in enumerate(parts):
            stem = _stem(comp)
            if stem:
                families.setdefault((tuple(parts[:d]), stem), set()).add(comp)
    repeated = {k for k, comps in families.items() if len(comps) >= 2}
    g = Groups(source="scope")
    for name, parts in zip(names, scopes):
        chain: list[str] = []
        for d, comp in enumerate(parts):
            stem = _stem(comp)
            if stem and (tuple(parts[:d]), stem) in repeated:
                gid = _dotted(parts[: d + 1])
                chain.append(gid)
                g.members.setdefault(gid, []).append(name)
        if chain:
            g.chain[name] = tuple(chain)
    _prune(g)
    return g


def _prune(g: Groups) -> None:
    """Drop blocks of one node and inner blocks identical to their parent; set parents."""
    drop = {gid for gid, m in g.members.items() if len(m) < 2}
    for chain in g.chain.values():
        for outer, inner in pairwise(chain):
            if len(g.members[outer]) == len(g.members[inner]):
                drop.add(inner)
    for gid in drop:
        g.members.pop(gid, None)
    for name in list(g.chain):
        chain = tuple(c for c in g.chain[name] if c in g.members)
        if chain:
            g.chain[name] = chain
            for outer, inner in pairwise(chain):
                g.parent.setdefault(inner, outer)
            g.parent.setdefault(chain[0], None)
        else:
            del g.chain[name]


def structure_groups(names: Sequence[str], ops: Sequence[str]) -> Groups:
    """Blocks from the longest-covering period of the op-type sequence (graph order)."""
    g = Groups(source="structure")
    n = len(ops)
    if n < 2 * MIN_REPEATS:
        return g
    codes = {op: i for i, op in enumerate(dict.fromkeys(ops))}
    seq = np.fromiter((codes[o] for o in ops), np.int64, n)
    best: tuple[int, int, int] | None = None  # (covered nodes, period, start)
    for p in range(2, min(MAX_PERIOD, n // MIN_REPEATS) + 1):
        eq = np.concatenate([[False], seq[:-p] == seq[p:], [False]])
        # longest run of equalities: a run of length L starting at s means the nodes
        # s .. s+L+p-1 repeat with period p
        edges = np.flatnonzero(np.diff(eq.astype(np.int8)))
        if not len(edges):
            continue
        starts, ends = edges[0::2], edges[1::2]
        k = int(np.argmax(ends - starts))
        run = int(ends[k] - starts[k])
        covered = (run + p) // p * p
        if covered // p >= MIN_REPEATS and (best is None or covered > best[0]):
            best = (covered, p, int(starts[k]))
    if best is None:
        return g
    covered, p, start = best
    for b in range(covered // p):
        gid = f"block.{b}"
        members = list(names[start + b * p : start + (b + 1) * p])
        g.members[gid] = members
        g.parent[gid] = None
        for name in members:
            g.chain[name] = (gid,)
    return g
