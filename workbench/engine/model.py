"""`Model`: an IR graph plus what the ONNX file said about it (opsets, producer, origin)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .ir import Graph


@dataclass
class Model:
    graph: Graph
    opset_imports: dict[str, int]
    ir_version: int = 8
    producer_name: str = ""
    producer_version: str = ""
    model_version: int = 0
    domain: str = ""
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    functions: list[Any] = field(default_factory=list)  # onnx.FunctionProto, kept verbatim
    path: Path | None = None  # where it was loaded from, if a file
    sha256: str = ""  # of the serialized model as read (weights in external files excluded)

    def clone(self) -> Model:
        """A copy whose graph can be edited without touching this one (weights shared)."""
        return replace(self, graph=self.graph.clone(), metadata=dict(self.metadata))

    @property
    def name(self) -> str:
        if self.path is not None:
            return self.path.stem
        return self.graph.name or "model"

    def opset(self, domain: str = "") -> int:
        """The opset version the model imports for `domain` ('' and 'ai.onnx' are one)."""
        if domain in ("", "ai.onnx"):
            return self.opset_imports.get("", self.opset_imports.get("ai.onnx", 1))
        return self.opset_imports.get(domain, 1)

    def default_dims(self) -> dict[str, int]:
        """Values for symbolic dims the model suggests (zoo models store them in metadata)."""
        raw = self.metadata.get("workbench.dims")
        if not raw:
            return {}
        try:
            return {str(k): int(v) for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, AttributeError):
            return {}

    def op_counts(self) -> Counter[str]:
        return Counter(n.op_type for n in self.graph.walk())

    def summary(self) -> str:
        g = self.graph
        n_params = sum(math.prod(v.const_shape) for v in g.initializers.values())
        ins = ", ".join(f"{v.name}{list(v.shape or [])}" for v in g.inputs)
        outs = ", ".join(f"{v.name}{list(v.shape or [])}" for v in g.outputs)
        return (
            f"{self.name}: {len(g.nodes)} nodes, {n_params:,} parameters, "
            f"opset {self.opset()}; inputs {ins}; outputs {outs}"
        )

    def __repr__(self) -> str:
        return f"<workbench.Model {self.summary()}>"
