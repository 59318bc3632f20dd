"""``summarize``: the full metric suite of one run with bootstrap CIs, as written to metrics.json
and scores.json.

What each number is computed over:

* ``accuracy``: all n records (an unparsed confidence does not change whether the answer was
  right).
* every other metric: the ``n_scored`` records left after the unparsed-confidence policy:
  ``drop`` (default) leaves out records whose confidence was not parsed (``coverage`` = share
  parsed), ``fill=0.5`` / ``fill=0`` give them that confidence. ``policies`` repeats the headline
  metrics under all three, so a reader sees how much the choice matters.
* ``compat="rlcr"`` reproduces the RLCR repository's evaluator: its ECE binning
  (``binning="rlcr"``, also used for MCE, RMS-CE and the reliability table) and its confidence
  policy (a missing confidence is 0.0 and counts, i.e. ``fill=0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse

from calbench.metrics import binning as _bin
from calbench.metrics import engine
from calbench.metrics import selective as _sel
from calbench.metrics import smooth as _sm
from calbench.metrics.bootstrap import (
    LEVEL,
    N_BOOTSTRAP,
    check_resampling,
    percentile_ci,
    resample_counts,
)
from calbench.metrics.engine import METRICS, POLICIES, nan_to_none
from calbench.metrics.inputs import MetricInputError
from calbench.metrics.scoring_rules import EXACT_MAX_VALUES

HEADLINE = ("accuracy", "ece", "smooth_ece", "brier", "auroc", "aurc", "mean_confidence")
SELECTIVE_COVERAGES = (0.5, 0.8, 1.0)
CURVE_POINTS = 101
RISK_POINTS = 100

SCOPE = {
    "accuracy": "all n records",
    "other metrics": "the n_scored records left after the unparsed-confidence policy",
}
BINNED_NOTE = (
    f"binned: more than {engine.MAX_ATOMS} distinct (confidence, right/wrong) atoms, so resamples "
    f"pool confidences that occur once into about {engine.BINNED_GROUPS} equal-count groups per "
    "right/wrong (never across an ECE bin edge or 0.9), each at its mean confidence; each "
    "resampled value is shifted by (exact estimate - binned estimate) before taking percentiles"
)
BRIER_RULE = (
    f"exact: one group per distinct confidence (at most {EXACT_MAX_VALUES} values; wbv = wbc = "
    "0); binned: more values, grouped into the n_bins equal-width ECE bins, with the within-bin "
    "variance (wbv) and covariance (wbc) of Stephenson et al. (2008); "
    "brier = rel - res + unc + wbv - wbc"
)
CI_NOTE = (
    "percentile bootstrap over records (over ids when ids repeat: a cluster bootstrap), "
    "every metric recomputed on each resample; smooth_ece re-selects its bandwidth in each "
    "resample (relplot's rule); the smooth_curve band is at the full-sample bandwidth"
)


def _resample_units(prep: engine.Prepared, ids: Sequence | None):
    # prep: the bootstrap view (its labels are what gets resampled)
    """Labels to resample and how to turn their counts into atom counts.

    With repeated ids, whole ids are resampled (several samples of one question are not
    independent evidence); each id becomes a label whose composition row maps it to atoms.
    """
    if ids is None:
        return prep.labels, prep.n_atoms, None, "record", prep.n
    if len(ids) != prep.n:
        raise MetricInputError(f"ids has {len(ids)} entries but there are {prep.n} records")
    _, cluster = np.unique(np.asarray([str(i) for i in ids]), return_inverse=True)
    cluster = cluster.ravel()
    n_clusters = int(cluster.max()) + 1
    if n_clusters == prep.n:
        return prep.labels, prep.n_atoms, None, "record", prep.n
    comp = scipy.sparse.csr_matrix(
        (np.ones(prep.n), (cluster, prep.labels)), shape=(n_clusters, prep.n_atoms)
    )
    # identical compositions are one label (lets the multinomial path apply to tied data)
    dense_keys = comp.toarray() if n_clusters * prep.n_atoms <= 5_000_000 else None
    if dense_keys is not None:
        uniq, unit = np.unique(dense_keys, axis=0, return_inverse=True)
        return unit.ravel(), uniq.shape[0], uniq.astype(np.float64), "id", n_clusters
    return np.arange(n_clusters), n_clusters, comp, "id", n_clusters


def summarize(
    correct,
    conf,
    *,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    policy: str = "drop",
    compat: str | None = None,
    ids: Sequence | None = None,
) -> dict:
    """The full suite for one run, JSON-serialisable (NaN written as None, with a reason).

    ``conf`` may hold NaN/None for unparsed confidences (handled by ``policy``); NaN in
    ``correct`` is an error. ``compat="rlcr"`` forces policy ``fill=0`` and the RLCR ECE binning.
    ``ids`` (optional, one per record): records sharing an id are resampled together.
    ``n_bootstrap=0`` gives point values only (every CI null).
    """
    n_bootstrap, seed, _ = check_resampling(n_bootstrap, seed, minimum=0)
    if compat == "rlcr":
        policy = "fill=0"
    prep = engine.prepare(correct, conf, policy, compat)
    counts = prep.counts()
    point = engine.metric_rows(prep, counts, METRICS + engine.BRIER_TERMS)
    n_scored = int(round(point["n_scored"][0]))
    sigma = float(point["smooth_sigma"][0]) if "smooth_sigma" in point else float("nan")
    curve_x = np.linspace(0, 1, CURVE_POINTS)

    # --- bootstrap ----------------------------------------------------------------------------
    view, exact = engine.bootstrap_view(prep)
    if exact:
        shift = dict.fromkeys(METRICS, 0.0)
        curve_shift = 0.0
    else:
        # resamples are computed on the binned view; centre them on the exact estimates
        vp = engine.metric_rows(view, view.counts(), METRICS)
        shift = {m: point[m][0] - vp[m][0] for m in METRICS}
        curve_shift = _curve(prep, prep.counts(), sigma, curve_x) - _curve(
            view, view.counts(), sigma, curve_x
        )
    labels, n_labels, compose, unit, n_units = _resample_units(view, ids)
    reps: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    curves: list[np.ndarray] = []
    cache: dict = {}
    curve_cache: dict = {}
    for block in resample_counts(labels, n_labels, n_bootstrap, seed):
        atom_counts = block if compose is None else np.asarray(block @ compose)
        rows = engine.metric_rows(view, atom_counts, METRICS, cache)
        for m in METRICS:
            reps[m].append(rows[m] + shift[m])
        if n_scored:
            curves.append(_curve(view, atom_counts, sigma, curve_x, curve_cache) + curve_shift)

    metrics = {}
    undefined_reps = {}
    for m in METRICS:
        r = np.concatenate(reps[m]) if reps[m] else np.array([])
        lo, hi = percentile_ci(r, LEVEL)
        metrics[m] = {
            "value": nan_to_none(point[m][0]),
            "lo": nan_to_none(lo),
            "hi": nan_to_none(hi),
        }
        bad = int(np.isnan(r).sum())
        if bad and metrics[m]["value"] is not None:
            undefined_reps[m] = bad
    reasons = engine.undefined_reasons(prep, point)

    out = {
        "n": prep.n,
        "n_scored": n_scored,
        "coverage": prep.n_parsed / prep.n,
        "policy": policy,
        "compat": compat,
        "scope": SCOPE,
        "metrics": metrics,
        "nll_eps": prep.nll_eps,
        "n_bins": prep.n_bins,
        "smooth_ece_sigma": nan_to_none(sigma),
        "brier_decomposition": _brier_note(prep, point),
        "ci": {
            "method": "percentile",
            "level": LEVEL,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "unit": unit,
            "n_units": n_units,
            "resampling": "exact" if exact else BINNED_NOTE,
            "note": CI_NOTE,
        },
    }
    if undefined_reps:
        out["ci"]["undefined_in_resamples"] = undefined_reps
    if reasons:
        out["reasons"] = reasons
    out.update(_plots(prep, counts, n_scored, sigma, curve_x, curves))
    if prep.n_parsed == prep.n:  # nothing unparsed: every policy scores the same records
        same = {m: nan_to_none(point[m][0]) for m in HEADLINE} | {"n_scored": n_scored}
        out["policies"] = {p: dict(same) for p in POLICIES}
    else:
        out["policies"] = {p: headline(correct, conf, policy=p, compat=compat) for p in POLICIES}
    return out


def _brier_note(prep: engine.Prepared, point: dict[str, np.ndarray]) -> dict:
    """How brier_rel / brier_res were computed, and the within-bin terms that complete the
    identity brier = rel - res + unc + wbv - wbc."""
    exact = prep.brier_bins is None
    return {
        "method": "exact" if exact else "binned",
        "bins": prep.values.size if exact else prep.brier_bins,
        "wbv": nan_to_none(point["brier_wbv"][0]),
        "wbc": nan_to_none(point["brier_wbc"][0]),
        "rule": BRIER_RULE,
    }


def _curve(prep, counts, sigma, x, cache=None) -> np.ndarray:
    neg, pos, _, _ = engine.split(prep, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _sm.smooth_curve_k(prep.values, pos, neg, sigma, x, cache)


def headline(correct, conf, policy: str = "drop", compat: str | None = None) -> dict:
    """Point values of the headline metrics (and n_scored) under one policy."""
    prep = engine.prepare(correct, conf, policy, compat)
    rows = engine.metric_rows(prep, prep.counts(), HEADLINE)
    out = {m: nan_to_none(rows[m][0]) for m in HEADLINE}
    out["n_scored"] = int(round(rows["n_scored"][0]))
    return out


def _plots(prep, counts, n_scored, sigma, curve_x, curves) -> dict:
    """Reliability table, smooth curve with band, risk-coverage curve, selective accuracy."""
    neg, pos, _, _ = engine.split(prep, counts)
    v = prep.values
    if n_scored == 0:
        return {
            "reliability": {"bins": []},
            "smooth_curve": None,
            "risk_coverage": None,
            "selective_accuracy": {str(q): None for q in SELECTIVE_COVERAGES},
        }
    stats = _bin.width_bin_stats(v, pos, neg, prep.n_bins, prep.binning)
    y = _sm.smooth_curve_k(v, pos, neg, sigma, curve_x)[0]
    band = np.vstack(curves) if curves else np.empty((0, curve_x.size))
    with np.errstate(invalid="ignore"):
        if band.shape[0]:
            lo = np.nanpercentile(band, (1 - LEVEL) / 2 * 100, axis=0)
            hi = np.nanpercentile(band, (1 + LEVEL) / 2 * 100, axis=0)
        else:
            lo = hi = np.full(curve_x.size, np.nan)
    cov, risk = _sel.risk_coverage_k(v, pos, neg, RISK_POINTS)
    qs = np.array(SELECTIVE_COVERAGES)
    ks = np.maximum(1, np.ceil(qs * n_scored - 1e-9))
    sel = 1.0 - _sel.expected_errors(v, pos, neg, ks) / ks
    return {
        "reliability": {
            "binning": prep.binning or "width",
            "bins": _bin.bins_table(*(s[0] for s in stats)),
        },
        "smooth_curve": {
            "sigma": sigma,
            "x": _floats(curve_x),
            "y": _floats(y),
            "lo": _floats(lo),
            "hi": _floats(hi),
        },
        "risk_coverage": {"coverage": _floats(cov), "risk": _floats(risk)},
        "selective_accuracy": {
            str(q): nan_to_none(s) for q, s in zip(SELECTIVE_COVERAGES, sel, strict=True)
        },
    }


def _floats(a: np.ndarray) -> list:
    return [nan_to_none(x) for x in np.asarray(a, dtype=np.float64)]
