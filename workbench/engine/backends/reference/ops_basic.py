"""Reference kernels for two ops nearly every exported graph has, Constant and Transpose.

onnx.reference has both, but constant folding meets them while optimizing almost any
model, and importing onnx.reference (its every op: 12 MiB of modules) for them made
every optimized session hold it. These are the spec in numpy, as onnx.reference's are;
a Constant of a sparse tensor is still its.
"""

from __future__ import annotations

import numpy as np

from ..common import constant_value
from ._table import kernels


@kernels.register("Constant", since=1)
def constant(node, ctx):
    value = constant_value(node.attrs)
    if value is None:
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
