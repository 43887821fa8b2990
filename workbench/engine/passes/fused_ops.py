"""The custom domain `workbench`: the fused ops our passes emit, documented in one place.

Each fusion module declares its ops with `define_op`; the declaration is the op's
documentation (`workbench ops`, docs/fused_ops.md) and is registered as an ONNX
`OpSchema` (`register_schemas`), so exported graphs pass `onnx.checker` and open in Netron
with their inputs, outputs and attributes named. Registering waits until a graph of the
domain meets onnx (exported, or loaded from a file): it needs onnx.reference imported
first (see `register_schemas`), 12 MiB of modules a session does not otherwise need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DOMAIN = "workbench"
VERSION = 1
_FLOATS = ["tensor(float)", "tensor(float16)", "tensor(double)"]


@dataclass(frozen=True)
class OpDoc:
    name: str
    doc: str
    inputs: tuple[tuple[str, str], ...]  # (name, description); a trailing '?' marks optional
    outputs: tuple[tuple[str, str], ...]
    attributes: dict[str, str] = field(default_factory=dict)  # name -> "type: description"
    replaces: str = ""  # the ONNX pattern it stands for


FUSED_OPS: dict[str, OpDoc] = {}


def define_op(
    name: str,
    doc: str,
    inputs: list[tuple[str, str]],
    outputs: list[tuple[str, str]],
    attributes: dict[str, str] | None = None,
    replaces: str = "",
) -> OpDoc:
    """Declare an op of the `workbench` domain (registered with onnx.defs at once where
    `register_schemas` has run, else by it)."""
    op = OpDoc(name, doc, tuple(inputs), tuple(outputs), dict(attributes or {}), replaces)
    FUSED_OPS[name] = op
    if _registered:
        _register_schema(op)
    return op


_registered: list[bool] = []  # [True] once register_schemas ran


def register_schemas(domains: Iterable[str] = (DOMAIN,)) -> None:
    """Register every fused op's schema with onnx.defs, once, where `domains` (a model's
    opset imports) hold ours: before onnx checks, infers or exports such a model.
    onnx.reference indexes every registered schema by name when first imported and
    refuses two ops of one name across domains (the standard Gelu and Attention, and
    ours), so it is imported first."""
    if _registered or DOMAIN not in set(domains):
        return
    import onnx.reference.op_run  # noqa: F401

    from .optimize import all_passes

    all_passes()  # (imports every pass module: each defines its ops)
    _registered.append(True)
    for op in list(FUSED_OPS.values()):
        _register_schema(op)


_ATTR_TYPES = {
    "int": "INT",
    "float": "FLOAT",
    "string": "STRING",
    "ints": "INTS",
    "floats": "FLOATS",
    "strings": "STRINGS",
    "tensor": "TENSOR",
}


def _register_schema(op: OpDoc) -> None:
    try:
        from onnx import defs

        if defs.has(op.name, DOMAIN):
            return
        P = defs.OpSchema.FormalParameter
        Opt = defs.OpSchema.FormalParameterOption

        def param(name: str, desc: str, *, variadic: bool = False) -> P:
            optional = name.endswith("?")
            option = Opt.Optional if optional else Opt.Variadic if variadic else Opt.Single
            # a variadic list may mix dtypes (FusedElementwise takes int and bool beside float)
            return P(name.rstrip("?"), "T", desc, param_option=option, is_homogeneous=not variadic)

        attrs = []
        for aname, spec in op.attributes.items():
            kind, _, desc = spec.partition(":")
            t = getattr(defs.OpSchema.AttrType, _ATTR_TYPES.get(kind.strip(), "STRING"))
            attrs.append(defs.OpSchema.Attribute(aname, t, desc.strip(), required=False))
        variadic = len(op.inputs) == 1 and op.inputs[0][0].endswith("...")
        ins = [param(n.rstrip("."), d, variadic=variadic) for n, d in op.inputs]
        schema = defs.OpSchema(
            op.name,
            DOMAIN,
            VERSION,
            op.doc,
            inputs=ins,
            outputs=[param(n, d) for n, d in op.outputs],
            type_constraints=[("T", [*_FLOATS, "tensor(int64)", "tensor(bool)"], "tensors")],
            attributes=attrs,
        )
        defs.register_schema(schema)
    except Exception:  # an older onnx without schema registration: docs still work
        pass


def render_markdown() -> str:
    """All fused ops as a Markdown reference (docs/fused_ops.md)."""
    lines = [f"# The `{DOMAIN}` domain (version {VERSION})", ""]
    for op in sorted(FUSED_OPS.values(), key=lambda o: o.name):
        lines += [f"## {op.name}", "", op.doc.strip(), ""]
        if op.replaces:
            lines += [f"Replaces: `{op.replaces}`", ""]
        lines += ["| | name | description |", "| --- | --- | --- |"]
        lines += [f"| input | `{n}` | {d} |" for n, d in op.inputs]
        lines += [f"| output | `{n}` | {d} |" for n, d in op.outputs]
        lines += [f"| attribute | `{n}` | {d} |" for n, d in op.attributes.items()]
        lines.append("")
    return "\n".join(lines)
