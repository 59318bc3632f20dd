"""Elicitation methods: prompt construction, majority voting, backend capability checks, and real
end-to-end runs of every method on the real SmolLM2 (two fixture questions, few tokens)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from calbench.core.errors import UsageError
from calbench.core.prompts import ELICITATIONS, build_prompt, stage_two, template_sha256
from calbench.eval.elicit import _answer_span, answer_key, check_supported, majority
from tests.conftest import REPO
from tests.test_eval_e2e import calbench, read_jsonl

FIX = REPO / "tests" / "fixtures" / "data"


def test_every_elicitation_builds_a_distinct_prompt():
    prompts = {e: build_prompt("What is 2+2?", e) for e in ELICITATIONS}
    assert prompts["prefill"].prefill == "<answer>" and prompts["tags"].prefill == ""
    assert "%" in prompts["percent"].user
    assert "<think>" in prompts["rlcr"].user and "<analysis>" in prompts["rlcr"].user
    for e in ("two-stage", "logprob", "consistency"):
        assert "<confidence>" not in prompts[e].user and prompts[e].prefill == "<answer>"
    assert len({template_sha256(e) for e in ELICITATIONS}) >= 5
    with pytest.raises(ValueError, match="choose from"):
        build_prompt("x", "vibes")


def test_stage_two_continues_the_conversation():
    first = build_prompt("What is 2+2?", "two-stage")
    p2 = stage_two(first, "<answer>4</answer>")
    assert [m["role"] for m in p2.messages] == ["system", "user", "assistant", "user"]
    assert p2.messages[2]["content"] == "<answer>4</answer>"
    assert "how likely" in p2.messages[3]["content"].lower() and p2.prefill == "<confidence>"


def test_majority_groups_equivalent_answers():
    assert majority(["4", "4.0", "five", None, "$4"], "math") == ("4", 3 / 5, 3)
    assert majority(["B", "(b) Paris", "C", "B) x"], "letter") == ("B", 3 / 4, 3)
    assert majority([None, None], "math") == (None, None, 0)
    # tie -> the answer seen first
    assert majority(["7", "8"], "math")[0] == "7"
    assert answer_key("The Seine!", "exact") == answer_key("the seine", "exact")


def test_answer_span_is_the_generated_text():
    assert _answer_span("<answer> 42</answer><confidence>", "<answer>") == " 42"
    assert _answer_span("<answer>", "<answer>") is None
    assert _answer_span("<answer>7 apples", "<answer>") == "7 apples"


def test_logprob_needs_a_backend_with_logprobs():
    check_supported("logprob", "hf")
    check_supported("logprob", "openai-completions")
    with pytest.raises(UsageError, match="cannot return"):
        check_supported("logprob", "openai-chat")


def test_logprob_on_chat_backend_exits_2(tmp_path):
    r = calbench(
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "gsm8k",
        "--backend",
        "openai-chat",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--elicitation",
        "logprob",
        "--output",
        str(tmp_path),
    )
    assert r.returncode == 2 and "logprob" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("elicitation", ["percent", "rlcr", "two-stage", "logprob", "consistency"])
def test_each_elicitation_end_to_end(smollm2_path, tmp_path, elicitation):
    out = tmp_path / "results"
    args = [
        "eval",
        "--model",
        "smollm2-135m",
        "--tasks",
        "commonsenseqa",
        "--data-dir",
        str(FIX),
        "--elicitation",
        elicitation,
        "--max-new-tokens",
        "12",
        "--batch-size",
        "2",
        "--k",
        "3",
        "--output",
        str(out),
        "--bootstrap",
        "20",
    ]
    r = calbench(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    run = out / "smollm2-135m" / "commonsenseqa" / elicitation
    recs = read_jsonl(run / "samples.jsonl")
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(recs) == 2 and manifest["elicitation"] == elicitation
    for x in recs:
        assert x["confidence"] is None or 0.0 <= x["confidence"] <= 1.0
    if elicitation == "two-stage":
        assert all(x["stage2_response"].startswith("<confidence>") for x in recs)
        assert all(x["parse"]["confidence_method"] == "two-stage" for x in recs)
    if elicitation == "logprob":
        for x in recs:
            if x["logprob"] is not None:  # the model's own probability of its answer
                assert x["confidence"] == pytest.approx(2.718281828459045 ** x["logprob"]["sum"])
    if elicitation == "consistency":
        assert manifest["decoding"]["consistency_k"] == 3
        for x in recs:
            c = x["consistency"]
            assert len(c["samples"]) == 3
            if x["confidence"] is not None:
                assert x["confidence"] == pytest.approx(c["majority_count"] / 3)
        # a rerun reuses the cached samples: identical records
        r2 = calbench(*args)
        assert r2.returncode == 0
        assert [x["consistency"]["samples"] for x in read_jsonl(run / "samples.jsonl")] == [
            x["consistency"]["samples"] for x in recs
        ]


@pytest.mark.slow
def test_plain_lm_eval_runs_the_task_plugins(smollm2_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={smollm2_path},dtype=float32",
        "--include_path",
        str(REPO / "tasks"),
        "--tasks",
        "calbench_truthfulqa_mc",
        "--apply_chat_template",
        "--limit",
        "2",
        "--gen_kwargs",
        "max_gen_toks=12",
        "--metadata",
        json.dumps({"data_dir": str(FIX), "elicitation": "prefill"}),
        "--log_samples",
        "--output_path",
        str(tmp_path / "out"),
        "--batch_size",
        "2",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "calbench_truthfulqa_mc" in r.stdout and "confidence_parsed" in r.stdout
    samples = list((tmp_path / "out").rglob("samples_calbench_truthfulqa_mc_*.jsonl"))
    assert samples
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["arguments"]["gen_args_0"]["arg_0"].endswith("<answer>")


@pytest.mark.slow
def test_consistency_shared_prefix_sampler_matches_lm_eval(smollm2_path):
    """The hf fast path encodes, stops and decodes exactly like HFLM.generate_until: at
    temperature 0 (argmax) both give the same text; sampled, each prompt gets k answers."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from calbench.core.prompts import build_prompt
    from calbench.eval.elicit import _sample_shared_prefix

    lm = HFLM(pretrained=str(smollm2_path), dtype="float32", batch_size=2, device="cpu")
    questions = ["What is 2 + 3?", "Name the capital of France.", "Is the sea salty? Why?"]
    contexts = []
    for q in questions:
        p = build_prompt(q, "consistency")
        contexts.append(
            lm.tokenizer.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
            + p.prefill
        )
    kw = {"until": ["<|im_end|>"], "max_gen_toks": 10, "do_sample": False, "temperature": 0.0}
    want = lm.generate_until([Instance("generate_until", {}, (c, dict(kw)), 0) for c in contexts])
    got = dict(_sample_shared_prefix(lm, contexts, dict(kw), k=2, seed=0))
    assert [got[i] for i in range(3)] == [[w, w] for w in want]
    sampled = dict(
        _sample_shared_prefix(lm, contexts, dict(kw, do_sample=True, temperature=1.0), k=4, seed=0)
    )
    assert sorted(sampled) == [0, 1, 2] and all(len(v) == 4 for v in sampled.values())
    assert any(len(set(v)) > 1 for v in sampled.values())  # temperature 1: samples differ
