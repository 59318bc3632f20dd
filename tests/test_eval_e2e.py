"""End-to-end `calbench eval` on the real SmolLM2-135M (few questions, few tokens), resume after
SIGKILL, and the error paths with their exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_data

CLI = [sys.executable, "-m", "calbench.cli"]


def calbench(*args: str, timeout: int = 600, env: dict | None = None):
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        CLI + list(args), capture_output=True, text=True, timeout=timeout, cwd=REPO, env=e
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_tiny_eval_writes_complete_run(smollm2_path, tmp_path):
    out = tmp_path / "results"
    r = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "3",
        "--max-new-tokens",
        "24",
        "--batch-size",
        "3",
        "--elicitation",
        "prefill",
        "--output",
        str(out),
        "--bootstrap",
        "50",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    run = out / "smollm2-135m" / "gsm_symbolic" / "prefill"
    assert str(run) in r.stdout  # the run folder is printed at the end
    recs = read_jsonl(run / "samples.jsonl")
    assert len(recs) == 3
    for rec in recs:
        for key in (
            "id",
            "question",
            "gold",
            "prompt",
            "response",
            "answer",
            "correct",
            "confidence",
            "parse",
            "tokens",
        ):
            assert key in rec
        assert rec["response"].startswith("<answer>")  # the prefill is part of the response
        assert "<|im_start|>assistant" in rec["prompt"]  # chat template applied
        assert rec["tokens"]["response"] > 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["n"] == 3
    assert manifest["model_info"]["weights_sha256"]
    assert manifest["elicitation"] == "prefill" and manifest["decoding"]["max_new_tokens"] == 24
    assert len(manifest["data_sha256"]) == 64 and len(manifest["prompt_template_sha256"]) == 64
    assert manifest["versions"]["lm_eval"] and manifest["versions"]["transformers"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 3
    assert 0 <= metrics["metrics"]["accuracy"]["value"] <= 1

    # same arguments again: nothing regenerated, same records
    r2 = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "3",
        "--max-new-tokens",
        "24",
        "--batch-size",
        "3",
        "--elicitation",
        "prefill",
        "--output",
        str(out),
        "--bootstrap",
        "50",
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "Cached requests: 3, Requests remaining: 0" in r2.stderr
    assert [x["response"] for x in read_jsonl(run / "samples.jsonl")] == [
        x["response"] for x in recs
    ]

    # other decoding settings into the same folder: refused (exit 2), then allowed with --overwrite
    r3 = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "3",
        "--max-new-tokens",
        "8",
        "--elicitation",
        "prefill",
        "--output",
        str(out),
    )
    assert r3.returncode == 2 and "--overwrite" in r3.stderr
    assert json.loads((run / "manifest.json").read_text())["decoding"]["max_new_tokens"] == 24

    # redacted copy for committing: no benchmark text
    r4 = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "3",
        "--max-new-tokens",
        "24",
        "--batch-size",
        "3",
        "--elicitation",
        "prefill",
        "--output",
        str(out),
        "--bootstrap",
        "50",
        "--redact",
    )
    assert r4.returncode == 0, r4.stderr[-3000:]
    red = read_jsonl(run / "samples.jsonl")
    assert all("question" not in x and "gold" not in x and "prompt" not in x for x in red)
    assert all(len(x["question_sha256"]) == 64 for x in red)


def _cache_rows(run: Path) -> int:
    dbs = list((run / ".cache").glob("*/requests_rank*.db"))  # .cache/<identity>/
    if not dbs:
        return 0
    try:
        con = sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True, timeout=1)
        n = con.execute("select count(*) from unnamed").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


def test_resume_after_sigkill(smollm2_path, tmp_path):
    out = tmp_path / "results"
    args = [
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "6",
        "--max-new-tokens",
        "24",
        "--batch-size",
        "1",
        "--output",
        str(out),
        "--bootstrap",
        "20",
    ]
    run = out / "smollm2-135m" / "gsm_symbolic" / "tags"
    proc = subprocess.Popen(
        CLI + args,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 400
    while _cache_rows(run) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _cache_rows(run)
    assert 2 <= done < 6, f"expected a partial run to kill, cache had {done}"
    assert not (run / "samples.jsonl").exists()  # nothing half-written looks complete
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"

    r = calbench(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Cached requests: {done}, Requests remaining: {6 - done}" in r.stderr
    assert len(read_jsonl(run / "samples.jsonl")) == 6
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "smollm2-135m", "--tasks", "gsm9k"], "available: "),
        (["--model", "not-a-model", "--tasks", "gsm_symbolic"], "smollm2-135m"),
        (
            ["--model", "smollm2-135m", "--tasks", "gsm_symbolic", "--backend", "tgi"],
            "hf, vllm, openai-chat, openai-completions",
        ),
        (["--model", "smollm2-135m", "--tasks", "gsm_symbolic", "--elicitation", "vibes"], "tags"),
        (["--model", "m", "--tasks", "gsm_symbolic", "--backend", "openai-chat"], "--base-url"),
        # a judge URL with a key in it would travel in every task doc and the manifest
        (
            [
                "--model",
                "m",
                "--tasks",
                "truthfulqa_gen",
                "--judge-model",
                "j",
                "--judge-base-url",
                "https://user:CANARY-KEY@127.0.0.1:9/v1",
            ],
            "--judge-api-key-env",
        ),
    ],
)
def test_usage_errors_exit_2(args, needle, tmp_path):
    r = calbench("eval", *args, "--output", str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert "CANARY" not in r.stderr + r.stdout


def test_hub_unreachable_names_data_dir_and_gsm_symbolic(smollm2_path, tmp_path):
    r = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm8k",
        "--limit",
        "1",
        "--output",
        str(tmp_path),
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "--data-dir" in r.stderr and "gsm_symbolic" in r.stderr


@pytest.mark.model  # resolves the smollm2-135m alias for its tokenizer
def test_server_down_exits_1_naming_the_url(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    r = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "2",
        "--backend",
        "openai-chat",
        "--base-url",
        url,
        "--max-retries",
        "2",
        "--output",
        str(tmp_path),
        timeout=300,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"127.0.0.1:{port}" in r.stderr
    # lm-eval logs each failed try; then calbench's own one-line error, and no crash dump
    assert any(
        line.startswith("calbench eval: failed: the server at") for line in r.stderr.splitlines()
    )
    assert "Task exception was never retrieved" not in r.stderr


def test_gsm8k_from_local_data_dir(smollm2_path, tmp_path):
    data = shared_data("gsm8k")
    out = tmp_path / "results"
    r = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm8k",
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--data-dir",
        str(data.parent),
        "--elicitation",
        "prefill",
        "--output",
        str(out),
        "--bootstrap",
        "20",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    recs = read_jsonl(out / "smollm2-135m" / "gsm8k" / "prefill" / "samples.jsonl")
    assert [x["id"] for x in recs] == ["gsm8k/test/0", "gsm8k/test/1"]
    assert recs[0]["gold"] == "18"


def _lora_adapter(base: str, folder: Path, seed: int) -> str:
    """A small random LoRA adapter on SmolLM2 (what `calbench train` saves as OUT/adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(
        model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    )
    peft.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_second_adapter_never_reads_the_first_ones_answers(smollm2_path, tmp_path):
    out = tmp_path / "results"
    a, b = (
        _lora_adapter(smollm2_path, tmp_path / "runs" / x / "adapter", i)
        for i, x in enumerate("ab")
    )
    args = [
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--output",
        str(out),
        "--bootstrap",
        "10",
    ]
    ra = calbench("eval", "--model", a, *args)
    assert ra.returncode == 0, ra.stderr[-3000:]
    rb = calbench("eval", "--model", b, *args)
    assert rb.returncode == 0, rb.stderr[-3000:]
    assert "Cached requests: 0, Requests remaining: 2" in rb.stderr  # b generated its own
    runs = sorted(out.glob("*/gsm_symbolic/tags"))
    assert len(runs) == 2  # one folder per adapter, though both are named "adapter"
    by_adapter = {}
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["model"] == run.parents[1].name
        by_adapter[manifest["model_info"]["adapter"]] = manifest["model_info"]["weights_sha256"]
    assert set(by_adapter) == {a, b} and len(set(by_adapter.values())) == 2
