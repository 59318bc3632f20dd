"""``calbench compare``: pairing by id, the paired bootstrap of B − A, compare.json, exit codes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from calbench import metrics as M
from calbench.cli import main
from calbench.core.errors import UsageError
from calbench.report import compare
from calbench.report.compare import COMPARED, compare_records
from tests.fixtures import runs_make


def synth(n: int = 200, seed: int = 5, **kw) -> list[dict]:
    kw.setdefault("overconfidence", 0.0)
    return runs_make.synthetic_records(n, task="synthmath", elicitation="tags", seed=seed, **kw)


def run_compare(a: Path, b: Path, out: Path, *extra: str) -> tuple[int, dict | None]:
    rc = main(["compare", str(a), str(b), "--output", str(out), "--n-bootstrap", "300", *extra])
    path = out / "compare.json"
    return rc, json.loads(path.read_text()) if path.is_file() else None


def test_identical_runs_differ_by_exactly_zero(tmp_path: Path, capsys) -> None:
    recs = synth()
    a = runs_make.write_run(tmp_path / "a", recs, model="m", metrics=False)
    b = runs_make.write_run(tmp_path / "b", recs, model="m", metrics=False)
    rc, res = run_compare(a, b, tmp_path / "out")
    assert rc == 0
    assert res["n_paired"] == 200 and res["only_a"] == [] and res["only_b"] == []
    assert res["policy"] == "drop" and res["ci"]["n_bootstrap"] == 300 and res["ci"]["seed"] == 0
    assert set(res["metrics"]) == set(COMPARED)
    for name, m in res["metrics"].items():
        assert m["a"] == m["b"] is not None, name
        assert (m["diff"], m["lo"], m["hi"]) == (0.0, 0.0, 0.0), name
    out = capsys.readouterr().out
    assert "no clear difference" in out and "B better" not in out


def test_shuffled_confidences_are_clearly_worse_in_brier(tmp_path: Path) -> None:
    recs = synth(unparsed=0.0)
    shuffled = [dict(r) for r in recs]
    confs = [r["confidence"] for r in recs]
    random.Random(1).shuffle(confs)
    for r, c in zip(shuffled, confs, strict=True):
        r["confidence"] = c
    a = runs_make.write_run(tmp_path / "a", recs, model="honest")
    b = runs_make.write_run(tmp_path / "b", shuffled, model="shuffled")
    rc, res = run_compare(a, b, tmp_path / "out")
    assert rc == 0
    y = [r["correct"] for r in recs]
    brier = res["metrics"]["brier"]
    assert brier["a"] == pytest.approx(M.brier(y, [r["confidence"] for r in recs]))
    assert brier["b"] == pytest.approx(M.brier(y, confs))
    assert brier["diff"] == pytest.approx(brier["b"] - brier["a"])
    assert 0 < brier["lo"] <= brier["diff"] <= brier["hi"]  # B worse, the CI excludes 0
    assert compare.verdict("brier", brier) == "A better"
    # Same answers: accuracy cannot differ on any resample.
    acc = res["metrics"]["accuracy"]
    assert (acc["diff"], acc["lo"], acc["hi"]) == (0.0, 0.0, 0.0)
    # The point values are the ones calbench score reports for each run (metrics.json).
    saved = json.loads((a / "metrics.json").read_text())["metrics"]
    for name in COMPARED:
        assert res["metrics"][name]["a"] == pytest.approx(saved[name]["value"], abs=1e-12), name


def test_paired_interval_is_the_metrics_packages_paired_bootstrap() -> None:
    ra, rb = synth(seed=1, overconfidence=0.1), synth(seed=2, overconfidence=0.3)
    res = compare_records(ra, rb, n_bootstrap=200, seed=3, policy="fill=0.5")
    al = M.align_records(ra, rb)
    for name in COMPARED:
        ref = M.paired_bootstrap(
            al["correct_b"],
            al["conf_b"],
            al["correct_a"],
            al["conf_a"],
            metric=name,
            n_bootstrap=200,
            seed=3,
            policy="fill=0.5",
        )
        got = res["metrics"][name]
        assert (got["a"], got["b"], got["diff"], got["lo"], got["hi"]) == pytest.approx(
            (ref["b"], ref["a"], ref["diff"], ref["lo"], ref["hi"])
        ), name


def test_partial_overlap_pairs_shared_ids_and_reports_the_rest(tmp_path: Path, capsys) -> None:
    recs = synth(250, seed=7)
    a_recs, b_recs = recs[:200], list(reversed(recs[50:]))  # order must not matter
    a = runs_make.write_run(tmp_path / "a", a_recs, model="a", metrics=False)
    b = runs_make.write_run(tmp_path / "b", b_recs, model="b", metrics=False)
    rc, res = run_compare(a, b, tmp_path / "out")
    assert rc == 0
    assert res["n_paired"] == 150
    assert res["only_a"] == [r["id"] for r in recs[:50]]
    assert sorted(res["only_b"]) == sorted(r["id"] for r in recs[200:])
    assert res["run_a"]["n"] == res["run_b"]["n"] == 200
    # Both sides are scored on the shared records only (drop: the parsed ones among them).
    shared = [r for r in recs[50:200] if r["confidence"] is not None]
    ece = M.ece([r["correct"] for r in shared], [r["confidence"] for r in shared])
    assert res["metrics"]["ece"]["a"] == pytest.approx(ece)
    assert res["metrics"]["ece"]["b"] == pytest.approx(ece)
    assert "50 only in A, 50 only in B" in capsys.readouterr().out


def test_runs_without_a_shared_id_exit_2_and_write_nothing(tmp_path: Path, capsys) -> None:
    a = runs_make.write_run(tmp_path / "a", synth(20), model="a", metrics=False)
    other = synth(20)
    for r in other:
        r["id"] = "other/" + r["id"]
    b = runs_make.write_run(tmp_path / "b", other, model="b", metrics=False)
    rc, res = run_compare(a, b, tmp_path / "out")
    assert rc == 2 and res is None
    assert "share no question id (20 ids only in A, 20 only in B)" in capsys.readouterr().err


def test_ids_pair_as_text(tmp_path: Path) -> None:
    recs = synth(30)
    as_int = [dict(r, id=i) for i, r in enumerate(recs)]
    as_text = [dict(r, id=str(i)) for i, r in enumerate(recs)]
    res = compare_records(as_int, as_text, n_bootstrap=10)
    assert res["n_paired"] == 30 and res["metrics"]["brier"]["diff"] == 0.0


def test_undefined_metric_says_why(tmp_path: Path) -> None:
    recs = synth(40)
    all_right = [dict(r, correct=True) for r in recs]
    res = compare_records(recs, all_right, n_bootstrap=50)
    auroc = res["metrics"]["auroc"]
    assert auroc["a"] is not None and auroc["b"] is None and auroc["diff"] is None
    assert auroc["reason"].startswith("run B: all answers are correct")
    assert compare.verdict("auroc", auroc) == "no clear difference"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n-bootstrap", "0"], "--n-bootstrap must be >= 1"),
        (["--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_bad_parameters_exit_2(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    a = runs_make.write_run(tmp_path / "a", synth(20), model="a", metrics=False)
    assert main(["compare", str(a), str(a), "--output", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "compare.json").exists()


def test_input_with_several_runs_or_none_is_a_usage_error(tmp_path: Path, capsys) -> None:
    rlcr = tmp_path / "r.jsonl"
    rlcr.write_text(
        "".join(
            json.dumps({"dataset": "d", "model": m, "id": i, "correct": True, "confidence": 0.9})
            + "\n"
            for m in ("x", "y")
            for i in range(3)
        )
    )
    with pytest.raises(UsageError, match="holds 2 runs"):
        compare.load_run_records(rlcr)
    assert main(["compare", str(rlcr), str(tmp_path / "missing"), "-o", str(tmp_path)]) == 2
    assert not (tmp_path / "compare.json").exists()


def test_hostile_model_name_is_printed_literally(tmp_path: Path, capsys) -> None:
    recs = synth(20)
    a = runs_make.write_run(tmp_path / "a", recs, model="[bold red]x[/] [/oops]", metrics=False)
    rc, _ = run_compare(a, a, tmp_path / "out")
    assert rc == 0
    assert "A: [bold red]x[/] [/oops] · synthmath" in capsys.readouterr().out


def test_cli_choices_are_the_metrics_packages() -> None:
    assert compare.POLICIES == M.POLICIES
    from calbench.metrics.bootstrap import N_BOOTSTRAP

    assert compare.N_BOOTSTRAP == N_BOOTSTRAP
    assert np.all([name in M.METRICS for name in COMPARED])
