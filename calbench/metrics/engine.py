"""The whole metric suite computed from counts, so that a point estimate and 1,000 bootstrap
resamples run through the same vectorised code.

A run is reduced once to *atoms*: (distinct confidence value, right/wrong), plus two atoms for
records whose confidence was not parsed (right/wrong), which only count towards accuracy. A
(re)sample is then a row of counts over the atoms: the original data is the row of multiplicities,
a bootstrap resample is a multinomial draw of n over them. Every metric is a function of such a
row (see the kernels in binning, scoring_rules, selective and smooth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calbench.metrics import binning as _bin
from calbench.metrics import scoring_rules as _sr
from calbench.metrics import selective as _sel
from calbench.metrics import smooth as _sm
from calbench.metrics.inputs import MetricInputError, as_conf, as_correct, int_param

# The suite, in the order metrics.json lists it.
METRICS = (
    "accuracy",
    "mean_confidence",
    "overconfidence_rate",
    "ece",
    "ece_mass",
    "mce",
    "rms_ce",
    "debiased_ce",
    "smooth_ece",
    "brier",
    "brier_rel",
    "brier_res",
    "brier_unc",
    "nll",
    "auroc",
    "auprc_correct",
    "auprc_incorrect",
    "aurc",
    "excess_aurc",
)
# Also computed on request (not in metrics.json's list): the within-bin terms of a binned Brier
# decomposition, BS = REL - RES + UNC + WBV - WBC (0 when grouped by distinct value).
BRIER_TERMS = ("brier_wbv", "brier_wbc")
POLICIES = ("drop", "fill=0.5", "fill=0")
COMPATS = (None, "rlcr")


def parse_policy(policy: str) -> float | None:
    """'drop' -> None; 'fill=X' -> X (a confidence in [0, 1] given to unparsed records)."""
    if policy == "drop":
        return None
    if isinstance(policy, str) and policy.startswith("fill="):
        try:
            x = float(policy[5:])
        except ValueError:
            x = float("nan")
        if 0 <= x <= 1:
            return x
    raise MetricInputError(
        f"policy must be 'drop', 'fill=0.5' or 'fill=0' (fill=X, X in [0, 1]); got {policy!r}"
    )


def apply_policy(correct, conf, policy: str = "drop") -> tuple[np.ndarray, np.ndarray]:
    """The records a confidence metric is computed on, under an unparsed-confidence policy:
    'drop' removes records whose confidence is NaN/None, 'fill=X' gives them confidence X.
    Returns (correct, conf) arrays with no NaN."""
    y = as_correct(correct)
    c = as_conf(conf, allow_missing=True)
    if y.shape != c.shape:
        raise MetricInputError(f"correct has {y.size} entries but conf has {c.size}")
    fill = parse_policy(policy)
    missing = np.isnan(c)
    if fill is None:
        return y[~missing], c[~missing]
    return y, np.where(missing, fill, c)


@dataclass
class Prepared:
    """A run reduced to atoms. Atom 2k + y is (values[k], y); atoms 2K, 2K + 1 are unparsed
    records (wrong, right) under policy 'drop'."""

    values: np.ndarray  # (K,) distinct scored confidences, ascending
    labels: np.ndarray  # (n,) atom of each record
    n: int
    n_parsed: int
    policy: str
    compat: str | None
    n_bins: int = 10
    nll_eps: float = _sr.NLL_EPS
    # Brier decomposition: None groups by distinct value, else this many equal-width bins; fixed
    # by the full data (``_sr.brier_bins``) so that every resample is decomposed the same way
    brier_bins: int | None = None

    @property
    def n_atoms(self) -> int:
        return 2 * self.values.size + 2

    @property
    def binning(self) -> str | None:
        return "rlcr" if self.compat == "rlcr" else None

    def counts(self) -> np.ndarray:
        """The original data as one row of atom counts."""
        return np.bincount(self.labels, minlength=self.n_atoms).astype(np.float64)[None, :]


def prepare(
    correct, conf, policy: str = "drop", compat: str | None = None, n_bins: int = 10
) -> Prepared:
    if compat not in COMPATS:
        raise MetricInputError(f"compat must be None or 'rlcr', got {compat!r}")
    n_bins = int_param("n_bins", n_bins, 1)
    y = as_correct(correct)
    c = as_conf(conf, allow_missing=True)
    if y.shape != c.shape:
        raise MetricInputError(f"correct has {y.size} entries but conf has {c.size}")
    if y.size == 0:
        raise MetricInputError("no records (n = 0): every metric is undefined on an empty set")
    fill = parse_policy(policy)
    missing = np.isnan(c)
    if fill is not None:
        c = np.where(missing, fill, c)
        scored = np.ones(y.size, dtype=bool)
    else:
        scored = ~missing
    values, inverse = np.unique(c[scored], return_inverse=True)
    labels = np.empty(y.size, dtype=np.int64)
    labels[scored] = 2 * inverse + y[scored].astype(np.int64)
    labels[~scored] = 2 * values.size + y[~scored].astype(np.int64)
    return Prepared(
        values,
        labels,
        int(y.size),
        int((~missing).sum()),
        policy,
        compat,
        n_bins,
        brier_bins=_sr.brier_bins(values.size, n_bins),
    )


MAX_ATOMS = 4096  # above this many (value, right/wrong) atoms, resamples use a binned view
BINNED_GROUPS = 1024


def bootstrap_view(prep: Prepared, max_atoms: int = MAX_ATOMS, groups: int = BINNED_GROUPS):
    """The atoms a bootstrap resamples: ``(view, exact)``.

    With at most ``max_atoms`` atoms (always the case for verbalized confidences), or when the
    Brier decomposition groups by distinct value (pooling values would change its groups), the
    view is the data itself (exact). Otherwise, confidences that occur once are pooled, per
    right/wrong, into about ``groups`` equal-count groups along the confidence axis that never
    straddle an ECE bin edge (clean or RLCR) or the 0.9 overconfidence threshold; each pooled atom
    sits at its records' mean confidence. Tied values stay exact atoms while they fit. Resampled
    statistics computed on the view are shifted by (exact estimate - view estimate) when CIs are
    formed. Pools keep each clean ECE bin's count, confidence sum and right answers, so the
    binned Brier terms REL, RES and WBC are the same on the view as on the data.
    """
    k = prep.values.size
    counts = np.bincount(prep.labels, minlength=prep.n_atoms)
    if np.count_nonzero(counts) <= max_atoms or prep.brier_bins is None:
        return prep, True
    v = prep.values
    tot = counts[0 : 2 * k : 2] + counts[1 : 2 * k : 2]
    tied = tot >= 2
    if tied.sum() > max_atoms // 4:  # too many tied values to keep: pool them too
        tied[:] = False
    single = np.flatnonzero(~tied)
    # segment: which ECE bins (clean and RLCR) and which side of 0.9; monotone in the value
    seg = (
        _bin.width_bin_index(v[single], prep.n_bins, None) * (prep.n_bins + 2)
        + _bin.width_bin_index(v[single], prep.n_bins, "rlcr")
    ) * 2 + (v[single] >= _sr.OVERCONFIDENT_AT)
    rank = (np.cumsum(tot[single]) - tot[single]) * groups // max(int(tot[single].sum()), 1)
    _, pooled = np.unique(seg * (groups + 1) + rank, return_inverse=True)
    # new columns: one per tied value, one per (pool, right/wrong)
    col_of_value = np.empty(k, dtype=np.int64)
    n_tied = int(tied.sum())
    col_of_value[np.flatnonzero(tied)] = np.arange(n_tied)
    col_of_value[single] = n_tied + pooled.ravel()
    n_pools = int(pooled.max()) + 1 if single.size else 0
    scored = prep.labels < 2 * k
    value_idx = np.where(scored, prep.labels // 2, 0)
    y = prep.labels % 2
    is_pool = scored & ~tied[value_idx]
    # a pooled record goes to column (pool, y); a tied record to its value's column
    col = np.where(
        is_pool, n_tied + 2 * (col_of_value[value_idx] - n_tied) + y, col_of_value[value_idx]
    )
    n_cols = n_tied + 2 * n_pools
    conf = v[value_idx]
    sums = np.bincount(col[scored], weights=conf[scored], minlength=n_cols)
    cnt = np.bincount(col[scored], minlength=n_cols)
    present = cnt > 0
    col_values = np.where(present, sums / np.maximum(cnt, 1), np.inf)
    order = np.argsort(col_values, kind="stable")[: int(present.sum())]
    rank_of = np.full(n_cols, -1)
    rank_of[order] = np.arange(order.size)
    labels = np.where(scored, 2 * rank_of[col] + y, 2 * order.size + (prep.labels - 2 * k))
    view = Prepared(
        col_values[order],
        labels,
        prep.n,
        prep.n_parsed,
        prep.policy,
        prep.compat,
        prep.n_bins,
        prep.nll_eps,
        prep.brier_bins,
    )
    return view, False


def split(prep: Prepared, counts: np.ndarray):
    """(neg, pos) counts per distinct value, and the unparsed (wrong, right) counts."""
    k = prep.values.size
    return (
        counts[:, 0 : 2 * k : 2],
        counts[:, 1 : 2 * k : 2],
        counts[:, 2 * k],
        counts[:, 2 * k + 1],
    )


def metric_rows(
    prep: Prepared, counts: np.ndarray, names=METRICS, cache: dict | None = None
) -> dict[str, np.ndarray]:
    """Each requested metric for each row of atom counts, as (R,) arrays (NaN where undefined).
    ``names``: from METRICS and BRIER_TERMS. Also returns 'n_scored' and, when smooth_ece is asked
    for, 'smooth_sigma'. ``cache``: a dict kept across calls on the same ``prep`` (smoothing
    matrices)."""
    names = set(names)
    v = prep.values
    neg, pos, uneg, upos = split(prep, counts)
    tot = pos + neg
    n_scored = tot.sum(axis=1)
    out: dict[str, np.ndarray] = {"n_scored": n_scored}
    rows = counts.shape[0]
    if "accuracy" in names:
        # over ALL records: an unparsed confidence does not change whether the answer was right
        out["accuracy"] = (pos.sum(axis=1) + upos) / (n_scored + upos + uneg)
    if v.size == 0:  # nothing scored (every confidence unparsed, policy drop)
        for name in names - {"accuracy"}:
            out[name] = np.full(rows, np.nan)
        return out
    if "mean_confidence" in names:
        out["mean_confidence"] = _sr.mean_confidence_k(v, pos, neg)
    if "overconfidence_rate" in names:
        out["overconfidence_rate"] = _sr.overconfidence_k(v, pos, neg)
    if names & {"ece", "mce", "rms_ce"}:
        stats = _bin.width_bin_stats(v, pos, neg, prep.n_bins, prep.binning)
        out["ece"] = _bin.ece_from_bins(*stats)
        out["mce"] = _bin.mce_from_bins(*stats)
        out["rms_ce"] = _bin.rms_from_bins(*stats)
    if names & {"ece_mass", "debiased_ce"}:
        stats = _bin.mass_bin_stats(v, pos, neg, prep.n_bins)
        out["ece_mass"] = _bin.ece_from_bins(*stats)
        out["debiased_ce"] = _bin.debiased_from_bins(*stats)
    if "smooth_ece" in names:
        out["smooth_ece"], out["smooth_sigma"] = _sm.smooth_ece_k(v, pos, neg, cache)
    if names & {"brier", "brier_rel", "brier_res", "brier_unc", *BRIER_TERMS}:
        bs, rel, res, unc, wbv, wbc = _sr.brier_decomposition_k(v, pos, neg, prep.brier_bins)
        out.update(brier=bs, brier_rel=rel, brier_res=res, brier_unc=unc)
        out.update(brier_wbv=wbv, brier_wbc=wbc)
    if "nll" in names:
        out["nll"] = _sr.nll_k(v, pos, neg, prep.nll_eps)
    if "auroc" in names:
        out["auroc"] = _sel.auroc_k(v, pos, neg)
    if "auprc_correct" in names:
        out["auprc_correct"] = _sel.auprc_k(v, pos, neg, "correct")
    if "auprc_incorrect" in names:
        out["auprc_incorrect"] = _sel.auprc_k(v, pos, neg, "incorrect")
    if names & {"aurc", "excess_aurc"}:
        harmonic = _sel._harmonic(int(round(n_scored.max())))
        a = _sel.aurc_k(v, pos, neg, harmonic)
        out["aurc"] = a
        out["excess_aurc"] = a - _sel.optimal_aurc_k(pos, neg, harmonic)
    return {k: val for k, val in out.items() if k in names or k in ("n_scored", "smooth_sigma")}


def undefined_reasons(prep: Prepared, point: dict[str, np.ndarray]) -> dict[str, str]:
    """Why each NaN metric of a point estimate is undefined."""
    reasons = {}
    neg, pos, _, _ = split(prep, prep.counts())
    n_scored = float(point["n_scored"][0])
    one_class = _sel.one_class_reason(float(pos.sum()), float(pos.sum() + neg.sum()))
    for name, arr in point.items():
        if name in ("n_scored", "smooth_sigma") or not np.isnan(arr[0]):
            continue
        if n_scored == 0:
            reasons[name] = (
                f"no records with a parsed confidence (coverage 0) under policy {prep.policy!r}"
            )
        elif name in ("auroc", "aurc", "excess_aurc") or name.startswith("auprc"):
            reasons[name] = one_class or "undefined on these records"
        else:
            reasons[name] = "undefined on these records"
    return reasons


def nan_to_none(x: float) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x
