"""Reference ConvTranspose: N-d, grouped, with every way the spec has to size the output.

onnx.reference's grouped ConvTranspose is right only with one output channel per group
(it copies one channel per group). Here it is the definition itself: every input pixel
scatters its weighted kernel into the output, then padding crops the result.

Per spatial axis (k kernel, s stride, d dilation, op output_padding):

  full = s * (in - 1) + (k - 1) * d + 1 + op     the uncropped output, padding zero
  out  = full - pads_begin - pads_end

with the pads coming from
  explicit `pads`         as given (auto_pad NOTSET)
  VALID                   zero
  SAME_UPPER/SAME_LOWER   total = full - in * s, so that out = in * s; never negative (a
                          kernel shorter than the stride gives out = full < in * s), as
                          for Conv and the pools, and as onnx's shape inference and
                          onnxruntime have it
  `output_shape`          total = full - output_shape (explicit pads are then ignored)
and a total split into (total - total // 2, total // 2) — the larger half first — except
for SAME_UPPER, which puts it last: the spec's formula, also for NOTSET with output_shape.
A negative total (output_shape larger than `full`) cannot be cropped: those positions are
appended at the end, where output_padding adds them too, and hold the bias alone.
"""

from __future__ import annotations

import itertools

import numpy as np

from ._table import kernels


def conv_transpose_pads(
    in_spatial, kernel, strides, dilations, output_padding, pads, auto_pad, output_shape
) -> tuple[list[int], list[int], list[int]]:
    """(full, pads_begin, pads_end) of a ConvTranspose; the output is full - begin - end."""
    n = len(kernel)
    full = [
        strides[i] * (in_spatial[i] - 1) + (kernel[i] - 1) * dilations[i] + 1 + output_padding[i]
        for i in range(n)
    ]
    if output_shape:
        if len(output_shape) != n:
            raise ValueError(f"ConvTranspose output_shape {list(output_shape)} for {n} axes")
        target = list(output_shape)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [min(in_spatial[i] * strides[i], full[i]) for i in range(n)]
    elif auto_pad == "VALID" or not pads:
        return full, [0] * n, [0] * n
    else:
        return full, [int(p) for p in pads[:n]], [int(p) for p in pads[n:]]
    begin, end = [], []
    for i in range(n):
        total = full[i] - int(target[i])
        if total < 0:
            begin.append(0)
            end.append(total)
        elif auto_pad == "SAME_UPPER":
            begin.append(total // 2)
            end.append(total - total // 2)
        else:
            begin.append(total - total // 2)
            end.append(total // 2)
    return full, begin, end


@kernels.register("ConvTranspose", since=1)
def conv_transpose(node, ctx):
    a = node.attrs
    group = int(a.get("group", 1))
    auto_pad = a.get("auto_pad", "NOTSET")

    def run(x, w, b=None):
        nsp = x.ndim - 2
        n, c = x.shape[:2]
        if w.shape[0] != c or c % group:
            raise ValueError(f"ConvTranspose: {c} input channels, weight {w.shape}, group {group}")
        k = list(w.shape[2:])
        m = w.shape[1] * group
        strides = list(a.get("strides") or [1] * nsp)
        dil = list(a.get("dilations") or [1] * nsp)
        out_pad = list(a.get("output_padding") or [0] * nsp)
        full, begin, end = conv_transpose_pads(
            x.shape[2:], k, strides, dil, out_pad, a.get("pads"), auto_pad, a.get("output_shape")
        )
        # y_full[n, g, j, p * s + t * d] += x[n, g, i, p] * w[g, i, j, t] for every tap t
        xg = x.reshape(n, group, c // group, *x.shape[2:])
        wg = w.reshape(group, c // group, m // group, *k)
        y = np.zeros((n, group, m // group, *full), dtype=x.dtype)
        letters = "ABCDEFGHIJ"[:nsp]
        for tap in itertools.product(*(range(kk) for kk in k)):
            part = np.einsum(f"ngi{letters},gij->ngj{letters}", xg, wg[(..., *tap)])
            at = tuple(
                slice(tap[i] * dil[i], tap[i] * dil[i] + strides[i] * (x.shape[2 + i] - 1) + 1,
                      strides[i])
                for i in range(nsp)
            )  # fmt: skip
            y[(slice(None), slice(None), slice(None), *at)] += part
        y = y.reshape(n, m, *full)
        # crop the pads; a negative pad appends zeros instead
        grow = [(0, 0), (0, 0)] + [(max(-p, 0), max(-q, 0)) for p, q in zip(begin, end)]
        y = np.pad(y, grow)
        crop = tuple(slice(max(begin[i], 0), y.shape[2 + i] - max(end[i], 0)) for i in range(nsp))
        y = y[(slice(None), slice(None), *crop)]
        if b is not None:
            y = y + b.reshape((1, m) + (1,) * nsp)
        return (y.astype(x.dtype, copy=False),)

    return run
