"""The engine's intermediate representation: `Graph`, `Node`, `Value`.

Shaped after onnx-ir and torch.fx: a `Value` knows its producer and its
consumers, a `Graph` is an ordered list of nodes that can be edited in place,
and every node carries a free `meta` dict where analyses write what they find
(`meta["fused_from"]`, `meta["prof"]`, ...). Subgraphs of If/Loop/Scan are
held as `Graph` objects inside attributes; values they read from an enclosing
graph are that graph's own `Value` objects, so lifetimes and ordering see them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from onnx import helper

Dim = int | str | None  # a fixed size, a symbolic name, or unknown
Shape = tuple[Dim, ...]


def np_dtype(elem_type: int) -> np.dtype | None:
    """ONNX TensorProto element type -> numpy dtype (None for undefined/unsupported)."""
    if not elem_type:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


class Deferred:
    """Constant data made when asked for, and kept only while something else holds the
    array (a weak reference): read from the model's file (onnx_file.FileConst) or computed
    from other constants (`Computed`). A compiled plan that packed or reordered a weight
    its own way then leaves no second copy alive, and the graph holds none."""

    __slots__ = ("_array", "dtype", "shape")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._array: weakref.ref | None = None

    def load(self) -> np.ndarray:
        arr = None if self._array is None else self._array()
        if arr is None:
            arr = self.make()
            arr.flags.writeable = False  # constants are shared, never written
            self._array = weakref.ref(arr)
        return arr

    def make(self) -> np.ndarray:
        raise NotImplementedError


class Computed(Deferred):
    """A constant computed again from others each time it is needed and not held (a conv
    weight with a BatchNormalization folded in: see passes/fusion/conv_bn.py)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], np.ndarray], shape: tuple[int, ...], dtype: Any) -> None:
        super().__init__(shape, dtype)
        self.fn = fn

    def make(self) -> np.ndarray:
        arr = np.asarray(self.fn())
        assert arr.shape == self.shape and arr.dtype == self.dtype, (arr.shape, arr.dtype)
        return arr


class Value:
    """A tensor (or sequence/optional) flowing between nodes.

    `const` holds the data of initializers and is None for runtime values. A large
    initializer of a model loaded from a file is read from there each time `const` is
    asked for while nobody holds its array (a `Deferred` constant): test `is_const`, which
    reads nothing.
    `type_proto` keeps non-tensor types (sequence, optional, map) verbatim.
    """

    __slots__ = (
        "_const",
        "elem_type",
        "graph",
        "index",
        "meta",
        "name",
        "producer",
        "shape",
        "type_proto",
        "uses",
    )

    def __init__(
        self,
        name: str,
        elem_type: int = 0,
        shape: Shape | None = None,
        const: np.ndarray | Deferred | None = None,
        type_proto: Any = None,
    ) -> None:
        self.name = name
        self.elem_type = elem_type
        self.shape = shape
        self._const = const
        self.type_proto = type_proto
        self.producer: Node | None = None
        self.index = 0  # output index within the producer
        self.uses: list[tuple[Node, int]] = []  # (consumer, input index)
        self.graph: Graph | None = None
        self.meta: dict[str, Any] = {}

    @property
    def dtype(self) -> np.dtype | None:
        return np_dtype(self.elem_type)

    @property
    def const(self) -> np.ndarray | None:
        c = self._const
        return c.load() if isinstance(c, Deferred) else c

    @const.setter
    def const(self, array: np.ndarray | None) -> None:
        self._const = array

    @property
    def is_const(self) -> bool:
        return self._const is not None

    @property
    def const_deferred(self) -> bool:
        """Whether the constant is made when asked for (read from its file, or computed)."""
        return isinstance(self._const, Deferred)

    @property
    def const_shape(self) -> tuple[int, ...] | None:
        """The constant's shape (None for a runtime value), without reading its data."""
        return None if self._const is None else tuple(self._const.shape)

    def detached(self) -> Value:
        """A copy outside any graph: same name, type, shape and constant (one left in its
        file stays there), no producer, no uses, empty meta."""
        return Value(self.name, self.elem_type, self.shape, self._const, self.type_proto)

    def consumers(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for node, _ in self.uses:
            seen.setdefault(id(node), node)
        return list(seen.values())

    def __repr__(self) -> str:
        kind = "const " if self.is_const else ""
        return f"Value({kind}{self.name!r}, {self.dtype}, {self.shape})"


class Node:
    """One operator application. `attrs` holds plain Python values: ints, floats,
    strings, lists, numpy arrays for tensors and `Graph` for subgraphs."""

    __slots__ = (
        "attr_types",
        "attrs",
        "doc_string",
        "domain",
        "graph",
        "inputs",
        "meta",
        "name",
        "op_type",
        "outputs",
    )

    def __init__(
        self,
        op_type: str,
        inputs: Iterable[Value | None],
        outputs: Iterable[Value],
        attrs: dict[str, Any] | None = None,
        *,
        name: str = "",
        domain: str = "",
        attr_types: dict[str, int] | None = None,
    ) -> None:
        self.op_type = op_type
        self.domain = domain
        self.name = name
        self.attrs = dict(attrs or {})
        self.attr_types = dict(attr_types or {})  # onnx AttributeProto types, for round trips
        self.doc_string = ""
        self.meta: dict[str, Any] = {}
        self.graph: Graph | None = None
        self.inputs: list[Value | None] = []
        self.outputs: list[Value] = []
        for v in inputs:
            self._append_input(v)
        for i, v in enumerate(outputs):
            v.producer, v.index = self, i
            self.outputs.append(v)

    def _append_input(self, v: Value | None) -> None:
        if v is not None:
            v.uses.append((self, len(self.inputs)))
        self.inputs.append(v)

    def set_input(self, index: int, v: Value | None) -> None:
        old = self.inputs[index]
        if old is not None:
            old.uses.remove((self, index))
        if v is not None:
            v.uses.append((self, index))
        self.inputs[index] = v

    def subgraphs(self) -> Iterator[Graph]:
        for a in self.attrs.values():
            if isinstance(a, Graph):
                yield a
            elif isinstance(a, list) and a and isinstance(a[0], Graph):
                yield from a

    def implicit_inputs(self) -> list[Value]:
        """Values of enclosing graphs read by this node's subgraphs (outer-scope captures)."""
        found: dict[int, Value] = {}
        for sub in self.subgraphs():
            for v in sub.captured_values():
                found.setdefault(id(v), v)
        return list(found.values())

    def __repr__(self) -> str:
        return f"Node({self.op_type!r}, name={self.name!r})"


class Graph:
    """An ordered list of nodes with named inputs, outputs and initializers."""

    def __init__(self, name: str = "graph", parent: Graph | None = None) -> None:
        self.name = name
        self.parent = parent
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.initializers: dict[str, Value] = {}
        self.doc_string = ""
        self.value_info: dict[str, Value] = {}  # annotated intermediates, for round trips
        self.meta: dict[str, Any] = {}

    # -- building -----------------------------------------------------------------
    def add_input(self, v: Value) -> Value:
        v.graph = self
        self.inputs.append(v)
        return v

    def add_initializer(self, v: Value) -> Value:
        v.graph = self
        self.initializers[v.name] = v
        return v

    def append(self, node: Node) -> Node:
        return self.insert_at(len(self.nodes), node)

    def insert_at(self, index: int, node: Node) -> Node:
        node.graph = self
        for v in node.outputs:
            v.graph = self
        self.nodes.insert(index, node)
        return node

    def insert_before(self, anchor: Node, node: Node) -> Node:
        return self.insert_at(self.nodes.index(anchor), node)

    def insert_after(self, anchor: Node, node: Node) -> Node:
        return self.insert_at(self.nodes.index(anchor) + 1, node)

    # -- editing ------------------------------------------------------------------
    def replace_all_uses_with(self, old: Value, new: Value) -> None:
        """Point every consumer (and graph output) of `old` at `new`."""
        for node, i in list(old.uses):
            node.set_input(i, new)
        self.outputs = [new if o is old else o for o in self.outputs]

    def remove(self, node: Node, safe: bool = True) -> None:
        """Detach `node`. With `safe`, refuse while any of its outputs is still used."""
        if safe:
            for v in node.outputs:
                if v.uses or v in self.outputs:
                    raise ValueError(f"cannot remove {node}: output {v.name!r} is still used")
        for i in range(len(node.inputs)):
            node.set_input(i, None)
        self.nodes.remove(node)
        node.graph = None

    # -- queries ------------------------------------------------------------------
    def values(self) -> dict[str, Value]:
        """Every value defined in this graph (not subgraphs), by name."""
        out: dict[str, Value] = {v.name: v for v in self.inputs}
        out.update(self.initializers)
        for n in self.nodes:
            for v in n.outputs:
                if v.name:
                    out[v.name] = v
        return out

    def captured_values(self) -> list[Value]:
        """Values this graph (or its nested subgraphs) reads but does not define."""
        defined = {id(v) for v in self.values().values()}
        found: dict[int, Value] = {}
        for n in self.nodes:
            reads = [v for v in n.inputs if v is not None] + n.implicit_inputs()
            for v in reads:
                if id(v) not in defined:
                    found.setdefault(id(v), v)
        for v in self.outputs:
            if id(v) not in defined:
                found.setdefault(id(v), v)
        return list(found.values())

    def topological_sort(self) -> None:
        """Reorder nodes so each comes after the producers of everything it reads.

        Stable: among ready nodes the original order wins. Raises on a cycle.
        """
        position = {id(n): i for i, n in enumerate(self.nodes)}
        waiting: dict[int, int] = {}
        dependents: dict[int, list[Node]] = {}
        for n in self.nodes:
            deps = {
                id(v.producer)
                for v in [*n.inputs, *n.implicit_inputs()]
                if v is not None and v.producer is not None and id(v.producer) in position
            }
            waiting[id(n)] = len(deps)
            for d in deps:
                dependents.setdefault(d, []).append(n)
        import heapq

        ready = [(position[id(n)], n) for n in self.nodes if waiting[id(n)] == 0]
        heapq.heapify(ready)
        order: list[Node] = []
        while ready:
            _, n = heapq.heappop(ready)
            order.append(n)
            for m in dependents.get(id(n), ()):
                waiting[id(m)] -= 1
                if waiting[id(m)] == 0:
                    heapq.heappush(ready, (position[id(m)], m))
        if len(order) != len(self.nodes):
            stuck = [n.name or n.op_type for n in self.nodes if waiting[id(n)] > 0][:5]
            raise ValueError(f"graph {self.name!r} has a cycle through nodes {stuck}")
        self.nodes = order

    def clone(self, _outer: dict[int, Value] | None = None, _parent: Graph | None = None) -> Graph:
        """A structural copy: new Graph/Node/Value objects, shared constant arrays (weights are
        never written in place), copied `meta` dicts. Captured outer values map to the
        enclosing clone's values."""
        vmap: dict[int, Value] = dict(_outer or {})

        def copy_value(v: Value) -> Value:
            new = v.detached()
            new.meta = dict(v.meta)
            vmap[id(v)] = new
            return new

        g = Graph(self.name, parent=_parent)
        g.doc_string, g.meta = self.doc_string, dict(self.meta)
        for v in self.initializers.values():
            g.add_initializer(copy_value(v))
        for v in self.inputs:
            g.add_input(vmap[id(v)] if id(v) in vmap and v.is_const else copy_value(v))
        for n in self.nodes:
            attrs = {}
            for k, a in n.attrs.items():
                if isinstance(a, Graph):
                    a = a.clone(vmap, g)
                elif isinstance(a, list) and a and isinstance(a[0], Graph):
                    a = [s.clone(vmap, g) for s in a]
                attrs[k] = a
            inputs = [None if v is None else vmap.get(id(v), v) for v in n.inputs]
            outputs = [copy_value(v) for v in n.outputs]
            m = Node(
                n.op_type,
                inputs,
                outputs,
                attrs,
                name=n.name,
                domain=n.domain,
                attr_types=n.attr_types,
            )
            m.doc_string, m.meta = n.doc_string, dict(n.meta)
            g.append(m)
        g.outputs = [vmap.get(id(v), v) for v in self.outputs]
        g.value_info = {k: vmap[id(v)] for k, v in self.value_info.items() if id(v) in vmap}
        return g

    def walk(self) -> Iterator[Node]:
        """Every node, including those in subgraphs (depth first)."""
        for n in self.nodes:
            yield n
            for sub in n.subgraphs():
                yield from sub.walk()

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes)"
