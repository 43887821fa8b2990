"""x86 Gemm and MatMul: numpy's matmul (OpenBLAS underneath) with constant operands
prepared once in the factory (transposed, made contiguous, alpha and beta folded in).

Algorithms recorded as `run.algorithm`:

- ``gemm``: Gemm, one BLAS call plus the bias in place.
- ``gemm_flat``: MatMul by a constant 2-D matrix; the batch dimensions of A are folded
  into its rows so that BLAS sees one tall GEMM instead of a loop of small ones.
- ``batched_gemm``: MatMul in general (numpy's batching, broadcasting and 1-D rules).

With a constant float32 B, `autotune` measures five ways of calling BLAS per row count
(eight with MKL, nine on few rows) and keeps the fastest: ``gemm`` (A's rows split over
the threads), ``gemm_t`` (the transposed product, rows split), ``gemm_bt`` (B transposed once, rows
split), ``gemm_cols`` and ``gemm_t_cols`` (B's columns split: each thread reads half the weight,
which wins when A has few rows); with the `mkl` extra also ``mkl_packed``,
``mkl_packed_padded``, ``mkl_packed_cols`` and, for few rows, ``mkl_packed_k`` (MKL's
GEMM on B packed once, split by rows, columns or depth; see _mkl.py and _native.py);
MatMul's show with a ``_flat`` suffix. Each thread's part is one single-threaded BLAS
call (see _parallel.py).

BLAS writes straight into the arena's buffer when the executor passes `out=` (see
backends/base.py); inputs of another dtype compute fresh and are copied there.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from ..base import deliver, dest, returning
from . import _mkl, _parallel, autotune
from ._numba import const_input, declines_dtype
from ._table import kernels

if TYPE_CHECKING:
    from ...ir import Node, Value
    from ..base import CompileContext


@kernels.register("Gemm", since=1)
def gemm(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node) or declines_dtype(node, 1):
        return None
    a = node.attrs
    alpha = float(a.get("alpha", 1.0))
    beta = float(a.get("beta", 1.0))
    trans_a = bool(a.get("transA", 0))
    trans_b = bool(a.get("transB", 0))
    c_const = const_input(node, 2)

    def prepared() -> np.ndarray:
        b = node.inputs[1].const
        bm = b.T if trans_b else b
        # alpha folded into B: one pass less per call, at a rounding step of difference.
        # A transposed B stays a view of the initializer (BLAS and MKL read either order;
        # a C-ordered copy is a candidate of its own, gemm_bt, that counts its memory)
        if alpha != 1.0:  # (in B's own order: a transposed weight's product reads it so)
            bm = bm * bm.dtype.type(alpha)
        if not (bm.flags.c_contiguous or bm.flags.f_contiguous):
            return np.ascontiguousarray(bm)
        return bm

    w = node.inputs[1] if len(node.inputs) > 1 else None
    shape = w.const_shape if w is not None else None
    bm = prepared() if shape is not None and len(shape) == 2 else None
    # a B made when needed (ir.Deferred) is the kernel's own: read again where the products
    # do not hold a form of it (see _weight), and only a stand-in in the plan's env
    own = bm is not None and node.inputs[1].const_deferred
    cm = None
    if c_const is not None and beta != 0.0:
        cm = np.ascontiguousarray(c_const * c_const.dtype.type(beta) if beta != 1.0 else c_const)

    def run(x, b, c=None, out=None):
        if x.ndim != 2 or b.ndim != 2:
            raise ValueError(f"Gemm needs 2-D A and B, got {list(x.shape)} and {list(b.shape)}")
        xa = x.T if trans_a else x
        o = _same_dtype(dest(out), x, b)
        if tuned is not None and not trans_a and x.dtype == np.float32 and x.shape[1] == k:
            y = np.empty((x.shape[0], n), np.float32) if o is None else o
            tuned(x, y)
        elif bm is not None or own:
            y = np.matmul(xa, bm if bm is not None else prepared(), out=o)
        else:
            y = np.matmul(xa, b.T if trans_b else b, out=o)
            if alpha != 1.0:
                y *= y.dtype.type(alpha)
        if c is not None and beta != 0.0:
            bias = cm if cm is not None else (c * c.dtype.type(beta) if beta != 1.0 else c)
            try:
                np.add(y, bias, out=y, casting="unsafe")
            except ValueError:
                raise ValueError(
                    f"Gemm C of shape {list(c.shape)} does not broadcast to {list(y.shape)}"
                ) from None
        return (deliver(dest(out), y.astype(x.dtype, copy=False)) if o is None else o,)

    def bind(x, b, c=None, out=None):
        # (a classifier's Gemm, one call a run: its checks and parts worked out once, the
        # bias added by the product's epilogue on each part)
        o = _same_dtype(dest(out), x, b)
        if tuned is None or trans_a or o is None or x.dtype != np.float32 or x.ndim != 2:
            return None
        if x.shape[1] != k or o.shape != (x.shape[0], n) or not o.flags.c_contiguous:
            return None
        post = None
        if c is not None and beta != 0.0:
            if cm is None or cm.size != n or cm.shape not in ((n,), (1, n)):
                return None
            from .ops_fused_conv import _EMPTY, Epilogue  # (imports this module)

            bias = np.ascontiguousarray(cm.reshape(-1), np.float32)
            post = Epilogue(bias, _EMPTY, (0, np.float32(0), np.float32(0)))
        return returning(tuned.bind(x, o, post), (o,))

    run.algorithm, run.writes_out, run.bind = "gemm", True, bind
    tuned, (k, n) = None, (-1, -1) if bm is None else bm.shape
    if _tunable(bm) and not trans_a:
        run.listeners, run.candidates, run.suffix = [], {}, ""
        tuned = _TunedProduct("Gemm", prepared if own else bm, run, (k, n))
        rows = node.inputs[0].shape
        if rows and len(rows) == 2 and isinstance(rows[0], int) and rows[0] > 0:
            tuned.select(rows[0])
    if own:  # (b: its shape and dtype are read, not its data)
        run.baked = (1,)
        bm = None if tuned is not None else bm  # (the products hold their form of it)
    return run


def _same_dtype(o: np.ndarray | None, *ins: np.ndarray | np.dtype) -> np.ndarray | None:
    """`o` when BLAS can write its result there: every operand (or dtype) of o's dtype."""
    return o if o is not None and all(getattr(a, "dtype", a) == o.dtype for a in ins) else None


def _weight(v: Value) -> Callable[[], np.ndarray]:
    """A constant B as the products read it, each time asked for: a weight left in its
    model's file (ir.Value.const) is read again unless something still holds it. A
    column-major B (a transposed weight, see passes/cleanup/fold.py) is read as it is:
    BLAS and MKL take either order, and a copy would be another weight's worth."""

    def weight() -> np.ndarray:
        b = v.const
        return b if b.flags.f_contiguous else np.ascontiguousarray(b)

    return weight


@kernels.register("MatMul", since=1)
def matmul(node: Node, ctx: CompileContext) -> Callable | None:
    if declines_dtype(node) or declines_dtype(node, 1):
        return None
    shape = node.inputs[1].const_shape if node.inputs[1] is not None else None
    if shape is not None and len(shape) == 2:
        weight, own = _weight(node.inputs[1]), node.inputs[1].const_deferred
        # (one made when needed is read when selection packs it, not now as well)
        bm = None if own else weight()
        (k, n), bdt = shape, (node.inputs[1].dtype if own else bm.dtype)

        def run_flat(x, b, out=None, post=None):
            """`post` (float32 x of 2 or more dims only, see _gemm_builders): the
            epilogue, on blocks of the output as the parts finish them. (b: a stand-in,
            see plan._baked; the weight is the kernel's own.)"""
            o = _same_dtype(dest(out), x, bdt)
            if x.ndim < 2:
                y = np.matmul(x, weight(), out=o)
                return (deliver(dest(out), y.astype(x.dtype, copy=False)) if o is None else o,)
            if x.shape[-1] != k:
                raise ValueError(f"MatMul shapes {list(x.shape)} and {[k, n]} differ in K")
            if tuned is not None and x.dtype == np.float32:
                x2 = np.ascontiguousarray(x).reshape(-1, k)
                o2 = np.empty((x2.shape[0], n), np.float32) if o is None else o.reshape(-1, n)
                tuned(x2, o2, post)
                return (o if o is not None else o2.reshape(*x.shape[:-1], n),)
            if post is not None:  # (not selected: float32 x by a constant of another dtype)
                raise ValueError("MatMul: a fused epilogue needs float32 operands")
            y = np.matmul(x.reshape(-1, k), weight(), out=None if o is None else o.reshape(-1, n))
            if o is not None:
                return (o,)
            return (deliver(dest(out), y.reshape(*x.shape[:-1], n).astype(x.dtype, copy=False)),)

        def bind(x, b, out=None, post=None):
            o = _same_dtype(dest(out), x, bdt)
            if tuned is None or o is None or x.dtype != np.float32 or x.ndim < 2:
                return None
            if x.shape[-1] != k or not (x.flags.c_contiguous and o.flags.c_contiguous):
                return None  # (a copy of x, or an error the unbound call reports)
            return returning(tuned.bind(x.reshape(-1, k), o.reshape(-1, n), post), (o,))

        run_flat.algorithm, run_flat.writes_out, run_flat.baked = "gemm_flat", True, (1,)
        tuned = None
        if bdt == np.float32:
            run_flat.takes_post, run_flat.bind = True, bind
            run_flat.listeners, run_flat.candidates, run_flat.suffix = [], {}, "_flat"
            tuned = _TunedProduct("MatMul", weight if own else bm, run_flat, (k, n))
            rows = _static_rows(node)
            if rows is not None:
                tuned.select(rows)
        return run_flat
    b_const = const_input(node, 1)
    bc = np.ascontiguousarray(b_const) if b_const is not None else None

    def run(x, b, out=None):
        bb = bc if bc is not None else b
        o = _same_dtype(dest(out), x, bb)
        if o is not None and o.ndim:  # (numpy's matmul gives 1-D @ 1-D as a scalar)
            return (np.matmul(x, bb, out=o),)
        y = np.asarray(np.matmul(x, bb)).astype(x.dtype, copy=False)
        return (deliver(dest(out), y),)

    run.algorithm, run.writes_out = "batched_gemm", True
    return run


# -- algorithm selection for a product by a constant matrix --------------------------------------
# the least work worth a thread's part: a handoff costs ~10-20 us, BLAS does ~1e5 FLOP/us
PART_FLOPS = 4e6
# mkl_packed_k is offered for products of at most this many rows. Measured, 2 threads, ms
# (mkl_packed / mkl_packed_cols / mkl_packed_k): 49x4608x512 1.18 / 1.06 / 1.01;
# 49x2048x512 0.53 / 0.49 / 0.48; 196x2304x256 1.00 / 0.93 / 1.09; 784x128x512 0.41 /
# 0.43 / 0.78
DEPTH_SPLIT_ROWS = 128


def grain(flops_per_unit: float) -> int:
    """Units (rows, columns, channels) in the smallest part worth its own thread."""
    return max(1, int(PART_FLOPS // max(1.0, flops_per_unit)))


def split_rows(x2: np.ndarray, b: np.ndarray, o2: np.ndarray) -> np.ndarray:
    """o2 = x2 @ b with x2's rows split over the threads (any 2-D operands BLAS takes)."""
    g = grain(2.0 * x2.shape[1] * b.shape[1])
    _parallel.for_ranges(lambda lo, hi: np.matmul(x2[lo:hi], b, out=o2[lo:hi]), len(x2), g)
    return o2


# (o2, r0, r1, c0, c1): a block of a product's output, rows r0..r1-1 and columns c0..c1-1
Post = Callable[[np.ndarray, int, int, int, int], None]


def _gemm_builders(
    bm: np.ndarray, source: Callable[[], np.ndarray] | None = None, rows: int | None = None
) -> dict[str, Callable]:
    """`name -> build() -> fn(x2, o2)` computing o2 = x2 @ bm for 2-D float32 x2, o2: BLAS
    on bm as given (``gemm``), on the product transposed (``gemm_t``: o2^T = bm^T x2^T,
    which makes BLAS pack and block the operands the other way round) and on a transposed
    copy of bm made once (``gemm_bt``), split by rows of x2; or split by columns of bm
    (``gemm_cols``, ``gemm_t_cols``); with MKL installed, also MKL's GEMM on bm packed
    once, split by rows (``mkl_packed``: every thread reads the one packed copy, laid out
    for a part's rows; ``mkl_packed_padded``: laid out for one row, padded, sometimes
    faster: see _mkl.PackedB) or by columns (``mkl_packed_cols``: each column range packed
    on its first call). (Variants on the calling thread alone won in isolation on
    MobileNetV2's small products, 0.27 ms against 0.38 on two threads, but cost whole
    models 0.6 ms: the previous kernel left half of their input in the other core's
    cache. They are not offered.)

    `fn(x2, o2, post)` calls `post(o2, r0, r1, c0, c1)` on each part's block of o2 (rows
    r0..r1-1, columns c0..c1-1) right after its product, on the thread that made it: a
    fused epilogue then works on the block while it is in that core's cache, and needs
    no handoff of its own.

    `source`, where given, makes bm afresh: bm is then the kernel's own copy (a conv's
    weight reordered), which the candidates that read it per call hold (`held` counts it)
    and the packed ones drop once packed. `rows`, where known, is the row count the
    candidates are measured on: the depth split (``mkl_packed_k``) is offered for few, the
    single-row kernel on numba's threads (``gemv``, gemv.py) for one."""
    k, n = bm.shape
    own = 0 if source is None else bm.nbytes
    # (the packed candidates call weight() for a range not yet packed, never keeping bm)
    weight = source if source is not None else (lambda: bm)
    # what a candidate reads of B per call, cold in a model (autotune.streamed): all of B
    # once per part where the threads split A's rows (they read the same lines), a share
    # of it per thread where they split B's columns or depth
    row_parts = len(_parallel.split(rows or 1, grain(2.0 * k * n)))
    col_parts = len(_parallel.split(n, grain(2.0 * k * (rows or 1)), align=16))

    def by_rows(
        product: Callable,
        held: Callable[[], int] = lambda: own,
        native: Callable | None = None,
        reads: Callable[[], int] = lambda: 4 * k * n,
    ) -> Callable:
        def fn(x2, o2, post=None):
            call = None if native is None else native(x2, o2, post)
            if call is not None:
                call()
                return

            def part(lo: int, hi: int) -> None:
                product(x2[lo:hi], o2[lo:hi])
                if post is not None:
                    post(o2, lo, hi, 0, n)

            _parallel.for_ranges(part, len(x2), grain(2.0 * k * n))

        fn.held = held  # bytes of its own (autotune weighs them)
        fn.streamed = lambda: reads() * row_parts
        fn.bind = lambda x2, o2, post=None: _bound(native, fn, x2, o2, post)
        return fn

    def by_cols(
        product: Callable,
        held: Callable[[], int] = lambda: own,
        native: Callable | None = None,
        reads: Callable[[], int] = lambda: 4 * k * n,
    ) -> Callable:
        def fn(x2, o2, post=None):
            call = None if native is None else native(x2, o2, post)
            if call is not None:
                call()
                return

            def part(lo: int, hi: int) -> None:
                product(x2, o2, lo, hi)
                if post is not None:
                    post(o2, 0, len(x2), lo, hi)

            _parallel.for_ranges(part, n, grain(2.0 * k * len(x2)), align=16)

        fn.held = held
        fn.streamed = lambda: reads() // col_parts
        fn.bind = lambda x2, o2, post=None: _bound(native, fn, x2, o2, post)
        return fn

    def plain():
        return by_rows(lambda x2, o2: np.matmul(x2, bm, out=o2))

    def transposed():
        return by_rows(lambda x2, o2: np.matmul(bm.T, x2.T, out=o2.T))

    def packed_t():
        bt = np.ascontiguousarray(bm.T)  # (a view when bm is a transposed initializer)
        bt_own = 0 if source is None and np.shares_memory(bt, bm) else bt.nbytes
        return by_rows(lambda x2, o2: np.matmul(x2, bt.T, out=o2), lambda: bt_own)

    def cols():
        return by_cols(lambda x2, o2, lo, hi: np.matmul(x2, bm[:, lo:hi], out=o2[:, lo:hi]))

    def cols_t():
        return by_cols(lambda x2, o2, lo, hi: np.matmul(bm[:, lo:hi].T, x2.T, out=o2[:, lo:hi].T))

    builders = {
        "gemm": plain,
        "gemm_t": transposed,
        "gemm_bt": packed_t,
        "gemm_cols": cols,
        "gemm_t_cols": cols_t,
    }
    if rows == 1:

        def single_row():
            from . import gemv  # (imports _native, which imports this module)

            bt = np.ascontiguousarray(bm.T)  # (a view when bm is a transposed initializer)
            bt_own = 0 if source is None and np.shares_memory(bt, bm) else bt.nbytes
            fn = by_rows(
                lambda x2, o2: np.matmul(x2, bt.T, out=o2),
                lambda: bt_own,
                lambda x2, o2, post: gemv.gemv_call(bt, x2, o2, post),
            )
            fn.streamed = lambda: bt.nbytes // len(_parallel.split(n, gemv.GRAIN))  # (by columns)
            return fn

        builders["gemv"] = single_row
    if _mkl.available():
        from . import _native  # (imports the epilogue kernels, which import this module)

        # the rows of each part of a product split by rows: the rows MKL packs B for
        # (_mkl.PackedB: two or more, its layout without padding)
        part_rows = max(2, (rows or 2) // len(_parallel.split(rows or 2, grain(2.0 * k * n))))

        def mkl_packed(pack_rows: int = part_rows):
            packed = _mkl.PackedB(bm, pack_rows)

            def native(x2, o2, post):  # the parts on numba's threads, where they can run
                return _native.packed_rows_call(packed, x2, o2, post, grain(2.0 * k * n))

            return by_rows(packed.product, packed.resident, native, packed.resident)

        def mkl_packed_cols():
            packs: dict[tuple[int, int], _mkl.PackedB] = {}  # one per column range
            pack_rows = max(2, rows or 2)

            def product(x2, o2, lo, hi):
                pack = _native.packed_ranges(packs, weight, [(lo, hi)], False, pack_rows)[0]
                pack.product(x2, o2[:, lo:hi])

            def native(x2, o2, post):
                g = grain(2.0 * k * len(x2))
                return _native.packed_split_call(packs, weight, x2, o2, post, g, rows=pack_rows)

            held = lambda: sum(p.resident() for p in packs.values())  # noqa: E731
            fn = by_cols(product, held, native)
            fn.streamed = lambda: max((p.resident() for p in packs.values()), default=0)
            return fn

        def mkl_packed_k():
            packs: dict[tuple[int, int], _mkl.PackedB] = {}  # one per range of B's rows
            pack_rows = max(2, rows or 2)

            def native(x2, o2, post):
                g = grain(2.0 * len(x2) * n)
                return _native.packed_split_call(
                    packs, weight, x2, o2, post, g, depth=True, rows=pack_rows
                )

            def fn(x2, o2, post=None):
                call = native(x2, o2, post)
                if call is None:
                    _depth_on_pool(packs, weight, x2, o2, post)
                else:
                    call()

            fn.held = lambda: sum(p.resident() for p in packs.values())
            fn.streamed = lambda: max((p.resident() for p in packs.values()), default=0)
            fn.bind = lambda x2, o2, post=None: _bound(native, fn, x2, o2, post)
            return fn

        builders |= {
            "mkl_packed": mkl_packed,
            "mkl_packed_cols": mkl_packed_cols,
        }
        if rows != 1:  # (for one row, mkl_packed is this layout)
            builders["mkl_packed_padded"] = partial(mkl_packed, 1)
        if rows is not None and rows <= DEPTH_SPLIT_ROWS:
            builders["mkl_packed_k"] = mkl_packed_k
    return builders


def _depth_on_pool(
    packs: dict, weight: Callable[[], np.ndarray], x2: np.ndarray, o2: np.ndarray, post
) -> None:
    """mkl_packed_k where numba's threads cannot run it (`_native.packed_split_call`):
    the depth ranges' products on the pool, then their sum and `post` here."""
    from . import _native  # (imports the epilogue kernels, which import this module)

    m, k, n = x2.shape[0], x2.shape[1], o2.shape[1]
    parts = _parallel.split(k, grain(2.0 * m * n), align=16)
    packed = _native.packed_ranges(packs, weight, parts, True, max(2, m))
    outs = [o2] + [np.empty_like(o2) for _ in parts[1:]]

    def part(i: int) -> None:
        lo, hi = parts[i]
        packed[i].product(x2[:, lo:hi], outs[i])

    _parallel.parallel(part, len(parts))
    for extra in outs[1:]:
        o2 += extra
    if post is not None:
        post(o2, 0, m, 0, n)


def _bound(
    native: Callable | None, fn: Callable, x2: np.ndarray, o2: np.ndarray, post: Post | None
) -> Callable[[], object]:
    """`fn(x2, o2, post)` as a call of no arguments: the native parts' call with its pointers
    and parts worked out now where that path applies, else fn itself on these arrays."""
    call = None if native is None else native(x2, o2, post)
    return call if call is not None else partial(fn, x2, o2, post)


# the candidates whose parts run OpenBLAS on the Python pool (_parallel.py)
POOL_GEMMS = ("gemm", "gemm_t", "gemm_bt", "gemm_cols", "gemm_t_cols")


def _contenders(
    builders: dict[str, Callable], rows: int, flops: float, op: str
) -> dict[str, Callable]:
    """The candidates selection measures: all, unless MKL's run on numba's threads here and
    the product has more than one row and is worth measuring (`autotune.MIN_FLOPS`: a
    smaller one keeps its default, one OpenBLAS call on this thread); then not OpenBLAS's
    on the Python pool (unless one of those is forced). Timed alone they won by a few
    percent now and then; in a model they ran at about twice that: MobileNetV2 with every
    conv's product on `gemm_bt` 25.3 ms a run against 13.5 on `mkl_packed` (onnxruntime
    9.2-9.3 in both processes), and where selection picked them, their convs took
    0.35-0.50 ms against MKL's 0.12-0.23. (A single row, as a classifier's: one call on
    the calling thread, no pool.)"""
    from . import _native  # (imports the epilogue kernels, which import this module)

    if rows <= 1 or flops < autotune.MIN_FLOPS or autotune.forced(op):
        return builders
    if not (_mkl.available() and _native.available()):
        return builders
    return {name: build for name, build in builders.items() if name not in POOL_GEMMS}


class _TunedProduct:
    """x2 @ bm by the algorithm selected per row count (rows vary with batch and sequence).

    `bm` is a view of a constant, or a function making it afresh: the kernel's own copy
    (a reordered conv weight, or a weight read from its file when needed: ir.Deferred),
    made for each selection and then kept only by the algorithms that read it per call
    (see `_gemm_builders`)."""

    def __init__(
        self,
        op: str,
        bm: np.ndarray | Callable[[], np.ndarray],
        run: Callable,
        shape: tuple[int, int] | None = None,
        post: Callable[[int], Post] | None = None,
    ) -> None:
        """`shape`: (K, N), given where bm is a function. `post(rows)`, where given, is the
        epilogue the candidates are measured with: the one the kernel runs on each part's
        block. (Measured bare on ResNet-50's 3136x64 by 64x256, MKL's packed GEMM split by
        columns tied with the split by rows, 0.97 ms each; with the conv's bias, residual
        and ReLU 1.40 against 1.16, its epilogue reading blocks of whole columns back.)"""
        self.op, self.run, self.post = op, run, post
        self.source = bm if callable(bm) else None
        self.bm = None if callable(bm) else bm
        self.k, self.n = shape if callable(bm) else bm.shape
        self.fns: dict[int, Callable] = {}

    def __call__(self, x2: np.ndarray, o2: np.ndarray, post: Post | None = None) -> np.ndarray:
        fn = self.fns.get(x2.shape[0])
        if fn is None:
            fn = self.select(x2.shape[0])
        fn(x2, o2, post)
        return o2

    def held(self) -> int:
        """Bytes the selected algorithms hold of their own (packs, copies of bm)."""
        return sum(autotune.held(fn) for fn in self.fns.values())

    def streamed(self) -> int:
        """Bytes the selected algorithm reads of bm per call (`autotune.streamed`): the
        most among the row counts selected for."""
        return max((autotune.streamed(fn) for fn in self.fns.values()), default=0)

    def bind(self, x2: np.ndarray, o2: np.ndarray, post: Post | None = None) -> Callable:
        """`self(x2, o2, post)` as a call of no arguments, bound to these arrays (see
        backends/base.py): the selected algorithm's own binding."""
        fn = self.fns.get(x2.shape[0])
        if fn is None:
            fn = self.select(x2.shape[0])
        return fn.bind(x2, o2, post)

    def select(self, rows: int) -> Callable:
        k, n = self.k, self.n
        bm = self.bm if self.source is None else self.source()
        flops = 2.0 * rows * k * n
        builders = _contenders(_gemm_builders(bm, self.source, rows), rows, flops, self.op)
        # (B^T is the weight as it is, a Linear layer's (N, K): the constant itself, or the
        # kernel's own copy read from its file, which then replaces it; no transposed copy)
        in_place = bool(bm.T.flags.c_contiguous)
        del bm  # (the builders keep it where they need it)

        def make_args():
            x2 = np.random.default_rng(0).standard_normal((rows, k), dtype=np.float32)
            o2 = np.empty((rows, n), np.float32)
            return (x2, o2) if self.post is None else (x2, o2, self.post(rows))

        sample = None if self.post is None else self.post(1)  # (choices differ with it)
        how = {} if sample is None else {"epilogue": [int(sample.act), bool(sample.z.size)]}
        key = autotune.cache_key(self.op, [rows, k, n], how)
        default = "gemm" if "gemm" in builders else "mkl_packed"
        if "gemv" in builders and in_place and _native_available():
            # (one row reads its weight once: memory-bound, however few its flops, and
            # below MIN_FLOPS the default is not measured: see gemv.py. Where it would
            # need a transposed copy, measuring decides, weighing the copy's memory)
            default = "gemv"
        _, fn, choice = autotune.select(self.op, key, builders, default, make_args, flops)
        if len(self.fns) < 8:
            self.fns[rows] = fn
        autotune.announce(self.run, choice, self.run.suffix)
        return fn


def _native_available() -> bool:
    from . import _native  # (imports the epilogue kernels, which import this module)

    return _native.available()


def _tunable(bm: np.ndarray | None) -> bool:
    return bm is not None and bm.dtype == np.float32 and bm.ndim == 2


def _static_rows(node: Node) -> int | None:
    """Rows of A folded to 2-D (all but its last dim), when shape inference knows them."""
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape) or len(shape) < 2:
        return None
    return int(np.prod(shape[:-1]))
