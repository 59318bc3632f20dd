"""``calbench regrade``: saved responses graded again with the current parser and graders, on
small run folders in the real schema (written as ``calbench eval`` writes them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calbench.cli import main
from calbench.core.grade import math_equal
from calbench.core.loaders import LOADERS
from calbench.core.records import atomic_write_json, git_commit, redact, sha256_text, write_jsonl
from calbench.core.responses import grade_response
from calbench.core.runs import summarize_records

N_BOOT = 20  # the fixture runs' bootstrap size; regrade must keep it


def record(
    i: int,
    gold: str,
    response: str,
    *,
    correct: bool | None = None,
    elicitation: str = "tags",
    prefill: str = "",
    **extra,
) -> dict:
    """A record as ``calbench eval`` writes it; ``correct`` overrides the verdict (what the
    old grader said)."""
    g = grade_response(response, gold, "math", prefill=prefill).record_fields()
    if correct is not None:
        g["correct"] = correct
    return {
        "id": f"chain_sum/test/{i}",
        "task": "chain_sum",
        "elicitation": elicitation,
        "question": f"What is {gold}?",
        "gold": gold,
        "prompt": f"prompt {i}",
        "response": response,
        **g,
        "tokens": {"prompt": 10, "response": 5},
        "meta": {},
        **extra,
    }


def make_run(
    folder: Path,
    records: list[dict],
    *,
    elicitation: str = "tags",
    redacted: bool = False,
    **manifest,
) -> Path:
    folder.mkdir(parents=True)
    write_jsonl(folder / "samples.jsonl", [redact(r) for r in records] if redacted else records)
    metrics = summarize_records(records, n_bootstrap=N_BOOT, seed=0)
    metrics["format"] = {
        "answer_parse_rate": 1.0,
        "confidence_parse_rate": 1.0,
        "confidence_rescaled": 0,
    }
    atomic_write_json(folder / "metrics.json", metrics)
    atomic_write_json(
        folder / "manifest.json",
        {
            "status": "complete",
            "model": "m",
            "task": "chain_sum",
            "grader": "math",
            "task_grader": "math",
            "judge": None,
            "elicitation": elicitation,
            "seed": 0,
            "limit": None,
            "data_dir": None,
            "n": len(records),
            "redacted": redacted,
            **manifest,
        },
    )
    return folder


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def samples(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_answers_the_old_fallback_passed_flip_to_wrong(tmp_path, capsys):
    # the strict grader's verdicts, so this test fails if they change back
    assert not math_equal("2^10", "10") and not math_equal("3/4", "4")
    responses = [
        "<answer>2^10</answer> <confidence>0.9</confidence>",
        "<answer>3/4</answer><confidence>0.8</confidence>",
        "<answer>7</answer><confidence>0.6</confidence>",
    ]
    run = make_run(
        tmp_path / "r",
        [
            record(0, "10", responses[0], correct=True),
            record(1, "4", responses[1], correct=True),
            record(2, "7", responses[2]),
        ],
    )
    assert main(["regrade", str(run)]) == 0
    out = capsys.readouterr().out
    assert "2/0" in out and "1.000 -> 0.333" in out
    recs = samples(run)
    assert [r["response"] for r in recs] == responses  # what the model said is kept
    assert [r["correct"] for r in recs] == [False, False, True]
    for r in recs[:2]:
        assert r["regrade"]["previous"] == {
            "answer": r["answer"],
            "correct": True,
            "confidence": r["confidence"],
        }
        assert r["regrade"]["grader_commit"] == git_commit()
    assert "regrade" not in recs[2]
    m = manifest(run)["regraded"]
    assert (m["changed_correct"], m["changed_confidence"], m["n"]) == (2, 0, 3)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metrics"]["accuracy"]["value"] == pytest.approx(1 / 3)
    assert metrics["ci"]["n_bootstrap"] == N_BOOT


def test_two_stage_reply_without_closing_tag_gains_its_confidence(tmp_path):
    rec = record(
        0,
        "12",
        "<answer>12</answer>",
        elicitation="two-stage",
        prefill="<answer>",
        stage2_response="<confidence>0.5",
    )
    rec.update(
        confidence=None,
        parse={
            **rec["parse"],
            "confidence_method": "two-stage",
            "confidence_source": None,
            "confidence_raw": None,
            "confidence_error": "missing",
        },
    )
    run = make_run(tmp_path / "r", [rec], elicitation="two-stage")
    assert main(["regrade", str(run)]) == 0
    (r,) = samples(run)
    assert r["confidence"] == 0.5 and r["correct"] is True
    assert r["parse"]["confidence_source"] == "tag_unclosed"
    assert r["parse"]["confidence_method"] == "two-stage"
    assert r["regrade"]["previous"]["confidence"] is None
    assert r["stage2_response"] == "<confidence>0.5"
    assert manifest(run)["regraded"]["changed_confidence"] == 1


def test_consistency_regrades_the_majority_sample_and_logprob_keeps_its_probability(tmp_path):
    texts = ["<answer>3/4", "<answer>3/4</answer>", "<answer>4"]
    cons = record(
        0,
        "4",
        texts[0],
        correct=True,
        elicitation="consistency",
        prefill="<answer>",
        consistency={
            "k": 3,
            "temperature": 0.7,
            "samples": texts,
            "answers": ["3/4", "3/4", "4"],
            "majority_count": 2,
            "greedy_response": "<answer>4",
        },
    )
    cons["confidence"] = 2 / 3
    run_c = make_run(tmp_path / "c", [cons], elicitation="consistency")
    lp = record(
        0,
        "4",
        "<answer>3/4",
        correct=True,
        elicitation="logprob",
        prefill="<answer>",
        logprob={"sum": -0.5, "greedy": True},
    )
    lp["confidence"] = 0.6065
    run_l = make_run(tmp_path / "l", [lp], elicitation="logprob")
    assert main(["regrade", str(tmp_path)]) == 0
    (c,) = samples(run_c)
    assert (c["answer"], c["correct"], c["confidence"]) == ("3/4", False, pytest.approx(2 / 3))
    assert c["response"] == texts[0] and c["consistency"]["samples"] == texts
    assert c["consistency"]["greedy_response"] == "<answer>4"
    (r,) = samples(run_l)
    assert (r["correct"], r["confidence"]) == (False, 0.6065)
    assert r["logprob"] == {"sum": -0.5, "greedy": True}


def chain_sum_records(n: int) -> list[dict]:
    """The first ``n`` real chain_sum test questions, each answered right."""
    items = LOADERS["chain_sum"](task="chain_sum", split="test", size=500, seed=0)[:n]
    return [
        {
            **record(
                i,
                it["gold"],
                f"<answer>{it['gold']}</answer><confidence>0.7</confidence>",
                correct=False,
            ),
            "id": it["id"],
            "question": it["question"],
        }
        for i, it in enumerate(items)
    ]


def test_redacted_run_gets_its_gold_from_the_loader_and_stays_redacted(tmp_path):
    run = make_run(tmp_path / "r", chain_sum_records(3), redacted=True)
    assert main(["regrade", str(run)]) == 0
    recs = samples(run)
    assert all(r["correct"] is True and r["regrade"]["previous"]["correct"] is False for r in recs)
    for r in recs:  # no benchmark text added
        assert not {"gold", "question", "prompt"} & set(r)
        assert {"gold_sha256", "question_sha256", "prompt_sha256"} <= set(r)


@pytest.mark.parametrize("fault", ["hash", "id"])
def test_wrong_gold_hash_or_unknown_id_is_refused_and_nothing_is_written(tmp_path, capsys, fault):
    good = make_run(tmp_path / "a", chain_sum_records(2), redacted=True)
    bad = make_run(tmp_path / "b", chain_sum_records(3), redacted=True)
    recs = samples(bad)
    if fault == "hash":
        recs[1]["gold_sha256"] = sha256_text("999999")
    else:
        recs[1]["id"] = "chain_sum/test/99999"
    write_jsonl(bad / "samples.jsonl", recs)
    before = {p: files(p) for p in (good, bad)}
    assert main(["regrade", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{bad / 'samples.jsonl'}:2:" in err and "not regraded" in err
    assert {p: files(p) for p in (good, bad)} == before


def test_rerun_is_idempotent_and_dry_run_writes_nothing(tmp_path, capsys):
    run = make_run(tmp_path / "r", [record(0, "10", "<answer>2^10</answer>", correct=True)])
    before = files(run)
    assert main(["regrade", str(run), "--dry-run"]) == 0
    assert files(run) == before
    assert main(["regrade", str(run)]) == 0
    first = files(run)
    assert first != before
    capsys.readouterr()
    assert main(["regrade", str(run)]) == 0
    out = capsys.readouterr().out
    assert "0/0" in out and "no (unchanged)" in out and "wrote 0 of 1" in out
    assert files(run) == first


def test_bad_runs_are_input_errors(tmp_path, capsys):
    no_manifest = make_run(tmp_path / "a", [record(0, "1", "<answer>1</answer>")])
    (no_manifest / "manifest.json").unlink()
    assert main(["regrade", str(no_manifest)]) == 2
    running = make_run(tmp_path / "b", [record(0, "1", "<answer>1</answer>")], status="running")
    assert main(["regrade", str(running)]) == 2
    other = make_run(tmp_path / "c", [{**record(0, "1", "<answer>1</answer>"), "task": "gsm8k"}])
    assert main(["regrade", str(other)]) == 2
    no_gold = make_run(
        tmp_path / "d",
        [{k: v for k, v in record(0, "1", "<answer>1</answer>").items() if k != "gold"}],
    )
    assert main(["regrade", str(no_gold)]) == 2
    err = capsys.readouterr().err
    assert "no manifest.json" in err and "'running'" in err
    assert f"{other / 'samples.jsonl'}:1: 'task'" in err
    assert f"{no_gold / 'samples.jsonl'}:1: record has neither" in err
