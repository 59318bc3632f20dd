"""calbench rewards as a verl custom reward function.

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` once per
response and accepts a float or a dict with a ``"score"`` key (the other keys are logged). Point
verl at this file::

    custom_reward_function.path=$(python -c "import calbench.train.verl_reward as m; print(m.__file__)")
    custom_reward_function.name=compute_score
    +custom_reward_function.reward_kwargs.method=rlcr      # optional: rlvr|rlcr|brier|log|asymmetric

``reward_kwargs`` reach :func:`compute_score` as keyword arguments. They are the one place the
run's objective is set: ``method`` (default ``rlcr``) and ``format_weight`` (default 0). A row's
``extra_info`` may repeat them, and a row that states a different value raises ``ValueError``
instead of silently training another objective. ``extra_info`` may carry ``grader`` and
``prefill`` per row (they describe the row's data; a row's value wins).
:func:`verl_rows` builds the parquet rows verl's RL dataset expects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from calbench.core.prompts import build_prompt
from calbench.train.rewards import METHODS, reward_parts, score_completions

DEFAULT_METHOD = "rlcr"
DEFAULT_FORMAT_WEIGHT = 0.0


def _run_setting(name: str, configured: Any, default: Any, extra: dict) -> Any:
    """The run's value of ``name``: ``reward_kwargs``'s (else ``default``). A row's
    ``extra_info[name]`` must agree with it; a row without one (or with None, as parquet stores
    a key that only some rows have) uses it."""
    value = default if configured is None else configured
    row = extra.get(name)
    if row is not None and row != value:
        source = (
            "custom_reward_function.reward_kwargs"
            if configured is not None
            else "the default; set custom_reward_function.reward_kwargs"
        )
        raise ValueError(
            f"calbench reward {name} conflict: this row's extra_info says {name}={row!r} but the "
            f"run is configured with {name}={value!r} ({source}.{name}); build the rows without "
            f"{name} or with the configured value"
        )
    return value


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict | None = None,
    *,
    method: str | None = None,
    format_weight: float | None = None,
    grader: str | None = None,
    prefill: str | None = None,
    **_: Any,
) -> dict[str, float]:
    """The calbench reward of one response, with its parts (all finite floats).

    ``method`` and ``format_weight`` come from ``reward_kwargs``; ``extra_info`` may only repeat
    them (a different value is a ``ValueError`` naming both)."""
    extra = extra_info or {}
    method = _run_setting("method", method, DEFAULT_METHOD, extra)
    if method not in METHODS:
        raise ValueError(f"unknown calbench reward {method!r}; choose from {sorted(METHODS)}")
    weight = float(_run_setting("format_weight", format_weight, DEFAULT_FORMAT_WEIGHT, extra))
    if not math.isfinite(weight):
        raise ValueError(f"calbench format_weight must be finite, not {weight!r}")
    row_grader, row_prefill = extra.get("grader"), extra.get("prefill")
    scored = score_completions(
        [solution_str],
        [str(ground_truth)],
        grader=grader if row_grader is None else row_grader,
        prefill=prefill if row_prefill is None else row_prefill,
    )
    part = reward_parts(method, scored, weight)[0]
    s = scored[0]
    return {
        "score": part.total,
        "acc": 1.0 if s.correct else 0.0,
        "confidence": s.confidence if s.confidence is not None else -1.0,  # -1: unparsed
        "confidence_parsed": 0.0 if s.confidence is None else 1.0,
        "format": 1.0 if s.format_ok else 0.0,
        "reward_confidence": part.confidence,
    }


def verl_rows(
    items: Sequence[dict],
    elicitation: str = "tags",
    method: str | None = None,
    split: str = "train",
) -> list[dict]:
    """verl RL-dataset rows (write with ``datasets.Dataset.from_list(rows).to_parquet(path)``).

    verl renders ``prompt`` with the chat template and a generation prompt; under the prefill
    elicitation the ``<answer>`` prefill is not in verl's prompt, and ``compute_score`` puts it
    back in front of the response (``extra_info["prefill"]``). The reward method is set in
    verl's ``reward_kwargs``; ``method``, when given, is recorded in each row's ``extra_info``
    and checked against that setting by :func:`compute_score`."""
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown calbench reward {method!r}; choose from {sorted(METHODS)}")
    rows = []
    for i, it in enumerate(items):
        p = build_prompt(it["question"], elicitation)
        extra = {"split": split, "index": i, "id": it.get("id", ""), "prefill": p.prefill}
        if method is not None:
            extra["method"] = method
        rows.append(
            {
                "data_source": "calbench/chain_sum",
                "prompt": p.messages,
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(it["gold"])},
                "extra_info": extra,
            }
        )
    return rows
