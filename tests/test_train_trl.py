"""calbench rewards inside TRL's GRPOTrainer (the scale-out route)."""

from __future__ import annotations

import math

import pytest

from calbench.core.chain_sum import chain_sum_items
from calbench.train.rewards import REWARDS
from calbench.train.trl_support import reward_funcs, trl_rows

trl = pytest.importorskip("trl", reason="trl is not installed (pip install 'calbench[train]')")


def _tokenizer():  # noqa: ANN202
    from calbench.core.errors import UsageError
    from calbench.core.models import resolve_model
    from calbench.train.policy import load_tokenizer

    try:
        return load_tokenizer(resolve_model("smollm2-135m", hash_weights=False).path)
    except UsageError as e:
        pytest.skip(f"SmolLM2-135M not available: {e}")


@pytest.mark.model  # the SmolLM2 tokenizer (converted from the GGUF on first use)
@pytest.mark.parametrize("elicitation", ["tags", "prefill"])
def test_trl_renders_calbench_prompt_exactly(elicitation: str) -> None:
    from trl.data_utils import maybe_apply_chat_template

    from calbench.train.policy import render_prompt

    tok = _tokenizer()
    items = chain_sum_items("test", 3)
    for it, row in zip(items, trl_rows(items, elicitation), strict=True):
        rendered = maybe_apply_chat_template({"prompt": row["prompt"]}, tok)["prompt"]
        assert rendered == render_prompt(tok, it["question"], elicitation)


def test_reward_funcs_have_names_and_weights() -> None:
    fs = reward_funcs("rlcr", format_weight=0.5)
    assert [f.__name__ for f in fs] == ["rlcr_reward", "format_reward"]
    text = "<answer>7</answer> <confidence>0.5</confidence>"
    assert fs[1]([text]) == [0.5]
    assert reward_funcs("brier")[0] is REWARDS["brier"]


@pytest.mark.slow
def test_trl_grpo_trainer_runs_with_calbench_rewards(tmp_path: object) -> None:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from calbench.core.models import resolve_model
    from calbench.train.trl_support import grpo_trainer

    torch.set_num_threads(2)
    tok = _tokenizer()
    path = resolve_model("smollm2-135m", hash_weights=False).path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainer = grpo_trainer(
        model,
        method="rlcr",
        n_train=8,
        elicitation="prefill",
        format_weight=0.1,
        processing_class=tok,
        peft_config=LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
        ),
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-4,
        beta=0.0,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        temperature=1.0,
        dataloader_num_workers=0,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "rewards/rlcr_reward/mean" in h]
    assert len(logs) == 1
    for h in logs:
        assert math.isfinite(h["rewards/rlcr_reward/mean"])
        assert -1.0 <= h["rewards/rlcr_reward/mean"] <= 2.0
        assert "rewards/format_reward/mean" in h
