"""Format warm-up: a short supervised stage that teaches the answer/confidence tag format.

SmolLM2-135M-Instruct writes the tags 0% of the time when only instructed, and RL cannot reward
a format it never samples. So before RL we fine-tune on

    <prompt>  →  "<answer>{gold}</answer> <confidence>{q}</confidence>"

with ``q`` drawn uniformly from the grid {0.1, 0.2, …, 0.9}, independently of the question.

Why those targets:

* **Gold answers**, not the model's own. Its own free-form answers were mostly "The answer is 1."
  — a target made of those would teach a constant answer. The warm-up questions come from a
  stretch of the train stream that RL never reaches (``offset``), and never from the test set.
* **Confidences that carry no information about correctness.** Every warm-up answer is correct,
  so any rule tying q to the item (e.g. q = 1) would teach "always sure". A uniform grid gives RL
  a starting policy that states a *spread* of confidences, so the group comparison has something
  to compare; a model that always says one number cannot learn calibration from relative rewards
  (that collapse is the failure the RLCR authors warn about). The grid values are the ones a
  small model can write as a single short token sequence.

Probe on SmolLM2-135M (320 examples, LoRA r16, lr 2e-4, 2 epochs, ~3 min on an idle 2-core CPU):
99% of held-out responses parse.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from calbench.train.common import (
    RunConfig,
    Session,
    TrainResult,
    encode_prompts,
    render_prompt,
    response_forward,
)

WARMUP_OFFSET = 1_000_000  # train-stream index where warm-up questions start (RL starts at 0)
CONFIDENCE_GRID = tuple(round(0.1 * k, 1) for k in range(1, 10))


@dataclass
class WarmupConfig(RunConfig):
    method: str = "warmup"
    lr: float = 2e-4
    examples: int = 320  # supervised examples
    epochs: int = 2
    batch_size: int = 16
    max_new_tokens: int = 32  # for the held-out evaluation
    eval_every: int = 0  # evaluate at the start and the end only
    save_every: int = 0


def warmup_target(gold: str, confidence: float, prefill: str = "") -> str:
    """The response the warm-up teaches (minus the prefill, which is already in the prompt)."""
    full = f"<answer>{gold}</answer> <confidence>{confidence:.1f}</confidence>"
    return full[len(prefill):] if prefill and full.startswith(prefill) else full


def warmup_examples(n: int, seed: int = 0, elicitation: str = "tags") -> list[dict]:
    """``n`` (question, target) pairs with uniform grid confidences, reproducible from seed."""
    from calbench.prompts import build_prompt
    from calbench.train.data import chain_sum_items

    prefill = build_prompt("x", elicitation).prefill
    rng = random.Random(seed)
    out = []
    for item in chain_sum_items("train", n, seed, offset=WARMUP_OFFSET):
        q = rng.choice(CONFIDENCE_GRID)
        out.append({"question": item["question"], "gold": item["gold"], "confidence": q,
                    "target": warmup_target(item["gold"], q, prefill)})
    return out


def train(cfg: WarmupConfig, *, overwrite: bool = False) -> TrainResult:
    """Supervised fine-tuning on :func:`warmup_examples`; one "step" = one optimizer step."""
    examples = warmup_examples(cfg.examples, cfg.seed, cfg.elicitation)
    per_epoch = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
    cfg.steps = per_epoch * cfg.epochs
    s = Session(cfg, "warmup", overwrite=overwrite)
    tok, dev = s.tok, s.policy.device
    params = s.policy.trainable_parameters()
    s.attach_optimizer(torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0))
    s.policy.model.train()
    eos = tok.eos_token
    for step in s.steps():
        t0 = time.perf_counter()
        epoch, k = divmod(step - 1, per_epoch)
        order = list(range(len(examples)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        batch = [examples[i] for i in order[k * cfg.batch_size:(k + 1) * cfg.batch_size]]
        p_ids, p_mask = encode_prompts(
            tok, [render_prompt(tok, ex["question"], cfg.elicitation) for ex in batch], dev)
        # Targets end with the end-of-turn token so the model learns to stop.
        tgt = tok([ex["target"] + eos for ex in batch], add_special_tokens=False,
                  padding="longest", padding_side="right", return_tensors="pt")
        r_ids, r_mask = tgt.input_ids.to(dev), tgt.attention_mask.to(dev).float()
        logp, _ = response_forward(s.policy, p_ids, p_mask, r_ids, group=1)
        loss = -(logp * r_mask).sum() / r_mask.sum()  # token-level negative log-likelihood
        loss.backward()
        grad_norm = s.clip_and_step(params)
        s.end_step(step, {"epoch": epoch + 1, "loss": loss.item(), "grad_norm": grad_norm,
                          "step_s": time.perf_counter() - t0})
    return s.finish()
