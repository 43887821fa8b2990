"""Reference kernels for two ops nearly every exported graph has, Constant and Transpose.

onnx.reference has both, but constant folding meets them while optimizing almost any
model, and importing onnx.reference (its every op: 12 MiB of modules) for them made
every optimized session hold it. These are the spec in numpy, as onnx.reference's are;
a Constant of a sparse tensor is still its.
"""

from __future__ import annotations

import numpy as np

from ._table import kernels


@kernels.register("Constant", since=1)
def constant(node, ctx):
    a = node.attrs
    if "value" in a:
        value = np.asarray(a["value"])
    elif "value_float" in a:
        value = np.array(a["value_float"], dtype=np.float32)
    elif "value_floats" in a:
        value = np.array(a["value_floats"], dtype=np.float32)
    elif "value_int" in a:
        value = np.array(a["value_int"], dtype=np.int64)
    elif "value_ints" in a:
        value = np.array(a["value_ints"], dtype=np.int64)
    elif "value_string" in a:
        value = np.array(a["value_string"], dtype=object)
    elif "value_strings" in a:
        value = np.array(list(a["value_strings"]), dtype=object)
    else:
        return None  # sparse_value: onnx.reference's

    def run():
        return (value.copy(),)  # (no caller can edit the node's own)

    return run


@kernels.register("Transpose", since=1)
def transpose(node, ctx):
    perm = node.attrs.get("perm")
    perm = None if perm is None else [int(p) for p in perm]  # (None: the axes reversed)

    def run(x):
        # a view, as onnx.reference's: a folded Transpose of a weight reads the weight
        return (np.transpose(x, perm),)

    return run
