"""Calibration rewards for RL: one function per method, TRL-style.

Every reward is ``f(completions, gold, **columns) -> list[float]`` — the signature TRL's
``GRPOTrainer`` calls its ``reward_funcs`` with (extra dataset columns arrive as keyword lists).
``completions`` are strings or TRL chat lists (``[{"role": "assistant", "content": ...}]``);
``gold`` the reference answers.

A response is read and graded by :mod:`calbench.core.responses`, exactly as the evaluator reads it
(answer from the last ``<answer>`` tag, confidence q from the last ``<confidence>`` tag), with
:func:`calbench.core.grade.math_equal` unless a ``grader`` column/keyword names another entry of
:data:`calbench.core.grade.GRADERS` (or is a callable ``f(answer, gold) -> bool``).  With c = 1 if the
answer is correct else 0:

=============  ==========================================================  ===================
method         reward                                                       best stated q
=============  ==========================================================  ===================
``rlvr``       c                                                            (ignores q)
``rlcr``       c − (q − c)²           (RLCR, Damani et al. 2025)            q = p
``brier``      −(q − c)²                                                    q = p
``log``        c + c·log q + (1−c)·log(1−q), q clipped to [ε, 1−ε]          q = p
``asymmetric`` c·q − (1−c)·q^2.5      (popular article; kept for contrast)  overconfident
=============  ==========================================================  ===================

plus ``format_weight`` × 1[both tags complete and q parseable] (0 by default).

Never NaN: when q cannot be parsed, the confidence term takes its *worst* value for the outcome
(−1 for Brier, log ε for the log score, 0 if correct / −1 if wrong for ``asymmetric``), so a
missing confidence is never better than any stated one. (The RLCR code wrote ``float("nan")``;
NaN slips through a range check written as ``q < 0 or q > 1`` — every comparison with NaN is
False — and turns a whole GRPO group's mean, std and hence advantages into NaN.)

Prefill: under the ``prefill`` elicitation the prompt ends with ``<answer>``, which belongs to the
response but is not in the sampled completion. Pass ``prefill="<answer>"`` (a keyword or a
column): it is put back in front of any completion that does not already start with it, and a
completion that stops without ``</answer>`` has given its answer (as in the evaluator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from calbench.core.grade import GRADERS
from calbench.core.responses import (
    GradedResponse,
    Grader,
    grade_answer,
    read_response,
    restore_prefill,
)

LOG_EPS = 1e-3  # clip for the log score: log(1e-3) = -6.9 is its worst value
ASYM_POWER = 2.5


# --------------------------------------------------------------------------------------------
# The scalar rules. c is 0/1, q a float in [0, 1] or None (unparseable).
# --------------------------------------------------------------------------------------------


def _brier(c: float, q: float) -> float:
    return -((q - c) ** 2)


def _log_score(c: float, q: float, eps: float = LOG_EPS) -> float:
    q = min(max(q, eps), 1.0 - eps)
    return math.log(q) if c else math.log(1.0 - q)


def _asymmetric(c: float, q: float) -> float:
    return q if c else -(q**ASYM_POWER)


@dataclass(frozen=True)
class Method:
    """A reward = correctness term + confidence term (+ format term, added by the caller)."""

    name: str
    correctness_weight: float  # weight of 1[correct]
    confidence_rule: Callable[[float, float], float] | None  # (c, q) -> term; None: q ignored
    # With split credit, answer tokens get the advantage of the correctness (+ format) term and
    # confidence tokens that of the confidence term. Methods with no correctness term of their
    # own would then give the answer no signal, so their answer tokens get the whole reward.
    answer_gets_total: bool = False

    def confidence_term(self, c: float, q: float | None) -> float:
        if self.confidence_rule is None:
            return 0.0
        if q is None:  # worst case over q; every rule here is monotone in q, so check the ends
            return min(self.confidence_rule(c, 0.0), self.confidence_rule(c, 1.0))
        return self.confidence_rule(c, q)

    def value(self, c: float, q: float | None) -> float:
        """The reward (without format term) for correctness c and stated confidence q."""
        return self.correctness_weight * c + self.confidence_term(c, q)


METHODS: dict[str, Method] = {
    "rlvr": Method("rlvr", 1.0, None),
    "rlcr": Method("rlcr", 1.0, _brier),
    "brier": Method("brier", 0.0, _brier, answer_gets_total=True),
    "log": Method("log", 1.0, _log_score),
    "asymmetric": Method("asymmetric", 0.0, _asymmetric, answer_gets_total=True),
}


# --------------------------------------------------------------------------------------------
# Reading completions
# --------------------------------------------------------------------------------------------


def completion_text(completion: Any, prefill: str | None = None) -> str:
    """The response text of one completion (a string or a TRL chat list), prefill restored
    (:func:`calbench.core.responses.restore_prefill`)."""
    if isinstance(completion, str):
        text = completion
    elif isinstance(completion, dict):
        text = str(completion.get("content") or "")
    elif isinstance(completion, Sequence):
        # TRL conversational completions: [{"role": "assistant", "content": "..."}]
        text = "".join(
            str(m.get("content") or "")
            for m in completion
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        )
    else:
        text = "" if completion is None else str(completion)
    return restore_prefill(text, prefill)


@dataclass(frozen=True)
class Scored:
    """One completion read and graded: the pieces every reward is made of."""

    text: str
    answer: str | None
    correct: bool
    confidence: float | None  # None: unparseable or missing
    format_ok: bool  # both tags complete and the confidence parses


def _column(value: Any, n: int, default: Any = None) -> list:
    """A keyword that may be one value for all completions or a TRL column (one per item)."""
    if value is None:
        return [default] * n
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"column has {len(value)} values for {n} completions")
        return list(value)
    return [value] * n


def _grader(g: Any) -> Grader:
    if g is None:
        return "math"
    if callable(g) or g in GRADERS:
        return g
    raise ValueError(f"unknown grader {g!r}; choose from {sorted(GRADERS)}")


def score_completions(
    completions: Sequence[Any],
    gold: Sequence[str] | str,
    *,
    grader: Any = None,
    prefill: Any = None,
) -> list[Scored]:
    """Read and grade each completion exactly as the evaluator reads a response
    (:mod:`calbench.core.responses`). Identical (answer, gold, grader) triples are graded once per
    call: a GRPO group often repeats an answer, and math-verify costs milliseconds per call."""
    n = len(completions)
    golds = _column(gold, n)
    graders = _column(grader, n)
    prefills = _column(prefill, n, "")
    cache: dict[tuple, bool] = {}
    out = []
    for comp, g, gr, pf in zip(completions, golds, graders, prefills, strict=True):
        text = completion_text(comp, pf)
        ans, conf = read_response(text, pf)
        key = (ans.answer, str(g), gr if isinstance(gr, str) or gr is None else id(gr))
        if key not in cache:
            cache[key] = grade_answer(ans.answer, str(g), _grader(gr))[0]
        graded = GradedResponse(ans, conf, cache[key], None)
        out.append(Scored(text, ans.answer, graded.correct, conf.value, graded.format_ok))
    return out


# --------------------------------------------------------------------------------------------
# Reward components (the trainer logs them and uses them for split credit)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardParts:
    correctness: float  # correctness_weight * 1[correct]
    confidence: float  # the scoring-rule term (0 for rlvr)
    format: float  # format_weight * 1[format ok]

    @property
    def total(self) -> float:
        return self.correctness + self.confidence + self.format


def reward_parts(
    method: str, scored: Sequence[Scored], format_weight: float = 0.0
) -> list[RewardParts]:
    m = METHODS[method]
    parts = []
    for s in scored:
        c = 1.0 if s.correct else 0.0
        parts.append(
            RewardParts(
                m.correctness_weight * c,
                m.confidence_term(c, s.confidence),
                format_weight * (1.0 if s.format_ok else 0.0),
            )
        )
    return parts


def _make_reward(method: str) -> Callable[..., list[float]]:
    def reward(
        completions: Sequence[Any],
        gold: Sequence[str] | str,
        *,
        grader: Any = None,
        prefill: Any = None,
        format_weight: float = 0.0,
        **columns: Any,  # TRL passes prompts, completion_ids, trainer_state, other columns
    ) -> list[float]:
        scored = score_completions(completions, gold, grader=grader, prefill=prefill)
        return [p.total for p in reward_parts(method, scored, format_weight)]

    reward.__name__ = f"{method}_reward"
    reward.__qualname__ = reward.__name__
    reward.__doc__ = f"calbench {method!r} reward (see calbench.train.rewards)."
    return reward


rlvr_reward = _make_reward("rlvr")
rlcr_reward = _make_reward("rlcr")
brier_reward = _make_reward("brier")
log_reward = _make_reward("log")
asymmetric_reward = _make_reward("asymmetric")

REWARDS: dict[str, Callable[..., list[float]]] = {
    "rlvr": rlvr_reward,
    "rlcr": rlcr_reward,
    "brier": brier_reward,
    "log": log_reward,
    "asymmetric": asymmetric_reward,
}


def format_reward(completions: Sequence[Any], prefill: Any = None, **columns: Any) -> list[float]:
    """1.0 when both tags are complete and the confidence parses, else 0.0 (a separate TRL
    reward function, for use with ``reward_weights``)."""
    n = len(completions)
    out = []
    for c, pf in zip(completions, _column(prefill, n, ""), strict=True):
        ans, conf = read_response(completion_text(c, pf), pf)
        out.append(1.0 if GradedResponse(ans, conf, False, None).format_ok else 0.0)
    return out


# --------------------------------------------------------------------------------------------
# Properness: which stated q maximises the expected reward when P(correct) = p?
# --------------------------------------------------------------------------------------------


def expected_reward(method: str, q: float, p: float) -> float:
    """E[R] for a fixed answer that is right with probability p, stated with confidence q."""
    m = METHODS[method]
    return p * m.value(1.0, q) + (1.0 - p) * m.value(0.0, q)


def optimal_confidence(method: str, p: float, grid: int = 1000) -> float:
    """The q on a grid of ``grid + 1`` points in [0, 1] that maximises :func:`expected_reward`
    (the smallest such q on ties, e.g. everywhere for ``rlvr``)."""
    qs = [i / grid for i in range(grid + 1)]
    values = [expected_reward(method, q, p) for q in qs]
    best = max(values)
    return next(q for q, v in zip(qs, values, strict=True) if v >= best - 1e-12)


def asymmetric_optimum(p: float) -> float:
    """Closed form for ``asymmetric``: d/dq [p q − (1−p) q^2.5] = 0 ⇒
    q* = (p / (2.5 (1−p)))^(2/3), capped at 1 (reached from p = 2.5/3.5 ≈ 0.714)."""
    if p >= 1.0:
        return 1.0
    return min(1.0, (p / (ASYM_POWER * (1.0 - p))) ** (1.0 / (ASYM_POWER - 1.0)))
