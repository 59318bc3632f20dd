"""Post-hoc recalibration: maps g from a stated confidence c to a recalibrated one g(c), fitted
on (correct, conf) pairs, and cross-fitting so that no record is scored by a map fitted on it.

Methods (``METHODS``), with z = logit(clip(c, EPS, 1 - EPS)):

* ``temperature``: g(c) = sigmoid(z / T), one parameter T in [T_MIN, T_MAX], fitted by NLL
  (Guo et al. 2017). It keeps every confidence on its side of 0.5 and can only sharpen (T < 1) or
  soften (T > 1); a bias (e.g. every answer stated at 90% on a task it gets 30% right) it can only
  shrink towards 0.5, never reach.
* ``platt``: g(c) = sigmoid(a z + b), fitted by NLL against Platt's (1999) targets: a right answer
  counts as t+ = (N+ + 1) / (N+ + 2), a wrong one as t- = 1 / (N- + 2) (N+/N- = right/wrong answers
  in the fitting set). The targets keep (a, b) finite when the outcomes are separable by
  confidence or all alike, where the plain maximum-likelihood fit diverges; they are what
  scikit-learn's ``CalibratedClassifierCV(method="sigmoid")`` fits too. With all fitted
  confidences equal, a = 0 and b = logit(mean target).
* ``isotonic``: the non-decreasing g minimising sum_i (g(c_i) - y_i)^2 (pool-adjacent-violators,
  Zadrozny & Elkan 2002), fitted in the confidence scale. Tied confidences get one fitted value
  (the mean outcome of the tie is fitted, weighted by its size); between fitted points g is
  linear, beyond them constant -- scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``.
* ``histogram``: equal-mass bins of the fitted confidences (``HIST_BINS`` = 10, the ECE's bin
  count: about n/10 answers per bin), g = the bin's share of right answers (Zadrozny & Elkan
  2001). Bins follow :func:`calbench.metrics.binning.mass_bin_index`, the rule of the
  equal-mass ECE: a tie is never split, so heavy ties give fewer, all non-empty, bins. A new
  confidence falls in the bin whose range holds it; the boundary between two bins is the
  midpoint between the highest fitted confidence of one and the lowest of the next.

EPS = 1e-6 (logits within +-13.8): a stated 0 or 1 needs a finite logit, and 1e-6 is far below
the resolution of stated confidences (steps of 0.01 or 0.05) and of all but the most extreme
log-probability confidences, so the clip merges no values that a run tells apart in practice.

A fitted map is a JSON-serialisable dict (``method``, its parameters, ``n_fit``), made by
:func:`fit` and used by :func:`apply`. Unparsed confidences (NaN/None) are not fitted on and stay
NaN through :func:`apply` and :func:`crossfit`: the unparsed-confidence policy of
:func:`calbench.metrics.summarize` (``drop``, ``fill=0.5``, ``fill=0``) then treats them as it
treats raw confidences.

Cross-fitting (:func:`crossfit`): the parsed records are split into k folds (``crossfit_folds``),
and each fold is scored by a map fitted on the other k - 1 folds only. Folds are stratified by
outcome: units (records, or groups of records sharing an id, which are never split) are shuffled
with ``seed``, stably sorted by their share of right answers and dealt round-robin, so fold
sizes and their numbers of right answers differ by at most about one unit.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import scipy.special

from calbench.metrics.binning import mass_bin_index
from calbench.metrics.inputs import (
    MetricInputError,
    as_conf,
    as_correct,
    group,
    int_param,
)

METHODS = ("temperature", "platt", "isotonic", "histogram")
EPS = 1e-6
HIST_BINS = 10
CROSSFIT_K = 5
# Temperature range: at T_MAX every output lies within 0.0035 of 0.5 (|z| <= 13.8), i.e. the
# confidence carries no signal temperature scaling can use; at T_MIN a logit of 0.1 maps to
# 1 - 5e-5. A fit at either end says so in the map (``at_bound``).
T_MIN = 0.01
T_MAX = 1000.0


def logit(conf) -> np.ndarray:
    """z = log(c / (1 - c)) of c clipped to [EPS, 1 - EPS]."""
    c = np.clip(np.asarray(conf, dtype=np.float64), EPS, 1 - EPS)
    return np.log(c) - np.log1p(-c)


def _method(method) -> str:
    if method not in METHODS:
        raise MetricInputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return method


def _parsed(correct, conf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated arrays and the mask of records whose confidence parsed."""
    y = as_correct(correct)
    c = as_conf(conf, allow_missing=True)
    if y.shape != c.shape:
        raise MetricInputError(f"correct has {y.size} entries but conf has {c.size}")
    return y, c, ~np.isnan(c)


# --- fitting ---------------------------------------------------------------------------------


def fit(correct, conf, method: str, *, n_bins: int = HIST_BINS) -> dict:
    """Fit a recalibration map of ``method`` on the records whose confidence parsed.

    Returns a JSON-serialisable dict for :func:`apply`: ``method``, ``n_fit`` (records fitted
    on) and the parameters (temperature: ``T``, ``at_bound``, ``eps``; platt: ``a``, ``b``,
    ``eps``; isotonic: the fitted points ``x``, ``y``; histogram: ``edges``, ``values``,
    ``n_bins``). ``n_bins`` is used by ``histogram`` only.
    """
    method = _method(method)
    n_bins = int_param("n_bins", n_bins, 1)
    y, c, ok = _parsed(correct, conf)
    y, c = y[ok], c[ok]
    if y.size == 0:
        raise MetricInputError("no record with a parsed confidence to fit a recalibration map on")
    values, pos, neg = group(y, c)  # distinct confidences, right/wrong answers at each
    params = _FITTERS[method](values, (pos + neg)[0], pos[0], n_bins)
    return {"method": method, "n_fit": int(y.size), **params}


def _fit_temperature(values, cnt, pos, n_bins) -> dict:
    """T = 1 / beta, beta the root of the NLL gradient sum_k (m_k sigmoid(beta z_k) - pos_k) z_k,
    which increases in beta (the NLL is convex in beta); clamped to [1/T_MAX, 1/T_MIN]."""
    z = logit(values)
    if not np.any(z):  # every confidence 0.5: every T maps to 0.5; keep the identity
        return {"T": 1.0, "at_bound": False, "eps": EPS}

    def grad(beta: float) -> float:
        return float(((cnt * scipy.special.expit(beta * z) - pos) * z).sum())

    lo, hi = 1 / T_MAX, 1 / T_MIN
    if grad(lo) >= 0:
        beta, bound = lo, True
    elif grad(hi) <= 0:
        beta, bound = hi, True
    else:
        beta, bound = scipy.optimize.brentq(grad, lo, hi, xtol=1e-14, rtol=1e-13), False
    return {"T": 1 / beta, "at_bound": bound, "eps": EPS}


def _fit_platt(values, cnt, pos, n_bins) -> dict:
    """(a, b) minimising sum_k [m_k softplus(a z_k + b) - t_k (a z_k + b)], t_k the sum of the
    Platt targets of the records at z_k; strictly convex with two or more distinct z."""
    z = logit(values)
    n_pos = pos.sum()
    n_neg = cnt.sum() - n_pos
    t = pos * (n_pos + 1) / (n_pos + 2) + (cnt - pos) / (n_neg + 2)
    if np.ptp(z) == 0:
        return {"a": 0.0, "b": float(scipy.special.logit(t.sum() / cnt.sum())), "eps": EPS}
    zs = np.vstack([z, np.ones_like(z)])  # (2, K): s = (a, b) @ zs

    def fun(w):
        s = w @ zs
        p = scipy.special.expit(s)
        return float((cnt * np.logaddexp(0, s) - t * s).sum()), zs @ (cnt * p - t)

    def hess(w):
        p = scipy.special.expit(w @ zs)
        return (zs * (cnt * p * (1 - p))) @ zs.T

    res = scipy.optimize.minimize(
        fun,
        np.array([1.0, 0.0]),
        jac=True,
        hess=hess,
        method="trust-exact",
        options={"gtol": 1e-10 * max(1.0, cnt.sum())},
    )
    if not res.success and np.abs(res.jac).max() > 1e-6 * cnt.sum():
        raise MetricInputError(f"Platt scaling did not converge: {res.message}")
    return {"a": float(res.x[0]), "b": float(res.x[1]), "eps": EPS}


def _fit_isotonic(values, cnt, pos, n_bins) -> dict:
    """Pool adjacent violators on the mean outcome of each distinct confidence, weighted by its
    count; returns the fitted points, keeping only the two ends of each run of equal values (g
    is linear between fitted points, so the points inside a flat run add nothing)."""
    g = _pav(pos / cnt, cnt)
    keep = np.ones(g.size, dtype=bool)
    if g.size > 2:
        keep[1:-1] = (g[1:-1] != g[:-2]) | (g[1:-1] != g[2:])
    return {"x": values[keep].tolist(), "y": g[keep].tolist()}


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The weighted non-decreasing least-squares fit of ``y`` (ordered by x)."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        m, ww, size = yi, wi, 1
        while means and means[-1] > m:  # a violator: pool with the block before
            pw = weights.pop()
            m = (means.pop() * pw + m * ww) / (pw + ww)
            ww += pw
            size += sizes.pop()
        means.append(m)
        weights.append(ww)
        sizes.append(size)
    return np.repeat(np.array(means), sizes)


def _fit_histogram(values, cnt, pos, n_bins) -> dict:
    b = mass_bin_index(cnt[None, :], n_bins)[0]  # non-decreasing over the ascending values
    _, first = np.unique(b, return_index=True)  # first value of each non-empty bin
    edges = (values[first[1:] - 1] + values[first[1:]]) / 2
    tot = np.add.reduceat(cnt, first)
    right = np.add.reduceat(pos, first)
    return {"edges": edges.tolist(), "values": (right / tot).tolist(), "n_bins": n_bins}


_FITTERS = {
    "temperature": _fit_temperature,
    "platt": _fit_platt,
    "isotonic": _fit_isotonic,
    "histogram": _fit_histogram,
}


# --- applying --------------------------------------------------------------------------------

_PARAMS = {
    "temperature": ("T",),
    "platt": ("a", "b"),
    "isotonic": ("x", "y"),
    "histogram": ("edges", "values"),
}


def apply(recal_map: dict, conf) -> np.ndarray:
    """g(conf) for a map made by :func:`fit`; NaN/None (unparsed) stays NaN."""
    if not isinstance(recal_map, dict):
        raise MetricInputError(f"a recalibration map is a dict made by fit(); got {recal_map!r}")
    method = _method(recal_map.get("method"))
    missing = [k for k in _PARAMS[method] if k not in recal_map]
    if missing:
        raise MetricInputError(f"{method} map lacks {', '.join(missing)}")
    c = as_conf(conf, allow_missing=True)
    out = np.full(c.shape, np.nan)
    ok = ~np.isnan(c)
    out[ok] = _apply(recal_map, method, c[ok])
    return out


def _apply(m: dict, method: str, c: np.ndarray) -> np.ndarray:
    if method == "temperature":
        t = _real(m, "T")
        if not t > 0:
            raise MetricInputError(f"temperature map: T must be > 0, got {t!r}")
        return scipy.special.expit(logit(c) / t)
    if method == "platt":
        return scipy.special.expit(_real(m, "a") * logit(c) + _real(m, "b"))
    if method == "isotonic":
        x, g = _array(m, "x"), _array(m, "y")
        if x.size == 0 or x.size != g.size or np.any(np.diff(x) <= 0) or np.any(np.diff(g) < 0):
            raise MetricInputError("isotonic map: x must increase, y not decrease, same length")
        return np.interp(c, x, g)
    edges, v = _array(m, "edges"), _array(m, "values")
    if v.size != edges.size + 1 or np.any(np.diff(edges) <= 0):
        raise MetricInputError("histogram map: edges must increase; one more value than edges")
    return v[np.searchsorted(edges, c, side="left")]


def _real(m: dict, key: str) -> float:
    try:
        x = float(m[key])
    except (TypeError, ValueError):
        raise MetricInputError(
            f"{m['method']} map: {key} must be a number, got {m[key]!r}"
        ) from None
    if not math.isfinite(x):
        raise MetricInputError(f"{m['method']} map: {key} must be finite, got {x!r}")
    return x


def _array(m: dict, key: str) -> np.ndarray:
    try:
        a = np.asarray(m[key], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise MetricInputError(f"{m['method']} map: {key} must be a list of numbers") from None
    if not np.all(np.isfinite(a)):
        raise MetricInputError(f"{m['method']} map: {key} holds a non-finite number")
    return a


# --- cross-fitting ---------------------------------------------------------------------------


def crossfit_folds(correct, conf, k: int = CROSSFIT_K, seed: int = 0, groups=None) -> np.ndarray:
    """The fold (0 .. k-1) of each record; -1 for records whose confidence is unparsed.

    Units are records, or with ``groups`` (one label per record, e.g. question ids) the records
    sharing a label, which always share a fold. The parsed units are shuffled with ``seed``,
    stably sorted by their share of right answers and dealt to folds round-robin (stratified by
    outcome). ``k`` must be 2 .. the number of parsed units.
    """
    k = int_param("k", k, 2)
    seed = int_param("seed", seed, 0)
    y, _, ok = _parsed(correct, conf)
    return _folds(y, ok, k, seed, groups)


def _folds(y: np.ndarray, ok: np.ndarray, k: int, seed: int, groups) -> np.ndarray:
    """:func:`crossfit_folds` on validated outcomes ``y`` and parsed mask ``ok``."""
    fold = np.full(y.size, -1, dtype=np.int64)
    if groups is None:
        unit = np.arange(y.size)
    else:
        if len(groups) != y.size:
            raise MetricInputError(
                f"groups has {len(groups)} entries but there are {y.size} records"
            )
        _, unit = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        unit = unit.ravel()
    units, u = np.unique(unit[ok], return_inverse=True)
    if units.size < k:
        what = "records" if units.size == ok.sum() else "groups of records sharing an id"
        raise MetricInputError(
            f"k = {k} folds but only {units.size} {what} with a parsed confidence (k must be "
            "2 .. that number)"
        )
    share = np.bincount(u, weights=y[ok]) / np.bincount(u)
    perm = np.random.default_rng(seed).permutation(units.size)
    order = perm[np.argsort(share[perm], kind="stable")]
    unit_fold = np.empty(units.size, dtype=np.int64)
    unit_fold[order] = np.arange(units.size) % k
    fold[ok] = unit_fold[u]
    return fold


def crossfit(
    correct,
    conf,
    method: str,
    k: int = CROSSFIT_K,
    seed: int = 0,
    *,
    n_bins: int = HIST_BINS,
    groups=None,
) -> np.ndarray:
    """Recalibrated confidences, each record's from a map fitted on the other folds only
    (:func:`crossfit_folds`; same ``k``, ``seed``, ``groups``). Unparsed confidences stay NaN."""
    return crossfit_detail(correct, conf, method, k, seed, n_bins=n_bins, groups=groups)[0]


def crossfit_detail(
    correct,
    conf,
    method: str,
    k: int = CROSSFIT_K,
    seed: int = 0,
    *,
    n_bins: int = HIST_BINS,
    groups=None,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """:func:`crossfit` with its folds (:func:`crossfit_folds`) and the k fitted maps (map f
    scored fold f and was fitted on every other fold)."""
    method = _method(method)
    n_bins = int_param("n_bins", n_bins, 1)
    k = int_param("k", k, 2)
    seed = int_param("seed", seed, 0)
    y, c, ok = _parsed(correct, conf)  # validated once; the folds and the fits reuse them
    fold = _folds(y, ok, k, seed, groups)
    out = np.full(c.shape, np.nan)
    maps = []
    for f in range(int(fold.max()) + 1):
        test = fold == f
        train = (fold >= 0) & ~test
        maps.append(fit(y[train], c[train], method, n_bins=n_bins))
        out[test] = apply(maps[-1], c[test])
    return out, fold, maps
