"""Binned calibration errors: ECE (equal-width, equal-mass, RLCR-compatible), MCE, RMS-CE and the
debiased calibration error of Kumar et al. (2019).

Notation: n records with confidence c_i and correctness y_i; bins B_1..B_M; for a non-empty bin,
n_b = |B_b|, conf_b = mean c_i and acc_b = mean y_i over the bin. Empty bins are skipped.
"""

from __future__ import annotations

import numpy as np

from calbench.metrics.inputs import (
    EDGE_TOL,
    MetricInputError,
    as_rows,
    check,
    group,
    int_param,
    safe_div,
)


def width_bin_index(values: np.ndarray, n_bins: int = 10, binning: str | None = None) -> np.ndarray:
    """Equal-width bin (0-based) of each confidence.

    Clean (``binning=None``): bins ((b-1)/B, b/B], the first closed at 0 so that 0 is in bin 1 and
    1.0 in bin B. A confidence within 1e-9 of an edge counts as on it and goes to the lower bin,
    whatever its float rounding (0.3 is 0.299999999999999988898 and 3 * 0.1 is 0.30000000000000004:
    both are "0.3", and both belong to (0.2, 0.3]).

    RLCR (``binning="rlcr"``): the RLCR repository's rule, reproduced float for float:
    edges = linspace(0, 1, B + 1) with the outer edges set to -inf/+inf, index =
    digitize(c, edges) - 1, i.e. bins [lo, hi) with float edges; linspace's 0.30000000000000004,
    0.6000000000000001 and 0.7000000000000001 put exact 0.3, 0.6 and 0.7 in the bin below, while
    0.1, 0.2, 0.4, 0.5, 0.8 and 0.9 go to the bin above, and [0.9, inf) holds 0.9, 0.95 and 1.0.
    """
    n_bins = int_param("n_bins", n_bins, 1)
    values = np.asarray(values, dtype=np.float64)
    if binning is None:
        interior = np.arange(1, n_bins) / n_bins
        # count of edges e with c > e + tol  ==  index of the bin (e_{b-1}, e_b] holding c
        return np.searchsorted(interior + EDGE_TOL, values, side="left")
    if binning == "rlcr":
        edges = np.linspace(0, 1, n_bins + 1)
        edges[0], edges[-1] = -np.inf, np.inf
        return np.digitize(values, edges) - 1
    raise MetricInputError(f"binning must be None or 'rlcr', got {binning!r}")


def width_bin_stats(
    values: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    n_bins: int = 10,
    binning: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum of confidences, sum of correct) as ``(R, B)`` arrays.

    ``values`` need not be sorted or distinct (a point estimate may pass the records themselves).
    """
    pos, neg = as_rows(pos, neg)
    idx = width_bin_index(values, n_bins, binning)
    tot = pos + neg
    if pos.shape[0] == 1:
        cnt = np.bincount(idx, weights=tot[0], minlength=n_bins)[None, :]
        csum = np.bincount(idx, weights=tot[0] * values, minlength=n_bins)[None, :]
        ysum = np.bincount(idx, weights=pos[0], minlength=n_bins)[None, :]
        return cnt, csum, ysum
    onehot = np.zeros((values.size, n_bins))
    onehot[np.arange(values.size), idx] = 1.0
    return tot @ onehot, tot @ (onehot * values[:, None]), pos @ onehot


def mass_bin_index(tot: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Equal-mass bin of each distinct value (``tot``: (R, K) counts at ascending distinct values).

    A tie group is never split: the group goes to the bin holding its middle rank,
    b = floor(B * (S_k + (n_k - 1) / 2) / N), S_k = count below v_k. Without ties this is the usual
    "first N/B records in bin 1, ...". Heavy ties leave some bins empty (skipped).
    """
    total = tot.sum(axis=1, keepdims=True)
    below = np.cumsum(tot, axis=1) - tot
    mid = below + (tot - 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.floor(n_bins * mid / total)
    b = np.nan_to_num(b, nan=0.0)
    return np.clip(b, 0, n_bins - 1).astype(np.int64)


def mass_bin_stats(
    values: np.ndarray, pos: np.ndarray, neg: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum of confidences, sum of correct), equal-mass bins; ``values`` must be
    sorted ascending and distinct."""
    pos, neg = as_rows(pos, neg)
    n_bins = int_param("n_bins", n_bins, 1)
    tot = pos + neg
    rows = tot.shape[0]
    flat = (mass_bin_index(tot, n_bins) + n_bins * np.arange(rows)[:, None]).ravel()
    size = rows * n_bins

    def acc(w: np.ndarray) -> np.ndarray:
        return np.bincount(flat, weights=w.ravel(), minlength=size).reshape(rows, n_bins)

    return acc(tot), acc(tot * values[None, :]), acc(pos)


def bin_stats(values, pos, neg, n_bins=10, strategy="width", binning=None):
    if strategy == "width":
        return width_bin_stats(values, pos, neg, n_bins, binning)
    if strategy == "mass":
        if binning is not None:
            raise MetricInputError("binning='rlcr' only applies to strategy='width'")
        return mass_bin_stats(values, pos, neg, n_bins)
    raise MetricInputError(f"strategy must be 'width' or 'mass', got {strategy!r}")


# --- reductions of bin statistics: (R, B) arrays -> (R,) ------------------------------------


def ece_from_bins(cnt: np.ndarray, csum: np.ndarray, ysum: np.ndarray) -> np.ndarray:
    # sum_b (n_b / N) |conf_b - acc_b|  ==  sum_b |sum c - sum y| / N
    return safe_div(np.abs(csum - ysum).sum(axis=1), cnt.sum(axis=1))


def mce_from_bins(cnt: np.ndarray, csum: np.ndarray, ysum: np.ndarray) -> np.ndarray:
    gap = safe_div(np.abs(csum - ysum), cnt)
    gap[cnt == 0] = -np.inf
    return gap.max(axis=1)


def rms_from_bins(cnt: np.ndarray, csum: np.ndarray, ysum: np.ndarray) -> np.ndarray:
    sq = np.where(cnt > 0, safe_div((csum - ysum) ** 2, cnt), 0.0)
    return np.sqrt(safe_div(sq.sum(axis=1), cnt.sum(axis=1)))


def debiased_from_bins(cnt: np.ndarray, csum: np.ndarray, ysum: np.ndarray) -> np.ndarray:
    # Kumar et al.: per bin (conf_b - acc_b)^2 - acc_b (1 - acc_b) / (n_b - 1); bins with n_b < 2
    # contribute 0 (their variance term is undefined), as in their reference implementation.
    ok = cnt >= 2
    safe_n = np.where(ok, cnt, 2.0)
    acc = ysum / safe_n
    conf = csum / safe_n
    term = (conf - acc) ** 2 - acc * (1 - acc) / (safe_n - 1)
    est = safe_div((np.where(ok, term, 0.0) * cnt).sum(axis=1), cnt.sum(axis=1))
    return np.sqrt(np.maximum(est, 0.0))


def _stats(correct, conf, n_bins, strategy, binning):
    y, c = check(correct, conf)
    n_bins = int_param("n_bins", n_bins, 1)
    if strategy == "width":
        # no sorting needed: the records themselves are the "values"
        return width_bin_stats(c, y[None, :], 1.0 - y[None, :], n_bins, binning)
    values, pos, neg = group(y, c)
    return bin_stats(values, pos, neg, n_bins, strategy, binning)


def ece(
    correct, conf, n_bins: int = 10, strategy: str = "width", binning: str | None = None
) -> float:
    """Expected calibration error.

    ECE = sum_b (n_b / n) |acc_b - conf_b|.

    ``strategy="width"``: B equal-width bins ((b-1)/B, b/B] (see :func:`width_bin_index`);
    ``strategy="mass"``: B equal-mass (adaptive) bins on the sorted confidences, ties kept together
    (see :func:`mass_bin_index`); ``binning="rlcr"``: the RLCR repository's equal-width rule.
    """
    return float(ece_from_bins(*_stats(correct, conf, n_bins, strategy, binning))[0])


def mce(
    correct, conf, n_bins: int = 10, strategy: str = "width", binning: str | None = None
) -> float:
    """Maximum calibration error: MCE = max over non-empty bins |acc_b - conf_b|."""
    return float(mce_from_bins(*_stats(correct, conf, n_bins, strategy, binning))[0])


def rms_ce(
    correct, conf, n_bins: int = 10, strategy: str = "width", binning: str | None = None
) -> float:
    """Root-mean-square calibration error: sqrt( sum_b (n_b / n) (acc_b - conf_b)^2 )."""
    return float(rms_from_bins(*_stats(correct, conf, n_bins, strategy, binning))[0])


def debiased_ce(correct, conf, n_bins: int = 10, strategy: str = "mass") -> float:
    """Debiased L2 calibration error (Kumar, Liang & Ma 2019, "Verified uncertainty calibration").

    The plug-in sum_b (n_b/n)(acc_b - conf_b)^2 is biased upwards by the sampling noise of acc_b;
    subtracting its variance estimate gives

        DCE = sqrt( max(0, sum_b (n_b / n) [ (acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1) ]) ),

    bins with n_b < 2 contributing 0. Default bins: 10 equal-mass (as their scaling-binning
    estimator), ties kept together.
    """
    return float(debiased_from_bins(*_stats(correct, conf, n_bins, strategy, None))[0])


def reliability_bins(correct, conf, n_bins: int = 10, binning: str | None = None) -> list[dict]:
    """Equal-width reliability table: one dict per bin with lo, hi, n, mean_conf, accuracy
    (mean_conf/accuracy None for an empty bin)."""
    cnt, csum, ysum = _stats(correct, conf, n_bins, "width", binning)
    return bins_table(cnt[0], csum[0], ysum[0])


def bins_table(cnt: np.ndarray, csum: np.ndarray, ysum: np.ndarray) -> list[dict]:
    n_bins = cnt.size
    out = []
    for b in range(n_bins):
        n_b = int(round(cnt[b]))
        out.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "n": n_b,
                "mean_conf": float(csum[b] / cnt[b]) if n_b else None,
                "accuracy": float(ysum[b] / cnt[b]) if n_b else None,
            }
        )
    return out
