"""Metric functions cross-checked against independent implementations (scikit-learn, netcal,
relplot, torchmetrics) and against brute force, on random and on heavily tied data."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from calbench import metrics as M
from calbench.metrics.inputs import MetricInputError, UndefinedMetricWarning

VERBAL = np.array([0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0])


def random_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    c = rng.beta(4, 2, n)
    y = (rng.random(n) < c**1.5).astype(float)
    return y, c


def tied_data(n: int, seed: int, values=VERBAL):
    rng = np.random.default_rng(seed)
    c = rng.choice(values, n)
    y = (rng.random(n) < 0.2 + 0.6 * c).astype(float)
    return y, c


DATASETS = [random_data(3000, 1), random_data(257, 2), tied_data(3000, 3), tied_data(120, 4)]


# --- scikit-learn ----------------------------------------------------------------------------


@pytest.mark.parametrize("y,c", DATASETS)
def test_auroc_matches_sklearn(y, c):
    from sklearn.metrics import roc_auc_score

    assert M.auroc(y, c) == pytest.approx(roc_auc_score(y, c), abs=1e-12)


@pytest.mark.parametrize("y,c", DATASETS)
def test_auprc_matches_sklearn_average_precision(y, c):
    from sklearn.metrics import average_precision_score

    assert M.auprc(y, c, "correct") == pytest.approx(average_precision_score(y, c), abs=1e-12)
    # errors as positives, least confident first
    assert M.auprc(y, c, "incorrect") == pytest.approx(
        average_precision_score(1 - y, -c), abs=1e-12
    )


@pytest.mark.parametrize("y,c", DATASETS)
def test_brier_and_nll_match_sklearn(y, c):
    from sklearn.metrics import brier_score_loss, log_loss

    assert M.brier(y, c) == pytest.approx(brier_score_loss(y, c), abs=1e-12)
    eps = 1e-3
    assert M.nll(y, c, eps) == pytest.approx(
        log_loss(y, np.clip(c, eps, 1 - eps), labels=[0, 1]), abs=1e-12
    )


# --- netcal / torchmetrics ECE ---------------------------------------------------------------


@pytest.mark.parametrize(
    "y,c",
    [
        random_data(4000, 5),
        random_data(300, 6),
        tied_data(2000, 7, np.array([0.05, 0.35, 0.55, 0.85, 0.95, 0.99])),
    ],
)
def test_ece_matches_netcal_and_torchmetrics(y, c):
    # netcal's bins are [lo, hi) and ours (lo, hi]: compare on data with no value on an inner edge
    import torch
    from netcal.metrics import ECE
    from torchmetrics.functional.classification import binary_calibration_error

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ECE(bins=10, detection=True).measure(c, y)
    assert M.ece(y, c) == pytest.approx(ref, abs=1e-12)
    tm = binary_calibration_error(torch.tensor(c), torch.tensor(y).long(), n_bins=10, norm="l1")
    assert M.ece(y, c) == pytest.approx(float(tm), abs=1e-9)
    tm_max = binary_calibration_error(
        torch.tensor(c), torch.tensor(y).long(), n_bins=10, norm="max"
    )
    assert M.mce(y, c) == pytest.approx(float(tm_max), abs=1e-9)
    tm_l2 = binary_calibration_error(torch.tensor(c), torch.tensor(y).long(), n_bins=10, norm="l2")
    assert M.rms_ce(y, c) == pytest.approx(float(tm_l2), abs=1e-9)


# --- relplot smooth ECE ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "y,c",
    DATASETS
    + [
        # well calibrated: small bandwidth, bigger grids
        (lambda r: ((r.random(20000) < (u := r.random(20000))).astype(float), u))(
            np.random.default_rng(8)
        ),
        tied_data(500, 9, np.array([0.0, 1.0])),
    ],
)
def test_smooth_ece_matches_relplot(y, c):
    import relplot

    ref, ref_sigma = relplot.smECE(c, y, return_width=True)
    val, sigma = M.smooth_ece(y, c, return_sigma=True)
    assert sigma == ref_sigma
    assert val == pytest.approx(float(ref), abs=1e-9)
    assert M.smooth_ece_sigma(y, c, 0.07) == pytest.approx(
        float(relplot.smECE_sigma(c, y, 0.07)), abs=1e-9
    )


def test_batched_smooth_ece_matches_relplot_row_by_row():
    import relplot

    from calbench.metrics.smooth import smooth_ece_k

    rng = np.random.default_rng(10)
    for values in (VERBAL, np.sort(rng.random(800))):  # composed-matrix and FFT routes
        rows = rng.integers(0, 30, size=(6, values.size)).astype(float)
        pos = np.floor(rows * rng.random(rows.shape))
        neg = rows - pos
        got, _ = smooth_ece_k(values, pos, neg)
        for r in range(rows.shape[0]):
            c = np.repeat(values, rows[r].astype(int))
            y = np.concatenate(
                [
                    np.r_[np.ones(int(p)), np.zeros(int(q))]
                    for p, q in zip(pos[r], neg[r], strict=True)
                ]
            )
            assert got[r] == pytest.approx(float(relplot.smECE(c, y)), abs=1e-9)


# --- binning rules ---------------------------------------------------------------------------


def test_decimal_edges_go_to_the_lower_bin():
    c = np.array([0.0, 0.1, 0.3, 3 * 0.1, 0.7, 0.7000000000000001, 0.70000001, 1.0, 0.95])
    idx = M.binning.width_bin_index(c)
    assert idx.tolist() == [0, 0, 2, 2, 6, 6, 7, 9, 9]


def rlcr_reference_ece(y, c, n_bins=10):
    """The RLCR evaluator's ECE, written from its description (shared/data/README.md)."""
    edges = np.linspace(0, 1, n_bins + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    idx = np.digitize(c, edges) - 1
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(c) * abs(y[m].mean() - c[m].mean())
    return total


@pytest.mark.parametrize("y,c", [tied_data(3000, 11), random_data(1000, 12), tied_data(50, 13)])
def test_rlcr_binning_reproduces_rlcr_ece(y, c):
    assert M.ece(y, c, binning="rlcr") == pytest.approx(rlcr_reference_ece(y, c), abs=1e-12)


def test_clean_and_rlcr_binning_differ_only_at_edges():
    # 0.3, 0.6, 0.7 land in the lower bin in both; 0.1, 0.2, 0.4, 0.5, 0.8, 0.9 do not
    assert M.ece([1, 0], [0.5, 0.55]) == pytest.approx(0.525)  # two bins
    assert M.ece([1, 0], [0.5, 0.55], binning="rlcr") == pytest.approx(0.025)  # one bin
    for v in (0.3, 0.6, 0.7):
        assert M.binning.width_bin_index([v]) == M.binning.width_bin_index([v], binning="rlcr")
    for v in (0.1, 0.2, 0.4, 0.5, 0.8, 0.9):
        assert (
            M.binning.width_bin_index([v])[0] + 1
            == M.binning.width_bin_index([v], binning="rlcr")[0]
        )


def mass_reference(y, c, n_bins=10):
    """Equal-mass bins by the middle rank of each tie group, by loops."""
    order = np.argsort(c, kind="stable")
    c, y = c[order], y[order]
    n = len(c)
    bins: dict[int, list[int]] = {}
    i = 0
    while i < n:
        j = i
        while j < n and c[j] == c[i]:
            j += 1
        b = min(n_bins - 1, math.floor(n_bins * (i + (j - i - 1) / 2) / n))
        bins.setdefault(b, []).extend(range(i, j))
        i = j
    return [(y[idx], c[idx]) for idx in bins.values()]


@pytest.mark.parametrize("y,c", [random_data(1000, 14), tied_data(1000, 15), tied_data(37, 16)])
def test_equal_mass_ece_and_debiased_ce_against_loops(y, c):
    groups = mass_reference(y, c)
    n = len(c)
    ece_ref = sum(len(g) / n * abs(g.mean() - h.mean()) for g, h in groups)
    assert M.ece(y, c, strategy="mass") == pytest.approx(ece_ref, abs=1e-12)
    # Kumar et al.'s unbiased_l2_ce, per bin
    est = 0.0
    for g, h in groups:
        if len(g) < 2:
            continue
        acc = g.mean()
        est += len(g) / n * ((h.mean() - acc) ** 2 - acc * (1 - acc) / (len(g) - 1))
    assert M.debiased_ce(y, c) == pytest.approx(math.sqrt(max(est, 0)), abs=1e-12)


def test_equal_mass_keeps_ties_together():
    c = np.array([0.9] * 70 + [0.5] * 20 + [0.2] * 10)
    y = np.array([1] * 60 + [0] * 10 + [1] * 10 + [0] * 10 + [0] * 10, dtype=float)
    # three groups, three bins: ECE_mass equals the per-value ECE
    per_value = (70 * abs(60 / 70 - 0.9) + 20 * abs(0.5 - 0.5) + 10 * abs(0 - 0.2)) / 100
    assert M.ece(y, c, strategy="mass") == pytest.approx(per_value)


# --- Brier decomposition ---------------------------------------------------------------------


def brute_decomposition(y, c, groups):
    """REL, RES, UNC, WBV, WBC straight from their definitions, one group label per record."""
    n, o = len(y), y.mean()
    rel = res = wbv = wbc = 0.0
    for g in np.unique(groups):
        yk, ck = y[groups == g], c[groups == g]
        fk, ok = ck.mean(), yk.mean()
        rel += len(yk) * (fk - ok) ** 2 / n
        res += len(yk) * (ok - o) ** 2 / n
        wbv += sum((ci - fk) ** 2 for ci in ck) / n
        wbc += 2 * sum((ci - fk) * (yi - ok) for ci, yi in zip(ck, yk, strict=True)) / n
    return rel, res, o * (1 - o), wbv, wbc


@pytest.mark.parametrize("y,c", DATASETS)
@pytest.mark.parametrize("method", ["auto", "exact", "binned"])
def test_brier_decomposition_identity_is_exact(y, c, method):
    d = M.brier_decomposition(y, c, method=method)
    assert d["brier"] == pytest.approx(M.brier(y, c), abs=1e-14)
    total = d["rel"] - d["res"] + d["unc"] + d["wbv"] - d["wbc"]
    assert abs(total - d["brier"]) < 1e-12
    assert d["rel"] >= 0 and d["res"] >= 0 and d["wbv"] >= 0


@pytest.mark.parametrize("seed", range(5))
def test_binned_brier_decomposition_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 400))
    c = rng.random(n)
    y = (rng.random(n) < rng.random()).astype(float)
    d = M.brier_decomposition(y, c)
    assert d["method"] == "binned" and d["bins"] == 10
    bins = np.clip(np.ceil(c * 10) - 1, 0, 9)  # ((b-1)/10, b/10]; no value sits on an edge here
    want = brute_decomposition(y, c, bins)
    got = (d["rel"], d["res"], d["unc"], d["wbv"], d["wbc"])
    assert got == pytest.approx(want, abs=1e-12)
    assert abs(d["rel"] - d["res"] + d["unc"] + d["wbv"] - d["wbc"] - d["brier"]) < 1e-12


def test_verbalized_confidences_keep_the_exact_grouping():
    y, c = tied_data(500, 21, np.round(np.arange(11) / 10, 1))  # tenths: 11 values
    d = M.brier_decomposition(y, c)
    assert d["method"] == "exact" and d["bins"] == 11
    assert d["wbv"] == 0 and d["wbc"] == 0
    want = brute_decomposition(y, c, c)
    assert (d["rel"], d["res"], d["unc"]) == pytest.approx(want[:3], abs=1e-12)
    # binned on request: 0.0 and 0.1 share the first bin, so the within-bin terms appear
    b = M.brier_decomposition(y, c, method="binned")
    assert b["wbv"] > 0
    assert abs(b["rel"] - b["res"] + b["unc"] + b["wbv"] - b["wbc"] - b["brier"]) < 1e-12
    # the switch: up to 21 distinct values exact, more binned
    grid = np.linspace(0, 1, 22)
    assert M.brier_decomposition(y[:21], grid[:21])["method"] == "exact"
    assert M.brier_decomposition(y[:22], grid)["method"] == "binned"


def test_uninformative_continuous_forecasts_have_no_resolution():
    """Every forecast distinct: grouping by value makes RES = UNC (each record its own group)
    whatever the forecasts say; the binned decomposition gives RES near 0 when they carry no
    information, and a large RES when they do."""
    rng = np.random.default_rng(22)
    c = rng.random(3000)
    noise = (rng.random(3000) < 0.5).astype(float)
    assert M.auroc(noise, c) == pytest.approx(0.5, abs=0.03)
    exact = M.brier_decomposition(noise, c, method="exact")
    assert exact["res"] == pytest.approx(exact["unc"], abs=1e-12)  # the degenerate answer
    d = M.brier_decomposition(noise, c)
    assert d["method"] == "binned"
    assert d["res"] < 0.01 * d["unc"]
    informative = (rng.random(3000) < c).astype(float)
    assert M.brier_decomposition(informative, c)["res"] > 0.06  # about 1/12 - 1/1200


def test_brier_decomposition_arguments():
    y, c = random_data(100, 23)
    with pytest.raises(MetricInputError, match="method"):
        M.brier_decomposition(y, c, method="murphy")
    with pytest.raises(MetricInputError, match="n_bins"):
        M.brier_decomposition(y, c, n_bins=0)


# --- tie-aware selective metrics -------------------------------------------------------------


def plain_aurc(y, c, order):
    """AURC of one fixed order of the records (most confident first, ties as given)."""
    y = y[order]
    errors = np.cumsum(1 - y)
    return float(np.mean(errors / np.arange(1, len(y) + 1)))


def test_aurc_is_the_expectation_over_tie_orders_exhaustively():
    y = np.array([1, 0, 1, 1, 0, 0, 1], dtype=float)
    c = np.array([0.9, 0.9, 0.9, 0.5, 0.5, 0.2, 0.9])
    vals, sel = [], []
    for perm in itertools.permutations(range(len(c))):
        perm = np.array(perm)
        order = perm[np.argsort(-c[perm], kind="stable")]  # a random order of the ties
        vals.append(plain_aurc(y, c, order))
        sel.append(y[order][:4].mean())
    assert M.aurc(y, c) == pytest.approx(np.mean(vals), abs=1e-12)
    assert min(vals) < M.aurc(y, c) < max(vals)  # a plain argsort could give either end
    assert M.selective_accuracy(y, c, 4 / 7) == pytest.approx(np.mean(sel), abs=1e-12)


def test_aurc_tie_order_sensitivity_is_removed():
    y, c = tied_data(400, 17, np.array([0.6, 0.8, 1.0]))
    rng = np.random.default_rng(0)
    plain = []
    for _ in range(50):
        perm = rng.permutation(len(c))
        plain.append(plain_aurc(y, c, perm[np.argsort(-c[perm], kind="stable")]))
    assert max(plain) - min(plain) > 0.01  # tie order matters for a plain sort
    ours = {round(M.aurc(y[p], c[p]), 12) for p in (rng.permutation(len(c)) for _ in range(5))}
    assert len(ours) == 1
    assert M.aurc(y, c) == pytest.approx(np.mean(plain), abs=0.01)


def test_aurc_without_ties_and_excess():
    y, c = random_data(500, 18)
    assert M.aurc(y, c) == pytest.approx(plain_aurc(y, c, np.argsort(-c)), abs=1e-12)
    perfect = y.copy() * 0.5 + 0.25  # right answers all more confident
    assert M.excess_aurc(y, perfect) == pytest.approx(0, abs=1e-12)
    assert M.excess_aurc(y, c) > 0
    # oracle AURC formula vs brute force
    assert M.aurc(y, perfect) == pytest.approx(
        plain_aurc(y, perfect, np.argsort(-perfect)), abs=1e-12
    )


def test_selective_accuracy_and_risk_coverage():
    y, c = random_data(1000, 19)
    order = np.argsort(-c)
    assert M.selective_accuracy(y, c, 0.5) == pytest.approx(y[order][:500].mean())
    assert M.selective_accuracy(y, c, 1.0) == pytest.approx(y.mean())
    cov, risk = M.risk_coverage(y, c)
    assert cov[-1] == 1.0 and risk[-1] == pytest.approx(1 - y.mean())
    assert len(cov) <= 100


# --- edge cases ------------------------------------------------------------------------------


def test_empty_input_is_a_clear_error():
    for f in (M.ece, M.brier, M.auroc, M.smooth_ece, M.aurc, M.nll):
        with pytest.raises(MetricInputError, match="n = 0"):
            f([], [])
    with pytest.raises(MetricInputError, match="n = 0"):
        M.summarize([], [])


def test_one_class_gives_nan_with_reason():
    y = np.ones(20)
    c = np.linspace(0.5, 1, 20)
    with pytest.warns(UndefinedMetricWarning, match="all answers are correct"):
        assert math.isnan(M.auroc(y, c))
    with pytest.warns(UndefinedMetricWarning, match="no wrong answers"):
        assert math.isnan(M.auprc(y, c, "incorrect"))
    s = M.summarize(y, c, n_bootstrap=50)
    assert s["metrics"]["auroc"]["value"] is None
    assert "one class" in s["reasons"]["auroc"]
    assert s["metrics"]["ece"]["value"] == pytest.approx(M.ece(y, c))


def test_all_confidences_equal():
    y, _ = random_data(300, 20)
    c = np.full(300, 0.7)
    assert M.ece(y, c) == pytest.approx(abs(0.7 - y.mean()))
    assert M.auroc(y, c) == 0.5
    assert M.aurc(y, c) == pytest.approx(1 - y.mean())
    assert M.smooth_ece(y, c) >= 0
    assert M.excess_aurc(y, c) > 0


def test_confidence_exactly_zero_and_one():
    y = np.array([1, 0, 1, 0], dtype=float)
    c = np.array([1.0, 0.0, 0.0, 1.0])
    assert M.brier(y, c) == 0.5
    assert math.isfinite(M.nll(y, c))
    assert M.nll(y, c) == pytest.approx(-0.5 * (math.log(1e-3) + math.log(1 - 1e-3)))
    assert M.ece(y, c) == pytest.approx(0.5)  # bin 1: conf 0, acc 1/2; bin 10: conf 1, acc 1/2
    bins = M.reliability_bins(y, c)
    assert bins[0]["n"] == 2 and bins[-1]["n"] == 2


def test_nan_inputs_are_rejected_with_a_clear_message():
    with pytest.raises(MetricInputError, match="unparsed confidence.*policy"):
        M.ece([1, 0], [0.5, float("nan")])
    with pytest.raises(MetricInputError, match="unparsed confidence"):
        M.brier([1, 0], [0.5, None])
    with pytest.raises(MetricInputError, match="correct is NaN at index 1"):
        M.ece([1, float("nan")], [0.5, 0.5])
    with pytest.raises(MetricInputError, match="correct is NaN"):
        M.summarize([1, float("nan")], [0.5, 0.5])
    with pytest.raises(MetricInputError, match=r"\[0, 1\]"):
        M.ece([1, 0], [0.5, 1.5])
    with pytest.raises(MetricInputError, match="0/1"):
        M.ece([1, 2], [0.5, 0.5])
    with pytest.raises(MetricInputError, match="entries"):
        M.ece([1, 0, 1], [0.5, 0.5])


BAD_ARGUMENTS = [
    ("sigma", lambda y, c: M.smooth_ece_sigma(y, c, 0)),
    ("sigma", lambda y, c: M.smooth_ece_sigma(y, c, -0.1)),
    ("sigma", lambda y, c: M.smooth_ece_sigma(y, c, float("nan"))),
    ("sigma", lambda y, c: M.smooth_ece_sigma(y, c, 1e-9)),  # a 10^10-point grid
    ("sigma", lambda y, c: M.smooth_calibration_curve(y, c, sigma=0)),
    ("n_points", lambda y, c: M.smooth_calibration_curve(y, c, n_points=0)),
    ("eps", lambda y, c: M.nll(y, c, eps=0.7)),
    ("eps", lambda y, c: M.nll(y, c, eps=0)),
    ("eps", lambda y, c: M.nll(y, c, eps=0.5)),
    ("eps", lambda y, c: M.nll(y, c, eps="0.01")),
    ("coverage", lambda y, c: M.selective_accuracy(y, c, float("nan"))),
    ("coverage", lambda y, c: M.selective_accuracy(y, c, np.array([0.5, np.nan]))),
    ("coverage", lambda y, c: M.selective_accuracy(y, c, "abc")),
    ("coverage", lambda y, c: M.selective_accuracy(y, c, 0)),
    ("n_points", lambda y, c: M.risk_coverage(y, c, n_points=0)),
    ("threshold", lambda y, c: M.overconfidence_rate(y, c, threshold=float("nan"))),
    ("n_bins", lambda y, c: M.ece(y, c, n_bins=0)),
    ("n_bins", lambda y, c: M.ece(y, c, n_bins=2.5)),
    ("n_bins", lambda y, c: M.mce(y, c, n_bins="10")),
    ("n_bins", lambda y, c: M.reliability_bins(y, c, n_bins=True)),
    ("n_bootstrap", lambda y, c: M.bootstrap_ci(y, c, "ece", n_bootstrap=-5)),
    ("n_bootstrap", lambda y, c: M.bootstrap_ci(y, c, M.ece, n_bootstrap=0)),
    ("n_bootstrap", lambda y, c: M.paired_bootstrap(y, c, y, c, "ece", n_bootstrap=-5)),
    ("n_bootstrap", lambda y, c: M.summarize(y, c, n_bootstrap=-5)),
    ("n_bootstrap", lambda y, c: M.summarize(y, c, n_bootstrap=2.5)),
    ("seed", lambda y, c: M.summarize(y, c, seed=-1)),
    ("level", lambda y, c: M.bootstrap_ci(y, c, "ece", level=95)),
    ("level", lambda y, c: M.paired_bootstrap(y, c, y, c, "ece", level=float("nan"))),
    ("conf must be numbers.*index 0 is 'abc'", lambda y, c: M.ece(y[:3], "abc")),
    ("conf must be numbers.*index 1 is 'x'", lambda y, c: M.brier(y[:2], [0.5, "x"])),
    ("conf must be numbers", lambda y, c: M.summarize(y[:2], [0.5, "x"])),
]


@pytest.mark.parametrize("name,call", BAD_ARGUMENTS, ids=[b[0][:12] for b in BAD_ARGUMENTS])
def test_bad_arguments_raise_metric_input_error_naming_them(name, call):
    y, c = random_data(60, 24)
    with pytest.raises(MetricInputError, match=name):
        call(y, c)


def test_zero_resamples_give_point_values_only():
    y, c = random_data(60, 25)
    s = M.summarize(y, c, n_bootstrap=0)
    assert s["metrics"]["ece"]["value"] == pytest.approx(M.ece(y, c))
    assert s["metrics"]["ece"]["lo"] is None and s["metrics"]["ece"]["hi"] is None


def test_overconfidence_and_accuracy():
    y = np.array([0, 0, 1, 0], dtype=float)
    c = np.array([0.95, 0.9, 0.99, 0.89])
    assert M.overconfidence_rate(y, c) == 0.5
    assert M.accuracy(y) == 0.25
    assert M.mean_confidence(y, c) == pytest.approx(np.mean(c))
