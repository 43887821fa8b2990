"""Error metrics between a tested tensor and its reference, vectorized in numpy.

`tensor_metrics(test, ref, atol=, rtol=)` returns max/mean absolute error, max relative
error, RMS, cosine similarity, SNR in dB, max ULP distance, the share of elements out of
tolerance, exact share, NaN/Inf counts and a histogram of log10 |error|.

Conventions, chosen so a number means the same thing on every tensor:

- Errors are computed in float64 whatever the dtypes (`test - ref`); the reference may be
  float64 while the tested tensor is float32 or float16.
- ULP distances are counted in the *tested* dtype: the reference is first rounded to it,
  then both bit patterns are mapped to ordered integers (negative floats mirrored below
  zero, so -0.0 and +0.0 are one point and adjacent floats differ by one). Integer and
  bool tensors count plain integer distance.
- Out of tolerance means numpy's `isclose` test failing: |err| > atol + rtol * |ref|.
  `need_atol(rtol)` = max(|err| - rtol * |ref|) is the smallest atol that passes at that
  rtol, so a tolerance chosen later can be checked without the tensors.
- Non-finite values: a NaN against a NaN, or an infinity against the same infinity,
  is no error; any other pairing with a non-finite value is a *mismatch* with infinite
  error (max_abs, rms become inf, snr -inf) and counts as out of tolerance.
- max_rel is taken over elements whose reference is non-zero (elsewhere it is undefined;
  the tolerance test and the absolute metrics cover those elements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# log10 |error| bins: 1e-16 .. 1e+4 in half decades; errors outside land in the end bins
HIST_EDGES = np.arange(-16.0, 4.0 + 0.25, 0.5)

METRICS = (
    "max_abs",
    "mean_abs",
    "max_rel",
    "rms",
    "cosine",
    "snr_db",
    "max_ulp",
    "out_of_tol",
    "exact",
    "nan",
    "inf",
    "mismatch",
)


@dataclass
class TensorMetrics:
    """Metrics of one tested tensor against its reference (see the module docstring)."""

    max_abs: float
    mean_abs: float
    max_rel: float
    rms: float
    cosine: float
    snr_db: float
    max_ulp: float
    out_of_tol: float  # share of elements failing |err| <= atol + rtol * |ref|
    exact: float  # share of elements with no error at all
    nan: int  # NaNs in the tested tensor
    inf: int  # infinities in the tested tensor
    mismatch: int  # elements where one side is non-finite and the other differs
    ref_max_abs: float
    hist: np.ndarray = field(repr=False)  # counts per HIST_EDGES bin of log10 |err| (err != 0)
    need_atol: np.ndarray = field(repr=False)  # per rtol asked for: max(|err| - rtol*|ref|)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in METRICS}


_INTS = {2: np.int16, 4: np.int32, 8: np.int64}


def ordered_bits(x: np.ndarray) -> np.ndarray:
    """Float bit patterns as integers (of the float's width) that sort like the floats.

    IEEE floats are sign-magnitude: negative floats have the sign bit set and grow more
    negative as the magnitude grows. Turning sign-magnitude into two's complement, -mag
    for negatives, makes the whole range one increasing sequence with -0.0 and +0.0 both
    at 0 and adjacent floats one apart.
    """
    x = np.asarray(x)
    ints = _INTS.get(x.dtype.itemsize)
    if x.dtype.kind != "f" or ints is None:
        raise TypeError(f"ordered_bits needs float16/32/64, got {x.dtype}")
    i = x.view(ints)
    sign = i >> (8 * x.dtype.itemsize - 1)  # 0 for positive, -1 (all ones) for negative
    magnitude = i & ints(np.iinfo(ints).max)
    return (magnitude ^ sign) - sign  # mag, or ~mag + 1 = -mag: never overflows


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many representable floats lie between `a` and `b` (same float dtype), as float64.

    NaNs have no place on the line: their distance is NaN.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype:
        raise TypeError(f"ulp_distance needs one dtype, got {a.dtype} and {b.dtype}")
    oa, ob = ordered_bits(a), ordered_bits(b)
    if a.dtype.itemsize < 8:  # half and single: the difference fits an int64
        d = np.abs(oa.astype(np.int64) - ob).astype(np.float64)
    else:
        # float64 patterns span 2**64 steps: the difference of int64s can overflow, but as
        # uint64 with wrap-around it is exact because the true difference is in [0, 2**64)
        hi, lo = np.maximum(oa, ob), np.minimum(oa, ob)
        d = (hi.view(np.uint64) - lo.view(np.uint64)).astype(np.float64)
    nan = np.isnan(a) | np.isnan(b)
    return np.where(nan, np.nan, d) if nan.any() else d


def _int_distance(t: np.ndarray, r: np.ndarray) -> np.ndarray:
    t64, r64 = t.astype(np.int64), r.astype(np.int64)
    hi, lo = np.maximum(t64, r64), np.minimum(t64, r64)
    return (hi.view(np.uint64) - lo.view(np.uint64)).astype(np.float64)


def snr_db(signal_energy: float, noise_energy: float) -> float:
    """10*log10(sum ref^2 / sum err^2): inf when exact, -inf for noise over a zero signal."""
    if noise_energy == 0:
        return float("inf")
    if signal_energy == 0 or not np.isfinite(noise_energy):
        return float("-inf")
    return float(10.0 * np.log10(signal_energy / noise_energy))


def _sumsq(x: np.ndarray, y: np.ndarray | None = None) -> float:
    # an elementwise product and numpy's pairwise sum, not BLAS: a BLAS dot spins up
    # threads that fight over small shared machines, and is no more accurate
    return float(np.add.reduce(x * (x if y is None else y)))


def cosine(t: np.ndarray, r: np.ndarray) -> float:
    """Cosine similarity of two float64 vectors; 1 when both are zero, 0 when one is."""
    tt, rr, tr = _sumsq(t), _sumsq(r), _sumsq(t, r)
    if not np.isfinite(tt) or not np.isfinite(rr):  # huge values: rescale and try again
        scale = max(float(np.abs(t).max()), float(np.abs(r).max()))
        return cosine(t / scale, r / scale)
    if tt == 0 and rr == 0:
        return 1.0
    if tt == 0 or rr == 0:
        return 0.0
    return float(np.clip(tr / np.sqrt(tt) / np.sqrt(rr), -1.0, 1.0))


_BIN = float(HIST_EDGES[1] - HIST_EDGES[0])


def error_histogram(abs_err: np.ndarray) -> np.ndarray:
    """Counts of log10 |err| per `HIST_EDGES` bin, for finite non-zero errors."""
    nbins = len(HIST_EDGES) - 1
    e = abs_err[np.isfinite(abs_err) & (abs_err > 0)]
    if e.size == 0:
        return np.zeros(nbins, np.int64)
    # the bins are uniform: index arithmetic and bincount instead of a binary search
    idx = np.floor((np.log10(e) - HIST_EDGES[0]) / _BIN).astype(np.int64)
    return np.bincount(np.clip(idx, 0, nbins - 1), minlength=nbins).astype(np.int64)


def round_reference(ref: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The reference as the tested dtype would hold it (round to nearest)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return ref.astype(dtype)


def needed_atol(abs_err: np.ndarray, abs_ref: np.ndarray, rtols: Sequence[float]) -> np.ndarray:
    """max(|err| - rtol * |ref|) for each rtol: the smallest atol that passes at that rtol."""
    out = np.empty(len(rtols), np.float64)
    buf = np.empty_like(abs_err)  # one scratch buffer for every rtol: no allocations
    for j, q in enumerate(rtols):
        np.multiply(abs_ref, -q, out=buf)
        np.add(buf, abs_err, out=buf)
        out[j] = buf.max()
    return out


def tensor_metrics(
    test: Any,
    ref: Any,
    *,
    atol: float,
    rtol: float,
    rtols: Sequence[float] = (),
) -> TensorMetrics:
    """Metrics of `test` against `ref` (same shape); `rtols` are the rtols for `need_atol`."""
    t, r = np.asarray(test), np.asarray(ref)
    if t.shape != r.shape:
        raise ValueError(f"shapes differ: tested {list(t.shape)}, reference {list(r.shape)}")
    if t.dtype.kind not in "biuf" or r.dtype.kind not in "biuf":
        raise TypeError(f"cannot compare {t.dtype} with {r.dtype}")
    if t.size == 0:
        return _empty(len(rtols))
    with np.errstate(all="ignore"):
        t64 = t.astype(np.float64).ravel()
        r64 = r.astype(np.float64).ravel()
        fin_t, fin_r = np.isfinite(t64), np.isfinite(r64)
        all_t, all_r = bool(fin_t.all()), bool(fin_r.all())
        if all_t and all_r:
            abs_err = np.abs(t64 - r64)
            abs_ref = np.abs(r64)
            mismatch, tc, rc = 0, t64, r64
        else:
            # equal non-finite pairs (nan/nan, +inf/+inf) agree; every other pairing with
            # a non-finite value is an infinite error
            both = fin_t & fin_r
            agree = (np.isnan(t64) & np.isnan(r64)) | (~both & (t64 == r64))
            abs_err = np.where(both, np.abs(t64 - r64), np.where(agree, 0.0, np.inf))
            abs_ref = np.where(fin_r, np.abs(r64), 0.0)
            mismatch = int(np.count_nonzero(~both & ~agree))
            tc, rc = np.where(both, t64, 0.0), np.where(both, r64, 0.0)
        n = abs_err.size

        max_abs = float(abs_err.max())
        sq = _sumsq(abs_err) if mismatch == 0 else float("inf")
        nz = abs_ref > 0
        rel = abs_err[nz] / abs_ref[nz]
        out = np.count_nonzero(abs_err - rtol * abs_ref > atol) / n

        if t.dtype.kind == "f":
            ulps = ulp_distance(t.ravel(), round_reference(r, t.dtype).ravel())
            if not (all_t and all_r):  # NaN has no place: 0 where it agrees, else infinite
                ulps = np.where(np.isnan(ulps), np.where(abs_err == 0, 0.0, np.inf), ulps)
        elif r.dtype.kind in "biu":
            ulps = _int_distance(t.ravel(), r.ravel())
        else:  # an integer tensor against a float reference: distance in units of 1
            ulps = abs_err

        return TensorMetrics(
            max_abs=max_abs,
            mean_abs=float(abs_err.mean()),
            max_rel=float(rel.max()) if rel.size else 0.0,
            rms=float(np.sqrt(sq / n)),
            cosine=cosine(tc, rc),
            snr_db=snr_db(_sumsq(abs_ref), sq),
            max_ulp=float(ulps.max()),
            out_of_tol=float(out),
            exact=float(np.count_nonzero(abs_err == 0)) / n,
            nan=0 if all_t else int(np.count_nonzero(np.isnan(t64))),
            inf=0 if all_t else int(np.count_nonzero(np.isinf(t64))),
            mismatch=mismatch,
            ref_max_abs=float(abs_ref.max()),
            hist=error_histogram(abs_err),
            need_atol=needed_atol(abs_err, abs_ref, rtols),
        )


def _empty(n_rtols: int) -> TensorMetrics:
    """An empty tensor agrees with its empty reference."""
    return TensorMetrics(
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
        float("inf"),
        0.0,
        0.0,
        1.0,
        0,
        0,
        0,
        0.0,
        np.zeros(len(HIST_EDGES) - 1, np.int64),
        np.full(n_rtols, -np.inf),
    )
