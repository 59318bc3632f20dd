"""Input checking and the sufficient statistics every metric is computed from.

All metrics take ``correct`` (1 = the answer was right, 0 = wrong) and ``conf`` (the stated
probability of being right, in [0, 1]). Every metric in this package is a function of, for each
distinct confidence value ``v_k``, the number of right answers ``pos_k`` and of wrong answers
``neg_k`` at that value. Kernels therefore take ``(values, pos, neg)`` where ``pos``/``neg`` are
``(R, K)`` arrays: row 0 of a point estimate, or one row per bootstrap resample (a resample is just
a different vector of counts over the same values), so point estimates and bootstrap replicates run
through the same code.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

# A confidence within this distance of a bin edge counts as *on* the edge: 0.1, 0.3 and 0.7 typed
# as decimals are not exactly representable, and must not land in a bin by float rounding.
EDGE_TOL = 1e-9


class MetricInputError(ValueError):
    """Inputs a metric cannot be computed from (empty, NaN, out of range, mismatched lengths)."""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined on these inputs (e.g. AUROC with one class); NaN is returned."""


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def as_correct(correct) -> np.ndarray:
    """``correct`` as float64 0/1; NaN/None, or values other than 0/1/True/False, are errors."""
    try:
        arr = np.asarray(correct, dtype=np.float64)
    except (TypeError, ValueError):
        raw = np.asarray(correct, dtype=object).ravel()
        bad = np.array([x is None for x in raw])
        if bad.any():
            raise MetricInputError(
                f"correct is None at index {_first_bad(bad)}: every record needs a grade"
            ) from None
        raise MetricInputError("correct must be booleans or 0/1 numbers") from None
    arr = arr.ravel()
    # fast path (a few BLAS-speed reductions): in [0, 1] (NaN fails) and sum y^2 == sum y, which
    # for values in [0, 1] holds only when every value is 0 or 1 (both sums exact integers)
    if arr.size and arr.min() >= 0 and arr.max() <= 1 and float(arr @ arr) == float(arr.sum()):
        return arr
    nan = np.isnan(arr)
    if nan.any():
        raise MetricInputError(
            f"correct is NaN at index {_first_bad(nan)}: every record needs a grade "
            "(an ungraded answer is not 'wrong'; drop it or grade it first)"
        )
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        i = _first_bad(bad)
        raise MetricInputError(f"correct must be 0/1 or bool; index {i} is {arr[i]!r}")
    return arr


def as_conf(conf, *, allow_missing: bool = False) -> np.ndarray:
    """``conf`` as float64 with None turned into NaN; checks the range [0, 1].

    NaN/None marks an unparsed confidence. Metric functions refuse it (``allow_missing=False``)
    because what to do with it is a policy decision, taken in :func:`calbench.metrics.summarize`.
    """
    try:
        arr = np.asarray(conf, dtype=np.float64)
    except (TypeError, ValueError):
        arr = _floats_or_none(np.asarray(conf, dtype=object).ravel())
    arr = arr.ravel()
    if arr.size and arr.min() >= 0 and arr.max() <= 1:  # fast path: NaN makes min/max NaN
        return arr
    nan = np.isnan(arr)
    if nan.any() and not allow_missing:
        raise MetricInputError(
            f"conf is NaN/None at index {_first_bad(nan)} (an unparsed confidence); choose a "
            "policy first: calbench.metrics.apply_policy(correct, conf, 'drop'|'fill=0.5'|'fill=0')"
        )
    bad = ~nan & ((arr < 0) | (arr > 1))
    if bad.any():
        i = _first_bad(bad)
        raise MetricInputError(f"conf must lie in [0, 1]; index {i} is {arr[i]!r}")
    return arr


def _floats_or_none(raw: np.ndarray) -> np.ndarray:
    """Object array -> float64, None -> NaN; anything else that is not a number is an error."""
    out = np.empty(raw.size)
    for i, x in enumerate(raw):
        try:
            out[i] = np.nan if x is None else float(x)
        except (TypeError, ValueError):
            raise MetricInputError(
                f"conf must be numbers in [0, 1] (None/NaN for unparsed); index {i} is {x!r}"
            ) from None
    return out


def check(correct, conf) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(correct, conf)`` float64 arrays of equal, non-zero length, no NaN."""
    y = as_correct(correct)
    c = as_conf(conf)
    if y.shape != c.shape:
        raise MetricInputError(f"correct has {y.size} entries but conf has {c.size}")
    if y.size == 0:
        raise MetricInputError("no records (n = 0): every metric is undefined on an empty set")
    return y, c


def group(correct: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct confidence values (ascending) and the count of right/wrong answers at each.

    Returns ``values (K,)``, ``pos (1, K)``, ``neg (1, K)``; inputs must already be checked.
    """
    values, inverse = np.unique(conf, return_inverse=True)
    k = values.size
    pos = np.bincount(inverse, weights=correct, minlength=k)
    tot = np.bincount(inverse, minlength=k).astype(np.float64)
    return values, pos[None, :], (tot - pos)[None, :]


def as_rows(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if pos.ndim == 1:
        pos, neg = pos[None, :], neg[None, :]
    return pos, neg


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (an undefined quantity, never a silent 0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


# --- parameters ----------------------------------------------------------------------------------


def int_param(name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools, floats and strings are errors naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MetricInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise MetricInputError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def real_param(
    name: str, value, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
    """``value`` as a finite float in the interval [lo, hi], ( for an open end; NaN, inf,
    strings and out-of-range values are errors naming ``name``."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MetricInputError(f"{name} must be a number in {interval}, got {value!r}")
    x = float(value)
    below = x <= lo if lo_open else x < lo
    above = x >= hi if hi_open else x > hi
    if not math.isfinite(x) or below or above:
        raise MetricInputError(f"{name} must be a number in {interval}, got {value!r}")
    return x
