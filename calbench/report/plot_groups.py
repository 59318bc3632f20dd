"""``calbench plot --by``: a run split into one reliability panel per group of its records'
``meta`` fields, the metric suite recomputed over each group's records."""

from __future__ import annotations

from collections.abc import Sequence

from calbench.core.errors import UsageError
from calbench.core.runs import Run, summarize_records
from calbench.report.score_groups import group_records

MAX_PANELS = 12  # --by: one reliability panel per group; more would be unreadable


def group_runs(
    runs: Sequence[Run], keys: Sequence[str], *, max_panels: int = MAX_PANELS
) -> tuple[list[Run], list[str]]:
    """One run per (run, group of the records' ``meta[keys]``) and its group label, for one
    reliability panel each: the group's records with the metric suite recomputed over them
    (the run's own policy and compat). UsageError when a run has no samples.jsonl or there
    would be more than ``max_panels`` panels (counted before anything is computed)."""
    keys = list(keys)
    grouped = []
    for run in runs:
        if not run.records:
            raise UsageError(f"{run.path}: --by needs the run's records (no samples.jsonl)")
        grouped.append((run, group_records(run.records, keys)))
    total = sum(len(g) for _, g in grouped)
    if total > max_panels:
        counts = ", ".join(f"{run.label}: {len(g)}" for run, g in grouped[:4])
        raise UsageError(
            f"--by {','.join(keys)} gives {total} panels ({counts}{', …' if len(grouped) > 4 else ''}"
            f"), more than {max_panels}; choose coarser meta fields or fewer runs "
            "(--task, --model), or see every group's numbers with calbench score --by"
        )
    out_runs, labels = [], []
    for run, groups in grouped:
        policy = str(run.summary.get("policy") or run.manifest.get("policy") or "drop")
        compat = run.summary.get("compat") or run.manifest.get("compat")
        for label, recs in groups.items():
            summary = summarize_records(recs, policy=policy, compat=compat)
            out_runs.append(
                Run(
                    path=run.path,
                    manifest=run.manifest,
                    summary=summary,
                    recomputed=True,
                    _records=recs,
                )
            )
            labels.append(label)
    return out_runs, labels
