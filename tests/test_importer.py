"""``calbench import`` (calbench/report/importer.py, import_runs.py, import_grading.py,
rlcr_import.py): released outputs -> run folders.

Fixtures are small files written here in the real schemas (RLCR's eval_outputs lines; lm-eval's
logged samples in tests/fixtures/lmeval_output); their text is synthetic. One test reads the
real RLCR release under ../shared/data and skips when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from calbench.cli import main
from calbench.core.records import read_samples
from calbench.core.runs import load_run
from calbench.report import import_grading
from calbench.report.leaderboard import build
from calbench.report.score import score_files
from tests.conftest import shared_data

LMEVAL = Path(__file__).parent / "fixtures" / "lmeval_output"

THINK = "<think> synthetic reasoning </think>\n"


def rlcr_line(
    dataset: str,
    model: str,
    i: int,
    *,
    gold: str,
    answer: str,
    correct: int,
    confidence: float,
    stated: str | None = None,
    **extra,
) -> dict:
    stated = str(confidence) if stated is None else stated
    question = f"synthetic question {i}"
    if dataset == "commonsenseqa":
        question += "\nA) alpha\nB) beta\nC) gamma\nD) delta\nE) epsilon\n"
    return {
        "dataset": dataset,
        "family": "Synth-models",
        "model": model,
        "id": 1000 + i,
        "question": question,
        "gold": gold,
        "response": f"{THINK}<answer> {answer} </answer>\n<confidence> {stated} </confidence>",
        "correct": correct,
        "confidence": confidence,
        **extra,
    }


def math_lines(model: str = "Base") -> list[dict]:
    return [
        # the RLCR evaluator marked a right fraction wrong: calbench's grader says right
        rlcr_line(
            "math-500", model, 0, gold="\\frac{3}{4}", answer="3/4", correct=0, confidence=0.8
        ),
        rlcr_line("math-500", model, 1, gold="12", answer="12", correct=1, confidence=0.9),
        # a sign the RLCR evaluator let through: calbench's grader says wrong
        rlcr_line("math-500", model, 2, gold="-1", answer="1", correct=1, confidence=0.6),
        rlcr_line("math-500", model, 3, gold="7", answer="8", correct=0, confidence=0.3),
        # stored confidence differs from what the response says (e.g. a classifier's)
        rlcr_line(
            "math-500", model, 4, gold="2", answer="2", correct=1, confidence=0.55, stated="0.95"
        ),
    ]


def csqa_lines(model: str = "Base") -> list[dict]:
    return [
        rlcr_line(
            "commonsenseqa",
            model,
            0,
            gold="Option B which is : beta",
            answer="B) beta",
            correct=1,
            confidence=0.9,
        ),
        rlcr_line(
            "commonsenseqa",
            model,
            1,
            gold="Option D which is : delta",
            answer="A",
            correct=1,
            confidence=0.7,
        ),
        rlcr_line(
            "commonsenseqa",
            model,
            2,
            gold="Option C which is : gamma",
            answer="E",
            correct=0,
            confidence=0.4,
        ),
    ]


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def records(run_dir: Path) -> list[dict]:
    return read_samples(run_dir / "samples.jsonl")


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture
def rlcr_file(tmp_path: Path) -> Path:
    return write_lines(
        tmp_path / "Synth-models__mixed.jsonl",
        math_lines("Base") + math_lines("RLCR") + csqa_lines("Base"),
    )


def test_import_round_trip_and_provenance(tmp_path: Path, rlcr_file: Path) -> None:
    out = tmp_path / "out"
    assert main(["import", str(rlcr_file), "--output", str(out), "--n-bootstrap", "20"]) == 0
    run_dir = out / "rlcr-paper" / "Base" / "math500" / "rlcr"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".cache",  # the run folder's lock (calbench.core.runlock), as in an eval's folder
        "manifest.json",
        "metrics.json",
        "samples.jsonl",
    ]
    assert (out / "rlcr-paper" / "RLCR" / "math500" / "rlcr").is_dir()
    recs = records(run_dir)
    src = math_lines("Base")
    # published verdicts and confidences kept as they are, in file order
    assert [r["id"] for r in recs] == [s["id"] for s in src]
    assert [r["correct"] for r in recs] == [bool(s["correct"]) for s in src]
    assert [r["confidence"] for r in recs] == [s["confidence"] for s in src]
    assert recs[0]["answer"] == "3/4" and recs[0]["parse"]["answer_source"] == "tag"
    assert recs[4]["confidence_as_parsed"] == 0.95  # calbench's own reading, beside the kept 0.55
    assert recs[0]["meta"]["family"] == "Synth-models" and recs[0]["meta"]["line"] == 1
    assert "correct_as_published" not in recs[0]

    m = manifest(run_dir)
    assert m["model"] == "rlcr-paper/Base" and m["task"] == "math500"
    assert m["elicitation"] == "rlcr" and m["status"] == "complete" and m["n"] == 5
    sha = hashlib.sha256(rlcr_file.read_bytes()).hexdigest()
    assert m["source"]["kind"] == "imported" and m["source"]["format"] == "rlcr"
    assert m["source"]["from"] == {"file": rlcr_file.name, "sha256": sha}
    assert m["source"]["grader"] == m["grader"] == "rlcr-evaluator"
    assert m["source"]["regrade"] is None
    assert m["source"]["confidence"]["differs_from_parse"] == 1

    run = load_run(run_dir)
    assert run.metric("accuracy")["value"] == pytest.approx(3 / 5)
    assert run.model == "rlcr-paper/Base" and run.task == "math500"

    # The leaderboard lists the imports beside a generated run, marked and with their source.
    rows = build(out, tmp_path / "board", diagrams=False)
    assert {r["model"] for r in rows} == {"rlcr-paper/Base", "rlcr-paper/RLCR"}
    assert all(r["source"]["kind"] == "imported" for r in rows)
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert board[0]["source"]["from"]["sha256"] == sha
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "rlcr-paper/Base _(imported; graded by rlcr-evaluator)_" in md
    html = (tmp_path / "board" / "index.html").read_text()
    assert '<span class="badge"' in html and f"sha256 {sha[:12]}" in html


def test_regrade_records_both_verdicts(tmp_path: Path, rlcr_file: Path) -> None:
    out = tmp_path / "out"
    assert main(["import", str(rlcr_file), "-o", str(out), "--regrade", "--n-bootstrap", "0"]) == 0
    math_dir = out / "rlcr-paper" / "Base" / "math500" / "rlcr"
    recs = records(math_dir)
    assert [r["correct_as_published"] for r in recs] == [False, True, True, False, True]
    assert [r["correct"] for r in recs] == [True, True, False, False, True]
    assert [r["confidence"] for r in recs] == [0.8, 0.9, 0.6, 0.3, 0.55]  # kept
    m = manifest(math_dir)
    assert m["grader"] == m["source"]["grader"] == "calbench:math"
    reg = m["source"]["regrade"]
    assert (reg["changed"], reg["right_to_wrong"], reg["wrong_to_right"]) == (2, 1, 1)
    assert reg["accuracy_as_published"] == pytest.approx(0.6) and reg["accuracy"] == 0.6
    assert load_run(math_dir).metric("accuracy")["value"] == pytest.approx(0.6)

    # CommonsenseQA: golds become letters; a letter that names another option is wrong.
    csqa = records(out / "rlcr-paper" / "Base" / "commonsenseqa" / "rlcr")
    assert [r["gold"] for r in csqa] == ["B", "D", "C"]
    assert [r["correct"] for r in csqa] == [True, False, False]
    assert [r["correct_as_published"] for r in csqa] == [True, True, False]


def test_score_regrade_adds_regrade_entry(rlcr_file: Path) -> None:
    scores = score_files([rlcr_file], n_bootstrap=0, regrade=True)
    entry = scores["math-500"]["Base"]
    assert entry["accuracy"] == pytest.approx(0.6)
    assert entry["regrade"]["grader"] == "calbench:math"
    assert entry["regrade"]["right_to_wrong"] == 1 and entry["regrade"]["wrong_to_right"] == 1
    assert scores["commonsenseqa"]["Base"]["regrade"]["accuracy"] == pytest.approx(1 / 3)
    assert scores["commonsenseqa"]["Base"]["regrade"]["accuracy_as_published"] == pytest.approx(
        2 / 3
    )
    assert "regrade" not in score_files([rlcr_file], n_bootstrap=0)["math-500"]["Base"]


def test_redacted_import_keeps_responses_not_benchmark_text(
    tmp_path: Path, rlcr_file: Path
) -> None:
    out = tmp_path / "out"
    assert main(["import", str(rlcr_file), "-o", str(out), "--redact", "--n-bootstrap", "0"]) == 0
    run_dir = out / "rlcr-paper" / "Base" / "commonsenseqa" / "rlcr"
    text = (run_dir / "samples.jsonl").read_text()
    assert "synthetic question" not in text and "alpha" not in text
    rec = records(run_dir)[0]
    assert "question" not in rec and "gold" not in rec
    assert rec["gold_sha256"] == hashlib.sha256(b"B").hexdigest()
    assert rec["response"].startswith(THINK) and manifest(run_dir)["redacted"] is True


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", ":2: RLCR record lacks confidence"),
        ("duplicate", ":3: 'id' 1001 repeats the id at"),
        ("no_response", ":2: 'response' must be text"),
        ("bad_correct", ":2: 'correct' must be true/false or 0/1"),
        ("unknown", ":1: unknown format"),
        ("calbench", ":1: unknown format"),
        ("bad_gold_letter", ":1: 'gold' 'the first one' names no option letter"),
    ],
)
def test_bad_input_exit_2_naming_file_line(tmp_path: Path, capsys, case: str, expect: str) -> None:
    rows = math_lines()
    if case == "missing":
        del rows[1]["confidence"]
    elif case == "duplicate":
        rows[2]["id"] = rows[1]["id"]
    elif case == "no_response":
        del rows[1]["response"]
    elif case == "bad_correct":
        rows[1]["correct"] = "yes"
    elif case == "unknown":
        rows = [{"question": "q", "answer": "a"}]
    elif case == "calbench":
        rows = [{"id": "t/0", "correct": True, "confidence": 0.5}]
    elif case == "bad_gold_letter":
        rows = csqa_lines()
        rows[0]["gold"] = "the first one"
    bad = write_lines(tmp_path / "bad.jsonl", rows)
    good = write_lines(tmp_path / "good.jsonl", math_lines("RLCR"))
    out = tmp_path / "out"
    assert main(["import", str(good), str(bad), "-o", str(out), "--n-bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}{expect}" in err
    assert not out.exists()  # nothing written, not even the good file's runs


def test_parse_cases_skipped_and_empty_import_is_an_error(tmp_path: Path, capsys) -> None:
    cases = write_lines(
        tmp_path / "cases.jsonl",
        [
            {
                "dataset": "math-500",
                "model": "Base",
                "id": 1,
                "response": "x",
                "eval_parsed_confidence": 0.5,
                "stored_confidence_used_in_metrics": 0.5,
            }
        ],
    )
    assert main(["import", str(cases), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "skipping" in err and "nothing to import" in err


def test_folders_replace_imports_but_not_other_runs(
    tmp_path: Path, rlcr_file: Path, capsys
) -> None:
    out = tmp_path / "out"
    args = ["import", str(rlcr_file), "-o", str(out), "--n-bootstrap", "0"]
    assert main(args) == 0
    assert main(args + ["--regrade"]) == 0  # an earlier import of the same run is replaced
    run_dir = out / "rlcr-paper" / "Base" / "math500" / "rlcr"
    assert manifest(run_dir)["grader"] == "calbench:math"
    m = manifest(run_dir)
    m.pop("source")  # now it looks like a generated run
    (run_dir / "manifest.json").write_text(json.dumps(m))
    before = (run_dir / "samples.jsonl").read_bytes()
    assert main(args) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (run_dir / "samples.jsonl").read_bytes() == before
    assert main(args + ["--overwrite"]) == 0
    assert manifest(run_dir)["source"]["kind"] == "imported"


def test_hostile_names_stay_inside_output(tmp_path: Path) -> None:
    rows = [dict(r, model="../../escape", dataset="../up") for r in math_lines()]
    f = write_lines(tmp_path / "hostile.jsonl", rows)
    out = tmp_path / "deep" / "out"
    assert main(["import", str(f), "-o", str(out), "--n-bootstrap", "0"]) == 0
    written = [p for p in tmp_path.rglob("samples.jsonl")]
    assert len(written) == 1 and written[0].resolve().is_relative_to(out.resolve())
    assert not any(part.startswith(".") for part in written[0].relative_to(out).parts)
    assert manifest(written[0].parent)["model"] == "rlcr-paper/../../escape"


def test_lmeval_samples_import_and_regrade(tmp_path: Path, capsys) -> None:
    src = tmp_path / "lm"
    shutil.copytree(LMEVAL, src)
    calbench_task = next(src.rglob("samples_calbench_synth_*.jsonl"))
    out = tmp_path / "out"
    assert (
        main(
            [
                "import",
                str(calbench_task),
                "-o",
                str(out),
                "--regrade",
                "--grader",
                "math",
                "--n-bootstrap",
                "0",
            ]
        )
        == 0
    )
    run_dir = out / "synth-org" / "Synth-1B-Instruct" / "synth" / "prefill"
    m = manifest(run_dir)
    assert m["model"] == "synth-org/Synth-1B-Instruct" and m["source"]["format"] == "lm-eval"
    assert m["source"]["grader"] == "calbench:math"
    # the task graded itself with calbench's grader: regrading (prefill restored) changes nothing
    assert m["source"]["regrade"]["changed"] == 0
    recs = records(run_dir)
    assert all(r["correct"] == r["correct_as_published"] for r in recs)
    assert sum(r["confidence"] is None for r in recs) == 1  # lm-eval's NaN: unparsed, kept

    generic = next(src.rglob("samples_synth_gen_*.jsonl"))
    assert main(["import", str(generic), "-o", str(out), "--regrade"]) == 2
    assert "no grader; name one with --grader" in capsys.readouterr().err
    assert main(["import", str(generic), "-o", str(out), "--n-bootstrap", "0"]) == 0
    gen_dirs = sorted(p.parent.name for p in (out / "synth-org").rglob("manifest.json"))
    assert "lm-eval" in gen_dirs  # a task without an elicitation


def test_task_grader_agrees_with_the_task_registry() -> None:
    from calbench.eval.registry import available_tasks

    tasks = {n: t for n, t in available_tasks().items() if t.origin == "calbench"}
    assert {"math500", "commonsenseqa"} <= set(tasks)
    for name, info in tasks.items():
        if info.yaml_path.stem == name:
            assert import_grading.task_grader(name) == info.grader, name
    assert import_grading.calbench_task("math-500") == "math500"
    assert import_grading.calbench_task("CommonsenseQA") == "commonsenseqa"
    assert import_grading.calbench_task("my-own-set") == "my-own-set"


def test_real_rlcr_release_reproduces_published_accuracy(tmp_path: Path) -> None:
    data = shared_data("rlcr")
    expected = json.loads((data / "expected_metrics.json").read_text())["Hotpot-models"]
    files = sorted(data.glob("Hotpot-models__*.jsonl"))
    assert main(["import", *map(str, files), "-o", str(tmp_path), "--n-bootstrap", "0"]) == 0
    n = 0
    for dataset, task in (("commonsenseqa", "commonsenseqa"), ("math-500", "math500")):
        for model, exp in expected[dataset].items():
            run = load_run(tmp_path / "rlcr-paper" / model / task / "rlcr")
            assert run.n == exp["n"]
            assert run.metric("accuracy")["value"] == exp["accuracy"], (model, task)
            assert run.metric("brier")["value"] == pytest.approx(exp["brier_score"], abs=1e-12)
            n += 1
    assert n == 10


def test_import_refuses_a_run_folder_another_process_holds(
    tmp_path: Path, rlcr_file: Path, capsys
) -> None:
    import os
    import signal

    from tests.test_run_folders import _holder

    out = tmp_path / "out"
    run_dir = out / "rlcr-paper" / "RLCR" / "math500" / "rlcr"
    run_dir.mkdir(parents=True)
    holder = _holder(run_dir)
    try:
        assert main(["import", str(rlcr_file), "-o", str(out), "--n-bootstrap", "0"]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert not any(p.is_file() for p in out.rglob("*") if ".cache" not in p.parts)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
