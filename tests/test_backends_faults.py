"""The OpenAI backends against a scripted faulty server (tests/fault_server.py).

Each fault ends with a known exit code, a message naming the URL and what the server sent, and a
known number of requests; a rerun against the healthy server keeps every answer that finished
and reuses no bad one. The secrets tests check that the API key and URL credentials reach the
server and nothing else: no output stream, no file under --output.

The runs are in-process (``calbench.cli.main``, output captured at the file-descriptor level)
except the secrets tests, which run the real command line. Every run uses ``--limit 2``,
``--max-retries 1`` (two attempts per request) and ``--timeout 1``; no model is loaded (the
chat backend needs no tokenizer, the completions tests use the embedded model's tokenizer).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import subprocess
import sys
from email.utils import formatdate
from pathlib import Path

import pytest

from calbench import cli
from calbench.core.retry import RETRY_AFTER_CAP, backoff_seconds, retry_after_seconds
from calbench.eval.backends.openai import BadResponse, chat_texts, completion_texts
from calbench.eval.backends.secrets import add_secret, redact, strip_credentials
from tests.conftest import REPO
from tests.fault_server import FaultServer, closed_port_url

ANSWER_1 = "<answer>7</answer>\n<confidence>0.8</confidence>"
ANSWER_2 = "<answer>8</answer>\n<confidence>0.6</confidence>"
RETRIES = 1
ATTEMPTS = RETRIES + 1


def eval_args(out: Path, url: str, *extra: str, backend: str = "openai-chat") -> list[str]:
    return [
        "eval",
        "--model",
        "fault-model",
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "2",
        "--backend",
        backend,
        "--base-url",
        url,
        "--output",
        str(out),
        "--bootstrap",
        "10",
        "--max-retries",
        str(RETRIES),
        "--timeout",
        "1",
        "--max-new-tokens",
        "16",
        *extra,
    ]


def run_cli(capfd, args: list[str]) -> tuple[int, str, str]:
    capfd.readouterr()
    rc = cli.main(args)
    out, err = capfd.readouterr()
    return rc, out, err


def run_dir(out: Path, elicitation: str = "tags") -> Path:
    return out / "fault-model" / "gsm_symbolic" / elicitation


def records(out: Path, elicitation: str = "tags") -> list[dict]:
    text = (run_dir(out, elicitation) / "samples.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def failure_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("calbench eval: failed: ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# --- pure parts of the policy -------------------------------------------------------------


def test_retry_after_is_read_and_capped():
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("3600") == RETRY_AFTER_CAP == 60.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds(formatdate(1_000_030, usegmt=True), now=1_000_000) == 30.0
    for bad in (None, "", "soon", "nan"):
        assert retry_after_seconds(bad) is None
    assert [backoff_seconds(a) for a in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 8.0]


@pytest.mark.parametrize(
    "outputs, needle",
    [
        ({"id": "x"}, 'no "choices" (keys: id)'),
        ({"choices": []}, '"choices" holds 0 completions for 1 prompt(s)'),
        (
            {"choices": [{"index": 0, "message": {"content": None}, "finish_reason": "stop"}]},
            "no message.content",
        ),
        ({"choices": [{"index": 3, "message": {"content": "a"}}]}, "bad or repeated index 3"),
        (["not", "an", "object"], "a JSON list"),
    ],
)
def test_malformed_chat_responses_are_refused(outputs, needle):
    with pytest.raises(BadResponse, match=needle.replace("(", r"\(").replace(")", r"\)")):
        chat_texts(outputs, 1)


def test_wellformed_responses_are_read_in_index_order():
    out = {"choices": [{"index": 1, "text": "b"}, {"index": 0, "text": "a"}]}
    assert completion_texts(out, 2) == ["a", "b"]
    with pytest.raises(BadResponse, match="1 completions for 2"):
        completion_texts({"choices": [{"index": 0, "text": "a"}]}, 2)
    # a reply cut by the token limit with no visible content is a real, empty answer
    cut = {"choices": [{"message": {"content": None}, "finish_reason": "length"}]}
    assert chat_texts(cut, 1) == [""]


def test_redaction_of_urls_registered_secrets_and_log_records(caplog):
    url, user, password = strip_credentials("https://alice:pa%2Fss-canary-91@example.org:8443/v1")
    assert (url, user, password) == ("https://example.org:8443/v1", "alice", "pa/ss-canary-91")
    assert (
        redact("see https://bob:hunter2@host/v1 and pa/ss-canary-91")
        == "see https://***@host/v1 and ***"
    )
    add_secret("sk-log-canary-55")
    with caplog.at_level(logging.DEBUG, logger="calbench.test"):
        log = logging.getLogger("calbench.test")
        log.warning("header %s", {"Authorization": "Bearer sk-log-canary-55"})
        try:
            raise RuntimeError("request with sk-log-canary-55 failed")
        except RuntimeError:
            log.exception("boom")
    assert "Bearer ***" in caplog.text and "sk-log-canary-55" not in caplog.text


# --- faults end to end ----------------------------------------------------------------------


def test_bad_flags_exit_2(capfd, tmp_path):
    for flag, value, needle in (
        ("--timeout", "0", "--timeout"),
        ("--max-retries", "-1", "--max-retries"),
    ):
        args = eval_args(tmp_path, "http://127.0.0.1:9/v1")
        args[args.index(flag) + 1] = value
        rc, _, err = run_cli(capfd, args)
        assert rc == 2 and needle in err


def test_server_down_then_up(capfd, tmp_path):
    url = closed_port_url()
    rc, _, err = run_cli(capfd, eval_args(tmp_path, url))
    assert rc == 1
    line = failure_line(err)
    assert f"{url}/chat/completions failed: could not connect" in line
    assert f"attempt {ATTEMPTS} of {ATTEMPTS}" in line and "Traceback" not in err
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with FaultServer(port=port, ok_text=ANSWER_2) as srv:  # the same URL, now answering
        rc, _, err = run_cli(capfd, eval_args(tmp_path, url))
        assert rc == 0, err[-3000:]
        assert srv.count == 2
    assert [r["answer"] for r in records(tmp_path)] == ["8", "8"]


def test_transient_500s_are_retried(capfd, caplog, tmp_path):
    with FaultServer(["500", "500", "500"], then="ok", ok_text=ANSWER_1) as srv:
        rc, _, err = run_cli(capfd, eval_args(tmp_path, srv.url, "--max-retries", "2"))
        assert rc == 0, err[-3000:]
        # both prompts fail once, one of them twice: 3 failures + 2 answers
        assert srv.count == 5
    assert "HTTP 500" in caplog.text and "retrying in" in caplog.text
    assert [r["answer"] for r in records(tmp_path)] == ["7", "7"]


def test_429_waits_for_retry_after(capfd, caplog, tmp_path):
    with FaultServer(["429"], then="ok", ok_text=ANSWER_1, retry_after="2") as srv:
        rc, _, err = run_cli(capfd, eval_args(tmp_path, srv.url))
        assert rc == 0, err[-3000:]
        assert srv.count == 3
        t = [r["t"] for r in srv.requests]
    # the retry of the refused prompt waited Retry-After (2 s), not the 0.5 s backoff
    assert t[2] - t[0] >= 1.9
    assert "HTTP 429" in caplog.text and "retrying in 2 s" in caplog.text


@pytest.mark.parametrize(
    "behaviour, needle",
    [
        ("500", 'HTTP 500: {"error": {"message": "injected 500"'),
        ("429", "HTTP 429"),
        ("hang", "no response within --timeout 1 s"),
        ("badjson", "a body that is not JSON: <html>upstream proxy error</html>"),
        ("nochoices", 'no "choices" (keys: id, object)'),
        ("emptychoices", '"choices" holds 0 completions for 1 prompt(s)'),
    ],
)
def test_persistent_fault_fails_and_rerun_keeps_finished(
    capfd, caplog, tmp_path, behaviour, needle
):
    with FaultServer(["ok"], then=behaviour, ok_text=ANSWER_1, retry_after="0", hang_s=10) as srv:
        rc, _, err = run_cli(capfd, eval_args(tmp_path, srv.url))
        assert rc == 1, err[-3000:]
        line = failure_line(err)
        assert f"the server at {srv.url}/chat/completions failed: " in line
        assert needle in line and f"(attempt {ATTEMPTS} of {ATTEMPTS};" in line
        assert "rerun the same command to resume" in line and "Traceback" not in err
        # each failed attempt is logged with the URL (the CLI prints it to stderr)
        assert f"POST {srv.url}/chat/completions: " in caplog.text
        assert f"(attempt 1 of {ATTEMPTS}); retrying in" in caplog.text
        assert srv.count == 1 + ATTEMPTS  # one answer, then every attempt of the other prompt
        manifest = json.loads((run_dir(tmp_path) / "manifest.json").read_text())
        assert manifest["status"] == "running"

        srv.set_script([], then="ok")
        srv.ok_text = ANSWER_2
        rc, _, err = run_cli(capfd, eval_args(tmp_path, srv.url))
        assert rc == 0, err[-3000:]
        assert "Cached requests: 1, Requests remaining: 1" in err
        assert srv.count == 1
    # the answer that finished before the fault is kept; nothing bad was cached
    assert sorted(r["answer"] for r in records(tmp_path)) == ["7", "8"]
    assert json.loads((run_dir(tmp_path) / "manifest.json").read_text())["status"] == "complete"


def test_client_error_is_not_retried(capfd, tmp_path):
    with FaultServer(["ok"], then="401") as srv:
        rc, _, err = run_cli(capfd, eval_args(tmp_path, srv.url))
        assert rc == 1
        assert srv.count == 2
    line = failure_line(err)
    assert "refused the request: HTTP 401" in line and "not retried" in line


def test_completions_backend_checks_one_choice_per_prompt(capfd, caplog, tmp_path, smollm2_path):
    # --batch-size 2: both prompts in one request; an empty "choices" is retried
    with FaultServer(["emptychoices"], then="ok", ok_text=ANSWER_1) as srv:
        args = eval_args(
            tmp_path,
            srv.url,
            "--tokenizer",
            smollm2_path,
            "--batch-size",
            "2",
            backend="openai-completions",
        )
        rc, _, err = run_cli(capfd, args)
        assert rc == 0, err[-3000:]
        assert srv.count == 2
        assert all(len(r["body"]["prompt"]) == 2 for r in srv.requests)
        assert '"choices" holds 0 completions for 2 prompt(s)' in caplog.text
    assert [r["answer"] for r in records(tmp_path)] == ["7", "7"]
    out2 = tmp_path / "b"
    with FaultServer(then="nochoices") as srv:
        rc, _, err = run_cli(
            capfd,
            eval_args(out2, srv.url, "--tokenizer", smollm2_path, backend="openai-completions"),
        )
        assert rc == 1 and srv.count == ATTEMPTS
    assert f"{srv.url}/completions failed: " in failure_line(err)


@pytest.mark.parametrize(
    "backend", ["openai-chat", pytest.param("openai-completions", marks=pytest.mark.model)]
)  # a tokenizer
def test_consistency_over_api(capfd, tmp_path, backend, request):
    extra = ["--elicitation", "consistency", "--k", "2"]
    if backend == "openai-completions":
        extra += ["--tokenizer", request.getfixturevalue("smollm2_path")]
    with FaultServer(ok_text="7</answer>\n") as srv:
        rc, _, err = run_cli(capfd, eval_args(tmp_path, srv.url, *extra, backend=backend))
        assert rc == 0, err[-3000:]
        bodies = [r["body"] for r in srv.requests]
    first = [b for b in bodies if b["temperature"] == 0]
    sampled = [b for b in bodies if b["temperature"] == 0.7]
    assert first and sampled and len(first) + len(sampled) == len(bodies)
    # the samples stop where the first pass stops, with one seed per round
    assert first[0]["stop"] and all(b["stop"] == first[0]["stop"] for b in sampled)
    assert len({b["seed"] for b in sampled}) == 2
    recs = records(tmp_path, "consistency")
    assert len(recs) == 2
    for x in recs:
        assert x["consistency"]["answers"] == ["7", "7"] and x["confidence"] == 1.0


def test_logprob_over_completions(capfd, tmp_path, smollm2_path):
    """Log-likelihood requests (echo + logprobs) go through the same checked path."""
    with FaultServer(ok_text="7</answer>") as srv:
        rc, _, err = run_cli(
            capfd,
            eval_args(
                tmp_path,
                srv.url,
                "--tokenizer",
                smollm2_path,
                "--elicitation",
                "logprob",
                backend="openai-completions",
            ),
        )
        assert rc == 0, err[-3000:]
        assert any(r["body"].get("echo") and r["body"].get("logprobs") for r in srv.requests)
    for x in records(tmp_path, "logprob"):
        # the server gives every token log-prob -0.25: P(answer) = exp(-0.25 × its tokens)
        n = round(x["logprob"]["sum"] / -0.25)
        assert n >= 1 and x["confidence"] == pytest.approx(math.exp(-0.25 * n))


# --- secrets --------------------------------------------------------------------------------

KEY = "sk-canary-key-4f1d9a"
PASSWORD = "canary-pass-8c2e71"


@pytest.mark.parametrize("where", ["api-key-env", "base-url"])
def test_secrets_reach_only_the_server(tmp_path, where):
    out = tmp_path / "out"
    basic = base64.b64encode(f"canary-user:{PASSWORD}".encode()).decode()
    with FaultServer(["ok"], then="500", ok_text=ANSWER_1) as srv:
        url = (
            srv.url
            if where == "api-key-env"
            else srv.url.replace("http://", f"http://canary-user:{PASSWORD}@")
        )
        cmd = [
            sys.executable,
            "-m",
            "calbench.cli",
            *eval_args(out, url, "--api-key-env", "CALBENCH_CANARY_KEY"),
        ]
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
            env={**os.environ, "CALBENCH_CANARY_KEY": KEY},
        )
        sent = {req["headers"].get("Authorization") for req in srv.requests}
    assert r.returncode == 1, r.stderr[-3000:]
    # the credential did go to the server (so its absence below means something) ...
    assert sent == ({f"Bearer {KEY}"} if where == "api-key-env" else {f"Basic {basic}"})
    # ... and nowhere else
    secrets = [KEY, PASSWORD, basic]
    for s in secrets:
        assert s not in r.stdout and s not in r.stderr
    files = [f for f in out.rglob("*") if f.is_file()]
    assert files
    for f in files:
        data = f.read_bytes()
        assert not any(s.encode() in data for s in secrets), f
    manifest = json.loads((run_dir(out) / "manifest.json").read_text())
    assert manifest["endpoint"] == f"{srv.url}/chat/completions"
    assert manifest["api_key_env"] == "CALBENCH_CANARY_KEY"
    if where == "base-url":
        assert "http://***@127.0.0.1" in manifest["command"]
