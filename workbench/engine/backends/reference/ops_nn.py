"""Reference kernels for the ops where onnx.reference is wrong or too slow to be useful.

These stay definitional: plain numpy, written to be read against the ONNX spec.
"""

from __future__ import annotations

import numpy as np

from ..common import conv_pads
from ._table import kernels


@kernels.register("BatchNormalization", since=1)
def batch_normalization(node, ctx):
    """Inference-mode BN: always the running statistics.

    Opsets before 14 carry `is_test`/`spatial` attributes that onnx.reference reads as
    "use batch statistics"; an inference engine never should. Opset 14+ with
    training_mode=1 asks for training explicitly: declined here, onnx.reference does it.
    """
    if ctx.opset >= 14 and node.attrs.get("training_mode", 0):
        return None
    eps = float(node.attrs.get("epsilon", 1e-5))
    n_out = len(node.outputs)

    def run(x, scale, bias, mean, var):
        dt = x.dtype
        shape = (1, -1) + (1,) * (x.ndim - 2) if scale.ndim == 1 else (1, *scale.shape)
        s = (scale / np.sqrt(var.astype(dt) + dt.type(eps))).astype(dt)
        y = (x - mean.reshape(shape)) * s.reshape(shape) + bias.reshape(shape)
        extra = (mean, var, mean, var)[: n_out - 1]
        return (y.astype(dt, copy=False), *extra)

    return run


@kernels.register("Conv", since=1)
def conv(node, ctx):
    """N-d convolution as windows x weights contracted by einsum (BLAS underneath)."""
    a = node.attrs
    group = int(a.get("group", 1))
    auto_pad = a.get("auto_pad", "NOTSET")

    def run(x, w, b=None):
        nsp = x.ndim - 2
        k = list(a.get("kernel_shape") or w.shape[2:])
        strides = list(a.get("strides") or [1] * nsp)
        dil = list(a.get("dilations") or [1] * nsp)
        pads = conv_pads(x.shape[2:], k, strides, dil, a.get("pads"), auto_pad)
        xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nsp]) for i in range(nsp)])
        span = [(k[i] - 1) * dil[i] + 1 for i in range(nsp)]
        win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + nsp)))
        sl = (slice(None), slice(None))
        sl += tuple(slice(None, None, s) for s in strides)
        sl += tuple(slice(None, None, d) for d in dil)
        win = win[sl]  # N, C, *out, *k
        n, c = x.shape[:2]
        m = w.shape[0]
        out = win.shape[2 : 2 + nsp]
        win = win.reshape(n, group, c // group, *out, *k)
        wg = w.reshape(group, m // group, c // group, *k)
        letters = "ABCDEFGHIJ"
        o, kk = letters[:nsp], letters[nsp : 2 * nsp]
        y = np.einsum(f"ngc{o}{kk},gmc{kk}->ngm{o}", win, wg, optimize=True)
        y = y.reshape(n, m, *out)
        if b is not None:
            y = y + b.reshape((1, m) + (1,) * nsp)
        return (y.astype(x.dtype, copy=False),)

    return run


def _coerced_2d(fn):
    """Softmax-family before opset 13: flatten to 2-D at `axis` (default 1), normalize each
    row over everything from `axis` on, restore the shape. onnx.reference normalizes along
    `axis` alone, which differs whenever `axis` is not the last dim."""

    def factory(node, ctx):
        axis = int(node.attrs.get("axis", 1))

        def run(x):
            a = axis % x.ndim if x.ndim else 0
            rows = int(np.prod(x.shape[:a], dtype=np.int64))
            flat = x.reshape(rows, -1)
            return (fn(flat).reshape(x.shape).astype(x.dtype, copy=False),)

        return run

    return factory


def _softmax_rows(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax_rows(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _hardmax_rows(z):
    out = np.zeros_like(z)
    out[np.arange(z.shape[0]), z.argmax(axis=1)] = 1
    return out


kernels.register("Softmax", since=1, until=12)(_coerced_2d(_softmax_rows))
kernels.register("LogSoftmax", since=1, until=12)(_coerced_2d(_log_softmax_rows))
kernels.register("Hardmax", since=1, until=12)(_coerced_2d(_hardmax_rows))
