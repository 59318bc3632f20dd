"""The vectorised suite (engine), bootstrap CIs, the paired bootstrap and ``summarize``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from calbench import metrics as M
from calbench.metrics import engine
from calbench.metrics.bootstrap import resample_counts
from calbench.metrics.inputs import MetricInputError

from .test_metrics import random_data, tied_data

PUBLIC = {
    "accuracy": lambda y, c: M.accuracy(y),
    "mean_confidence": M.mean_confidence,
    "overconfidence_rate": M.overconfidence_rate,
    "ece": M.ece,
    "ece_mass": lambda y, c: M.ece(y, c, strategy="mass"),
    "mce": M.mce,
    "rms_ce": M.rms_ce,
    "debiased_ce": M.debiased_ce,
    "smooth_ece": M.smooth_ece,
    "brier": M.brier,
    "brier_rel": lambda y, c: M.brier_decomposition(y, c)["rel"],
    "brier_res": lambda y, c: M.brier_decomposition(y, c)["res"],
    "brier_unc": lambda y, c: M.brier_decomposition(y, c)["unc"],
    "nll": M.nll,
    "auroc": M.auroc,
    "auprc_correct": lambda y, c: M.auprc(y, c, "correct"),
    "auprc_incorrect": lambda y, c: M.auprc(y, c, "incorrect"),
    "aurc": M.aurc,
    "excess_aurc": M.excess_aurc,
}


@pytest.mark.parametrize("y,c", [random_data(400, 1), tied_data(400, 2)])
def test_engine_rows_equal_public_functions_on_each_resample(y, c):
    """A bootstrap replicate computed from counts equals the metric of the resampled records."""
    prep = engine.prepare(y, c)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(y), size=(4, len(y)))
    counts = np.stack([np.bincount(prep.labels[i], minlength=prep.n_atoms) for i in idx]).astype(
        float
    )
    rows = engine.metric_rows(prep, np.vstack([prep.counts(), counts]))
    for name, f in PUBLIC.items():
        assert rows[name][0] == pytest.approx(f(y, c), abs=1e-10), name
        for r, i in enumerate(idx, 1):
            assert rows[name][r] == pytest.approx(f(y[i], c[i]), abs=1e-10), (name, r)


def test_resample_counts_are_multinomial_resamples():
    labels = np.repeat(np.arange(5), [50, 30, 10, 5, 5])  # few labels: multinomial route
    blocks = list(resample_counts(labels, 6, n_bootstrap=3000, seed=1))
    counts = np.vstack(blocks)
    assert counts.shape == (3000, 6)
    assert np.all(counts.sum(axis=1) == 100)
    assert counts[:, 5].max() == 0
    assert counts.mean(axis=0)[:5] == pytest.approx([50, 30, 10, 5, 5], rel=0.03)
    # variance of a multinomial count n p (1 - p)
    assert counts[:, 0].var() == pytest.approx(100 * 0.5 * 0.5, rel=0.15)
    many = np.arange(1000) % 700  # many labels: index route
    c2 = np.vstack(list(resample_counts(many, 700, n_bootstrap=50, seed=1)))
    assert np.all(c2.sum(axis=1) == 1000)
    again = np.vstack(list(resample_counts(many, 700, n_bootstrap=50, seed=1)))
    assert np.array_equal(c2, again)  # seeded


def test_bootstrap_ci_brackets_and_matches_callable():
    y, c = tied_data(600, 3)
    named = M.bootstrap_ci(y, c, "brier", n_bootstrap=400, seed=0)
    assert named["lo"] < named["value"] < named["hi"]
    called = M.bootstrap_ci(y, c, M.brier, n_bootstrap=400, seed=0)
    assert called["value"] == pytest.approx(named["value"])
    # two implementations of the same bootstrap: similar intervals
    width = named["hi"] - named["lo"]
    assert abs(called["lo"] - named["lo"]) < 0.25 * width
    assert abs(called["hi"] - named["hi"]) < 0.25 * width
    # the usual binomial standard error for accuracy
    acc = M.bootstrap_ci(y, c, "accuracy", n_bootstrap=1000)
    se = math.sqrt(y.mean() * (1 - y.mean()) / len(y))
    assert acc["hi"] - acc["lo"] == pytest.approx(2 * 1.96 * se, rel=0.15)
    with pytest.raises(MetricInputError, match="unknown metric"):
        M.bootstrap_ci(y, c, "nope")


def test_binned_bootstrap_view_agrees_with_exact_resampling():
    y, c = random_data(6000, 4)  # ~12,000 atoms: above MAX_ATOMS
    prep = engine.prepare(y, c)
    view, exact = engine.bootstrap_view(prep)
    assert not exact and view.values.size < 2 * engine.BINNED_GROUPS + 64
    exact_view, is_exact = engine.bootstrap_view(prep, max_atoms=10**9)
    assert is_exact
    names = ["ece", "brier", "auroc", "aurc", "smooth_ece", "brier_rel", "brier_res", "nll"]
    point = engine.metric_rows(prep, prep.counts(), names + ["brier_wbc"])
    vp = engine.metric_rows(view, view.counts(), names + ["brier_wbc"])
    # pools never straddle an ECE bin edge: the binned Brier terms are the data's, unshifted
    assert prep.brier_bins == view.brier_bins == 10
    for m in ("brier_rel", "brier_res", "brier_wbc"):
        assert vp[m][0] == pytest.approx(point[m][0], abs=1e-12), m
    sd = {}
    for p, label, n_atoms in ((view, "binned", view.n_atoms), (prep, "exact", prep.n_atoms)):
        reps = np.vstack(
            [
                np.column_stack([engine.metric_rows(p, b, names)[m] for m in names])
                for b in resample_counts(p.labels, n_atoms, 300, seed=5)
            ]
        )
        sd[label] = reps.std(axis=0)
    for i, m in enumerate(names):
        assert sd["binned"][i] == pytest.approx(sd["exact"][i], rel=0.25), m
        # the binned view is close to the data itself, before any shift
        assert vp[m][0] == pytest.approx(point[m][0], abs=3 * sd["exact"][i]), m


def test_summarize_reports_the_brier_decomposition_used():
    y, c = random_data(500, 12)  # continuous: binned
    s = M.summarize(y, c, n_bootstrap=200, seed=0)
    d = s["brier_decomposition"]
    want = M.brier_decomposition(y, c)
    assert d["method"] == "binned" and d["bins"] == 10
    assert d["wbv"] == pytest.approx(want["wbv"], abs=1e-14)
    assert d["wbc"] == pytest.approx(want["wbc"], abs=1e-14)
    m = {k: s["metrics"][k]["value"] for k in ("brier", "brier_rel", "brier_res", "brier_unc")}
    assert m["brier_rel"] == pytest.approx(want["rel"], abs=1e-14)
    total = m["brier_rel"] - m["brier_res"] + m["brier_unc"] + d["wbv"] - d["wbc"]
    assert abs(total - m["brier"]) < 1e-12
    for k in ("brier_rel", "brier_res"):
        ci = s["metrics"][k]
        assert 0 <= ci["lo"] < ci["hi"] < 0.1, k  # resampled with the same binning
    tied = M.summarize(*tied_data(300, 13), n_bootstrap=50)["brier_decomposition"]
    assert tied["method"] == "exact" and tied["wbv"] == 0 and tied["wbc"] == 0


def test_resolution_ci_of_uninformative_continuous_forecasts_is_near_zero():
    rng = np.random.default_rng(14)
    c = rng.random(800)
    y = (rng.random(800) < 0.4).astype(float)
    ci = M.bootstrap_ci(y, c, "brier_res", n_bootstrap=300)
    unc = M.brier_decomposition(y, c)["unc"]
    assert ci["hi"] < 0.1 * unc  # grouping by value would give RES = UNC in every resample


def test_paired_bootstrap():
    y, c = tied_data(500, 6)
    same = M.paired_bootstrap(y, c, y, c, "ece", n_bootstrap=200)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0
    worse = np.clip(c + 0.2, 0, 1)
    res = M.paired_bootstrap(y, worse, y, c, "brier", n_bootstrap=300, seed=1)
    assert res["diff"] == pytest.approx(M.brier(y, worse) - M.brier(y, c))
    assert res["lo"] > 0 and res["p_value"] < 0.01
    via_callable = M.paired_bootstrap(y, worse, y, c, M.brier, n_bootstrap=300, seed=1)
    assert via_callable["diff"] == pytest.approx(res["diff"])
    assert via_callable["lo"] > 0
    # pairing makes the interval narrower than the two separate intervals suggest
    a = M.bootstrap_ci(y, worse, "brier", n_bootstrap=300)
    b = M.bootstrap_ci(y, c, "brier", n_bootstrap=300)
    assert res["hi"] - res["lo"] < (a["hi"] - a["lo"]) + (b["hi"] - b["lo"])
    with pytest.raises(MetricInputError, match="aligned"):
        M.paired_bootstrap(y, c, y[:-1], c[:-1], "ece")


def test_paired_bootstrap_with_unparsed_confidences():
    y, c = tied_data(300, 7)
    c2 = c.astype(object)
    c2[:30] = None
    res = M.paired_bootstrap(y, c2, y, c, "ece", n_bootstrap=100)
    assert res["a"] == pytest.approx(M.ece(y[30:], c[30:]))


def test_align_records():
    a = [{"id": i, "correct": i % 2, "confidence": 0.5} for i in range(5)]
    b = [{"id": i, "correct": 1, "confidence": None if i == 3 else 0.9} for i in range(2, 8)]
    al = M.align_records(a, b)
    assert al["ids"] == [2, 3, 4]
    assert al["only_a"] == [0, 1] and al["only_b"] == [5, 6, 7]
    assert math.isnan(al["conf_b"][1])
    with pytest.raises(MetricInputError, match="more than once"):
        M.align_records(a + a[:1], b)


# --- summarize -------------------------------------------------------------------------------


def test_summarize_structure_and_scopes():
    y, c = tied_data(800, 8)
    conf = c.astype(object)
    conf[:80] = None  # 10% unparsed
    s = M.summarize(y, conf, n_bootstrap=200, seed=0)
    json.dumps(s, allow_nan=False)  # strict JSON
    assert s["n"] == 800 and s["n_scored"] == 720 and s["coverage"] == pytest.approx(0.9)
    assert s["policy"] == "drop" and s["compat"] is None
    assert list(s["metrics"]) == list(M.METRICS)
    # accuracy over all records, calibration over the scored ones
    assert s["metrics"]["accuracy"]["value"] == pytest.approx(y.mean())
    assert s["metrics"]["ece"]["value"] == pytest.approx(M.ece(y[80:], c[80:]))
    assert s["metrics"]["smooth_ece"]["value"] == pytest.approx(M.smooth_ece(y[80:], c[80:]))
    for m, v in s["metrics"].items():
        assert v["lo"] <= v["hi"], m
    assert (
        s["metrics"]["brier"]["lo"] < s["metrics"]["brier"]["value"] < s["metrics"]["brier"]["hi"]
    )
    assert len(s["reliability"]["bins"]) == 10
    assert sum(b["n"] for b in s["reliability"]["bins"]) == 720
    curve = s["smooth_curve"]
    assert len(curve["x"]) == len(curve["y"]) == len(curve["lo"]) == len(curve["hi"]) == 101
    assert len(s["risk_coverage"]["coverage"]) == len(s["risk_coverage"]["risk"])
    assert set(s["selective_accuracy"]) == {"0.5", "0.8", "1.0"}
    assert set(s["policies"]) == {"drop", "fill=0.5", "fill=0"}
    filled = s["policies"]["fill=0.5"]
    c05 = np.where(np.arange(800) < 80, 0.5, c)
    assert filled["n_scored"] == 800
    assert filled["ece"] == pytest.approx(M.ece(y, c05))
    assert filled["accuracy"] == s["policies"]["drop"]["accuracy"]
    assert s["policies"]["fill=0"]["mean_confidence"] < s["policies"]["drop"]["mean_confidence"]
    assert s["nll_eps"] == 1e-3 and s["n_bins"] == 10


def test_summarize_compat_rlcr_uses_fill_zero_and_rlcr_bins():
    y, c = tied_data(500, 9)
    conf = c.astype(object)
    conf[:5] = None
    s = M.summarize(y, conf, n_bootstrap=50, compat="rlcr")
    assert s["policy"] == "fill=0"
    c0 = np.where(np.arange(500) < 5, 0.0, c)
    assert s["metrics"]["ece"]["value"] == pytest.approx(M.ece(y, c0, binning="rlcr"))
    assert s["metrics"]["mean_confidence"]["value"] == pytest.approx(c0.mean())


def test_summarize_without_any_parsed_confidence():
    s = M.summarize([1, 0, 1], [None, None, None], n_bootstrap=20)
    assert s["n_scored"] == 0 and s["coverage"] == 0
    assert s["metrics"]["accuracy"]["value"] == pytest.approx(2 / 3)
    assert s["metrics"]["ece"]["value"] is None
    assert "coverage 0" in s["reasons"]["ece"]
    json.dumps(s, allow_nan=False)


def test_summarize_resamples_repeated_ids_together():
    y, c = tied_data(300, 10)
    ids = np.repeat(np.arange(100), 3)  # three samples per question
    s = M.summarize(y, c, n_bootstrap=100, ids=list(ids))
    assert s["ci"]["unit"] == "id" and s["ci"]["n_units"] == 100
    plain = M.summarize(y, c, n_bootstrap=100)
    assert plain["ci"]["unit"] == "record"
    assert s["metrics"]["ece"]["value"] == plain["metrics"]["ece"]["value"]
    with pytest.raises(MetricInputError, match="ids"):
        M.summarize(y, c, ids=[1, 2])


def test_summarize_is_seeded():
    y, c = random_data(300, 11)
    a = M.summarize(y, c, n_bootstrap=100, seed=3)
    b = M.summarize(y, c, n_bootstrap=100, seed=3)
    assert a == b
    with pytest.raises(MetricInputError, match="policy"):
        M.summarize(y, c, policy="fill=2")
