"""Post-hoc recalibration (calbench.metrics.recalibration): fits against scikit-learn and a direct
scipy optimisation, cross-fitting that never scores a record with a map fitted on it, the map
properties, bad inputs; ``calbench score --recalibrate`` and ``calbench leaderboard
--recalibrate`` end to end on run folders in the real schema."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import scipy.special
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from calbench import metrics as M
from calbench.metrics import MetricInputError
from calbench.metrics import recalibration as R
from calbench.report.leaderboard import build
from calbench.report.score_inputs import load_records
from tests.fixtures import runs_make


def data(n: int = 400, seed: int = 0, *, rounded: bool = True, power: float = 2.0):
    """Confidences skewed high (verbalized: rounded to 0.05, so ties) and outcomes drawn with
    P(right) = conf**power: overconfident, so every map has something to fix."""
    rng = np.random.default_rng(seed)
    c = rng.beta(5, 2, n)
    if rounded:
        c = np.round(c * 20) / 20
    y = (rng.random(n) < c**power).astype(float)
    return y, c


# --- fits against references ----------------------------------------------------------------


@pytest.mark.parametrize("rounded", [True, False])
def test_isotonic_matches_sklearn(rounded):
    y, c = data(600, 1, rounded=rounded)
    m = R.fit(y, c, "isotonic")
    ref = IsotonicRegression(out_of_bounds="clip").fit(c, y)
    q = np.concatenate([np.linspace(0, 1, 2001), c])
    np.testing.assert_allclose(R.apply(m, q), ref.predict(q), rtol=0, atol=1e-12)


def test_isotonic_pools_ties_by_weight():
    # three records at 0.2 (1 right) then one wrong at 0.5: 1/3 > 0 violates, pooled (1+0)/4
    m = R.fit([1, 0, 0, 0], [0.2, 0.2, 0.2, 0.5], "isotonic")
    np.testing.assert_allclose(R.apply(m, [0.2, 0.5, 0.0, 1.0]), [0.25] * 4)
    # no violation: each tie keeps its own mean
    m = R.fit([1, 0, 0, 1, 1], [0.2, 0.2, 0.2, 0.5, 0.5], "isotonic")
    np.testing.assert_allclose(R.apply(m, [0.2, 0.35, 0.5]), [1 / 3, (1 / 3 + 1) / 2, 1.0])


def _platt_reference(y, c):
    """Platt's fit as a weighted logistic regression: each record once as 'right' with weight
    t_i and once as 'wrong' with 1 - t_i (t_i its Platt target), C large (no penalty)."""
    z = R.logit(c)
    n_pos, n_neg = y.sum(), y.size - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    lr = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000)
    lr.fit(
        np.concatenate([z, z])[:, None],
        np.r_[np.ones(y.size), np.zeros(y.size)],
        sample_weight=np.r_[t, 1 - t],
    )
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_platt_matches_sklearn_logistic_regression(seed):
    y, c = data(500, seed, rounded=seed != 2)
    m = R.fit(y, c, "platt")
    a, b = _platt_reference(y, c)
    assert m["a"] == pytest.approx(a, rel=1e-5, abs=1e-6)
    assert m["b"] == pytest.approx(b, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(R.apply(m, c), scipy.special.expit(a * R.logit(c) + b), atol=1e-7)


def test_platt_finite_where_plain_likelihood_diverges():
    # separable by confidence: the plain MLE sends a to infinity; Platt's targets keep it finite
    c = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1.0])
    m = R.fit(y, c, "platt")
    a, b = _platt_reference(y, c)
    assert math.isfinite(m["a"]) and m["a"] > 0
    assert m["a"] == pytest.approx(a, rel=1e-4) and m["b"] == pytest.approx(b, abs=1e-4)
    # one outcome only: the map goes towards (N+ + 1) / (N+ + 2), not to 1
    m = R.fit(np.ones(8), np.full(8, 0.6), "platt")
    assert m["a"] == 0 and R.apply(m, [0.6])[0] == pytest.approx(9 / 10)


def test_temperature_matches_direct_scipy_optimisation():
    y, c = data(700, 3)
    m = R.fit(y, c, "temperature")
    z = R.logit(c)

    def nll(log_t):
        s = z / np.exp(log_t)
        return float(np.sum(np.logaddexp(0, s) - y * s))

    ref = scipy.optimize.minimize_scalar(
        nll, bounds=(-4, 6), method="bounded", options={"xatol": 1e-12}
    )
    assert m["T"] == pytest.approx(math.exp(ref.x), rel=1e-6)
    assert m["T"] > 1 and not m["at_bound"]  # overconfident data: softened
    np.testing.assert_allclose(R.apply(m, c), scipy.special.expit(z / m["T"]), atol=1e-12)


def test_temperature_at_its_bounds_and_at_one_half():
    c = np.array([0.6, 0.7, 0.8, 0.9])
    all_right = R.fit(np.ones(4), c, "temperature")
    assert all_right["T"] == pytest.approx(R.T_MIN) and all_right["at_bound"]
    # confidence runs against correctness: no positive T helps, the fit flattens everything
    against = R.fit([1, 1, 0, 0], [0.2, 0.3, 0.7, 0.8], "temperature")
    assert against["T"] == pytest.approx(R.T_MAX) and against["at_bound"]
    assert R.fit([1, 0], [0.5, 0.5], "temperature")["T"] == 1.0


def test_confidences_of_0_and_1_are_clipped_before_the_logit():
    m = R.fit([1, 0, 1, 0], [1.0, 0.0, 0.9, 0.2], "platt")
    out = R.apply(m, [0.0, 1.0])
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(
        R.logit([0.0, 1.0]), [math.log(R.EPS / (1 - R.EPS)), -math.log(R.EPS / (1 - R.EPS))]
    )


# --- map properties -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_isotonic_output_is_monotone(seed):
    y, c = data(150, seed, rounded=seed % 2 == 0, power=1.0)
    out = R.apply(R.fit(y, c, "isotonic"), np.linspace(0, 1, 5001))
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0 and out.max() <= 1


def test_histogram_equal_mass_bins_and_constant_within_them():
    y, c = data(1000, 4, rounded=False)
    m = R.fit(y, c, "histogram")
    assert len(m["values"]) == R.HIST_BINS and len(m["edges"]) == R.HIST_BINS - 1
    order = np.argsort(c)
    # without ties, bin b holds ranks 100b .. 100b + 99 and its value is their share right
    np.testing.assert_allclose(m["values"], y[order].reshape(10, 100).mean(axis=1))
    edges = np.r_[-np.inf, m["edges"], np.inf]
    grid = np.linspace(0, 1, 20001)
    out = R.apply(m, grid)
    for b in range(R.HIST_BINS):
        inside = (grid > edges[b]) & (grid <= edges[b + 1])
        assert inside.any() and np.all(out[inside] == m["values"][b])


def test_histogram_never_splits_a_tie():
    c = np.r_[np.full(60, 0.9), np.full(25, 0.8), np.linspace(0.3, 0.7, 15)]
    y = np.r_[np.ones(40), np.zeros(20), np.ones(10), np.zeros(15), np.zeros(15)]
    m = R.fit(y, c, "histogram")
    out = R.apply(m, c)
    assert len(m["values"]) < R.HIST_BINS
    assert np.all(out[:60] == pytest.approx(40 / 60)) and np.all(out[60:85] == 10 / 25)


def test_maps_are_json_and_apply_after_a_round_trip():
    y, c = data(200, 5)
    for method in R.METHODS:
        m = R.fit(y, c, method)
        again = json.loads(json.dumps(m))
        np.testing.assert_array_equal(R.apply(again, c), R.apply(m, c))


# --- unparsed confidences, cross-fitting ----------------------------------------------------


def test_unparsed_confidences_are_not_fitted_and_stay_unparsed():
    y, c = data(300, 6)
    c_nan = c.copy()
    c_nan[::7] = np.nan
    keep = ~np.isnan(c_nan)
    for method in R.METHODS:
        assert R.fit(y, c_nan, method) == R.fit(y[keep], c[keep], method)
        out = R.crossfit(y, [None if math.isnan(x) else x for x in c_nan], method)
        assert np.all(np.isnan(out[~keep])) and not np.any(np.isnan(out[keep]))
    assert np.all(R.crossfit_folds(y, c_nan)[~keep] == -1)


def test_folds_are_stratified_seeded_and_keep_groups_together():
    y, c = data(503, 7)
    f = R.crossfit_folds(y, c, k=5, seed=3)
    sizes = np.bincount(f)
    right = np.bincount(f, weights=y)
    assert sizes.max() - sizes.min() <= 1 and right.max() - right.min() <= 1
    np.testing.assert_array_equal(f, R.crossfit_folds(y, c, k=5, seed=3))
    assert not np.array_equal(f, R.crossfit_folds(y, c, k=5, seed=4))
    groups = [i // 3 for i in range(503)]  # three samples of each question
    g = R.crossfit_folds(y, c, k=5, seed=0, groups=groups)
    assert all(len(set(g[i : i + 3])) == 1 for i in range(0, 503, 3))


@pytest.mark.parametrize("method", R.METHODS)
def test_crossfit_scores_each_fold_with_a_map_fitted_on_the_other_folds(method):
    y, c = data(250, 8)
    out, folds, maps = R.crossfit_detail(y, c, method, k=4, seed=1)
    np.testing.assert_array_equal(out, R.crossfit(y, c, method, k=4, seed=1))
    for f in range(4):
        test = folds == f
        assert maps[f] == R.fit(y[~test], c[~test], method)  # fitted without fold f
        np.testing.assert_array_equal(out[test], R.apply(maps[f], c[test]))


def test_leave_one_out_isotonic_matches_sklearn_and_not_the_in_sample_fit():
    # one record per fold: each record is predicted by sklearn fitted on all the others
    y, c = data(40, 9, rounded=False, power=1.0)
    out = R.crossfit(y, c, "isotonic", k=y.size)
    ref = np.array(
        [
            IsotonicRegression(out_of_bounds="clip")
            .fit(np.delete(c, i), np.delete(y, i))
            .predict(c[i : i + 1])[0]
            for i in range(y.size)
        ]
    )
    np.testing.assert_allclose(out, ref, atol=1e-12)
    in_sample = R.apply(R.fit(y, c, "isotonic"), c)
    assert np.abs(out - in_sample).max() > 0.2  # in-sample fitting would be visibly different


@pytest.mark.parametrize("method", R.METHODS)
def test_a_records_own_outcome_never_moves_its_score(method):
    # k = n: flipping record i's outcome changes every other record's map, never its own
    y, c = data(30, 10)
    base = R.crossfit(y, c, method, k=y.size)
    for i in (0, 7, 29):
        flipped = y.copy()
        flipped[i] = 1 - flipped[i]
        assert R.crossfit(flipped, c, method, k=y.size)[i] == base[i]


# --- bad inputs ------------------------------------------------------------------------------


def test_bad_inputs_raise_metric_input_error():
    y, c = data(20, 11)
    cases = [
        lambda: R.crossfit(y, c, "isotonic", k=1),
        lambda: R.crossfit(y, c, "isotonic", k=21),
        lambda: R.crossfit(y, c, "isotonic", k=2.5),
        lambda: R.crossfit(y, c, "isotonic", seed=-1),
        lambda: R.fit(y, c, "beta"),
        lambda: R.fit(y, np.r_[c[:-1], 1.5], "platt"),
        lambda: R.fit(y, np.r_[c[:-1], -0.1], "temperature"),
        lambda: R.fit(y[:-1], c, "isotonic"),
        lambda: R.fit([1, 0], [None, None], "isotonic"),
        lambda: R.fit(y, c, "histogram", n_bins=0),
        lambda: R.fit([1, None], [0.5, 0.5], "platt"),
        lambda: R.apply({"method": "temperature", "T": -1}, c),
        lambda: R.apply({"method": "platt", "a": 1}, c),
        lambda: R.apply({"method": "isotonic", "x": [0.5, 0.2], "y": [0, 1]}, c),
        lambda: R.apply({"method": "histogram", "edges": [0.5], "values": [0.1]}, c),
        lambda: R.apply(R.fit(y, c, "isotonic"), [0.5, 2.0]),
        lambda: R.crossfit_folds(y, c, groups=[1, 2]),
    ]
    for i, case in enumerate(cases):
        with pytest.raises(MetricInputError):
            case()
            pytest.fail(f"case {i} did not raise")


def test_package_exports():
    assert M.crossfit is R.crossfit and M.fit_recalibration is R.fit
    assert M.apply_recalibration is R.apply and M.RECALIBRATION_METHODS == R.METHODS


# --- calbench score --recalibrate -------------------------------------------------------------


def score_cli(argv: list[str]) -> int:
    from calbench.cli import main

    return main(["score", *argv])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("recal")
    a = runs_make.make_run(root, model="over", n=160, overconfidence=0.3, seed=1)
    b = runs_make.make_run(root, model="other", n=160, overconfidence=0.1, seed=2)
    return a, b


def test_score_recalibrate_writes_every_method_with_cis_and_settings(two_runs, tmp_path):
    a, _ = two_runs
    rc = score_cli(
        [
            str(a),
            "--recalibrate",
            "temperature,platt,isotonic,histogram",
            "--recal-folds",
            "4",
            "--recal-seed",
            "2",
            "--n-bootstrap",
            "50",
            "-o",
            str(tmp_path),
        ]
    )
    assert rc == 0
    entry = json.loads((tmp_path / "scores.json").read_text())["synthmath"]["over"]
    assert list(entry["recalibrated"]) == list(R.METHODS)
    recs = load_records(a)[("synthmath", "over")]
    y = [r["correct"] for r in recs]
    conf = [r["confidence"] for r in recs]
    ids = [r["id"] for r in recs]
    for method, r in entry["recalibrated"].items():
        assert r["fit"]["mode"] == "crossfit" and (r["fit"]["k"], r["fit"]["seed"]) == (4, 2)
        assert len(r["fit"]["fold_maps"]) == 4
        assert "conditional" in r["ci"] and r["ci"]["n_bootstrap"] == 50
        for name in ("ece", "smooth_ece", "brier", "auroc"):
            assert set(r["metrics"][name]) == {"value", "lo", "hi"}
            assert r["metrics"][name]["lo"] <= r["metrics"][name]["hi"]
        # one source of truth: the suite of the cross-fitted confidences, same policy
        new = R.crossfit(y, conf, method, k=4, seed=2, groups=ids)
        ok = ~np.isnan(new)
        assert r["metrics"]["brier"]["value"] == pytest.approx(M.brier(np.array(y)[ok], new[ok]))
        assert r["n_scored"] == entry["n_scored"] and r["policy"] == "drop"
    # the run is overconfident by 0.3: every map lowers ECE and Brier
    for r in entry["recalibrated"].values():
        assert r["metrics"]["ece"]["value"] < entry["ece"] - 0.1
        assert r["metrics"]["brier"]["value"] < entry["brier"]


def test_score_calibration_run_applies_maps_fitted_on_it(two_runs, tmp_path, capsys):
    a, b = two_runs
    rc = score_cli(
        [
            str(a),
            "--recalibrate",
            "platt,isotonic",
            "--calibration-run",
            str(b),
            "--n-bootstrap",
            "0",
            "-o",
            str(tmp_path),
        ]
    )
    assert rc == 0
    r = json.loads((tmp_path / "scores.json").read_text())["synthmath"]["over"]["recalibrated"]
    cal = load_records(b)[("synthmath", "other")]
    for method in ("platt", "isotonic"):
        fitted = R.fit([x["correct"] for x in cal], [x["confidence"] for x in cal], method)
        assert r[method]["fit"]["mode"] == "calibration_run"
        assert r[method]["fit"]["map"] == fitted
    # both synthetic runs ask 'synthmath/synthetic/0..': the overlap is reported, in-sample
    assert r["platt"]["fit"]["shared_ids"] == 160
    assert "in-sample" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--recalibrate", "beta"],
        ["--recalibrate", ","],
        ["--recalibrate", "isotonic", "--recal-folds", "1"],
        ["--recalibrate", "isotonic", "--recal-folds", "1000"],  # k > n
        ["--recalibrate", "isotonic", "--recal-seed", "-1"],
        ["--recal-folds", "3"],
        ["--calibration-run", "somewhere"],
        ["--recalibrate", "platt", "--calibration-run", "does-not-exist"],
    ],
)
def test_score_recalibrate_usage_errors_exit_2(two_runs, tmp_path, argv, capsys):
    a, b = two_runs
    if "--calibration-run" in argv and argv[-1] == "somewhere":
        argv = [*argv[:-1], str(b)]
    assert score_cli([str(a), *argv, "--n-bootstrap", "0", "-o", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "scores.json").exists()


def test_score_recalibrate_without_parsed_confidences_exits_2(tmp_path, capsys):
    recs = runs_make.synthetic_records(
        30, task="t", elicitation="tags", overconfidence=0, seed=0, unparsed=1.0
    )
    run = runs_make.write_run(tmp_path / "r", recs, model="m", task="t", metrics=False)
    assert score_cli([str(run), "--recalibrate", "platt", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "0 records with a parsed confidence" in err


# --- calbench leaderboard --recalibrate -------------------------------------------------------


def test_leaderboard_recalibrated_rows_are_listed_not_ranked(two_runs, tmp_path):
    results = two_runs[0].parents[1]
    rows = build(results, tmp_path / "lb", recalibrate=["isotonic"], diagrams=True)
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"over", "other", "over +isotonic", "other +isotonic"}
    for base in ("over", "other"):
        raw, derived = by_model[base], by_model[f"{base} +isotonic"]
        assert raw["rank"] is not None
        assert derived["rank"] is None and "derived row" in derived["unranked_reason"]
        assert derived["run"] == raw["run"] and derived["diagram"] != raw["diagram"]
        assert derived["ece"]["value"] < raw["ece"]["value"]
    svgs = list((tmp_path / "lb" / "diagrams").glob("*.svg"))
    assert len(svgs) == 4
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "over \\+isotonic" in md


def test_leaderboard_recalibrate_usage_errors(two_runs, tmp_path):
    from calbench.report import leaderboard

    results = two_runs[0].parents[1]
    parser = argparse.ArgumentParser()
    leaderboard.add_arguments(parser)
    from calbench.core.errors import UsageError

    for argv in (
        ["--recalibrate", "beta"],
        ["--recal-seed", "1"],
        ["--recalibrate", "platt", "--recal-folds", "0"],
    ):
        args = parser.parse_args([str(results), "--out", str(tmp_path / "x"), *argv])
        with pytest.raises(UsageError):
            leaderboard.run(args)
