"""Sixteen float32 lanes as one value in numba code: LLVM's `<16 x float>`, one zmm
register with AVX-512 (two ymm with AVX2, four NEON registers on arm: LLVM splits it).

Why: LLVM vectorizes a kernel's innermost loop, not a register tile. A convolution with
few input channels (the RGB stem: 3 channels, 27 or 147 taps) needs each output pixel's
16 or 32 output channels held in registers across all its taps, several pixels at once;
written as plain loops, LLVM kept the accumulators in memory (it cannot prove the output
and the weight apart) and ran scalar `vfmadd213ss` (2.3-2.6 ms for MobileNetV2's stem on
one thread). With these, a kernel says which values are vectors and LLVM keeps them in
registers.

`load(a, i)` / `store(a, i, v)`: lanes a[i:i+16] of a 1-D float32 array (no bounds
check: the caller's loop bounds are the check); `splat(s)`: s in every lane; `fma(a, b,
c)`: a*b + c lane-wise, one rounding; `lane(v, k)`: lane k as a float32; `clamp(v, lo,
hi)`: lo where v < lo, then hi where v > hi, lane-wise (Clip's order: a NaN stays NaN,
and lo > hi gives hi); `nanmax(v, cur)`: the larger lane-wise, a NaN in either kept
(MaxPool's: a NaN in a window is its max).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 16
_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, LANES)


class F32x16(types.Type):
    def __init__(self) -> None:
        super().__init__(name="f32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _VEC)


def _pointer(context, builder, ary_type, ary, index, index_type):
    a = context.make_array(ary_type)(context, builder, ary)
    i = context.cast(builder, index, index_type, types.intp)
    return builder.bitcast(cgutils.gep(builder, a.data, i), _VEC.as_pointer())


def _is_f32_array(a) -> bool:
    # contiguous only: the lanes are 16 neighbours in memory, not 16 strided elements
    return (
        isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 1 and a.layout == "C"
    )


@intrinsic
def load(typingctx, a, i):
    if not (_is_f32_array(a) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load(ptr, align=4)

    return f32x16(a, i), codegen


@intrinsic
def store(typingctx, a, i, v):
    if not (_is_f32_array(a) and isinstance(i, types.Integer) and v == f32x16):
        return None

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], ptr, align=4)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


@intrinsic
def splat(typingctx, s):
    if not isinstance(s, types.Float):
        return None

    def codegen(context, builder, sig, args):
        x = context.cast(builder, args[0], sig.args[0], types.float32)
        i32 = ir.IntType(32)
        one = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, ir.Constant(i32, 0))
        zeros = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
        return builder.shuffle_vector(one, one, zeros)

    return f32x16(s), codegen


@intrinsic
def fma(typingctx, a, b, c):
    if not (a == f32x16 and b == f32x16 and c == f32x16):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v16f32"
        )
        return builder.call(fn, args)

    return f32x16(a, b, c), codegen


@intrinsic
def lane(typingctx, v, k):
    if not (v == f32x16 and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        k32 = builder.trunc(args[1], ir.IntType(32)) if args[1].type.width > 32 else args[1]
        return builder.extract_element(args[0], k32)

    return types.float32(v, k), codegen


@intrinsic
def clamp(typingctx, v, lo, hi):
    if not (v == f32x16 and lo == f32x16 and hi == f32x16):
        return None

    def codegen(context, builder, sig, args):
        v, lo, hi = args
        v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
        return builder.select(builder.fcmp_ordered(">", v, hi), hi, v)

    return f32x16(v, lo, hi), codegen


@intrinsic
def nanmax(typingctx, v, cur):
    if not (v == f32x16 and cur == f32x16):
        return None

    def codegen(context, builder, sig, args):
        v, cur = args
        r = builder.select(builder.fcmp_ordered(">", v, cur), v, cur)  # (a NaN cur stays)
        return builder.select(builder.fcmp_unordered("uno", v, v), v, r)

    return f32x16(v, cur), codegen


__all__ = ["LANES", "clamp", "f32x16", "fma", "lane", "load", "nanmax", "splat", "store"]
