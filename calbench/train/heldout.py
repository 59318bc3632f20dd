"""Held-out evaluation during training: greedy answers to held-out ``chain_sum`` questions,
graded by the rewards' grader and scored by :mod:`calbench.metrics` as `calbench score` does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calbench import metrics
from calbench.core.chain_sum import difficulty_bin
from calbench.train.policy import Policy, prefill_for
from calbench.train.rewards import score_completions
from calbench.train.rollout import RolloutModel, rollout


@dataclass
class EvalResult:
    n: int
    accuracy: float
    format_rate: float
    conf_parse_rate: float
    conf_mean: float | None
    conf_std: float | None
    brier: float | None  # over parsed confidences
    smece: float | None
    by_bin: dict[str, float] = field(default_factory=dict)  # accuracy per difficulty bin
    # does the stated confidence rank right above wrong answers, and follow the bins' accuracy?
    # (a constant confidence has a low Brier and smooth ECE, and AUROC 0.5)
    auroc: float | None = None
    conf_by_bin: dict[str, float] = field(default_factory=dict)  # mean parsed confidence per bin

    def to_log(self, prefix: str = "eval_") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def evaluate(
    policy: Policy,
    rollout_model: RolloutModel | None,
    items: Sequence[dict],
    *,
    elicitation: str,
    max_new_tokens: int,
    batch_size: int = 32,
) -> EvalResult:
    """Greedy answers to held-out items, graded and scored like `calbench eval` does."""
    prefill = prefill_for(elicitation)
    scored = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        ro = rollout(
            policy,
            rollout_model,
            [it["question"] for it in chunk],
            elicitation=elicitation,
            group=1,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
        )
        scored += score_completions(ro.completions, [it["gold"] for it in chunk], prefill=prefill)
    return eval_result(items, scored)


def eval_result(items: Sequence[dict], scored: Sequence[Any]) -> EvalResult:
    """The held-out metrics of graded answers (``scored[i]`` answers ``items[i]``), each computed
    by :mod:`calbench.metrics` as `calbench score` computes it; confidence metrics over the
    answers whose confidence parsed (policy ``drop``), accuracy over all."""
    n = len(scored)
    correct = [float(s.correct) for s in scored]
    conf = [s.confidence for s in scored if s.confidence is not None]
    corr = [float(s.correct) for s in scored if s.confidence is not None]
    bins: dict[str, list[float]] = {}
    conf_bins: dict[str, tuple[list[float], list[float]]] = {}
    for it, s in zip(items, scored, strict=True):
        if "meta" in it and "num_terms" in it["meta"]:
            key = difficulty_bin(it["meta"])
            bins.setdefault(key, []).append(float(s.correct))
            if s.confidence is not None:
                ys, cs = conf_bins.setdefault(key, ([], []))
                ys.append(float(s.correct))
                cs.append(s.confidence)
    return EvalResult(
        n=n,
        accuracy=metrics.accuracy(correct) if n else 0.0,
        format_rate=sum(s.format_ok for s in scored) / max(n, 1),
        conf_parse_rate=len(conf) / max(n, 1),
        conf_mean=metrics.mean_confidence(corr, conf) if conf else None,
        conf_std=float(np.std(conf)) if conf else None,
        brier=metrics.brier(corr, conf) if conf else None,
        smece=metrics.smooth_ece(corr, conf) if conf else None,
        by_bin={k: metrics.accuracy(v) for k, v in sorted(bins.items())},
        # None rather than NaN (and no warning) when one class is missing: AUROC is undefined
        auroc=metrics.auroc(corr, conf) if 0 < sum(corr) < len(corr) else None,
        conf_by_bin={k: metrics.mean_confidence(*v) for k, v in sorted(conf_bins.items())},
    )
