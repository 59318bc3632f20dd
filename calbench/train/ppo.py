"""PPO with calibration rewards, in one file.

Proximal Policy Optimization (Schulman et al. 2017) as used for language models (Ziegler et al.
2019, Stiennon et al. 2020, Ouyang et al. 2022): each response token is an action, the reward
arrives at the end of the response, and a per-token KL penalty to the frozen reference keeps the
policy close to where it started:

    r_t = −β_KL · (log π_old(o_t) − log π_ref(o_t))  + [t = last] · R(answer, confidence)
    δ_t = r_t + γ V(s_{t+1}) − V(s_t),    Â_t = Σ_k (γλ)^k δ_{t+k}      (GAE)
    L^CLIP = E_t[ min(ρ_t Â_t, clip(ρ_t, 1−ε, 1+ε) Â_t) ],   ρ_t = π_θ(o_t)/π_old(o_t)
    L^VF   = E_t[ ½ max((V_θ − R̂_t)², (clip(V_θ, V_old ± ε_V) − R̂_t)²) ],  R̂_t = Â_t + V_old
    loss   = −L^CLIP + c_VF · L^VF

The value head is a linear layer on the policy's last hidden state (one shared trunk: with LoRA
the trunk's trainable part is the adapter). The reference is the starting policy — with a fresh
LoRA, the same model with the adapter disabled (see ``logprobs.Reference``).

``split_credit`` places the reward where it becomes known instead of all at the end: the
correctness (+ format) term on the last token before ``<confidence>``, the scoring-rule term on
the last token. With γ = 1 the answer tokens' return still includes the confidence term, but the
critic can now tell the two apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from calbench.train.config import RunConfig
from calbench.train.credit import confidence_masks
from calbench.train.logprobs import response_forward
from calbench.train.rewards import METHODS
from calbench.train.rollout import rollout_stats
from calbench.train.training_run import TrainingRun, TrainResult


@dataclass
class PPOConfig(RunConfig):
    lr: float = 5e-5
    prompts_per_step: int = 8  # questions per step
    group_size: int = 2  # samples per question (PPO needs no groups; >1 shares the prompt pass)
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    format_weight: float = 0.1
    split_credit: bool = True  # correctness reward at the answer's end, rule's at the last token
    ppo_epochs: int = 2  # passes over each batch of rollouts
    minibatches: int = 2  # per epoch (split by question, so prompt passes stay shared)
    clip_eps: float = 0.2  # ε of L^CLIP
    vf_coef: float = 0.1  # c_VF
    vf_clip: float = 0.2  # ε_V
    kl_coef: float = 0.05  # β_KL, per-token KL penalty in the reward
    gamma: float = 1.0  # γ
    lam: float = 0.95  # λ of GAE
    whiten_advantages: bool = True
    value_lr: float = 1e-3  # the freshly initialised value head learns faster


class ValueHead(nn.Module):
    """V(s_t) from the hidden state that predicts token t. Starts at exactly zero."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.v = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.v.weight)
        nn.init.zeros_(self.v.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.v(hidden.float()).squeeze(-1)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over right-padded token rows (V = 0 after the end)."""
    values = values * mask
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * mask
    return adv, adv + values


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def train(cfg: PPOConfig, *, overwrite: bool = False) -> TrainResult:
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}")
    run = TrainingRun(cfg, "ppo", overwrite=overwrite)
    value_head = ValueHead(run.policy.causal_lm.config.hidden_size).to(run.policy.device)
    params = run.policy.trainable_parameters()
    run.attach_optimizer(
        torch.optim.AdamW(
            [
                {"params": params, "lr": cfg.lr},
                {"params": list(value_head.parameters()), "lr": cfg.value_lr},
            ],
            weight_decay=0.0,
        ),
        extra={"value_head": value_head},
    )  # checkpointed, restored on resume
    run.policy.model.train()
    method = METHODS[cfg.method]
    if run.start_step == 0 and run.is_eval_step(0):
        run.evaluate(0)  # the starting policy
    for step in run.steps():
        t_step = time.perf_counter()
        items = run.batch(step)
        ro = run.rollout(items, step)
        scored, parts = run.score(ro, items)
        G = ro.group
        mask = ro.response_mask.float()
        n, T = mask.shape
        lengths = mask.sum(1).long()
        dev = mask.device

        # 1. π_old, V_old and π_ref on the rollouts (no gradient).
        with torch.no_grad():
            old_logp, h = response_forward(
                run.policy, ro.prompt_ids, ro.prompt_mask, ro.response_ids, G, want_hidden=True
            )
            old_values = value_head(h) * mask
            ref_logp = run.reference.logprobs(ro.prompt_ids, ro.prompt_mask, ro.response_ids, G)

        # 2. Per-token rewards: KL penalty everywhere, the score where it becomes known.
        kl_t = (old_logp - ref_logp) * mask
        rewards = -cfg.kl_coef * kl_t
        last = (lengths - 1).clamp(min=0)
        total = torch.tensor([p.total for p in parts], device=dev)
        if cfg.split_credit and not method.answer_gets_total:
            conf_r = torch.tensor([p.confidence for p in parts], device=dev)
            conf_tok, has_span = confidence_masks(run.tok, ro)
            start = conf_tok.argmax(1)  # first confidence token (0 when there is none)
            answer_end = torch.where(has_span.bool() & (start > 0), start - 1, last)
            rewards[torch.arange(n, device=dev), answer_end] += total - conf_r
            rewards[torch.arange(n, device=dev), last] += conf_r
        else:
            rewards[torch.arange(n, device=dev), last] += total

        # 3. GAE advantages and returns.
        adv, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            mu = masked_mean(adv, mask)
            var = masked_mean((adv - mu) ** 2, mask)
            adv = (adv - mu) * torch.rsqrt(var + 1e-8) * mask

        # 4. PPO epochs over minibatches of questions.
        t_train = time.perf_counter()
        B = len(items)
        per_mb = max(1, B // max(1, cfg.minibatches))
        acc = {"pg_loss": 0.0, "vf_loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0}
        n_updates, grad_norm = 0, 0.0
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=gen).tolist()
            for k in range(0, B, per_mb):
                qs = sorted(order[k : k + per_mb])
                rows = torch.tensor([q * G + j for q in qs for j in range(G)], device=dev)
                qi = torch.tensor(qs, device=dev)
                logp, h = response_forward(
                    run.policy,
                    ro.prompt_ids[qi],
                    ro.prompt_mask[qi],
                    ro.response_ids[rows],
                    G,
                    want_hidden=True,
                )
                values = value_head(h)
                m, a = mask[rows], adv[rows]
                ratio = torch.exp(logp - old_logp[rows])  # ρ_t
                l_clip = torch.min(
                    ratio * a, torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * a
                )
                v_old, ret = old_values[rows], returns[rows]
                v_clipped = v_old + torch.clamp(values - v_old, -cfg.vf_clip, cfg.vf_clip)
                l_vf = 0.5 * torch.max((values - ret) ** 2, (v_clipped - ret) ** 2)
                loss = -masked_mean(l_clip, m) + cfg.vf_coef * masked_mean(l_vf, m)
                loss.backward()
                grad_norm = run.clip_and_step(params + list(value_head.parameters()))
                n_updates += 1
                with torch.no_grad():
                    acc["pg_loss"] += float(-masked_mean(l_clip, m))
                    acc["vf_loss"] += float(masked_mean(l_vf, m))
                    acc["clip_frac"] += float(
                        masked_mean(((ratio - 1).abs() > cfg.clip_eps).float(), m)
                    )
                    acc["approx_kl"] += float(masked_mean(old_logp[rows] - logp, m))

        # 5. Log the step; evaluate and checkpoint when due.
        stats = {
            **rollout_stats(scored, parts, ro),
            **{k: v / max(n_updates, 1) for k, v in acc.items()},
            "kl": float(kl_t.sum() / n),  # Σ_t log π_old/π_ref per response
            "value_mean": float(masked_mean(old_values, mask)),
            "return_mean": float(returns[:, 0].mean()),
            "grad_norm": grad_norm,
            "train_s": time.perf_counter() - t_train,
            "step_s": time.perf_counter() - t_step,
        }
        run.log_step(step, stats)
        if run.is_eval_step(step):
            run.evaluate(step)
        if run.is_checkpoint_step(step):
            run.save_checkpoint(step)
    return run.finish()
