"""Real (short) training runs on SmolLM2-135M: warm-up, GRPO moving the reward, resume after a
kill, PPO, and the CLI. Marked slow: minutes on two CPU cores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from calbench.core.errors import UsageError

pytestmark = pytest.mark.slow

# Small on purpose: LoRA on the last 6 layers (backward stops there), 2 questions × 4 samples,
# the prefill elicitation (the response starts inside <answer>, so ~17 tokens suffice).
COMMON = {"threads": 2, "progress": False, "elicitation": "prefill", "lora_last_layers": 6}


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def warm_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny format warm-up (12 optimizer steps) that every RL test starts from."""
    from calbench.train.warmup import WarmupConfig, train

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("warmup")
    cfg = WarmupConfig(
        out_dir=str(out), examples=48, batch_size=8, epochs=2, lr=1e-3, eval_size=0, **COMMON
    )
    try:
        res = train(cfg)
    except UsageError as e:
        pytest.skip(f"SmolLM2-135M not available: {e}")
    losses = [r["loss"] for r in _log(out)]
    assert len(losses) == 12 and losses[-1] < losses[0]  # it learned something
    return res.model_dir


def test_grpo_rlcr_moves_reward_up(warm_adapter: Path, tmp_path: Path) -> None:
    from calbench.core.models import resolve_model
    from calbench.train.grpo import GRPOConfig, train

    cfg = GRPOConfig(
        model=str(warm_adapter),
        out_dir=str(tmp_path),
        steps=20,
        prompts_per_step=2,
        group_size=4,
        max_new_tokens=20,
        lr=5e-4,
        eval_size=8,
        eval_every=0,
        save_every=10,
        seed=0,
        **COMMON,
    )
    res = train(cfg)
    steps = [r for r in _log(tmp_path) if "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, 21))
    rewards = [r["reward"] for r in steps]
    assert all(math.isfinite(r) for r in rewards)
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    # RLCR: the model writes the format more reliably and lowers its confidence towards its
    # (low) accuracy, so both the total and the Brier term rise.
    assert last > first + 0.1, (first, last, rewards)
    conf_first = sum(r["reward_confidence"] for r in steps[:5]) / 5
    conf_last = sum(r["reward_confidence"] for r in steps[-5:]) / 5
    assert conf_last > conf_first
    evals = [r for r in _log(tmp_path) if r.get("event") == "eval"]
    assert [e["step"] for e in evals] == [0, 20]
    for e in evals:  # greedy answers to 8 test questions: ranking and per-bin confidence
        assert e["eval_auroc"] is None or 0.0 <= e["eval_auroc"] <= 1.0
        assert set(e["eval_conf_by_bin"]) <= set(e["eval_by_bin"])
        assert all(0.0 <= c <= 1.0 for c in e["eval_conf_by_bin"].values())
    # the adapter is what `calbench eval --model <dir>` loads
    r = resolve_model(str(res.model_dir), hash_weights=False)
    assert r.kind == "adapter"
    assert (
        json.loads((res.model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "smollm2-135m"
    )
    info = json.loads((res.model_dir / "calbench_train.json").read_text())
    assert (info["method"], info["algo"], info["steps"]) == ("rlcr", "grpo", 20)


def test_grpo_exact_digit_credit_with_entropy_logs_the_digit(
    warm_adapter: Path, tmp_path: Path
) -> None:
    """--conf-grad expected --conf-entropy, two updates per batch: the step log carries the
    digit distribution's mean, entropy and in-batch AUROC, each in its range."""
    from calbench.train.grpo import GRPOConfig, train

    cfg = GRPOConfig(
        model=str(warm_adapter),
        out_dir=str(tmp_path),
        steps=2,
        prompts_per_step=2,
        group_size=4,
        max_new_tokens=20,
        lr=5e-4,
        conf_grad="expected",
        conf_entropy=0.02,
        updates_per_batch=2,
        eval_size=0,
        save_every=0,
        seed=0,
        **COMMON,
    )
    train(cfg)
    steps = [r for r in _log(tmp_path) if "event" not in r]
    assert len(steps) == 2
    logged = [r for r in steps if "digit_eq_mean" in r]
    assert logged, "no response wrote a 0.d confidence in two steps"
    for r in logged:
        assert 0.0 <= r["digit_eq_mean"] <= 0.9
        assert 0.0 < r["digit_entropy"] <= math.log(10) + 1e-6
        assert 0.0 <= r["digit_eq_std"] <= 0.45  # std of values in [0, 0.9]
        auc = r["digit_eq_auroc"]
        assert auc is None or 0.0 <= auc <= 1.0


def test_resume_after_kill_matches_uninterrupted_run(warm_adapter: Path, tmp_path: Path) -> None:
    from calbench.cli import main

    def cli(out: Path, steps: int) -> int:
        return main(
            [
                "train",
                "--method",
                "rlcr",
                "--algo",
                "grpo",
                "--model",
                str(warm_adapter),
                "--out",
                str(out),
                "--steps",
                str(steps),
                "--prompts-per-step",
                "1",
                "--group-size",
                "2",
                "--max-new-tokens",
                "20",
                "--lr",
                "5e-4",
                "--eval-size",
                "0",
                "--save-every",
                "1",
                "--threads",
                "2",
                "--elicitation",
                "prefill",
                "--no-progress",
            ]
        )

    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(a, 3) == 0
    assert cli(b, 2) == 0
    # As a kill during step 3 would leave it: step 3 logged but not checkpointed, then a cut line.
    with (b / "log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 3, "reward": 123.0}) + "\n" + '{"step": 4, "rew')
    assert cli(b, 3) == 0
    log_a = [r for r in _log(a) if "event" not in r]
    log_b = [r for r in _log(b) if "event" not in r]
    assert [r["step"] for r in log_b] == [1, 2, 3]
    for key in ("reward", "accuracy", "conf_mean", "response_tokens"):
        assert log_b[2][key] == log_a[2][key], key
    from safetensors.torch import load_file

    wa = load_file(str(a / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(b / "adapter" / "adapter_model.safetensors"))
    w0 = load_file(str(warm_adapter / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() == w0.keys()
    assert any(not torch.allclose(wa[k], w0[k]) for k in wa)  # training moved the weights...
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)  # ...identically
    # a different run into the same folder is refused, not silently mixed
    assert (
        main(
            [
                "train",
                "--method",
                "brier",
                "--model",
                str(warm_adapter),
                "--out",
                str(b),
                "--steps",
                "4",
                "--no-progress",
            ]
        )
        == 2
    )


def test_ppo_runs_learns_values_and_logs_kl(warm_adapter: Path, tmp_path: Path) -> None:
    from calbench.train.ppo import PPOConfig, train

    cfg = PPOConfig(
        model=str(warm_adapter),
        out_dir=str(tmp_path),
        steps=2,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=20,
        lr=5e-4,
        ppo_epochs=1,
        minibatches=2,
        eval_size=2,
        eval_every=0,
        save_every=0,
        **COMMON,
    )
    res = train(cfg)
    steps = [r for r in _log(tmp_path) if "event" not in r]
    assert len(steps) == 2
    for r in steps:
        for k in ("reward", "pg_loss", "vf_loss", "kl", "approx_kl", "grad_norm"):
            assert math.isfinite(r[k]), k
    assert steps[0]["kl"] == 0.0  # π_old = π_ref before the first update
    assert steps[0]["value_mean"] == 0.0  # the value head starts at exactly zero
    assert steps[-1]["kl"] != 0.0 and steps[-1]["value_mean"] != 0.0
    evals = [r for r in _log(tmp_path) if r.get("event") == "eval"]
    assert evals[-1]["step"] == 2 and "eval_smece" in evals[-1]
    from calbench.train.checkpoints import load_trainer_state

    state = load_trainer_state(tmp_path / "checkpoint" / "trainer_state.pt")  # tensors only
    assert "value_head" in state["extra"]
    assert (res.model_dir / "adapter_model.safetensors").is_file()


def test_full_finetune_step_saves_a_loadable_model(tmp_path: Path) -> None:
    from calbench.core.models import resolve_model
    from calbench.train.grpo import GRPOConfig, train

    cfg = GRPOConfig(
        out_dir=str(tmp_path),
        full_finetune=True,
        steps=1,
        prompts_per_step=1,
        group_size=2,
        max_new_tokens=4,
        lr=1e-5,
        beta=0.01,
        eval_size=0,
        **{k: v for k, v in COMMON.items() if k != "lora_last_layers"},
    )
    try:
        res = train(cfg)
    except UsageError as e:
        pytest.skip(f"SmolLM2-135M not available: {e}")
    (step,) = [r for r in _log(tmp_path) if "event" not in r]
    assert math.isfinite(step["reward"]) and step["kl"] == pytest.approx(0.0, abs=1e-4)
    assert res.model_dir.name == "model"
    r = resolve_model(str(res.model_dir), hash_weights=False)
    assert r.kind == "local"
    info = json.loads((res.model_dir / "calbench_train.json").read_text())
    assert info["config"]["full_finetune"] is True
