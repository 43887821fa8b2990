"""Top-down layered layout of a directed graph: Graphviz `dot`, or igraph's Sugiyama when large.

    lay = layout(n, edges)            # n units, edges as (tail, head) index pairs
    lay.xy                            # [n, 2] centres, in points; y decreases downwards
    lay.paths                         # per edge, the polyline to draw (dot's spline points)
    lay.engine                        # "dot" or "sugiyama"

`dot` (through pygraphviz, whose wheel bundles Graphviz) draws the nicest layered graphs but
its crossing minimisation grows faster than linearly: measured here, 0.2 s for bert's 777
nodes, 2 s for a 2,000-node chain with skips, 240 s for 10,000. Above `DOT_MAX_NODES` the
layout falls back to igraph's Sugiyama (0.1 s at 10,000 nodes), with straight edges.
Layouts are cached by the graph's structure, so redrawing a graph with other colours,
or another figure of the same graph, costs no layout.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Above this many units dot is no longer interactive (benchmarks/viz.py measures both).
DOT_MAX_NODES = 1200
# Up to this many units dot runs with its default (thorough) effort.
DOT_FULL_EFFORT = 300
# Box a unit occupies in dot (inches): labels are drawn by plotly beside the marker, so the
# box only reserves room; 72 points per inch.
NODE_W, NODE_H = 1.3, 0.3
# Sugiyama works in abstract units: scaled to match dot's spacing so figures look alike.
SUGIYAMA_DX, SUGIYAMA_DY = 110.0, 45.0

_CACHE: OrderedDict[str, Layout] = OrderedDict()
_CACHE_SIZE = 32


@dataclass(frozen=True)
class Layout:
    xy: np.ndarray  # [n, 2] float64, unit centres in points
    paths: list[np.ndarray]  # per edge, [k, 2] points from tail to head
    engine: str


def clear_cache() -> None:
    """Forget every cached layout (benchmarks time cold layouts)."""
    _CACHE.clear()


def structure_key(n: int, edges: Sequence[tuple[int, int]], engine: str) -> str:
    """A digest of the structure: unit count, edges in order, engine."""
    h = hashlib.sha1(f"{engine}|{n}|".encode())
    h.update(np.asarray(edges, np.int64).reshape(-1).tobytes())
    return h.hexdigest()


def layout(n: int, edges: Sequence[tuple[int, int]], engine: str = "auto") -> Layout:
    """Lay out `n` units with directed `edges` top-down. `engine`: "auto", "dot", "sugiyama"."""
    if engine == "auto":
        engine = "dot" if n <= DOT_MAX_NODES else "sugiyama"
    if engine not in ("dot", "sugiyama"):
        raise ValueError(f"layout engine must be 'auto', 'dot' or 'sugiyama', got {engine!r}")
    edges = [(int(a), int(b)) for a, b in edges]
    key = structure_key(n, edges, engine)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    if n == 0:
        result = Layout(np.zeros((0, 2)), [], engine)
    elif engine == "dot":
        result = _dot(n, edges)
    else:
        result = _sugiyama(n, edges)
    _CACHE[key] = result
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def _dot(n: int, edges: list[tuple[int, int]]) -> Layout:
    import pygraphviz as pgv

    # the graph as DOT text, parsed by Graphviz in C: adding 1,000 edges one by one
    # through pygraphviz costs more than the layout of a small graph
    body = "".join(f"{a}->{b};" for a, b in edges)
    g = pgv.AGraph(
        string=(
            "digraph{rankdir=TB;nodesep=0.15;ranksep=0.3;splines=true;"
            f'node[shape=box,label="",fixedsize=true,width={NODE_W},height={NODE_H}];'
            + "".join(f"{i};" for i in range(n))
            + body
            + "}"
        )
    )
    # One pass of network simplex and a tenth of the crossing-minimisation work: on bert
    # (780 units) 0.15-0.3 s instead of 1-1.8 s, with a few more crossings. Small graphs
    # get dot's full effort, which costs them little.
    args = "" if n <= DOT_FULL_EFFORT else "-Gnslimit=1 -Gnslimit1=1 -Gmclimit=0.1"
    # "plain" output: the positions as text in one call, far cheaper than reading each
    # node's and edge's attributes back through pygraphviz
    text = g.draw(format="plain", prog="dot", args=args).decode()
    xy = np.zeros((n, 2), np.float64)
    paths_by_pair: dict[tuple[int, int], np.ndarray] = {}
    for line in text.splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "node":
            xy[int(tok[1])] = float(tok[2]) * 72, float(tok[3]) * 72
        elif tok[0] == "edge":
            k = int(tok[3])
            pts = np.asarray(tok[4 : 4 + 2 * k], np.float64).reshape(k, 2) * 72
            paths_by_pair[(int(tok[1]), int(tok[2]))] = pts
    paths = [paths_by_pair.get((a, b), xy[[a, b]]) for a, b in edges]
    return Layout(xy, paths, "dot")


def _sugiyama(n: int, edges: list[tuple[int, int]]) -> Layout:
    import igraph as ig

    g = ig.Graph(n=n, edges=edges, directed=True)
    coords = np.asarray(g.layout_sugiyama().coords, np.float64)[:n]
    xy = np.column_stack([coords[:, 0] * SUGIYAMA_DX, -coords[:, 1] * SUGIYAMA_DY])
    return Layout(xy, [xy[[a, b]] for a, b in edges], "sugiyama")
