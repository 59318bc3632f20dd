"""GRPO with calibration rewards, in one file.

Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath): sample a group of G answers
to each question, score them, and use each answer's reward relative to its group as the advantage
of all its tokens — no value network. The objective (maximised) is the PPO clipped surrogate
plus a KL penalty to the reference policy:

    J = E[ agg_t  min(ρ_t Â_t, clip(ρ_t, 1−ε, 1+ε) Â_t) − β D_KL[π_θ ‖ π_ref]_t ],
    ρ_t = π_θ(o_t | q, o_<t) / π_θ_old(o_t | q, o_<t),
    D_KL_t = π_ref/π_θ − log(π_ref/π_θ) − 1            (the paper's unbiased "k3" estimator)

agg_t is the mean over every response token of the batch (``loss_agg="token"``, as in DAPO) or
over each response's tokens and then the responses (``"sequence"``, the paper). Each step takes
μ = ``updates_per_batch`` optimizer steps on −J; π_old is the policy that sampled the batch.

Options for calibration rewards (why each exists and its default: docs/training-history.md):

* ``adv_norm``: Â = r − mean of the group (``"mean"``, as in Dr. GRPO), or that divided by the
  group's std floored at ``std_floor`` (``"std"``, the paper).
* ``split_credit``: the answer tokens get the advantage of the correctness term, the confidence
  tokens that of the scoring-rule term (each normalised within its group). Rewards without a
  correctness term of their own (``brier``, ``asymmetric``) give the answer tokens the whole
  reward; a response with no confidence tag gets the advantage of its total reward on every token.
* ``conf_grad``: how the confidence's tenths digit is credited. ``"sampled"`` is the GRPO
  estimator: the digit the model happened to write gets the group-relative advantage of its
  reward, A·∇log π(d). But the scoring rule's reward is known for *every* digit it could have
  written — given the sampled answer's correctness c, writing 0.d earns rule(c, d/10) — so
  ``"expected"`` takes the exact expectation over the ten alternatives instead,

      ∇ Σ_d π(d | …, "0.") · (rule(c, d/10) − b),   b = Σ_d π(d) rule(c, d/10) / Σ_d π(d)

  (the "all-action" / expected policy gradient: Allen et al. 2017, Ciosek & Whiteson 2018). Same
  objective, same rollouts, no extra forward pass — only the variance of that one token's
  gradient goes. It applies where the confidence reads exactly ``0.d``; other forms keep the
  sampled estimator. Rewards without a confidence rule (``rlvr``) give every digit the same
  reward, so the term is zero. The exact term is not clipped (with μ = 1, ρ = 1 and the clip
  never binds).
* ``conf_weight`` (λ) scales that exact term in the loss — the same as training with reward
  c − λ(q − c)² at that token, which is still proper (best q = P(correct) for every λ > 0).
* ``conf_entropy`` (τ, scaled by λ too) adds τ·H(π) over the ten digits at that same token, for
  every reward — ``rlvr`` included, so the arms still differ only in the reward. The exact term
  alone is linear in π: its maximum puts all mass on one digit, where its gradient
  π(d)(r_d − b) vanishes. With the bonus the optimum is interior, π(d) ∝ exp(E[rule(c, d/10)] / τ);
  for the Brier rule that is a bell around p = P(correct | prefix), exp(−(d/10 − p)² / τ), so the
  most likely digit — what greedy decoding states — is still the one nearest p. For ``rlvr`` the
  bonus holds the unrewarded confidence near uniform. Entropy regularisation against premature
  collapse: Williams & Peng 1991; Mnih et al. 2016 (A3C).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from calbench.core.errors import UsageError
from calbench.metrics.selective import auroc
from calbench.train.config import RunConfig
from calbench.train.credit import (
    DIGITS,
    confidence_digit,
    confidence_masks,
    confidence_start,
    group_advantages,
)
from calbench.train.logprobs import response_forward
from calbench.train.policy import autocast
from calbench.train.rewards import METHODS
from calbench.train.rollout import Rollout, rollout_stats
from calbench.train.training_run import TrainingRun, TrainResult


@dataclass
class GRPOConfig(RunConfig):
    lr: float = 5e-5
    prompts_per_step: int = 4  # B: questions per step
    group_size: int = 8  # G: sampled answers per question
    max_new_tokens: int = 32  # response budget (the format needs ~15–20 tokens)
    min_new_tokens: int = 0  # EOS forbidden before this many tokens (benchmarks: fixed lengths)
    temperature: float = 1.0
    top_p: float = 1.0
    format_weight: float = 0.1  # reward for both tags present with a parseable confidence
    adv_norm: str = "mean"  # "mean" (Dr. GRPO) | "std" (GRPO paper)
    std_floor: float = 0.0  # with adv_norm="std": divide by max(std, std_floor)
    split_credit: bool = True  # answer tokens ← correctness advantage, confidence ← rule's
    clip_eps: float = 0.2  # ε of the clipped surrogate
    beta: float = 0.0  # β: KL(π_θ ‖ π_ref) weight (0 skips the reference pass, as TRL does)
    updates_per_batch: int = 1  # μ: optimizer steps per batch of rollouts (π_old = π_θ if 1)
    loss_agg: str = "token"  # "token": mean over all tokens (DAPO) | "sequence": GRPO paper
    micro_batch: int = 0  # questions per forward/backward chunk (0: the whole batch)
    conf_grad: str = "sampled"  # last confidence digit: "sampled" (GRPO) | "expected" (exact)
    conf_weight: float = 1.0  # λ: weight of the exact digit term (conf_grad="expected" only)
    conf_entropy: float = 0.0  # τ: digit entropy bonus (conf_grad="expected"; scaled by λ too)


CONF_GRADS = ("sampled", "expected")


# --------------------------------------------------------------------------------------------
# Advantages Â_{i,t}
# --------------------------------------------------------------------------------------------


def token_advantages(
    cfg: GRPOConfig, run: TrainingRun, ro: Rollout, parts: list[Any]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Â_{i,t} for every response token [B*G, T]."""
    dev = ro.response_ids.device
    G, T = ro.group, ro.response_ids.shape[1]
    total = torch.tensor([p.total for p in parts], device=dev)
    a_total = group_advantages(total, G, cfg.adv_norm, cfg.std_floor)
    stats = {
        "adv_abs_mean": float(a_total.abs().mean()),
        "groups_without_signal": float((total.view(-1, G).std(1) == 0).float().mean()),
    }
    if not cfg.split_credit:
        return a_total[:, None].expand(-1, T), stats
    method = METHODS[cfg.method]
    conf_r = torch.tensor([p.confidence for p in parts], device=dev)
    ans_r = total if method.answer_gets_total else total - conf_r
    a_ans = group_advantages(ans_r, G, cfg.adv_norm, cfg.std_floor)
    a_conf = group_advantages(conf_r, G, cfg.adv_norm, cfg.std_floor)
    conf_tok, has_span = confidence_masks(run.tok, ro)
    split = a_ans[:, None] * (1 - conf_tok) + a_conf[:, None] * conf_tok
    adv = torch.where(has_span[:, None].bool(), split, a_total[:, None].expand(-1, T))
    stats["conf_token_frac"] = float((conf_tok * ro.response_mask).sum() / ro.response_mask.sum())
    return adv, stats


def expected_digit_targets(
    cfg: GRPOConfig, run: TrainingRun, ro: Rollout, scored: Sequence[Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``conf_grad="expected"``: (position of each response's tenths digit [B*G], −1 where
    the sampled estimator stays; reward of each alternative digit rule(c, d/10) [B*G, 10])."""
    method = METHODS[cfg.method]
    dev = ro.response_ids.device
    n = ro.response_ids.shape[0]
    pos = torch.full((n,), -1, dtype=torch.long, device=dev)
    rewards = torch.zeros(n, len(DIGITS), device=dev)
    if cfg.conf_grad != "expected" or (method.confidence_rule is None and cfg.conf_entropy == 0):
        return pos, rewards
    for i in range(n):
        length = int(ro.response_mask[i].sum())
        ids = ro.response_ids[i, :length].tolist()
        k = confidence_digit(run.tok, ids, confidence_start(run.tok, ids, ro.completions[i]))
        if k is None:
            continue
        c = 1.0 if scored[i].correct else 0.0
        pos[i] = k  # rlvr (entropy only): every digit earns confidence_term = 0
        rewards[i] = torch.tensor([method.confidence_term(c, d / 10) for d in range(10)])
    return pos, rewards


# --------------------------------------------------------------------------------------------
# The objective: −J (clipped surrogate + β·KL) and the exact confidence-digit term
# --------------------------------------------------------------------------------------------


def grpo_loss(
    cfg: GRPOConfig,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None,
    n_tokens: float,
    n_seqs: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """−J on one chunk, scaled so that chunks add up to the batch loss."""
    ratio = torch.exp(logp - old_logp)  # ρ_t
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
    per_token = -surrogate
    kl = None
    if cfg.beta > 0 and ref_logp is not None:
        log_r = ref_logp - logp
        kl = torch.exp(log_r) - log_r - 1  # k3 estimator of D_KL[π_θ ‖ π_ref], ≥ 0
        per_token = per_token + cfg.beta * kl
    if cfg.loss_agg == "token":
        loss = (per_token * mask).sum() / n_tokens
    else:
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > cfg.clip_eps).float()
        stats = {
            "clip_frac": float((clipped * mask).sum()),
            "pg_loss": float((-surrogate * mask).sum()),
        }
        if kl is not None:
            stats["kl_k3"] = float((kl * mask).sum())
    return loss, stats


def expected_digit_objective(
    run: TrainingRun,
    hidden: torch.Tensor,
    pos: torch.Tensor,
    rewards: torch.Tensor,
    entropy: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σ_d π(d)·(rule(c, d/10) − b) + τ·H(π̄) for each response of a chunk that has a digit
    position — the exact expected-reward term plus the entropy bonus, to be maximised — and,
    detached, the expected confidence Σ_d π̄(d)·d/10 and H(π̄) of each (π̄: π renormalised over
    the ten digits). ``hidden`` [n, T, d] is the state that predicted each response token
    (:func:`response_forward`, ``want_hidden``)."""
    rows = (pos >= 0).nonzero().squeeze(-1)
    lm = run.policy.causal_lm
    digit_ids = run.tok.convert_tokens_to_ids(list(DIGITS))
    with autocast(run.policy.device, run.policy.dtype):
        logits = lm.get_output_embeddings()(hidden[rows, pos[rows]]).float()
    probs = logits.log_softmax(-1)[:, digit_ids].exp()  # π(d), d = 0..9 (mass on digits < 1)
    r = rewards[rows]
    with torch.no_grad():
        baseline = (probs * r).sum(-1, keepdim=True) / probs.sum(-1, keepdim=True)
    gain = (probs * (r - baseline)).sum(-1)
    norm = probs / probs.sum(-1, keepdim=True)
    h = -(norm * norm.clamp(min=1e-12).log()).sum(-1)
    if entropy > 0:
        gain = gain + entropy * h
    grid = torch.arange(len(DIGITS), device=probs.device, dtype=probs.dtype) / 10
    return gain, (norm * grid).sum(-1).detach(), h.detach()


def expected_digit_gain(
    cfg: GRPOConfig, gain: torch.Tensor, mask: torch.Tensor, n_tokens: float, n_seqs: int
) -> torch.Tensor:
    """λ·(the exact term) aggregated as :func:`grpo_loss` aggregates −J (``mask``: the token
    rows of the responses ``gain`` belongs to), to be subtracted from the loss."""
    gain = cfg.conf_weight * gain
    if cfg.loss_agg == "token":
        return gain.sum() / n_tokens
    return (gain / mask.sum(1).clamp(min=1)).sum() / n_seqs  # each response's tokens averaged


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------


def train(cfg: GRPOConfig, *, overwrite: bool = False) -> TrainResult:
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}")
    if cfg.conf_grad not in CONF_GRADS:
        raise UsageError(f"conf_grad must be one of {', '.join(CONF_GRADS)}, not {cfg.conf_grad!r}")
    run = TrainingRun(cfg, "grpo", overwrite=overwrite)
    params = run.policy.trainable_parameters()
    run.attach_optimizer(torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0))
    run.policy.model.train()
    if run.start_step == 0 and run.is_eval_step(0):
        run.evaluate(0)  # the starting policy
    for step in run.steps():
        t_step = time.perf_counter()
        # 1. Rollouts: G sampled answers to each of the step's B questions, and their rewards.
        items = run.batch(step)
        ro = run.rollout(items, step)
        scored, parts = run.score(ro, items)
        G = ro.group
        mask = ro.response_mask.float()
        n_tokens, n_seqs = float(mask.sum()), mask.shape[0]

        # 2. Advantages Â_{i,t}. Where the exact digit term applies, it replaces the sampled one.
        adv, adv_stats = token_advantages(cfg, run, ro, parts)
        digit_pos, digit_rewards = expected_digit_targets(cfg, run, ro, scored)
        exact = digit_pos >= 0
        if bool(exact.any()):
            adv = adv.clone()
            adv[exact.nonzero().squeeze(-1), digit_pos[exact]] = 0.0
        adv_stats["conf_expected_frac"] = float(exact.float().mean())

        # 3. log π_ref for the β term (and the KL logged on eval steps); log π_old, fixed across
        # the μ updates (with μ = 1, π_old is the current policy: ρ = 1, its gradient ∇log π).
        need_ref = cfg.beta > 0 or run.is_eval_step(step)
        ref_logp = (
            run.reference.logprobs(ro.prompt_ids, ro.prompt_mask, ro.response_ids, G)
            if need_ref
            else None
        )
        chunks = _chunks(len(items), cfg.micro_batch)
        old_logp = None
        if cfg.updates_per_batch > 1:
            with torch.no_grad():
                old_logp = torch.cat(
                    [
                        response_forward(
                            run.policy,
                            ro.prompt_ids[a:b],
                            ro.prompt_mask[a:b],
                            ro.response_ids[a * G : b * G],
                            G,
                        )[0]
                        for a, b in chunks
                    ]
                )

        # 4. μ optimizer steps on −J, each accumulating the gradient over the question chunks.
        t_train = time.perf_counter()
        totals: dict[str, float] = {}
        kl_seq = None
        # response -> (expected confidence, entropy) of its digit, for the log (the last update's)
        digit: dict[int, tuple[float, float]] = {}
        for _ in range(cfg.updates_per_batch):
            for a, b in chunks:
                sl = slice(a * G, b * G)
                logp, hidden = response_forward(
                    run.policy,
                    ro.prompt_ids[a:b],
                    ro.prompt_mask[a:b],
                    ro.response_ids[sl],
                    G,
                    want_hidden=bool(exact[sl].any()),
                )
                old = old_logp[sl] if old_logp is not None else logp.detach()
                loss, st = grpo_loss(
                    cfg,
                    logp,
                    old,
                    adv[sl],
                    mask[sl],
                    ref_logp[sl] if ref_logp is not None else None,
                    n_tokens,
                    n_seqs,
                )
                if hidden is not None:
                    gain, eq, h = expected_digit_objective(
                        run, hidden, digit_pos[sl], digit_rewards[sl], cfg.conf_entropy
                    )
                    rows = exact[sl]
                    for i, q, e in zip(
                        rows.nonzero().squeeze(-1).tolist(), eq.tolist(), h.tolist(), strict=True
                    ):
                        digit[a * G + i] = (q, e)
                    loss = loss - expected_digit_gain(cfg, gain, mask[sl][rows], n_tokens, n_seqs)
                loss.backward()
                for k, v in st.items():
                    totals[k] = totals.get(k, 0.0) + v
                if ref_logp is not None:
                    d = ((logp.detach() - ref_logp[sl]) * mask[sl]).sum()
                    kl_seq = (kl_seq or 0.0) + float(d)
            grad_norm = run.clip_and_step(params)

        # 5. Log the step; evaluate and checkpoint when due.
        upd = cfg.updates_per_batch
        stats = {
            **rollout_stats(scored, parts, ro),
            **adv_stats,
            "pg_loss": totals.get("pg_loss", 0.0) / n_tokens / upd,
            "clip_frac": totals.get("clip_frac", 0.0) / n_tokens / upd,
            # KL(π‖π_ref) per response: Σ_t log π/π_ref, averaged (None when not computed)
            "kl": kl_seq / n_seqs / upd if kl_seq is not None else None,
            "grad_norm": grad_norm,
            "train_s": time.perf_counter() - t_train,
            "step_s": time.perf_counter() - t_step,
            **digit_stats(digit, scored),
        }
        if "kl_k3" in totals:
            stats["kl_k3_token"] = totals["kl_k3"] / n_tokens / upd
        run.log_step(step, stats)
        if run.is_eval_step(step):
            run.evaluate(step)
        if run.is_checkpoint_step(step):
            run.save_checkpoint(step)
    return run.finish()


def digit_stats(digit: dict[int, tuple[float, float]], scored: Sequence[Any]) -> dict[str, Any]:
    """The exact digit across the batch: mean and spread of E[q] (the spread shows how far the
    confidence has come to depend on the question, which the mean cannot), mean entropy, and
    whether E[q] ranks right above wrong answers (in-batch AUROC). Empty without such digits."""
    if not digit:
        return {}
    idx = sorted(digit)
    ok = [float(scored[i].correct) for i in idx]
    eq = [digit[i][0] for i in idx]
    return {
        "digit_eq_mean": sum(eq) / len(idx),
        "digit_eq_std": float(torch.tensor(eq).std(unbiased=False)) if len(eq) > 1 else 0.0,
        "digit_entropy": sum(digit[i][1] for i in idx) / len(idx),
        "digit_eq_auroc": auroc(ok, eq) if 0 < sum(ok) < len(ok) else None,
    }


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    size = size if size > 0 else n
    return [(a, min(a + size, n)) for a in range(0, n, size)]
