"""``calbench leaderboard``: one CI-aware table per task from every run under a results folder.

Which rows are ranked, on what number and in which order is :mod:`calbench.report.ranking` (the
rule is also stated on the page and in docs/reports.md): by default the Brier score over all n
records, an unparsed confidence counted as 0.5; rows that cannot be compared (run not complete,
parse rate below 50%, accuracy at the floor, other questions) are listed unranked with the
reason. The other metric columns are the ``drop`` view from ``metrics.json``.

Outputs (``--out``, default ``leaderboard/``): ``leaderboard.md``, ``leaderboard.csv``,
``leaderboard.json`` (list of rows), ``index.html`` (static: no server, no CDN; inline CSS/JS;
sortable columns, task filter, each row's reliability diagram one click away), all rendered by
:mod:`calbench.report.leaderboard_formats`, and ``diagrams/<slug>.svg``. Every file name
written is made here (slugs are ``[a-z0-9-]`` plus a hash), never taken from a run's names, so
nothing is written outside ``--out``. Every run's records are read and checked before the first
file is written.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from calbench.core.errors import UsageError
from calbench.core.records import atomic_write_json, atomic_write_text
from calbench.core.runs import Run, load_runs, parse_rate
from calbench.report.leaderboard_formats import to_csv, to_html, to_json_rows, to_markdown
from calbench.report.ranking import (
    COLUMNS,
    DEFAULT_RANK_BY,
    HIGHER_IS_BETTER,
    rank_rows,
    ranking,
    run_reasons,
)
from calbench.report.recal_options import add_recal_arguments, recal_keywords
from calbench.report.seeds import seed_groups, seeds_html, seeds_markdown

DIAGRAMS = "diagrams"


# ---------------------------------------------------------------------------- rows and ranking


def run_source(run: Run) -> dict[str, Any]:
    """Where a run's records come from: the manifest's ``source`` (``calbench import`` writes
    ``{"kind": "imported", "format", "from": {"file", "sha256"}, "grader"}``), else
    ``{"kind": "generated"}``."""
    src = run.manifest.get("source")
    if isinstance(src, dict) and src.get("kind"):
        return {k: src.get(k) for k in ("kind", "format", "from", "grader")}
    return {"kind": "generated"}


def _slug(run: Run, rel_path: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", f"{run.task}-{run.model}-{run.elicitation}".lower())
    base = base.strip("-")[:80] or "run"
    # The hash keeps slugs unique when names differ only in characters the slug drops.
    digest = hashlib.sha256(
        "\0".join([run.task, run.model, run.elicitation, rel_path]).encode()
    ).hexdigest()[:8]
    return f"{base}-{digest}"


def build_rows(
    runs: list[Run], *, base: Path | None = None, metric: str = DEFAULT_RANK_BY
) -> list[dict[str, Any]]:
    """One row per run: identifiers, n, ``status``, every column as ``{"value", "lo", "hi"}``
    (the drop view), ``ranking`` (:func:`calbench.report.ranking.ranking` of ``metric``), and for
    :func:`rank_rows` ``_reasons`` (:func:`calbench.report.ranking.run_reasons`), ``_ids`` and
    ``_records`` (the paired "=" test)."""
    if metric not in HIGHER_IS_BETTER:
        raise UsageError(f"cannot rank by {metric!r}; choose one of {', '.join(HIGHER_IS_BETTER)}")
    rows = []
    for run in runs:
        rel = os.path.relpath(run.path, base) if base else str(run.path)
        row: dict[str, Any] = {
            "task": run.task,
            "model": run.model,
            "elicitation": run.elicitation,
            "n": run.n,
            "rank": None,
            "rank_shared": False,
            "unranked_reason": None,
            "status": run.status,
            "ranking": ranking(run, metric),
        }
        for key, _, _ in COLUMNS:
            row[key] = parse_rate(run) if key == "parse_rate" else run.metric(key)
        row["n_scored"] = run.summary.get("n_scored")
        row["policy"] = run.summary.get("policy")
        row["source"] = run_source(run)
        row["run"] = Path(rel).as_posix()
        row["slug"] = _slug(run, row["run"])
        row["diagram"] = None
        row["_reasons"] = run_reasons(run)
        row["_ids"] = run.question_ids()
        row["_records"] = run.records  # read once by Run; the paired "=" test pairs them
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- build


def build(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    rank_by: str = DEFAULT_RANK_BY,
    diagrams: bool = True,
    recompute: bool = False,
    recalibrate: list[str] | None = None,
    recal_folds: int | None = None,
    recal_seed: int = 0,
) -> list[dict[str, Any]]:
    """Write the leaderboard of every run under ``results_dir`` into ``out_dir``; return rows.
    With ``recalibrate`` (methods), each run with records also gets derived, unranked rows
    ``<model> +<method>`` (:func:`calbench.report.recalibrated.recalibrated_runs`)."""
    if rank_by not in HIGHER_IS_BETTER:
        raise UsageError(f"--rank-by {rank_by}: choose one of {', '.join(HIGHER_IS_BETTER)}")
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    runs = load_runs([results_dir], recompute=recompute)
    if recalibrate:
        # lazy: recalibrated (numpy, scipy, calbench.metrics) +0.7 s at import (python -X
        # importtime), for --recalibrate only
        from calbench.report.recalibrated import recalibrated_runs

        runs += recalibrated_runs(runs, recalibrate, recal_folds, recal_seed)
    rows = rank_rows(build_rows(runs, base=results_dir.parent, metric=rank_by), rank_by)
    seen: dict[tuple, str] = {}
    for r in rows:
        key = (r["task"], r["model"], r["elicitation"])
        if key in seen:
            print(
                f"calbench leaderboard: note: {r['run']} and {seen[key]} are both "
                f"{' / '.join(key)}; both are listed",
                file=sys.stderr,
            )
        seen.setdefault(key, r["run"])
    out_dir.mkdir(parents=True, exist_ok=True)
    diag_dir = out_dir / DIAGRAMS
    if diagrams:
        # lazy: the plot modules with matplotlib +0.7-1.4 s at import (python -X importtime),
        # which --no-diagrams never uses
        from calbench.report.plot_reliability import reliability_figure
        from calbench.report.plot_style import save_figure

        # a recalibrated row shares its run's folder: the model name tells them apart
        by_run = {
            (str(Path(os.path.relpath(run.path, results_dir.parent)).as_posix()), run.model): run
            for run in runs
        }
        diag_dir.mkdir(exist_ok=True)
        wanted = set()
        for r in rows:
            name = f"{r['slug']}.svg"
            save_figure(reliability_figure([by_run[(r["run"], r["model"])]]), diag_dir / name)
            r["diagram"] = f"{DIAGRAMS}/{name}"
            wanted.add(name)
        # Diagrams of runs no longer in the results would otherwise linger in a committed folder.
        for stale in diag_dir.glob("*.svg"):
            if stale.name not in wanted:
                stale.unlink()
    groups = seed_groups(rows)
    markdown = to_markdown(rows, rank_by)
    atomic_write_text(
        out_dir / "leaderboard.md", markdown + ("\n" if groups else "") + seeds_markdown(groups)
    )
    atomic_write_json(out_dir / "seeds.json", groups)
    atomic_write_text(out_dir / "leaderboard.csv", to_csv(rows))
    atomic_write_json(out_dir / "leaderboard.json", to_json_rows(rows))
    atomic_write_text(out_dir / "index.html", to_html(rows, rank_by, seeds_html(groups)))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results_dir", metavar="RESULTS_DIR", help="folder searched recursively for run folders"
    )
    parser.add_argument(
        "--out", default="leaderboard", metavar="DIR", help="output folder (default: leaderboard/)"
    )
    parser.add_argument(
        "--rank-by",
        default=DEFAULT_RANK_BY,
        choices=list(HIGHER_IS_BETTER),
        help="primary metric for the ranking (default: brier)",
    )
    parser.add_argument(
        "--no-diagrams",
        action="store_true",
        help="skip drawing the per-row reliability diagrams (faster)",
    )
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="recompute metrics from samples.jsonl instead of reading metrics.json",
    )
    add_recal_arguments(
        parser,
        "add unranked rows '<model> +METHOD' scoring each run's confidences after cross-fitted "
        "recalibration (temperature, platt, isotonic, histogram)",
    )


def run(args: argparse.Namespace) -> int:
    if not Path(args.results_dir).is_dir():
        raise UsageError(f"{args.results_dir}: not a folder")
    rows = build(
        args.results_dir,
        args.out,
        rank_by=args.rank_by,
        diagrams=not args.no_diagrams,
        recompute=args.recompute,
        **recal_keywords(args),
    )
    tasks = len({r["task"] for r in rows})
    print(
        f"wrote {args.out}/index.html, leaderboard.md/.csv/.json: "
        f"{len(rows)} rows, {tasks} task{'s' if tasks != 1 else ''}"
    )
    return 0
