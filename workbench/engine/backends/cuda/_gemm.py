"""The tiled shared-memory GEMM every matrix product of the cuda backend runs on.

C[b, m, n] = act(alpha * sum_k A[b, m, k] B[b, k, n] + beta * E0[b, m, n] + E1[b, m, n])

A 16x16 block computes a 16x16 tile of C; each step of the k loop stages a 16x16 tile of
A and of B in shared memory (float32 whatever the storage dtype: fp32 accumulation under
fp16), so every element of A and B is read from global memory N/16 and M/16 times rather
than N and M times. A, B, C, E0 and E1 are flat arrays addressed with element strides, so
transposes (Gemm's transA/transB, attention's K^T and head split/merge) and batch
broadcasting cost nothing. `batch` dims run over blockIdx.z. Under `tf32` the operands are
rounded to tf32 (10-bit mantissa, round to nearest) as they are staged: the numerics of a
tensor-core tf32 GEMM (with fp32 accumulation), computed on the CUDA cores — in the
simulator too, so `wb.compare` shows realistic tf32 errors. The tensor-core kernels are
the CUDA C fast path (`fast_gemm.py`, `tensor_core.cu`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._elementwise import FLOAT_OPS, ONE, Z, literal
from ._launch import flat, jit_source

TILE = 16
TF32_SPLIT = np.float32(8193.0)  # 2**13 + 1: Veltkamp's split keeps the top 11 bits


def tf32_round_host(x: np.ndarray) -> np.ndarray:
    """`x` (float32) rounded to tf32 on the host, as the kernels do it (Veltkamp split)."""
    x = np.asarray(x, np.float32)
    t = x * TF32_SPLIT
    return (t - (t - x)).astype(np.float32)


def activation_expr(activation: str, params: Sequence[float]) -> tuple[str, dict[str, float]]:
    """(template over {0}, attributes) of a fused op's `activation` (see docs/fused_ops.md)."""
    p = list(params)
    if not activation:
        return "{0}", {}
    if activation == "Clip":
        lo = p[0] if p else -np.inf
        hi = p[1] if len(p) > 1 else np.inf
        return f"min(max({{0}}, {literal(lo)}), {literal(hi)})", {}
    attrs = {
        "LeakyRelu": {"alpha": p[0] if p else 0.01},
        "HardSigmoid": {"alpha": p[0] if p else 0.2, "beta": p[1] if len(p) > 1 else 0.5},
    }.get(activation, {})
    if activation not in FLOAT_OPS:
        raise ValueError(f"unknown activation {activation!r}")
    return FLOAT_OPS[activation][1], attrs


def gemm_source(nbatch: int, e0: bool, e1: bool, act: str, tf32: bool, causal: bool) -> str:
    load = "tf32(float32({}))" if tf32 else "float32({})"
    lines = [
        "def kernel(A, B, C, M, N, K, bsh, sa, sb, sc, am, ak, bk, bn, cm, cn, alpha,"
        " E0, se0, e0m, e0n, beta, E1, se1, e1m, e1n):",
        "    sA = cuda.shared.array((TILE, TILE), float32)",
        "    sB = cuda.shared.array((TILE, TILE), float32)",
        "    tx = cuda.threadIdx.x",
        "    ty = cuda.threadIdx.y",
        "    col = cuda.blockIdx.x * TILE + tx",
        "    row = cuda.blockIdx.y * TILE + ty",
        "    r = cuda.blockIdx.z",
        "    oa = 0",
        "    ob = 0",
        "    oc = 0",
        "    o0 = 0",
        "    o1 = 0",
    ]
    for d in reversed(range(nbatch)):
        lines += [
            f"    c = r % bsh[{d}]",
            f"    r = r // bsh[{d}]",
            f"    oa += c * sa[{d}]",
            f"    ob += c * sb[{d}]",
            f"    oc += c * sc[{d}]",
            f"    o0 += c * se0[{d}]",
            f"    o1 += c * se1[{d}]",
        ]
    lines += [
        "    acc = Z",
        "    for t in range((K + TILE - 1) // TILE):",
        "        k = t * TILE + tx",
        "        if row < M and k < K:",
        f"            sA[ty, tx] = {load.format('A[oa + row * am + k * ak]')}",
        "        else:",
        "            sA[ty, tx] = Z",
        "        k = t * TILE + ty",
        "        if k < K and col < N:",
        f"            sB[ty, tx] = {load.format('B[ob + k * bk + col * bn]')}",
        "        else:",
        "            sB[ty, tx] = Z",
        "        cuda.syncthreads()",
        "        for kk in range(TILE):",
        "            acc += sA[ty, kk] * sB[kk, tx]",
        "        cuda.syncthreads()",
        "    if row < M and col < N:",
        "        y = alpha * acc",
    ]
    if e0:
        lines.append("        y += beta * float32(E0[o0 + row * e0m + col * e0n])")
    if e1:
        lines.append("        y += float32(E1[o1 + row * e1m + col * e1n])")
    if causal:  # key `col` is hidden from query `row` past the diagonal (aligned at the end)
        lines += ["        if col > row + N - M:", "            y = float32(-math.inf)"]
    lines.append(f"        C[oc + row * cm + col * cn] = {act.format('y')}")
    return "\n".join(lines) + "\n"


def tensor_core_precision(precision: str) -> str:
    """`precision` when the tensor-core GEMM runs for it here (a real GPU with pycuda),
    else "": a kernel factory's choice, made once per node."""
    from .fast_gemm import enabled

    return precision if precision in ("fp16", "tf32") and enabled(precision) else ""


def algorithm_name(base: str, precision: str, tensor_cores: str) -> str:
    """`run.algorithm` of a GEMM-based kernel: the tensor-core kernel (small or oddly batched
    shapes fall back to the tiled one per call) or the tiled one, and tf32 rounding."""
    if tensor_cores:
        return f"wmma-tensor-core-{tensor_cores}"
    return base + ("-tf32" if precision == "tf32" else "")


_TF32: Any = None


def _tf32_fn() -> Any:
    global _TF32
    if _TF32 is None:
        from ._launch import device_fn

        split = TF32_SPLIT

        def tf32(x):  # pragma: no cover - compiled
            t = x * split
            return t - (t - x)

        _TF32 = device_fn(tf32)
    return _TF32


def gemm(
    A: Any,
    B: Any,
    C: Any,
    M: int,
    N: int,
    K: int,
    *,
    batch: Sequence[int] = (),
    a: tuple[Sequence[int], int, int],
    b: tuple[Sequence[int], int, int],
    c: tuple[Sequence[int], int, int],
    alpha: float = 1.0,
    e0: tuple[Any, Sequence[int], int, int] | None = None,
    beta: float = 1.0,
    e1: tuple[Any, Sequence[int], int, int] | None = None,
    activation: tuple[str, dict[str, float]] = ("{0}", {}),
    tf32: bool = False,
    causal: bool = False,
    tensor_cores: str = "",
) -> Any:
    """Launch the GEMM; `a`, `b`, `c` are (batch strides, row stride, col stride) in
    elements, E0/E1 (array, batch strides, m stride, n stride). Returns C.

    `tensor_cores` ("fp16" or "tf32", from `tensor_core_precision`): try the WMMA kernel
    of `fast_gemm` first; it declines shapes it does not suit and this kernel runs."""
    if M == 0 or N == 0:
        return C
    template, attrs = activation
    act = template.format("{0}", **{k: literal(v) for k, v in attrs.items()})
    if tensor_cores:
        from .fast_gemm import tc_gemm

        done = tc_gemm(
            A, B, C, M, N, K, batch=batch, a=a, b=b, c=c, alpha=alpha, e0=e0, beta=beta,
            e1=e1, act=act, precision=tensor_cores, causal=causal,
        )  # fmt: skip
        if done:
            return C
    nb = len(batch)
    src = gemm_source(nb, e0 is not None, e1 is not None, act, tf32, causal)
    glob: dict[str, Any] = {"TILE": TILE, "Z": Z, "ONE": ONE}
    if tf32:
        glob["tf32"] = _tf32_fn()
    kernel = jit_source(src, **glob)
    nbatch = int(np.prod(batch)) if nb else 1
    dummy = (flat(C), (0,) * nb, 0, 0)
    x0, s0, m0, n0 = (flat(e0[0]), *e0[1:]) if e0 is not None else dummy
    x1, s1, m1, n1 = (flat(e1[0]), *e1[1:]) if e1 is not None else dummy
    blocks = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE, nbatch)

    def t(s: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(v) for v in s) if nb else ()

    kernel[blocks, (TILE, TILE)](
        flat(A), flat(B), flat(C), M, N, K, t(batch) or (), t(a[0]), t(b[0]), t(c[0]),
        a[1], a[2], b[1], b[2], c[1], c[2], np.float32(alpha),
        x0, t(s0), m0, n0, np.float32(beta), x1, t(s1), m1, n1,
    )  # fmt: skip
    return C
