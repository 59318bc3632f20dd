"""Accuracy, confidence summaries and proper scoring rules (Brier, its decomposition, NLL).

Notation: n records with confidence c_i in [0, 1] and correctness y_i in {0, 1}.
Kernels ``*_k(values, pos, neg)`` work on counts of right/wrong answers per confidence value,
one row per (re)sample; see :mod:`calbench.metrics.inputs`.
"""

from __future__ import annotations

import numpy as np

from calbench.metrics.binning import width_bin_index, width_bin_stats
from calbench.metrics.inputs import (
    MetricInputError,
    as_correct,
    as_rows,
    check,
    group,
    int_param,
    real_param,
    safe_div,
)

OVERCONFIDENT_AT = 0.9  # "confident": a stated probability of at least 90%
NLL_EPS = 1e-3
EXACT_MAX_VALUES = 21  # Brier decomposition: exact grouping up to this many distinct values


def accuracy(correct, conf=None) -> float:
    """Accuracy = (1/n) sum_i y_i. ``conf`` is ignored (accepted for a uniform signature)."""
    y = as_correct(correct)
    if y.size == 0:
        raise MetricInputError("no records (n = 0): accuracy is undefined on an empty set")
    return float(y.mean())


def mean_confidence(correct, conf) -> float:
    """Mean confidence = (1/n) sum_i c_i (compare with accuracy: the gap is over/underconfidence)."""
    _, c = check(correct, conf)
    return float(c.mean())


def overconfidence_rate(correct, conf, threshold: float = OVERCONFIDENT_AT) -> float:
    """Overconfidence rate = (1/n) #{i : c_i >= threshold and y_i = 0}, threshold 0.9: the share
    of all records that are confidently wrong."""
    y, c = check(correct, conf)
    threshold = real_param("threshold", threshold, 0, 1)
    return float(np.mean((c >= threshold) & (y == 0)))


def brier(correct, conf) -> float:
    """Brier score = (1/n) sum_i (c_i - y_i)^2 (0 is perfect; always answering 0.5 scores 0.25)."""
    y, c = check(correct, conf)
    d = c - y
    return float(d @ d) / d.size


def brier_bins(n_values: int, n_bins: int = 10) -> int | None:
    """The grouping of the Brier decomposition for forecasts taking ``n_values`` distinct values:
    None (exact: one group per distinct value) when ``n_values <= EXACT_MAX_VALUES``, else
    ``n_bins`` equal-width bins.

    Grouping by value only makes sense when values repeat: with every forecast distinct, each
    group holds one record, o_k is that record's outcome, and REL = BS, RES = UNC whatever the
    forecasts are worth. 21 values cover every verbalized scale in steps of 0.05 (0, 0.05, ..., 1).
    """
    return None if n_values <= EXACT_MAX_VALUES else n_bins


def brier_decomposition(
    correct, conf, method: str = "auto", n_bins: int = 10
) -> dict[str, float | str | int]:
    """Murphy (1973) decomposition of the Brier score, with the within-bin terms of Stephenson,
    Coelho & Jolliffe (2008) when forecasts are binned. Over groups k with n_k records, mean
    forecast f_k, accuracy o_k, and overall accuracy o:

        REL = (1/n) sum_k n_k (f_k - o_k)^2                      reliability (lower is better)
        RES = (1/n) sum_k n_k (o_k - o)^2                        resolution (higher is better)
        UNC = o (1 - o)                                          uncertainty of the outcomes
        WBV = (1/n) sum_k sum_{i in k} (c_i - f_k)^2             within-bin variance
        WBC = (2/n) sum_k sum_{i in k} (c_i - f_k)(y_i - o_k)    within-bin covariance

        BS = REL - RES + UNC + WBV - WBC   (exactly).

    ``method="exact"``: one group per distinct confidence value (WBV = WBC = 0); ``"binned"``:
    ``n_bins`` equal-width bins as in :func:`calbench.metrics.ece`; ``"auto"`` (default): exact
    for at most EXACT_MAX_VALUES distinct values, else binned (see :func:`brier_bins`).
    Returns {"brier", "rel", "res", "unc", "wbv", "wbc", "method", "bins"}; ``bins`` is the number
    of groups: distinct values (exact) or equal-width bins (binned).
    """
    y, c = check(correct, conf)
    n_bins = int_param("n_bins", n_bins, 1)
    values, pos, neg = group(y, c)
    if method == "auto":
        bins = brier_bins(values.size, n_bins)
    elif method in ("exact", "binned"):
        bins = None if method == "exact" else n_bins
    else:
        raise MetricInputError(f"method must be 'auto', 'exact' or 'binned', got {method!r}")
    terms = brier_decomposition_k(values, pos, neg, bins)
    names = ("brier", "rel", "res", "unc", "wbv", "wbc")
    out: dict[str, float | str | int] = {k: float(a[0]) for k, a in zip(names, terms, strict=True)}
    out["method"] = "exact" if bins is None else "binned"
    out["bins"] = values.size if bins is None else bins
    return out


def nll(correct, conf, eps: float = NLL_EPS) -> float:
    """Negative log-likelihood (log loss) in nats, with c clipped to [eps, 1 - eps]:

        NLL = -(1/n) sum_i [ y_i log c' + (1 - y_i) log(1 - c') ],  c' = clip(c_i, eps, 1 - eps).

    Verbalized confidences are often exactly 0 or 1, so without clipping one confident mistake makes
    NLL infinite; eps (default 1e-3) caps a single answer's loss at log(1/eps) = 6.9 nats, and the
    result depends on it, so it is reported alongside (``nll_eps`` in metrics.json).
    """
    y, c = check(correct, conf)
    eps = real_param("eps", eps, 0, 0.5, lo_open=True, hi_open=True)
    cc = np.clip(c, eps, 1 - eps)
    return float(-np.mean(y * np.log(cc) + (1 - y) * np.log1p(-cc)))


# --- kernels on grouped counts -----------------------------------------------------------------


def mean_confidence_k(values, pos, neg) -> np.ndarray:
    pos, neg = as_rows(pos, neg)
    tot = pos + neg
    return safe_div(tot @ values, tot.sum(axis=1))


def overconfidence_k(values, pos, neg, threshold: float = OVERCONFIDENT_AT) -> np.ndarray:
    pos, neg = as_rows(pos, neg)
    return safe_div(neg @ (values >= threshold).astype(np.float64), (pos + neg).sum(axis=1))


def brier_k(values, pos, neg) -> np.ndarray:
    pos, neg = as_rows(pos, neg)
    return safe_div(pos @ (1 - values) ** 2 + neg @ values**2, (pos + neg).sum(axis=1))


def brier_decomposition_k(values, pos, neg, n_bins: int | None = None):
    """(brier, rel, res, unc, wbv, wbc), each (R,). ``n_bins`` None: one group per value
    (``values`` must be distinct; wbv = wbc = 0); else equal-width bins (``values`` any order)."""
    pos, neg = as_rows(pos, neg)
    tot = pos + neg
    n = tot.sum(axis=1)
    o = safe_div(pos.sum(axis=1), n)
    if n_bins is None:
        cnt, csum, ysum = tot, tot * values[None, :], pos
        wbv = wbc = np.zeros(n.shape)
    else:
        cnt, csum, ysum = width_bin_stats(values, pos, neg, n_bins)
        # deviations from the bin's mean forecast, summed centred (no E[c^2] - E[c]^2
        # cancellation); sum_i (c_i - f_k) = 0 turns the covariance into sum over right answers
        fbar = np.where(cnt > 0, csum / np.where(cnt > 0, cnt, 1.0), 0.0)
        dev = values[None, :] - fbar[:, width_bin_index(values, n_bins)]
        wbv = safe_div((tot * dev * dev).sum(axis=1), n)
        wbc = safe_div(2 * (pos * dev).sum(axis=1), n)
    # n_k (f_k - o_k)^2 == (sum c - sum y)^2 / n_k, written so that empty groups give 0 not 0/0
    rel_k = np.where(cnt > 0, safe_div((csum - ysum) ** 2, cnt), 0.0)
    res_k = np.where(cnt > 0, safe_div((ysum - o[:, None] * cnt) ** 2, cnt), 0.0)
    rel = safe_div(rel_k.sum(axis=1), n)
    res = safe_div(res_k.sum(axis=1), n)
    return brier_k(values, pos, neg), rel, res, o * (1 - o), wbv, wbc


def nll_k(values, pos, neg, eps: float = NLL_EPS) -> np.ndarray:
    pos, neg = as_rows(pos, neg)
    cc = np.clip(values, eps, 1 - eps)
    return -safe_div(pos @ np.log(cc) + neg @ np.log1p(-cc), (pos + neg).sum(axis=1))
