"""The Python API (``calbench.load_runs``, ``calbench.evaluate``) and ``calbench eval`` with
several models. Runs come from tests/fixtures/runs_make.py (real schema, real metrics) and from
real ``calbench eval`` runs against a small OpenAI-compatible server started here (no model
load); one test evaluates the real SmolLM2-135M through ``calbench.evaluate``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import calbench
from calbench.cli import build_parser
from calbench.cli import main as calbench_main
from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.records import atomic_write_json
from calbench.eval.options import model_specs
from tests.conftest import REPO
from tests.fault_server import FaultServer
from tests.fixtures.runs_make import make_results, make_run

# --- import cost ------------------------------------------------------------------------------


def test_import_calbench_loads_neither_pandas_nor_torch():
    code = (
        "import sys, calbench\n"
        "heavy = [m for m in ('pandas', 'torch', 'lm_eval', 'numpy', 'transformers') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert set(calbench.__all__) <= set(dir(calbench))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_load_runs_needs_no_torch(tmp_path):
    make_run(tmp_path, model="m", n=40)
    code = (
        "import sys, calbench\n"
        f"df = calbench.load_runs({str(tmp_path)!r})\n"
        "assert len(df) == 1 and 'pandas' in sys.modules\n"
        "assert 'torch' not in sys.modules and 'lm_eval' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


# --- load_runs --------------------------------------------------------------------------------


def _close(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b is not None and math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-12)


def test_load_runs_one_row_per_run_with_the_values_of_metrics_json(tmp_path):
    runs = make_results(tmp_path)
    df = calbench.load_runs(tmp_path)
    assert isinstance(df, pd.DataFrame) and len(df) == len(runs)
    assert sorted(df["path"]) == sorted(str(p) for p in runs.values())
    for col in (
        "task",
        "model",
        "elicitation",
        "n",
        "parse_rate",
        "parse_rate_lo",
        "parse_rate_hi",
        "source",
        "path",
        "accuracy",
        "accuracy_lo",
        "accuracy_hi",
        "ece",
        "ece_lo",
        "ece_hi",
        "brier",
        "auroc",
        "auroc_lo",
        "auroc_hi",
    ):
        assert col in df.columns, col
    for _, row in df.iterrows():
        d = Path(row["path"])
        manifest = json.loads((d / "manifest.json").read_text())
        summary = json.loads((d / "metrics.json").read_text())
        recs = [json.loads(x) for x in (d / "samples.jsonl").read_text().splitlines()]
        assert (row["model"], row["task"], row["elicitation"]) == (
            manifest["model"],
            manifest["task"],
            manifest["elicitation"],
        )
        assert row["n"] == summary["n"] == len(recs)
        assert row["n_scored"] == summary["n_scored"]
        parsed = sum(r["confidence"] is not None for r in recs)
        assert row["parse_rate"] == parsed / len(recs)
        assert row["parse_rate_lo"] <= row["parse_rate"] <= row["parse_rate_hi"]
        assert row["source"] is None and not row["recomputed"]
        for name, m in summary["metrics"].items():
            for suffix, key in (("", "value"), ("_lo", "lo"), ("_hi", "hi")):
                assert _close(m.get(key), row[name + suffix]), (d, name, suffix)
    # the hostile model name is data, not markup: kept as written
    assert '<img src=x onerror="alert(1)"> $x$ | evil' in set(df["model"])


def test_load_runs_takes_a_run_folder_or_a_list_and_counts_each_run_once(tmp_path):
    runs = make_results(tmp_path)
    one = calbench.load_runs(runs["good"])
    assert list(one["path"]) == [str(runs["good"])]
    # good twice, and again inside its model's folder (which also holds "other")
    many = calbench.load_runs([runs["good"], str(runs["bad"]), runs["good"], runs["good"].parent])
    assert sorted(many["path"]) == sorted(str(runs[k]) for k in ("good", "bad", "other"))


def test_load_runs_recomputes_a_missing_summary_and_reads_source(tmp_path):
    d = make_run(tmp_path, model="m", n=60, metrics=False, unparsed=0.0)
    manifest = json.loads((d / "manifest.json").read_text())
    atomic_write_json(d / "manifest.json", {**manifest, "source": "lm-eval import"})
    row = calbench.load_runs(d).iloc[0]
    recs = [json.loads(x) for x in (d / "samples.jsonl").read_text().splitlines()]
    assert bool(row["recomputed"]) and row["source"] == "lm-eval import"
    assert row["accuracy"] == sum(r["correct"] for r in recs) / len(recs)
    assert row["parse_rate"] == 1.0 and row["parse_rate_hi"] == 1.0


def test_load_runs_undefined_metric_is_nan_not_a_number(tmp_path):
    d = make_run(tmp_path, model="m", n=30, unparsed=1.0)  # no confidence parses
    row = calbench.load_runs(d).iloc[0]
    assert row["parse_rate"] == 0.0 and row["n_scored"] == 0
    assert math.isnan(row["ece"]) and math.isnan(row["ece_lo"]) and math.isnan(row["auroc"])
    assert row["accuracy"] == row["accuracy"]  # accuracy stays defined (all records count)


def test_load_runs_errors_name_the_place(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        calbench.load_runs(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no run folders"):
        calbench.load_runs(tmp_path / "empty")
    d = make_run(tmp_path / "r", model="m", n=20)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"manifest\.json: not valid JSON"):
        calbench.load_runs(d)


# --- evaluate(): the CLI's parser and function ------------------------------------------------


def _cli_namespace(argv: list[str]) -> dict:
    parser, _ = build_parser()
    ns = vars(parser.parse_args(["eval", *argv]))
    ns.pop("command")
    return ns


def test_evaluate_arguments_are_the_cli_arguments():
    from calbench.api import eval_arguments

    ns = eval_arguments(
        ["a", "b"],
        ["chain_sum", "gsm_symbolic"],
        limit=3,
        redact=True,
        sample_temperature=0.5,
        backend="openai-chat",
        base_url="http://x/v1",
        overwrite=False,
        data_dir=None,
    )
    assert vars(ns) == _cli_namespace(
        [
            "--model",
            "a,b",
            "--tasks",
            "chain_sum,gsm_symbolic",
            "--limit",
            "3",
            "--redact",
            "--sample-temperature",
            "0.5",
            "--backend",
            "openai-chat",
            "--base-url",
            "http://x/v1",
        ]
    )
    assert vars(eval_arguments("m", "chain_sum")) == _cli_namespace(
        ["--model", "m", "--tasks", "chain_sum"]
    )  # the same defaults


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"limt": 3}, "unknown option 'limt'.*limit"),
        ({"limit": "three"}, "invalid int value"),
        ({"redact": "yes"}, "switch"),
        ({"tasks_": "x"}, "unknown option 'tasks_'"),
    ],
)
def test_evaluate_bad_options_are_usage_errors(kwargs, match):
    from calbench.api import eval_arguments

    with pytest.raises(UsageError, match=match):
        eval_arguments("m", ["chain_sum"], **kwargs)


def test_evaluate_names_with_commas_in_a_list_are_refused():
    with pytest.raises(UsageError, match="holds a comma"):
        calbench.evaluate(["a,b", "c"], ["chain_sum"])
    with pytest.raises(UsageError, match="empty list"):
        calbench.evaluate([], ["chain_sum"])


# --- several models in one command ------------------------------------------------------------


def _names_the_model(body: dict) -> str:
    return f"<answer>{body['model']}</answer> <confidence>0.6</confidence>"


@pytest.fixture(scope="module")
def server():
    """An OpenAI-compatible endpoint whose answer names the model it was asked for; the model
    named ``broken`` gets HTTP 500."""
    with FaultServer(
        then=lambda body: "500" if body.get("model") == "broken" else "ok",
        ok_text=_names_the_model,
        lifetime=1800,  # module-scoped: outlive every test of the module
    ) as srv:
        yield srv.url


def _eval(models: str, url: str, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--model",
        models,
        "--backend",
        "openai-chat",
        "--base-url",
        url,
        "--tasks",
        "chain_sum",
        "--limit",
        "2",
        "--max-retries",
        "0",
        "--output",
        str(out),
        "--bootstrap",
        "10",
        *extra,
    ]


def _answers(run: Path) -> set[str]:
    return {json.loads(x)["answer"] for x in (run / "samples.jsonl").read_text().splitlines()}


def test_model_specs_split_on_commas(tmp_path):
    assert model_specs("a") == ["a"]
    assert model_specs(" a , b,a ") == ["a", "b"]  # stripped; named twice runs once
    folder = tmp_path / "my,model"
    folder.mkdir()
    assert model_specs(str(folder)) == [str(folder)]  # an existing path is one model
    for bad in ("a,,b", "a,", ",", "", "  "):
        with pytest.raises(UsageError):
            model_specs(bad)


def test_two_models_one_command_one_run_folder_each(server, tmp_path, capsys):
    out = tmp_path / "out"
    assert calbench_main(_eval("m-one,m-two", server, out)) == 0
    for name in ("m-one", "m-two"):
        run = out / name / "chain_sum" / "tags"
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["model"] == name
        assert _answers(run) == {name}  # the server answers with the model it was asked
    df = calbench.load_runs(out)
    assert sorted(df["model"]) == ["m-one", "m-two"] and set(df["n"]) == {2}


def test_a_failing_model_does_not_stop_the_others_and_exits_1_naming_it(server, tmp_path, capsys):
    out = tmp_path / "out"
    rc = calbench_main(_eval("broken,m-two", server, out))
    err = capsys.readouterr().err
    assert rc == 1
    assert "model broken: failed" in err and "1 of 2 models failed: broken" in err
    assert (
        json.loads((out / "m-two/chain_sum/tags/manifest.json").read_text())["status"] == "complete"
    )
    assert (
        json.loads((out / "broken/chain_sum/tags/manifest.json").read_text())["status"] == "running"
    )  # never marked complete


def test_only_usage_errors_exit_2_after_running_the_rest(server, tmp_path, capsys):
    out = tmp_path / "out"
    assert calbench_main(_eval("m-one", server, out, "--max-new-tokens", "8")) == 0
    # m-one's folder now holds other settings: refused (usage error), m-two still runs
    rc = calbench_main(_eval("m-one,m-two", server, out))
    err = capsys.readouterr().err
    assert rc == 2 and "model m-one: error" in err and "--overwrite" in err
    assert "1 of 2 models failed: m-one" in err
    assert (out / "m-two/chain_sum/tags/metrics.json").is_file()
    # shared settings are checked before any model runs
    assert calbench_main(_eval("m-three,m-four", server, out, "--limit", "0")) == 2
    assert not (out / "m-three").exists()


def test_evaluate_returns_the_run_folders_of_every_model(server, tmp_path):
    out = tmp_path / "out"
    paths = calbench.evaluate(
        ["m-one", "m-two"],
        "chain_sum",
        backend="openai-chat",
        base_url=server,
        limit=2,
        max_retries=0,
        output=out,
        bootstrap=10,
    )
    assert paths == [out / "m-one" / "chain_sum" / "tags", out / "m-two" / "chain_sum" / "tags"]
    assert list(calbench.load_runs(paths)["model"]) == ["m-one", "m-two"]
    with pytest.raises(RuntimeFailure, match="1 of 2 models failed: broken"):
        calbench.evaluate(
            "m-one,broken",
            ["chain_sum"],
            backend="openai-chat",
            base_url=server,
            limit=2,
            max_retries=0,
            output=out,
            bootstrap=10,
        )


@pytest.mark.model  # loads SmolLM2-135M (`make test-model`)
def test_evaluate_runs_a_real_model(smollm2_path, tmp_path):
    out = tmp_path / "out"
    paths = calbench.evaluate(
        model="smollm2-135m",
        tasks=["chain_sum"],
        limit=2,
        max_new_tokens=16,
        batch_size=2,
        bootstrap=20,
        output=out,
        device="cpu",
    )
    assert paths == [out / "smollm2-135m" / "chain_sum" / "tags"]
    manifest = json.loads((paths[0] / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["n"] == 2
    assert manifest["model_info"]["weights_sha256"]
    row = calbench.load_runs(paths[0]).iloc[0]
    assert row["model"] == "smollm2-135m" and row["n"] == 2 and row["backend"] == "hf"
