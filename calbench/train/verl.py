"""calbench rewards as a verl custom reward function.

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` once per
response and accepts a float or a dict with a ``"score"`` key (the other keys are logged). Point
verl at this file::

    custom_reward_function.path=$(python -c "import calbench.train.verl as m; print(m.__file__)")
    custom_reward_function.name=compute_score
    +custom_reward_function.reward_kwargs.method=rlcr      # optional: rlvr|rlcr|brier|log|asymmetric

``reward_kwargs`` reach :func:`compute_score` as keyword arguments; ``extra_info`` may also carry
``method``, ``grader``, ``prefill`` or ``format_weight`` per row (a row's value wins).
:func:`verl_rows` builds the parquet rows verl's RL dataset expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from calbench.prompts import build_prompt
from calbench.train.rewards import METHODS, reward_parts, score_completions


def compute_score(data_source: str, solution_str: str, ground_truth: str,
                  extra_info: dict | None = None, *, method: str = "rlcr",
                  format_weight: float = 0.0, grader: str | None = None,
                  prefill: str | None = None, **_: Any) -> dict[str, float]:
    """The calbench reward of one response, with its parts (all finite floats)."""
    extra = extra_info or {}
    method = extra.get("method", method)
    if method not in METHODS:
        raise ValueError(f"unknown calbench reward {method!r}; choose from {sorted(METHODS)}")
    scored = score_completions([solution_str], [str(ground_truth)],
                               grader=extra.get("grader", grader),
                               prefill=extra.get("prefill", prefill))
    part = reward_parts(method, scored, float(extra.get("format_weight", format_weight)))[0]
    s = scored[0]
    return {
        "score": part.total,
        "acc": 1.0 if s.correct else 0.0,
        "confidence": s.confidence if s.confidence is not None else -1.0,  # -1: unparsed
        "confidence_parsed": 0.0 if s.confidence is None else 1.0,
        "format": 1.0 if s.format_ok else 0.0,
        "reward_confidence": part.confidence,
    }


def verl_rows(items: Sequence[dict], elicitation: str = "tags", method: str = "rlcr",
              split: str = "train") -> list[dict]:
    """verl RL-dataset rows (write with ``datasets.Dataset.from_list(rows).to_parquet(path)``).

    verl renders ``prompt`` with the chat template and a generation prompt; under the prefill
    elicitation the ``<answer>`` prefill is not in verl's prompt, and ``compute_score`` puts it
    back in front of the response (``extra_info["prefill"]``)."""
    rows = []
    for i, it in enumerate(items):
        p = build_prompt(it["question"], elicitation)
        rows.append({
            "data_source": "calbench/chain_sum",
            "prompt": p.messages,
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(it["gold"])},
            "extra_info": {"split": split, "index": i, "id": it.get("id", ""),
                           "method": method, "prefill": p.prefill},
        })
    return rows
