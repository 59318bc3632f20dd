"""Records broken down by the values of their ``meta`` fields: the groups (``calbench score --by``
and ``calbench plot --by`` both draw on :func:`group_records`) and, per group, accuracy and the
calibration metrics with CIs (:func:`breakdown`)."""

from __future__ import annotations

from typing import Any

from calbench.core.errors import UsageError
from calbench.core.runs import wilson_interval

# calbench.metrics (numpy, scipy) is imported where a group is scored, not here: +0.7-1.9 s at
# import (python -X importtime), and `calbench plot` imports this module for group_records
# while it draws from metrics.json.

BY_METRICS = ("ece", "brier", "auroc")  # per group of --by, with CIs
MAX_GROUPS = 50  # --by: each group is bootstrapped on its own (~0.3 s) and read as a table row


def _natural(value: Any) -> tuple:
    # numbers in numeric order (num_terms=10 after num_terms=9), then text
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def group_records(records: list[dict], keys: list[str]) -> dict[str, list[dict]]:
    """Records grouped by the values of ``meta[keys]``, as ``{"k1=v1,k2=v2": records}`` in
    natural order of the values. A record without one of the fields has "?" there. More than
    ``MAX_GROUPS`` groups is a usage error (a breakdown is read group by group)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        meta = r.get("meta") if isinstance(r.get("meta"), dict) else {}
        groups.setdefault(tuple(meta.get(k, "?") for k in keys), []).append(r)
    if len(groups) > MAX_GROUPS:
        raise UsageError(
            f"--by {','.join(keys)}: {len(groups)} groups, more than {MAX_GROUPS}; "
            "choose coarser meta fields"
        )
    ordered = sorted(groups, key=lambda vals: tuple(_natural(v) for v in vals))
    return {
        ",".join(f"{k}={v}" for k, v in zip(keys, vals, strict=True)): groups[vals]
        for vals in ordered
    }


def breakdown(
    records: list[dict],
    keys: list[str],
    *,
    compat: str | None = None,
    policy: str = "drop",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Per group of ``meta[keys]`` (:func:`group_records`): ``n``, ``accuracy`` [95% Wilson CI],
    confidence ``parse_rate``, ``mean_confidence`` over the parsed ones, and ``BY_METRICS``
    (ECE, Brier, AUROC) as ``{"value", "lo", "hi"}`` from :func:`calbench.metrics.summarize` on
    that group's records alone (same policy, compat, resamples and seed as the whole run), with
    ``n_scored`` and ``reasons`` for a metric undefined in that group (e.g. AUROC when every
    answer in it is right). Shows where a run is miscalibrated, e.g. whether confidence falls
    with difficulty the way accuracy does."""
    from calbench.metrics import summarize  # lazy: see the note at the imports

    out = []
    for label, recs in group_records(records, keys).items():
        n = len(recs)
        k = sum(bool(r["correct"]) for r in recs)
        conf = [r["confidence"] for r in recs if r["confidence"] is not None]
        lo, hi = wilson_interval(k, n)
        summary = summarize(
            [r["correct"] for r in recs],
            [r["confidence"] for r in recs],
            n_bootstrap=n_bootstrap,
            seed=seed,
            policy=policy,
            compat=compat,
            ids=[r["id"] for r in recs],
        )
        row = {
            "group": label,
            "n": n,
            "accuracy": k / n,
            "accuracy_lo": lo,
            "accuracy_hi": hi,
            "parse_rate": len(conf) / n,
            "mean_confidence": sum(conf) / len(conf) if conf else None,
            "n_scored": summary["n_scored"],
        }
        row.update({m: summary["metrics"][m] for m in BY_METRICS})
        reasons = {m: why for m, why in (summary.get("reasons") or {}).items() if m in BY_METRICS}
        if reasons:
            row["reasons"] = reasons
        out.append(row)
    return out
