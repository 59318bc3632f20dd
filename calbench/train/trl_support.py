"""The same calbench rewards in TRL's ``GRPOTrainer`` (the route to multi-GPU training).

calbench's rewards already have TRL's reward-function signature, so this module only builds a
dataset TRL understands — conversational ``prompt`` (calbench's exact prompt; under the prefill
elicitation a final assistant message holding ``<answer>``, which TRL continues) plus ``gold`` and
``prefill`` columns that TRL forwards to the rewards — and a trainer with sensible defaults::

    from calbench.train.trl_support import grpo_trainer
    trainer = grpo_trainer("Qwen/Qwen2.5-7B-Instruct", method="rlcr", n_train=20000,
                           output_dir="runs/trl", per_device_train_batch_size=8,
                           num_generations=8, bf16=True)
    trainer.train()

Launch that script with ``accelerate launch --config_file <deepspeed_zero3.yaml> script.py`` to
spread it over GPUs (see docs/scaling-out.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from calbench.core.prompts import build_prompt
from calbench.train.rewards import REWARDS, format_reward


def trl_rows(items: Sequence[dict], elicitation: str = "tags") -> list[dict]:
    """Rows for a TRL dataset from calbench items (``{"question", "gold", ...}``)."""
    rows = []
    for it in items:
        p = build_prompt(it["question"], elicitation)
        prompt = list(p.messages)
        if p.prefill:
            prompt.append({"role": "assistant", "content": p.prefill})
        rows.append(
            {
                "prompt": prompt,
                "gold": str(it["gold"]),
                "prefill": p.prefill,
                "id": it.get("id", ""),
            }
        )
    return rows


def trl_dataset(items: Sequence[dict], elicitation: str = "tags") -> Any:
    from datasets import Dataset

    return Dataset.from_list(trl_rows(items, elicitation))


def reward_funcs(
    method: str = "rlcr", format_weight: float = 0.0
) -> list[Callable[..., list[float]]]:
    """TRL ``reward_funcs``: the calbench reward, plus :func:`format_reward` scaled by
    ``format_weight`` when it is non-zero (TRL logs each function separately)."""
    if method not in REWARDS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(REWARDS)}")
    funcs: list[Callable[..., list[float]]] = [REWARDS[method]]
    if format_weight:
        w = float(format_weight)

        def weighted_format(completions: Sequence[Any], **kw: Any) -> list[float]:
            return [w * r for r in format_reward(completions, **kw)]

        weighted_format.__name__ = "format_reward"
        funcs.append(weighted_format)
    return funcs


def grpo_trainer(
    model: Any,
    *,
    method: str = "rlcr",
    n_train: int = 1000,
    seed: int = 0,
    elicitation: str = "tags",
    format_weight: float = 0.0,
    peft_config: Any = None,
    processing_class: Any = None,
    train_items: Sequence[dict] | None = None,
    **grpo_args: Any,
) -> Any:
    """A ``trl.GRPOTrainer`` on calbench's chain_sum train split (or ``train_items``) with a
    calbench reward. ``grpo_args`` go to ``trl.GRPOConfig``."""
    from trl import GRPOConfig, GRPOTrainer

    from calbench.core.chain_sum import chain_sum_items

    items = train_items if train_items is not None else chain_sum_items("train", n_train, seed)
    grpo_args.setdefault("seed", seed)
    grpo_args.setdefault("report_to", "none")
    args = GRPOConfig(**grpo_args)
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs(method, format_weight),
        args=args,
        train_dataset=trl_dataset(items, elicitation),
        processing_class=processing_class,
        peft_config=peft_config,
    )
