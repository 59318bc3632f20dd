"""Format warm-up: a short supervised stage that teaches the answer/confidence tag format.

SmolLM2-135M-Instruct writes the tags 0% of the time when only instructed, and RL cannot reward
a format it never samples. So before RL we fine-tune on

    <prompt>  →  "2 + 9 - 3 = 11 - 3 = 8\n<answer>8</answer> <confidence>{q}</confidence>"

with ``q`` drawn uniformly from the grid {0.1, 0.2, …, 0.9}, independently of the question.

Why those targets:

* **Worked steps before the answer** (``work="steps"``). A first reference model trained on
  the bare answer tag answered 2–3% of held-out questions right (it had to add a whole chain in
  the one token position of the answer); one two-operand step at a time is arithmetic this
  model can do. RL then has right and wrong answers to compare, and difficulty (how many steps,
  how many digits) shows in the response it conditions its confidence on.
* **Gold answers**, not the model's own. Its own free-form answers were mostly "The answer is 1."
  — a target made of those would teach a constant answer. The warm-up questions come from a
  stretch of the train stream that RL never reaches (``offset``), and never from the test set.
* **Confidences that carry no information about correctness.** Every warm-up answer is correct,
  so any rule tying q to the item (e.g. q = 1) would teach "always sure". A uniform grid gives RL
  a starting policy that states a *spread* of confidences, so the group comparison has something
  to compare; a model that always says one number cannot learn calibration from relative rewards
  (that collapse is the failure the RLCR authors warn about). The grid values are the ones a
  small model can write as a single short token sequence.

The reference warm-up's held-out accuracy and format rate: its train_log.jsonl and the
docs/reference-models.md.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from calbench.core.chain_sum import chain_sum_items
from calbench.core.errors import UsageError
from calbench.train.config import RunConfig
from calbench.train.logprobs import response_forward
from calbench.train.policy import encode_prompts, prefill_for, render_prompt
from calbench.train.training_run import TrainingRun, TrainResult

WARMUP_OFFSET = 1_000_000  # train-stream index where warm-up questions start (RL starts at 0)
CONFIDENCE_GRID = tuple(round(0.1 * k, 1) for k in range(1, 10))


@dataclass
class WarmupConfig(RunConfig):
    method: str = "warmup"
    lr: float = 2e-4
    examples: int = 320  # supervised examples
    epochs: int = 2
    batch_size: int = 16
    max_new_tokens: int = 64  # for the held-out evaluation (room for the worked steps)
    # "steps": write the chain left to right ("2 + 9 - 3 = 11 - 3 = 8") before the answer tag;
    # "none": the answer tag straight away (see module docstring for why steps is the default)
    work: str = "steps"
    eval_every: int = 0  # evaluate at the start and the end only
    save_every: int = 0


def worked_steps(expression: str) -> str:
    """The chain reduced left to right, one two-operand step at a time:
    ``"98 + 93 - 77"`` -> ``"98 + 93 - 77 = 191 - 77 = 114"``. Each step is a single addition or
    subtraction, which a 135M model can do; the whole chain at once it mostly cannot."""
    tokens = expression.split()
    if len(tokens) % 2 == 0 or not all(op in ("+", "-") for op in tokens[1::2]):
        raise ValueError(f"not a chain of + and -: {expression!r}")
    value = int(tokens[0])
    rest = tokens[1:]
    parts = [expression]
    while rest:
        op, b = rest[0], int(rest[1])
        value = value + b if op == "+" else value - b
        rest = rest[2:]
        parts.append(" ".join([str(value), *rest]))
    return " = ".join(parts)


def warmup_target(gold: str, confidence: float, prefill: str = "", work: str = "") -> str:
    """The response the warm-up teaches (minus the prefill, which is already in the prompt);
    ``work`` (worked steps, or "") goes before the answer tag."""
    full = f"<answer>{gold}</answer> <confidence>{confidence:.1f}</confidence>"
    if work:
        full = f"{work}\n{full}"
    return full[len(prefill) :] if prefill and full.startswith(prefill) else full


def warmup_examples(
    n: int, seed: int = 0, elicitation: str = "tags", work: str = "steps"
) -> list[dict]:
    """``n`` (question, target) pairs with uniform grid confidences, reproducible from seed.
    ``work="steps"`` puts :func:`worked_steps` before the answer (not with a prefill
    elicitation, whose response starts inside the answer tag)."""
    if work not in ("steps", "none"):
        # a UsageError (exit 2), as `--set work=...` reaches here before any model is loaded
        raise UsageError(f"work must be 'steps' or 'none', not {work!r}")
    prefill = prefill_for(elicitation)
    rng = random.Random(seed)
    out = []
    for item in chain_sum_items("train", n, seed, offset=WARMUP_OFFSET):
        q = rng.choice(CONFIDENCE_GRID)
        steps = worked_steps(item["meta"]["expression"]) if work == "steps" and not prefill else ""
        out.append(
            {
                "question": item["question"],
                "gold": item["gold"],
                "confidence": q,
                "target": warmup_target(item["gold"], q, prefill, steps),
            }
        )
    return out


def train(cfg: WarmupConfig, *, overwrite: bool = False) -> TrainResult:
    """Supervised fine-tuning on :func:`warmup_examples`; one "step" = one optimizer step."""
    examples = warmup_examples(cfg.examples, cfg.seed, cfg.elicitation, cfg.work)
    per_epoch = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
    cfg.steps = per_epoch * cfg.epochs
    run = TrainingRun(cfg, "warmup", overwrite=overwrite)
    tok, dev = run.tok, run.policy.device
    params = run.policy.trainable_parameters()
    run.attach_optimizer(torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0))
    run.policy.model.train()
    eos = tok.eos_token
    if run.start_step == 0 and run.is_eval_step(0):
        run.evaluate(0)  # the starting policy
    for step in run.steps():
        t0 = time.perf_counter()
        epoch, k = divmod(step - 1, per_epoch)
        order = list(range(len(examples)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        batch = [examples[i] for i in order[k * cfg.batch_size : (k + 1) * cfg.batch_size]]
        p_ids, p_mask = encode_prompts(
            tok, [render_prompt(tok, ex["question"], cfg.elicitation) for ex in batch], dev
        )
        # Targets end with the end-of-turn token so the model learns to stop.
        tgt = tok(
            [ex["target"] + eos for ex in batch],
            add_special_tokens=False,
            padding="longest",
            padding_side="right",
            return_tensors="pt",
        )
        r_ids, r_mask = tgt.input_ids.to(dev), tgt.attention_mask.to(dev).float()
        logp, _ = response_forward(run.policy, p_ids, p_mask, r_ids, group=1)
        loss = -(logp * r_mask).sum() / r_mask.sum()  # token-level negative log-likelihood
        loss.backward()
        grad_norm = run.clip_and_step(params)
        run.log_step(
            step,
            {
                "epoch": epoch + 1,
                "loss": loss.item(),
                "grad_norm": grad_norm,
                "step_s": time.perf_counter() - t0,
            },
        )
        if run.is_eval_step(step):
            run.evaluate(step)
        if run.is_checkpoint_step(step):
            run.save_checkpoint(step)
    return run.finish()
