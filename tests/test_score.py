"""``calbench score``: input detection, errors, scores.json, and the RLCR acceptance numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calbench import metrics as M
from calbench.core.errors import UsageError
from calbench.core.records import RecordError
from calbench.report import score
from calbench.report.score import score_files
from calbench.report.score_groups import MAX_GROUPS, group_records
from calbench.report.score_inputs import load_records

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RLCR = SHARED / "rlcr"
needs_shared = pytest.mark.skipif(
    not (RLCR / "expected_metrics.json").is_file(), reason=f"shared data not found at {RLCR}"
)
# expected_metrics.json name -> scores.json name
RLCR_NAMES = {
    "accuracy": "accuracy",
    "ece": "ece",
    "brier_score": "brier",
    "auroc": "auroc",
    "confidence level": "mean_confidence",
    "n": "n",
}


def main(argv: list[str]) -> int:
    """``calbench ARGV`` through the real CLI (exit codes included)."""
    from calbench.cli import main as cli_main

    return cli_main(argv)


def score_cli(argv: list[str]) -> int:
    """``calbench score ARGV`` without importing the other subcommands."""
    import argparse

    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    return score.run(parser.parse_args(argv))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def samples(n: int = 40, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        conf = None if i % 10 == 0 else float(rng.choice([0.3, 0.6, 0.9, 1.0]))
        out.append(
            {
                "id": f"gsm8k/test/{i}",
                "task": "gsm8k",
                "correct": bool(rng.random() < 0.6),
                "confidence": conf,
            }
        )
    return out


@needs_shared
def test_acceptance_rlcr_compat_reproduces_expected_metrics(tmp_path):
    files = sorted(str(p) for p in RLCR.glob("*.jsonl"))  # includes raw_confidence_cases.jsonl
    rc = score_cli([*files, "--compat", "rlcr", "--output", str(tmp_path), "--n-bootstrap", "20"])
    assert rc == 0
    got = json.loads((tmp_path / "scores.json").read_text())
    expected = json.loads((RLCR / "expected_metrics.json").read_text())["Hotpot-models"]
    pairs = 0
    for dataset, models in expected.items():
        for model, exp in models.items():
            entry = got[dataset][model]
            for ours_from, ours in RLCR_NAMES.items():
                assert entry[ours] == pytest.approx(exp[ours_from], abs=1e-9), (
                    dataset,
                    model,
                    ours,
                )
            pairs += 1
    assert pairs == 10
    assert set(got) == {"commonsenseqa", "math-500"}


@needs_shared
def test_clean_mode_differs_from_rlcr_only_by_bin_edges():
    files = [RLCR / "Hotpot-models__math-500.jsonl", RLCR / "Hotpot-models__commonsenseqa.jsonl"]
    clean = score_files(files, n_bootstrap=0)
    compat = score_files(files, compat="rlcr", n_bootstrap=0)
    moved = 0
    for dataset, models in clean.items():
        for model, e in models.items():
            c = compat[dataset][model]
            for name in ("accuracy", "brier", "auroc", "mean_confidence", "smooth_ece"):
                assert e[name] == pytest.approx(c[name], abs=1e-12)
            assert e["coverage"] == 1.0  # the RLCR files store a confidence for every record
            moved += e["ece"] != pytest.approx(c["ece"], abs=1e-12)
    assert moved >= 1  # the bin-edge rule changes ECE for at least one model


def test_run_folder_with_manifest(tmp_path):
    run = tmp_path / "runs" / "qwen-gsm8k"
    write_jsonl(run / "samples.jsonl", samples())
    (run / "manifest.json").write_text(json.dumps({"model": "Qwen/Qwen2.5-0.5B", "task": "gsm8k"}))
    for path in (run, run / "samples.jsonl"):
        groups = load_records(path)
        assert list(groups) == [("gsm8k", "Qwen/Qwen2.5-0.5B")]
        recs = groups[("gsm8k", "Qwen/Qwen2.5-0.5B")]
        assert len(recs) == 40 and recs[0]["confidence"] is None


def test_samples_without_manifest_use_task_and_folder(tmp_path):
    path = write_jsonl(tmp_path / "mymodel" / "samples.jsonl", samples())
    assert list(load_records(path)) == [("gsm8k", "mymodel")]


def test_rlcr_records_grouped_by_dataset_and_model(tmp_path):
    rows = [
        {"dataset": d, "model": m, "id": i, "correct": i % 2, "confidence": 0.7}
        for d in ("a", "b")
        for m in ("x", "y")
        for i in range(5)
    ]
    groups = load_records(write_jsonl(tmp_path / "r.jsonl", rows))
    assert sorted(groups) == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    assert all(len(v) == 5 for v in groups.values())


def test_broken_file_names_file_and_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "s.jsonl", samples(3))
    with path.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(RecordError, match=r"s\.jsonl:4: not valid JSON"):
        load_records(path)
    assert main(["score", str(path), "--output", str(tmp_path)]) == 2
    assert "s.jsonl:4" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": 1, "correct": 1, "confidence": 3}])
    with pytest.raises(RecordError, match=r"bad\.jsonl:1: 'confidence' must lie in \[0, 1\]"):
        load_records(bad)
    bad2 = write_jsonl(tmp_path / "bad2.jsonl", [{"id": 1, "correct": None, "confidence": 0.3}])
    with pytest.raises(RecordError, match=r"bad2\.jsonl:1: 'correct'"):
        load_records(bad2)


def test_unknown_format_is_a_clear_error(tmp_path, capsys):
    path = write_jsonl(tmp_path / "other.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(RecordError, match="unknown format"):
        load_records(path)
    assert main(["score", str(path)]) == 2
    assert "unknown format" in capsys.readouterr().err
    with pytest.raises(RecordError, match="no such file"):
        load_records(tmp_path / "missing.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordError, match="no samples.jsonl"):
        load_records(tmp_path / "empty")


def test_score_cli_writes_scores_json(tmp_path, capsys):
    run = tmp_path / "m1"
    recs = samples(60, seed=1)
    write_jsonl(run / "samples.jsonl", recs)
    out = tmp_path / "out"
    assert score_cli([str(run), "--output", str(out), "--n-bootstrap", "50"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    entry = scores["gsm8k"]["m1"]
    for key in ("n", "accuracy", "ece", "brier", "auroc", "mean_confidence"):
        assert key in entry
    y = np.array([r["correct"] for r in recs], dtype=float)
    c = np.array([np.nan if r["confidence"] is None else r["confidence"] for r in recs])
    keep = ~np.isnan(c)
    assert entry["n"] == 60 and entry["n_scored"] == int(keep.sum())
    assert entry["accuracy"] == pytest.approx(y.mean())
    assert entry["ece"] == pytest.approx(M.ece(y[keep], c[keep]))
    assert entry["metrics"]["ece"]["lo"] is not None
    assert "calbench score" in capsys.readouterr().out


def test_same_pair_twice_is_an_error(tmp_path):
    run = tmp_path / "m1"
    write_jsonl(run / "samples.jsonl", samples())
    with pytest.raises(UsageError, match="appears in both"):
        score_cli([str(run), str(run / "samples.jsonl"), "-o", str(tmp_path)])


def test_by_meta_breaks_accuracy_and_confidence_down_per_group(tmp_path, capsys):
    rows = []
    for i in range(30):
        terms = 2 if i < 20 else 3
        rows.append(
            {
                "id": f"chain_sum/test/{i}",
                "task": "chain_sum",
                "correct": i < 12 if terms == 2 else i == 29,
                "confidence": None if i == 0 else (0.7 if terms == 2 else 0.2),
                "meta": {"num_terms": terms, "num_digits": 1},
            }
        )
    run = tmp_path / "m"
    write_jsonl(run / "samples.jsonl", rows)
    out = tmp_path / "out"
    assert (
        score_cli(
            [str(run), "--output", str(out), "--n-bootstrap", "20", "--by", "num_terms,num_digits"]
        )
        == 0
    )
    by = json.loads((out / "scores.json").read_text())["chain_sum"]["m"]["by"]
    assert by["keys"] == ["num_terms", "num_digits"]
    g2, g3 = by["groups"]
    assert g2["group"] == "num_terms=2,num_digits=1" and g2["n"] == 20
    assert g2["accuracy"] == pytest.approx(12 / 20) and g2["parse_rate"] == pytest.approx(19 / 20)
    assert g2["mean_confidence"] == pytest.approx(0.7)
    assert g3["n"] == 10 and g3["accuracy"] == pytest.approx(0.1)
    assert g3["accuracy_lo"] < 0.1 < g3["accuracy_hi"]
    assert "num_terms=3,num_digits=1" in capsys.readouterr().out


def test_rlcr_ids_unique_per_dataset_and_model(tmp_path, capsys):
    rows = [
        {"dataset": "a", "model": m, "id": i, "correct": 1, "confidence": 0.7}
        for m in ("x", "y")
        for i in range(3)
    ]  # the same ids under two models: fine
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    assert sorted(load_records(path)) == [("a", "x"), ("a", "y")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.json").write_text("{}\n")
    rows.append({"dataset": "a", "model": "y", "id": 1, "correct": 0, "confidence": 0.2})
    write_jsonl(path, rows)
    assert main(["score", str(path), "--output", str(out)]) == 2
    assert "r.jsonl:7: 'id' 1 repeats the id at" in capsys.readouterr().err
    assert (out / "scores.json").read_text() == "{}\n"  # the earlier output is untouched


def test_string_correct_is_not_counted_right(tmp_path, capsys):
    rows = samples(5)
    rows[2]["correct"] = "false"  # truthy as a Python string: must not count as right
    path = write_jsonl(tmp_path / "m" / "samples.jsonl", rows)
    assert main(["score", str(path), "--output", str(tmp_path)]) == 2
    assert "samples.jsonl:3: 'correct' must be true/false or 0/1, got 'false'" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "scores.json").exists()


def _chain_rows(n: int = 120, seed: int = 3) -> list[dict]:
    """chain_sum-like records: accuracy falls with num_terms; num_terms=10 answers all right."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        terms = (2, 9, 10)[i % 3]
        conf = None if i % 17 == 0 else float(rng.choice([0.3, 0.5, 0.8, 1.0]))
        correct = True if terms == 10 else bool(rng.random() < (0.8 if terms == 2 else 0.3))
        rows.append(
            {
                "id": f"chain_sum/test/{i}",
                "task": "chain_sum",
                "correct": correct,
                "confidence": conf,
                "meta": {"num_terms": terms},
            }
        )
    return rows


@pytest.mark.parametrize("policy", ["drop", "fill=0.5"])
def test_by_reports_ece_brier_auroc_per_group(tmp_path, capsys, policy):
    rows = _chain_rows()
    write_jsonl(tmp_path / "m" / "samples.jsonl", rows)
    out = tmp_path / "out"
    assert (
        score_cli(
            [
                str(tmp_path / "m"),
                "-o",
                str(out),
                "--n-bootstrap",
                "50",
                "--by",
                "num_terms",
                "--policy",
                policy,
            ]
        )
        == 0
    )
    by = json.loads((out / "scores.json").read_text())["chain_sum"]["m"]["by"]
    assert by["metrics"] == ["ece", "brier", "auroc"]
    # numeric order: 10 after 9
    assert [g["group"] for g in by["groups"]] == ["num_terms=2", "num_terms=9", "num_terms=10"]
    for g in by["groups"]:
        recs = [r for r in rows if f"num_terms={r['meta']['num_terms']}" == g["group"]]
        if policy == "drop":
            recs = [r for r in recs if r["confidence"] is not None]
        y = [r["correct"] for r in recs]
        c = [0.5 if r["confidence"] is None else r["confidence"] for r in recs]
        assert g["n"] == 40 and g["n_scored"] == len(recs)
        assert g["ece"]["value"] == pytest.approx(M.ece(y, c), abs=1e-12), g["group"]
        assert g["brier"]["value"] == pytest.approx(M.brier(y, c), abs=1e-12), g["group"]
        assert g["ece"]["lo"] <= g["ece"]["value"] <= g["ece"]["hi"]
        if g["group"] == "num_terms=10":  # every answer right: AUROC undefined, and why
            assert g["auroc"] == {"value": None, "lo": None, "hi": None}
            assert g["reasons"]["auroc"].startswith("all answers are correct")
        else:
            assert g["auroc"]["value"] == pytest.approx(M.auroc(y, c), abs=1e-12)
            assert "reasons" not in g
    printed = capsys.readouterr().out
    assert "ECE [95% CI]" in printed and "AUROC [95% CI]" in printed
    assert "num_terms=10: auroc undefined: all answers are correct" in printed


def test_by_groups_records_without_the_field_under_question_mark(tmp_path):
    rows = _chain_rows(30)
    for r in rows[:5]:
        del r["meta"]
    groups = group_records(rows, ["num_terms"])
    assert list(groups)[-1] == "num_terms=?" and len(groups["num_terms=?"]) == 5


def test_by_too_many_groups_is_a_usage_error(tmp_path, capsys):
    rows = _chain_rows(60)
    for i, r in enumerate(rows):
        r["meta"]["index"] = i
    write_jsonl(tmp_path / "m" / "samples.jsonl", rows)
    assert main(["score", str(tmp_path / "m"), "-o", str(tmp_path), "--by", "index"]) == 2
    assert f"60 groups, more than {MAX_GROUPS}" in capsys.readouterr().err
    assert not (tmp_path / "scores.json").exists()
