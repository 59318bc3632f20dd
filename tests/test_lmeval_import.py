"""Reading lm-eval ``--log_samples`` output as calbench records (calbench/lmeval_import.py).

``fixtures/lmeval_output/`` was written by lm-eval's own ``EvaluationTracker`` (see
``fixtures/lmeval_make.py``); one test rewrites it with the installed lm-eval, so a change in
lm-eval's sample format shows up here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from calbench.core.records import RecordError, write_jsonl
from calbench.report.lmeval_import import is_lmeval_samples, read_lmeval_samples
from tests.fixtures import lmeval_make

FIXTURE = Path(__file__).parent / "fixtures" / "lmeval_output"
MODEL_DIR = FIXTURE / "synth-org__Synth-1B-Instruct"
DATE = "2025-01-01T00-00-00.000000"
MODEL = "synth-org/Synth-1B-Instruct"


def _samples(task: str) -> Path:
    return MODEL_DIR / f"samples_{task}_{DATE}.jsonl"


def test_detects_lmeval_samples(tmp_path: Path) -> None:
    assert is_lmeval_samples(FIXTURE)
    assert is_lmeval_samples(_samples("calbench_synth"))
    assert not is_lmeval_samples(tmp_path / "missing.jsonl")
    # A calbench samples.jsonl is not lm-eval output.
    calbench_file = tmp_path / "samples.jsonl"
    write_jsonl(calbench_file, [{"id": "a", "correct": True, "confidence": 0.5}])
    assert not is_lmeval_samples(calbench_file)
    (tmp_path / "junk.jsonl").write_text("not json\n")
    assert not is_lmeval_samples(tmp_path / "junk.jsonl")
    assert not is_lmeval_samples(tmp_path)


def test_calbench_task_uses_logged_correct_and_confidence() -> None:
    data = read_lmeval_samples(_samples("calbench_synth"))
    assert list(data) == [("synth", MODEL)]  # metadata.calbench_name; model from results JSON
    recs = data[("synth", MODEL)]
    assert len(recs) == 12
    assert [r["id"] for r in recs[:2]] == ["synth/test/0", "synth/test/1"]
    assert [r["correct"] for r in recs] == [i % 3 != 0 for i in range(12)]
    assert recs[0]["confidence"] == 0.9 and recs[3]["confidence"] == 0.6
    assert recs[5]["confidence"] is None  # NaN in the log = unparsed
    assert recs[5]["parse"]["confidence_error"] == "not a number"
    # The prefill is put back in front of what lm-eval logged.
    assert recs[1]["response"].startswith("<answer>3</answer>")
    assert recs[1]["answer"] == "3"
    assert recs[1]["elicitation"] == "prefill"
    assert recs[1]["meta"]["difficulty"] == 1 and recs[1]["meta"]["source"] == "lm-eval"
    assert recs[1]["prompt"].endswith("<answer>")
    for r in recs:
        assert {"id", "correct", "confidence", "response", "answer"} <= set(r)


def test_generic_task_parses_confidence_one_dataset_per_filter() -> None:
    data = read_lmeval_samples(_samples("synth_gen"))
    assert set(data) == {("synth_gen:strict-match", MODEL), ("synth_gen:flexible-extract", MODEL)}
    flex = data[("synth_gen:flexible-extract", MODEL)]
    strict = data[("synth_gen:strict-match", MODEL)]
    # "80%", "0.9", "95%", "60" (a bare number above 1 is read as a percentage).
    assert [r["confidence"] for r in flex[:4]] == [0.8, 0.9, 0.95, 0.6]
    assert flex[3]["parse"]["confidence_rescaled"] is True
    assert [r["correct"] for r in flex] == [i % 4 != 0 for i in range(12)]
    assert not any(r["correct"] for r in strict)
    assert flex[1]["id"] == "synth_gen/1" and flex[1]["task"] == "synth_gen:flexible-extract"
    assert flex[1]["answer"] == "11"  # the filter's extraction (no answer tag or line)
    assert flex[0]["meta"]["correct_field"] == "exact_match"


def test_folder_skips_what_cannot_be_scored(capsys) -> None:
    data = read_lmeval_samples(FIXTURE)
    assert set(data) == {
        ("synth", MODEL),
        ("synth_gen:strict-match", MODEL),
        ("synth_gen:flexible-extract", MODEL),
    }
    assert "samples_synth_mc" in capsys.readouterr().err
    with pytest.raises(RecordError, match="generate_until"):
        read_lmeval_samples(_samples("synth_mc"))


def test_model_name_fallbacks(tmp_path: Path) -> None:
    # No results file: the folder name, lm-eval's "__" turned back into "/".
    d = tmp_path / "org__my-model"
    d.mkdir()
    shutil.copy(_samples("synth_gen"), d)
    assert {m for _, m in read_lmeval_samples(d)} == {"org/my-model"}
    # results without model_name: model_args, an adapter (peft) before its base model.
    results = json.loads((MODEL_DIR / f"results_{DATE}.json").read_text())
    del results["model_name"]
    results["config"]["model_args"] = "pretrained=base/model,peft=me/adapter,dtype=bf16"
    (d / f"results_{DATE}.json").write_text(json.dumps(results))
    assert {m for _, m in read_lmeval_samples(d)} == {"me/adapter"}
    results["config"]["model_args"] = {"pretrained": "dict/model"}
    (d / f"results_{DATE}.json").write_text(json.dumps(results))
    assert {m for _, m in read_lmeval_samples(d)} == {"dict/model"}


def test_rerun_of_same_task_is_not_merged(tmp_path: Path) -> None:
    d = tmp_path / "org__m"
    d.mkdir()
    shutil.copy(_samples("calbench_synth"), d)
    shutil.copy(
        _samples("calbench_synth"), d / "samples_calbench_synth_2025-02-02T00-00-00.0.jsonl"
    )
    data = read_lmeval_samples(d)
    assert len(data) == 2 and all(len(v) == 12 for v in data.values())
    assert ("calbench_synth", "org/m") in data


def _rewrite(src: Path, dst: Path, edit) -> None:
    lines = [json.loads(line) for line in src.read_text().splitlines()]
    dst.write_text("".join(json.dumps(edit(s)) + "\n" for s in lines))


def test_rejects_non_binary_correctness_and_missing_confidence(tmp_path: Path) -> None:
    def half(s):
        s["exact_match"] = 0.5
        return s

    f = tmp_path / f"samples_synth_gen_{DATE}.jsonl"
    _rewrite(_samples("synth_gen"), f, half)
    with pytest.raises(RecordError, match=r":1: .exact_match. must be true/false or 0/1"):
        read_lmeval_samples(f)

    def no_conf(s):
        s["resps"] = [["The answer is 3."]]
        return s

    _rewrite(_samples("synth_gen"), f, no_conf)
    with pytest.raises(RecordError, match="no verbalized confidence"):
        read_lmeval_samples(f)

    def no_metric(s):
        del s["exact_match"]
        return s

    _rewrite(_samples("synth_gen"), f, no_metric)
    with pytest.raises(RecordError, match="no correctness metric"):
        read_lmeval_samples(f)


def test_records_can_be_scored() -> None:
    from calbench.metrics import summarize

    for recs in read_lmeval_samples(FIXTURE).values():
        s = summarize([r["correct"] for r in recs], [r["confidence"] for r in recs], n_bootstrap=10)
        assert s["n"] == len(recs)


def test_matches_what_installed_lm_eval_writes(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    folder = lmeval_make.write_lmeval_output(tmp_path)
    fresh = read_lmeval_samples(folder)
    committed = read_lmeval_samples(MODEL_DIR)
    assert set(fresh) == set(committed)
    for key, recs in fresh.items():
        strip = [{**r, "meta": {**r["meta"], "samples_file": None}} for r in recs]
        want = [{**r, "meta": {**r["meta"], "samples_file": None}} for r in committed[key]]
        assert strip == want, key
