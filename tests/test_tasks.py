"""Task plugins: loaders on fixture files in each dataset's real schema, the registry (YAML
files, CALBENCH_TASKS_PATH, entry points), `calbench tasks`, and the graders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from calbench.core.errors import UsageError
from calbench.core.grade import grade, judge_grade
from calbench.core.loaders import LOADERS
from calbench.eval.harness import load_docs
from calbench.eval.registry import available_tasks, get_tasks
from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "data"
CLI = [sys.executable, "-m", "calbench.cli"]


@pytest.mark.parametrize(
    "task, n, first_gold",
    [
        ("gsm8k", 3, "7"),
        ("commonsenseqa", 2, "B"),
        ("triviaqa", 2, "Mars|The Red Planet|Planet Mars"),
        ("hotpotqa", 2, "the Seine"),
        ("math500", 3, "1"),
        ("simpleqa", 2, "8"),
    ],
)
def test_loaders_read_the_real_schemas(task, n, first_gold):
    items = LOADERS[task](data_dir=str(FIX), task=task)
    assert len(items) == n
    assert items[0]["gold"] == first_gold
    assert len({x["id"] for x in items}) == n
    assert all(x["question"] for x in items)


def test_gsm8k_gold_drops_thousands_separators():
    assert LOADERS["gsm8k"](data_dir=str(FIX))[2]["gold"] == "2400"


def test_commonsenseqa_letters_follow_the_dataset_labels():
    item = LOADERS["commonsenseqa"](data_dir=str(FIX))[1]
    assert "C) scissors" in item["question"] and item["gold"] == "C"


def test_truthfulqa_mc_is_a_seeded_recorded_shuffle():
    a = LOADERS["truthfulqa_mc"](data_dir=str(FIX), seed=0)
    b = LOADERS["truthfulqa_mc"](data_dir=str(FIX), seed=0)
    c = LOADERS["truthfulqa_mc"](data_dir=str(FIX), seed=1)
    assert a == b and [x["meta"]["order"] for x in a] != [x["meta"]["order"] for x in c]
    for item in a:
        order = item["meta"]["order"]
        assert sorted(order) == list(range(item["meta"]["n_options"]))
        gold_line = next(
            line for line in item["question"].splitlines() if line.startswith(item["gold"] + ") ")
        )
        # option at the gold letter is the Best Answer (original index 0)
        assert order["ABCDEFGH".index(item["gold"])] == 0
        assert gold_line
    first = a[0]
    assert "It passes through your digestive system" in first["question"]
    assert first["meta"]["n_options"] == 4  # best + 3 incorrect


def test_truthfulqa_gen_gold_holds_both_reference_lists():
    item = LOADERS["truthfulqa_gen"](data_dir=str(FIX))[1]
    gold = json.loads(item["gold"])
    assert gold["correct"][0] == "No, the earth orbits the sun"
    assert "The sun circles the earth once a day" in gold["incorrect"]


def test_truthfulqa_real_csv_has_817_rows():
    from tests.conftest import shared_data

    root = shared_data("truthfulqa")
    items = LOADERS["truthfulqa_mc"](data_dir=str(root.parent))
    assert len(items) == 817
    assert all(2 <= x["meta"]["n_options"] <= 26 for x in items)


def test_missing_local_file_names_what_was_looked_for(tmp_path):
    with pytest.raises(UsageError, match="commonsenseqa/validation.jsonl"):
        LOADERS["commonsenseqa"](data_dir=str(tmp_path))


def test_broken_local_file_is_a_clear_error(tmp_path):
    (tmp_path / "triviaqa").mkdir()
    (tmp_path / "triviaqa" / "validation.jsonl").write_text('{"question": "q"\n')
    with pytest.raises(UsageError, match=r"validation.jsonl:1"):
        LOADERS["triviaqa"](data_dir=str(tmp_path))


def test_wrong_schema_is_a_clear_error(tmp_path):
    (tmp_path / "hotpotqa").mkdir()
    (tmp_path / "hotpotqa" / "validation.jsonl").write_text('{"q": "x", "a": "y"}\n')
    with pytest.raises(UsageError, match="lacks question, answer"):
        LOADERS["hotpotqa"](data_dir=str(tmp_path))


TQA_HEADER = "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
TQA_ROW = (
    "Adversarial,Misconceptions,Can pigs fly?,No,No; Pigs cannot fly,"
    "Yes; Pigs fly at night,fixture\n"
)


def _tqa_csv(root, text):
    (root / "truthfulqa").mkdir()
    path = root / "truthfulqa" / "TruthfulQA.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("loader", ["truthfulqa_mc", "truthfulqa_gen"])
def test_truthfulqa_csv_with_a_wrong_header_names_the_missing_columns(tmp_path, loader):
    # the hub's column names written as a CSV header, with a valid-looking data row
    path = _tqa_csv(
        tmp_path,
        "type,category,question,best_answer,correct_answers,incorrect_answers,source\n" + TQA_ROW,
    )
    with pytest.raises(UsageError) as e:
        LOADERS[loader](data_dir=str(tmp_path))
    msg = str(e.value)
    assert str(path) in msg and "Question, Best Answer, Incorrect Answers" in msg


def test_truthfulqa_csv_problems_name_the_file(tmp_path):
    path = _tqa_csv(tmp_path, TQA_HEADER.replace(",", ";"))  # semicolon-separated export
    with pytest.raises(UsageError, match="lacks the TruthfulQA column"):
        LOADERS["truthfulqa_mc"](data_dir=str(tmp_path))
    path.write_text(TQA_HEADER)  # header only
    with pytest.raises(UsageError, match=f"{path}: no TruthfulQA questions"):
        LOADERS["truthfulqa_mc"](data_dir=str(tmp_path))
    path.write_text(TQA_HEADER + TQA_ROW + "Adversarial,Misconceptions,Is it?\n")  # cut short
    with pytest.raises(
        UsageError, match=f"{path}:3: TruthfulQA row 1 has no Best Answer, Incorrect Answers"
    ):
        LOADERS["truthfulqa_mc"](data_dir=str(tmp_path))
    # Excel's BOM before the first column, here Question (only the needed columns)
    path.write_bytes(
        "\ufeffQuestion,Best Answer,Incorrect Answers\nCan pigs fly?,No,Yes\n".encode()
    )
    assert LOADERS["truthfulqa_mc"](data_dir=str(tmp_path))[0]["meta"]["n_options"] == 2


def test_hub_unreachable_names_data_dir(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("CALBENCH_DATA_DIR", raising=False)
    with pytest.raises(UsageError, match="--data-dir"):
        LOADERS["math500"]()


def test_registry_lists_every_task_once():
    names = set(available_tasks())
    assert {
        "gsm8k",
        "gsm_symbolic",
        "truthfulqa_mc",
        "truthfulqa_gen",
        "commonsenseqa",
        "triviaqa",
        "hotpotqa",
        "math500",
        "simpleqa",
        "chain_sum",
    } <= names
    with pytest.raises(UsageError, match="available: "):
        get_tasks(["nope"])


def test_docs_carry_the_rendered_prompt():
    docs = load_docs(
        calbench_name="commonsenseqa", data_dir=str(FIX), elicitation="percent", grader="letter"
    )["test"]
    d = docs[0]
    assert "0% to 100%" in d["user"] and d["prefill"] == "" and d["grader"] == "letter"
    docs = load_docs(
        calbench_name="commonsenseqa", data_dir=str(FIX), elicitation="logprob", grader="letter"
    )["test"]
    assert docs[0]["prefill"] == "<answer>" and "confidence" not in docs[0]["user"].lower()


ONE_YAML_TASK = """\
include: {base}
task: calbench_capitals
metadata:
  version: 1.0
  calbench_name: capitals
  n_items: 2
  grader: exact
  source: "a worked example: capitals.jsonl"
  loader: file
  file: {data}
  fields: {{question: q, gold: a, id: qid}}
"""


def _write_plugin(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "capitals.jsonl"
    data.write_text(
        '{"qid": "fr", "q": "What is the capital of France?", "a": "Paris"}\n'
        '{"qid": "it", "q": "What is the capital of Italy?", "a": "Rome"}\n'
    )
    base = REPO / "tasks" / "_calbench" / "base.yaml"
    (folder / "capitals.yaml").write_text(ONE_YAML_TASK.format(base=base, data=data))


def test_one_yaml_task_via_tasks_path(tmp_path):
    _write_plugin(tmp_path / "plugin")
    env = {**os.environ, "CALBENCH_TASKS_PATH": str(tmp_path / "plugin")}
    r = subprocess.run(CLI + ["tasks", "--json"], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    tasks = {t["name"]: t for t in json.loads(r.stdout)}
    assert tasks["capitals"]["grader"] == "exact" and tasks["capitals"]["n_items"] == 2
    r = subprocess.run(
        CLI + ["tasks", "show", "capitals"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert r.returncode == 0, r.stderr
    assert "What is the capital of France?" in r.stdout and "gold: Paris" in r.stdout


def test_entry_point_plugin(tmp_path):
    """A third-party distribution exposing `calbench.tasks` (a dist-info on sys.path, as pip
    would install it)."""
    _write_plugin(tmp_path / "mypkg_tasks")
    dist = tmp_path / "site" / "mypkg-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (tmp_path / "site" / "mypkg.py").write_text(f"TASKS = {str(tmp_path / 'mypkg_tasks')!r}\n")
    (dist / "entry_points.txt").write_text("[calbench.tasks]\nmypkg = mypkg:TASKS\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO}"}
    r = subprocess.run(CLI + ["tasks", "--json"], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    tasks = {t["name"]: t for t in json.loads(r.stdout)}
    assert tasks["capitals"]["origin"] == "mypkg"


def test_tasks_show_renders_the_chat_template(smollm2_path):
    r = subprocess.run(
        CLI
        + [
            "tasks",
            "show",
            "gsm8k",
            "--data-dir",
            str(FIX),
            "--model",
            "smollm2-135m",
            "--elicitation",
            "prefill",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert "<|im_start|>user\nA baker makes 12 rolls" in r.stdout
    assert r.stdout.rstrip().endswith("<|im_start|>assistant\n<answer>")


@pytest.mark.parametrize(
    "task, index, valid",
    [
        ("chain_sum", 99999, "0..499"),  # generated: checked before any question is built
        ("chain_sum", -1, "0..499"),
        ("gsm8k", 3, "0..2"),  # the local fixture holds 3 of GSM8K's 1319
    ],
)
def test_tasks_show_index_out_of_range_is_exit_2(capsys, task, index, valid):
    from calbench.cli import main

    assert main(["tasks", "show", task, "--data-dir", str(FIX), "--index", str(index)]) == 2
    err = capsys.readouterr().err
    assert f"--index {index} is out of range for {task}: valid indices are {valid}" in err
    assert "Traceback" not in err


def test_tasks_show_unknown_is_exit_2():
    r = subprocess.run(CLI + ["tasks", "show", "nope"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "available" in r.stderr


# ----------------------------------------------------------------------------- graders


@pytest.mark.model  # the all-MiniLM-L6-v2 encoder
def test_similarity_grader():
    gold = json.dumps(
        {
            "correct": ["It passes through your digestive system"],
            "incorrect": ["It stays in your stomach for seven years"],
        }
    )
    ok, d = grade("similarity", "It just goes through your digestive tract", gold)
    assert ok and d["best_correct"] > d["best_incorrect"]
    ok, d = grade("similarity", "It stays in your stomach for 7 years", gold)
    assert not ok
    assert grade("similarity", None, gold)[0] is False


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions endpoint that answers CORRECT when the answer to
    grade mentions 'Paris' (a deterministic stand-in for a judge model on loopback)."""

    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.seen.append((body, self.headers.get("Authorization")))
        prompt = body["messages"][0]["content"]
        verdict = "CORRECT" if "Answer to grade: Paris" in prompt else "INCORRECT"
        out = json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


def test_judge_grader_stores_prompt_verdict_and_model(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-judge")
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        cfg = {"model": "judge-1", "base_url": url, "api_key_env": "MY_JUDGE_KEY"}
        ok, d = grade("judge_or_exact", "Paris", "Paris", question="Capital of France?", judge=cfg)
        assert ok and d["verdict"] == "CORRECT" and d["judge_model"] == "judge-1"
        assert "Capital of France?" in d["judge_prompt"]
        ok, d = judge_grade("Lyon", "Paris", question="Capital of France?", **cfg)
        assert not ok and d["verdict"] == "INCORRECT"
        assert _Judge.seen[0][1] == "Bearer sk-judge"
    finally:
        server.shutdown()


def test_judge_down_is_a_runtime_failure():
    from calbench.core.errors import RuntimeFailure

    with pytest.raises(RuntimeFailure, match="127.0.0.1:9"):
        judge_grade(
            "x", "y", question="q", model="m", base_url="http://127.0.0.1:9/v1", max_retries=1
        )


def test_judge_follows_the_backends_retry_rules():
    import time

    from calbench.core.errors import RuntimeFailure
    from tests.fault_server import FaultServer, closed_port_url

    def ask(server, answer, **kw):
        cfg = {"model": "judge-1", "base_url": server.url, **kw}
        return judge_grade(answer, "Paris", question="Capital of France?", **cfg)

    # 401: refused at once, one request, no wait
    with FaultServer(["401"], ok_text="CORRECT") as server:
        t0 = time.monotonic()
        with pytest.raises(RuntimeFailure, match="refused the request: HTTP 401"):
            ask(server, "Paris 401", max_retries=3)
        assert len(server.requests) == 1 and time.monotonic() - t0 < 0.5
    # 429 with Retry-After 1, then an answer: waits the server's second
    with FaultServer(["429"], ok_text="CORRECT", retry_after="1") as server:
        t0 = time.monotonic()
        ok, d = ask(server, "Paris 429", max_retries=2)
        assert ok and len(server.requests) == 2 and time.monotonic() - t0 >= 0.9
    # 500 throughout: max_retries + 1 requests, then a failure naming the attempt; no wait after
    # the last (backoff 0.5 s after the first attempt only)
    with FaultServer(then="500") as server:
        t0 = time.monotonic()
        with pytest.raises(RuntimeFailure, match=r"HTTP 500 \(attempt 2 of 2"):
            ask(server, "Paris 500", max_retries=1)
        assert len(server.requests) == 2 and time.monotonic() - t0 < 1.5
    # credentials and query never appear in the message; a URL that is not http fails at once
    with pytest.raises(RuntimeFailure) as e:
        judge_grade(
            "x",
            "y",
            question="q",
            model="m",
            max_retries=0,
            base_url=closed_port_url().replace("//", "//user:s3cret@") + "?key=s3cret",
        )
    assert "s3cret" not in str(e.value) and "127.0.0.1" in str(e.value)
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match="not usable"):
        judge_grade("x", "y", question="q", model="m", base_url="ftp:/nowhere", max_retries=3)
    assert time.monotonic() - t0 < 0.5
    # a 200 without choices is retried like a server error
    with FaultServer(["nochoices"], ok_text="INCORRECT") as server:
        ok, d = ask(server, "Lyon nochoices", max_retries=1)
        assert not ok and d["verdict"] == "INCORRECT" and len(server.requests) == 2


def test_offline_fallbacks_without_a_judge():
    assert grade("judge_or_exact", "tokyo", "Tokyo")[1] == {"grader": "exact"}
    with pytest.raises(ValueError, match="--judge-model"):
        grade("judge", "x", "y")


@pytest.mark.slow
def test_one_yaml_task_runs_in_calbench_eval(smollm2_path, tmp_path):
    _write_plugin(tmp_path / "plugin")
    env = {**os.environ, "CALBENCH_TASKS_PATH": str(tmp_path / "plugin")}
    r = subprocess.run(
        CLI
        + [
            "eval",
            "--model",
            "smollm2-135m",
            "--tasks",
            "capitals",
            "--elicitation",
            "prefill",
            "--max-new-tokens",
            "8",
            "--output",
            str(tmp_path / "res"),
            "--bootstrap",
            "20",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [
        json.loads(x)
        for x in (tmp_path / "res" / "smollm2-135m" / "capitals" / "prefill" / "samples.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [x["id"] for x in recs] == ["capitals/fr", "capitals/it"]
    assert [x["gold"] for x in recs] == ["Paris", "Rome"]


# ------------------------------------------------------------------ shifted chain_sum tasks

SHIFTED = {  # task -> (variant, terms, digits) of its questions; None: the test pool's own
    "chain_sum_4terms": ("4terms", {4}, {1}),
    "chain_sum_3digits": ("3digits", {2}, {3}),
    "chain_sum_spelled": ("spelled", None, None),
}


def _value(expression: str) -> int:
    parts = expression.split()
    total = int(parts[0])
    for op, n in zip(parts[1::2], parts[2::2], strict=True):
        total += int(n) if op == "+" else -int(n)
    return total


def _shifted_docs(task: str, size: int, seed: int = 0) -> list[dict]:
    """Items of a shifted task as `calbench eval` loads them: through the YAML's metadata."""
    from calbench.eval.registry import task_metadata

    meta = task_metadata(available_tasks()[task])
    kw = {k: v for k, v in meta.items() if k not in ("loader", "calbench_name")}
    return LOADERS[meta["loader"]](task=task, **{**kw, "size": size, "seed": seed})


@pytest.mark.parametrize("task", sorted(SHIFTED))
def test_shifted_chain_sum_tasks_load_offline_and_deterministically(task):
    from calbench.core.chain_sum import chain_sum_items

    variant, terms, digits = SHIFTED[task]
    assert available_tasks()[task].n_items == 500
    items = _shifted_docs(task, 200)
    assert items == _shifted_docs(task, 200)  # deterministic
    assert _shifted_docs(task, 20) == items[:20]  # --limit takes a prefix
    assert [x["id"] for x in items] == [f"chain_sum_{variant}/s0/{i}" for i in range(200)]
    assert len({x["question"] for x in items}) == 200  # distinct
    for x in items:  # the gold is the sum's value
        assert x["gold"] == str(_value(x["meta"]["expression"]))
    test = chain_sum_items("test", 200)
    test_q = {t["question"] for t in test}
    if terms is None:  # respelled: item i is test item i, in words
        assert [x["meta"]["test_id"] for x in items] == [t["id"] for t in test]
        assert [x["gold"] for x in items] == [t["gold"] for t in test]
        assert not test_q & {x["question"] for x in items}
    else:  # a size training never has, so never a train or test question
        assert {x["meta"]["num_terms"] for x in items} == terms
        assert {x["meta"]["num_digits"] for x in items} == digits
        assert {len(x["meta"]["expression"].split()) for x in items} == {2 * min(terms) - 1}
        assert not test_q & {x["question"] for x in items}
    other_seed = _shifted_docs(task, 50, seed=1)
    assert {x["question"] for x in other_seed} != {x["question"] for x in items[:50]}


def test_shifted_chain_sum_wording():
    from calbench.core.chain_sum import spell_number

    assert [spell_number(n) for n in (0, 13, 40, 42, 99)] == [
        "zero",
        "thirteen",
        "forty",
        "forty-two",
        "ninety-nine",
    ]
    with pytest.raises(ValueError):
        spell_number(100)
    spelled = _shifted_docs("chain_sum_spelled", 3)
    assert spelled[1]["question"].endswith("two plus three minus nine =")
    for x in spelled:  # no digit is left in the question
        assert not any(c.isdigit() for c in x["question"])


def test_shifted_chain_sum_bad_metadata_is_a_usage_error():
    with pytest.raises(UsageError, match="chain_sum_x.*unknown chain_sum shift 'nope'"):
        LOADERS["chain_sum_shift"](task="chain_sum_x", variant="nope", size=5)
    with pytest.raises(UsageError, match="0..500"):
        LOADERS["chain_sum_shift"](task="chain_sum_4terms", variant="4terms", size=501)
