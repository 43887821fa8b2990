"""The custom domain `workbench`: the fused ops our passes emit, documented in one place.

Each fusion module declares its ops with `define_op`; the declaration is the op's
documentation (`workbench ops`, docs/fused_ops.md) and is registered as an ONNX
`OpSchema`, so exported graphs pass `onnx.checker` and open in Netron with their
inputs, outputs and attributes named.
"""

from __future__ import annotations

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
    """Declare (and register with onnx.defs) an op of the `workbench` domain."""
    op = OpDoc(name, doc, tuple(inputs), tuple(outputs), dict(attributes or {}), replaces)
    FUSED_OPS[name] = op
    _register_schema(op)
    return op


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
        # onnx.reference builds its op table from the schemas it sees on first import and
        # then insists every name is unique across domains: import it before we add ours.
        import onnx.reference.op_run  # noqa: F401

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
