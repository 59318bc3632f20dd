"""Accuracy, confidence summaries and proper scoring rules (Brier, its Murphy decomposition, NLL).

Notation: n records with confidence c_i in [0, 1] and correctness y_i in {0, 1}.
Kernels ``*_k(values, pos, neg)`` work on counts of right/wrong answers per confidence value,
one row per (re)sample; see :mod:`calbench.metrics.inputs`.
"""

from __future__ import annotations

import numpy as np

from calbench.metrics.inputs import (
    MetricInputError,
    as_correct,
    as_rows,
    check,
    group,
    safe_div,
)

OVERCONFIDENT_AT = 0.9  # "confident": a stated probability of at least 90%
NLL_EPS = 1e-3


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
    return float(np.mean((c >= threshold) & (y == 0)))


def brier(correct, conf) -> float:
    """Brier score = (1/n) sum_i (c_i - y_i)^2 (0 is perfect; always answering 0.5 scores 0.25)."""
    y, c = check(correct, conf)
    d = c - y
    return float(d @ d) / d.size


def brier_decomposition(correct, conf) -> dict[str, float]:
    """Murphy (1973) decomposition over the distinct confidence values v_k:

        REL = (1/n) sum_k n_k (v_k - o_k)^2      reliability (lower is better)
        RES = (1/n) sum_k n_k (o_k - o)^2        resolution (higher is better)
        UNC = o (1 - o)                           uncertainty of the outcomes

    with n_k records at v_k, o_k their accuracy and o the overall accuracy. Because every record in
    group k has the same forecast v_k, BS = REL - RES + UNC holds exactly (no within-bin terms).
    Returns {"brier", "rel", "res", "unc"}.
    """
    y, c = check(correct, conf)
    values, pos, neg = group(y, c)
    bs, rel, res, unc = brier_decomposition_k(values, pos, neg)
    return {"brier": float(bs[0]), "rel": float(rel[0]), "res": float(res[0]), "unc": float(unc[0])}


def nll(correct, conf, eps: float = NLL_EPS) -> float:
    """Negative log-likelihood (log loss) in nats, with c clipped to [eps, 1 - eps]:

        NLL = -(1/n) sum_i [ y_i log c' + (1 - y_i) log(1 - c') ],  c' = clip(c_i, eps, 1 - eps).

    Verbalized confidences are often exactly 0 or 1, so without clipping one confident mistake makes
    NLL infinite; eps (default 1e-3) caps a single answer's loss at log(1/eps) = 6.9 nats, and the
    result depends on it, so it is reported alongside (``nll_eps`` in metrics.json).
    """
    y, c = check(correct, conf)
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


def brier_decomposition_k(values, pos, neg, pure: np.ndarray | None = None):
    """(brier, rel, res, unc), each (R,); ``values`` must be distinct. Columns flagged ``pure``
    pool records that each had a confidence of their own: every record is its own group there."""
    pos, neg = as_rows(pos, neg)
    tot = pos + neg
    n = tot.sum(axis=1)
    o = safe_div(pos.sum(axis=1), n)
    # (v n_k - pos_k)^2 / n_k == n_k (v - o_k)^2, written so that empty groups give 0 not 0/0
    dev = values[None, :] * tot - pos
    rel_k = np.where(tot > 0, safe_div(dev**2, tot), 0.0)
    dres = pos - o[:, None] * tot
    res_k = np.where(tot > 0, safe_div(dres**2, tot), 0.0)
    if pure is not None and pure.any():
        on = o[:, None]
        rel_k[:, pure] = (pos * (1 - values) ** 2 + neg * values**2)[:, pure]
        res_k[:, pure] = (pos * (1 - on) ** 2 + neg * on**2)[:, pure]
    return brier_k(values, pos, neg), rel_k.sum(axis=1) / n, res_k.sum(axis=1) / n, o * (1 - o)


def nll_k(values, pos, neg, eps: float = NLL_EPS) -> np.ndarray:
    pos, neg = as_rows(pos, neg)
    cc = np.clip(values, eps, 1 - eps)
    return -safe_div(pos @ np.log(cc) + neg @ np.log1p(-cc), (pos + neg).sum(axis=1))
