"""Rollouts: sampled answers of the policy to a batch of questions, and the statistics a step logs
about them.

Sampling goes through :class:`RolloutModel`, a plain copy of the policy whose weights are
``W + (α/r)·B·A`` — no LoRA wrappers in the decode loop — re-synced before each rollout; on a GPU
(or a CPU with native bf16) that copy is bf16. The prompt of each question runs once and its KV
cache is shared by the G samples (:func:`calbench.core.sampling.sample`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from calbench import metrics
from calbench.core.sampling import sample
from calbench.train.policy import Policy, autocast, encode_prompts, load_base_copy, render_prompt


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B*G, T] right-padded; sample i*G + j answers prompt i
    response_mask: torch.Tensor  # [B*G, T] 1 for generated tokens (EOS included)
    group: int  # G
    completions: list[str]  # decoded responses, special tokens dropped, prefill not included
    seconds: float = 0.0
    truncated: float = 0.0  # fraction of responses cut by max_new_tokens (no EOS)

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())


class RolloutModel:
    """A plain copy of the policy for sampling: LoRA merged in (``W + scale·B·A``), in the
    rollout dtype, re-synced from the trained weights with :meth:`sync` before every rollout."""

    def __init__(self, policy: Policy):
        self.policy = policy
        if policy.is_lora:
            self.model = load_base_copy(policy)  # base weights; LoRA deltas are merged by sync()
        else:
            self.model = copy.deepcopy(policy.causal_lm)
        self.model.to(dtype=policy.dtype).eval().requires_grad_(False)
        self._pairs = self._match_modules()
        self.sync()

    def _match_modules(self) -> list[tuple[nn.Module, nn.Module]]:
        """(trained module, copy module) pairs whose weights must be re-synced."""
        dst = dict(self.model.named_modules())
        pairs = []
        if self.policy.is_lora:
            for name, mod in self.policy.causal_lm.named_modules():
                if isinstance(mod, LoraLayer):
                    pairs.append((mod, dst[name]))
        return pairs

    @torch.no_grad()
    def sync(self) -> None:
        if self.policy.is_lora:
            for lora_mod, plain in self._pairs:
                w = lora_mod.get_base_layer().weight.float()
                for adapter in lora_mod.active_adapters:
                    if adapter in lora_mod.lora_A:
                        w = w + lora_mod.get_delta_weight(adapter).float()
                plain.weight.copy_(w.to(plain.weight.dtype))
        else:
            src = dict(self.policy.causal_lm.named_parameters())
            for name, p in self.model.named_parameters():
                p.copy_(src[name].to(p.dtype))


def rollout(
    policy: Policy,
    rollout_model: RolloutModel | None,
    questions: Sequence[str],
    *,
    elicitation: str,
    group: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    min_new_tokens: int = 0,
) -> Rollout:
    """``group`` answers to each question, sampled from ``rollout_model`` (synced by the caller)
    or, when None, from the policy itself under autocast. ``temperature`` 0 is greedy."""
    t0 = time.perf_counter()
    tok = policy.tokenizer
    texts = [render_prompt(tok, q, elicitation) for q in questions]
    ids, mask = encode_prompts(tok, texts, policy.device)
    model = rollout_model.model if rollout_model is not None else policy.model
    was_training = model.training
    model.eval()
    with (
        autocast(policy.device, policy.dtype) if rollout_model is None else contextlib.nullcontext()
    ):
        r_ids, r_mask = sample(
            model,
            ids,
            mask,
            group=group,
            max_new_tokens=max_new_tokens,
            eos_id=tok.eos_token_id,
            pad_id=tok.pad_token_id,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            min_new_tokens=min_new_tokens,
        )
    model.train(was_training)
    completions = [
        tok.decode(row[m.bool()].tolist(), skip_special_tokens=True)
        for row, m in zip(r_ids, r_mask, strict=True)
    ]
    cut = (r_mask[:, -1] == 1) & (r_ids[:, -1] != tok.eos_token_id)
    if r_ids.shape[1] < max_new_tokens:  # stopped early: every response ended
        cut = torch.zeros_like(cut)
    return Rollout(
        ids,
        mask,
        r_ids,
        r_mask,
        group,
        completions,
        time.perf_counter() - t0,
        float(cut.float().mean()),
    )


def rollout_stats(scored: Sequence[Any], parts: Sequence[Any], ro: Rollout) -> dict[str, Any]:
    """Per-step reward components, accuracy and the confidence spread (a collapse of every
    stated confidence to one value is the failure mode the RLCR authors warn about)."""
    n = len(scored)
    conf = [s.confidence for s in scored if s.confidence is not None]
    return {
        "reward": float(np.mean([p.total for p in parts])),
        "reward_correctness": float(np.mean([p.correctness for p in parts])),
        "reward_confidence": float(np.mean([p.confidence for p in parts])),
        "reward_format": float(np.mean([p.format for p in parts])),
        "accuracy": sum(s.correct for s in scored) / n,
        "format_rate": sum(s.format_ok for s in scored) / n,
        "conf_parse_rate": len(conf) / n,
        "conf_mean": float(np.mean(conf)) if conf else None,
        "conf_std": float(np.std(conf)) if conf else None,
        "conf_distinct": len({round(c, 4) for c in conf}),
        # Brier score of the stated confidences that parse (format failures excluded)
        "brier": metrics.brier([float(s.correct) for s in scored if s.confidence is not None], conf)
        if conf
        else None,
        "response_tokens": ro.num_tokens / n,
        "rollout_s": ro.seconds,
        "rollout_tokens_per_s": ro.num_tokens / max(ro.seconds, 1e-9),
        "truncated_frac": ro.truncated,
        "sample": scored[0].text[:300],  # one response as the reward saw it (prefill restored)
    }
