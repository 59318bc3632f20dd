"""Discrimination and selective prediction: AUROC, AUPRC, AURC / excess AURC, selective accuracy.

Verbalized confidences are heavily tied (a model says "0.9" for a third of its answers), and a
ranking metric computed from a plain argsort then depends on how the sort happened to order the
ties: on one synthetic case AURC ranged from 0.145 to 0.272 over tie orders. Every metric here is
*tie-aware*: ties count 1/2 in AUROC, tie groups are one threshold in AUPRC (as in scikit-learn),
and AURC, the risk-coverage curve and selective accuracy are the expectation over all orders of the
tied records, in closed form: inside a tie group of m records with e errors that starts after s
records with E errors, the expected number of errors among the first s + j records is
E + j e / m (a hypergeometric mean).

Kernels ``*_k(values, pos, neg)`` take distinct confidence values in ascending order and
``(R, K)`` counts of right/wrong answers; see :mod:`calbench.metrics.inputs`.
"""

from __future__ import annotations

import warnings

import numpy as np

from calbench.metrics.inputs import (
    MetricInputError,
    UndefinedMetricWarning,
    as_rows,
    check,
    group,
    int_param,
    safe_div,
)


def one_class_reason(n_correct: float, n_total: float) -> str | None:
    """Why a ranking metric is undefined, or None when both classes are present."""
    if n_total == 0:
        return "no records"
    if n_correct == n_total:
        return "all answers are correct: one class only, so no ranking of right vs wrong"
    if n_correct == 0:
        return "all answers are wrong: one class only, so no ranking of right vs wrong"
    return None


def _warn_undefined(metric: str, reason: str) -> float:
    warnings.warn(
        f"{metric} undefined: {reason}; returning NaN", UndefinedMetricWarning, stacklevel=3
    )
    return float("nan")


# --- AUROC ---------------------------------------------------------------------------------------


def auroc(correct, conf) -> float:
    """Area under the ROC curve for telling right from wrong answers by confidence:

        AUROC = P(c_right > c_wrong) + 1/2 P(c_right = c_wrong)
              = (1 / (n_1 n_0)) sum_{i: y_i=1} sum_{j: y_j=0} ( [c_i > c_j] + 1/2 [c_i = c_j] ),

    the Mann-Whitney statistic (equal to the trapezoidal area of sklearn's roc_curve). Undefined
    (NaN, with an UndefinedMetricWarning giving the reason) when all answers are right or all wrong.
    """
    y, c = check(correct, conf)
    right = np.sort(c[y == 1])
    wrong = np.sort(c[y == 0])
    reason = one_class_reason(right.size, y.size)
    if reason:
        return _warn_undefined("AUROC", reason)
    # for each right answer: #wrong strictly below + #wrong at or below == 2 * (below + ties / 2)
    below = np.searchsorted(wrong, right, side="left").sum(dtype=np.int64)
    at_or_below = np.searchsorted(wrong, right, side="right").sum(dtype=np.int64)
    return float((below + at_or_below) / (2.0 * right.size * wrong.size))


def auroc_k(values, pos, neg) -> np.ndarray:
    pos, neg = as_rows(pos, neg)
    neg_below = np.cumsum(neg, axis=1) - neg
    u = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return safe_div(u, pos.sum(axis=1) * neg.sum(axis=1))


# --- AUPRC ---------------------------------------------------------------------------------------


def auprc(correct, conf, positive: str = "correct") -> float:
    """Area under the precision-recall curve as average precision (scikit-learn's definition):

        AP = sum_t (R_t - R_{t-1}) P_t

    over the distinct thresholds t (a tie group is one threshold), with P_t, R_t the precision and
    recall of "flagged" answers. ``positive="correct"``: flag answers with c >= t, positives are
    right answers. ``positive="incorrect"``: flag answers with c <= t (least confident first),
    positives are wrong answers; this is the view of someone using confidence to catch errors.
    Undefined (NaN) when there are no positives.
    """
    y, c = check(correct, conf)
    values, pos, neg = group(y, c)
    n_pos = pos.sum() if positive == "correct" else neg.sum()
    if n_pos == 0:
        cls = "right" if positive == "correct" else "wrong"
        return _warn_undefined(f"AUPRC({positive})", f"no {cls} answers (no positives)")
    return float(auprc_k(values, pos, neg, positive)[0])


def auprc_k(values, pos, neg, positive: str = "correct") -> np.ndarray:
    pos, neg = as_rows(pos, neg)
    if positive == "correct":
        # most confident first
        hits, tot = pos[:, ::-1], (pos + neg)[:, ::-1]
    elif positive == "incorrect":
        hits, tot = neg, pos + neg
    else:
        raise MetricInputError(f"positive must be 'correct' or 'incorrect', got {positive!r}")
    precision = safe_div(np.cumsum(hits, axis=1), np.cumsum(tot, axis=1))
    contrib = np.where(hits > 0, hits * np.nan_to_num(precision), 0.0)
    return safe_div(contrib.sum(axis=1), hits.sum(axis=1))


# --- risk-coverage -------------------------------------------------------------------------------


def _harmonic(n_max: int) -> np.ndarray:
    """H[j] = sum_{i=1}^{j} 1/i for j = 0..n_max."""
    h = np.zeros(n_max + 1)
    h[1:] = np.cumsum(1.0 / np.arange(1, n_max + 1))
    return h


def aurc(correct, conf) -> float:
    """Area under the risk-coverage curve (Geifman et al. 2019), expected over tie orders:

        AURC = (1/n) sum_{k=1}^{n} E[ errors among the k most confident ] / k.

    Closed form per tie group (m records, e wrong, after s records with E wrong; H = harmonic
    numbers): sum_{j=1}^{m} (E + j e/m)/(s + j) = (E - e s/m)(H_{s+m} - H_s) + e.
    Lower is better; a random ranking scores about the error rate.
    """
    y, c = check(correct, conf)
    values, pos, neg = group(y, c)
    return float(aurc_k(values, pos, neg)[0])


def aurc_k(values, pos, neg, harmonic: np.ndarray | None = None) -> np.ndarray:
    pos, neg = as_rows(pos, neg)
    m = (pos + neg)[:, ::-1]  # most confident first
    e = neg[:, ::-1]
    s = np.cumsum(m, axis=1) - m
    err_before = np.cumsum(e, axis=1) - e
    n = m.sum(axis=1)
    if harmonic is None:
        harmonic = _harmonic(int(round(n.max())))
    si = np.rint(s).astype(np.int64)
    dh = harmonic[si + np.rint(m).astype(np.int64)] - harmonic[si]
    contrib = np.where(m > 0, (err_before - safe_div(e * s, m)) * dh + e, 0.0)
    return safe_div(contrib.sum(axis=1), n)


def optimal_aurc_k(pos, neg, harmonic: np.ndarray | None = None) -> np.ndarray:
    """AURC of a perfect ranking (all right answers first):
    (1/n) sum_{k=C+1}^{n} (k - C)/k = ((n - C) - C (H_n - H_C)) / n, C = #right."""
    pos, neg = as_rows(pos, neg)
    c = pos.sum(axis=1)
    n = c + neg.sum(axis=1)
    if harmonic is None:
        harmonic = _harmonic(int(round(n.max())))
    ci, ni = np.rint(c).astype(np.int64), np.rint(n).astype(np.int64)
    return safe_div((n - c) - c * (harmonic[ni] - harmonic[ci]), n)


def excess_aurc(correct, conf) -> float:
    """Excess AURC = AURC - AURC of the oracle ranking (right answers first), which removes the part
    of AURC that is due to the error rate: 0 for a perfect ranking, > 0 otherwise."""
    y, c = check(correct, conf)
    values, pos, neg = group(y, c)
    return float((aurc_k(values, pos, neg) - optimal_aurc_k(pos, neg))[0])


def expected_errors(values, pos, neg, k: np.ndarray) -> np.ndarray:
    """E[#errors among the k most confident records] over tie orders (one row of counts)."""
    pos, neg = as_rows(pos, neg)
    m = (pos + neg)[0, ::-1]
    e = neg[0, ::-1]
    end = np.cumsum(m)
    err_end = np.cumsum(e)
    k = np.asarray(k, dtype=np.float64)
    j = np.searchsorted(end, k - 1e-9, side="left")  # group holding position k
    j = np.clip(j, 0, m.size - 1)
    start = end[j] - m[j]
    err_before = err_end[j] - e[j]
    return err_before + (k - start) * safe_div(e[j], m[j])


def selective_accuracy(correct, conf, coverage: float | np.ndarray = 0.8):
    """Accuracy on the ceil(coverage * n) most confident answers, expected over tie orders:

        SA(q) = 1 - E[ errors among the k most confident ] / k,   k = ceil(q n).

    ``coverage`` a float gives a float, an array gives an array.
    """
    y, c = check(correct, conf)
    values, pos, neg = group(y, c)
    try:
        q = np.atleast_1d(np.asarray(coverage, dtype=np.float64))
    except (TypeError, ValueError):
        q = np.array([np.nan])
    if q.size == 0 or not np.all((q > 0) & (q <= 1)):  # NaN fails both comparisons
        raise MetricInputError(f"coverage must lie in (0, 1], got {coverage!r}")
    k = np.maximum(1, np.ceil(q * y.size - 1e-9))
    out = 1.0 - expected_errors(values, pos, neg, k) / k
    return float(out[0]) if np.ndim(coverage) == 0 else out


def risk_coverage(correct, conf, n_points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The expected risk-coverage curve (risk = error rate among the k most confident answers) at
    up to ``n_points`` coverages k/n spread over (0, 1], for plots."""
    y, c = check(correct, conf)
    n_points = int_param("n_points", n_points, 1)
    values, pos, neg = group(y, c)
    return risk_coverage_k(values, pos, neg, n_points)


def risk_coverage_k(values, pos, neg, n_points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = as_rows(pos, neg)
    n = int(round((pos + neg)[0].sum()))
    ks = np.unique(np.ceil(np.linspace(1, n, min(n, n_points)) - 1e-9)).astype(np.float64)
    risk = expected_errors(values, pos, neg, ks) / ks
    return ks / n, risk
