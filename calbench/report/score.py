"""``calbench score FILE... [--compat rlcr] [--output DIR]``: the metric suite from saved records,
without running any model.

Inputs (calbench ``samples.jsonl`` or run folders, RLCR evaluation outputs, lm-evaluation-harness
``samples_*.jsonl``) are detected per file by :func:`calbench.report.score_inputs.load_records`.

Writes ``DIR/scores.json`` keyed by dataset, then model: each entry has the headline values at
top level (``n``, ``accuracy``, ``ece``, ``brier``, ``auroc``, ``mean_confidence``, and every
other metric of the suite) and the full :func:`calbench.metrics.summarize` output (CIs, policies,
reliability table, curves). With ``--by KEY[,KEY]`` each entry also holds ``by``: the keys, and
per group of those record meta fields n, accuracy and ECE, Brier and AUROC with CIs
(:func:`calbench.report.score_groups.breakdown`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from calbench.core.errors import UsageError
from calbench.core.records import atomic_write_json
from calbench.report.import_runs import SkippedInput, regraded_groups
from calbench.report.recal_options import add_recal_arguments, recal_keywords
from calbench.report.score_groups import BY_METRICS, breakdown
from calbench.report.score_inputs import Key, load_records

# calbench.metrics and calbench.report.recalibrated (numpy, scipy) are imported where records
# are scored, not here: +0.7-1.9 s at import (python -X importtime), which `calbench score
# --help` and a usage error never need.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="calbench samples.jsonl (or run folder), RLCR .jsonl, or lm-eval samples_*.jsonl",
    )
    parser.add_argument(
        "--compat",
        choices=["rlcr"],
        default=None,
        help="reproduce the RLCR repository's numbers: its ECE bin edges and missing confidence = 0",
    )
    parser.add_argument(
        "--output", "-o", default=".", metavar="DIR", help="folder for scores.json (default: .)"
    )
    parser.add_argument(
        "--policy",
        choices=["drop", "fill=0.5", "fill=0"],
        default="drop",
        help="unparsed confidences: drop those records (default), or fill with 0.5 / 0 "
        "(--compat rlcr implies fill=0)",
    )
    parser.add_argument(
        "--n-bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--regrade",
        action="store_true",
        help="released outputs (RLCR .jsonl, lm-eval samples): grade each response again with "
        "calbench's parser and grader; entries get 'regrade' (changes, both accuracies)",
    )
    parser.add_argument(
        "--by",
        default=None,
        metavar="KEY[,KEY]",
        help="also break each run down by these record meta fields (e.g. num_terms,num_digits "
        "for chain_sum): per group n, accuracy, parse rate, mean stated confidence, and "
        "ECE, Brier and AUROC with bootstrap CIs",
    )
    add_recal_arguments(
        parser,
        "also score the confidences after post-hoc recalibration: temperature, platt, "
        "isotonic, histogram (cross-fitted; see docs/recalibration.md)",
    )
    parser.add_argument(
        "--calibration-run",
        default=None,
        metavar="RUN",
        help="fit the --recalibrate maps on this run's records (one dataset/model) and apply "
        "them to every input, instead of cross-fitting",
    )


# --- scoring ---------------------------------------------------------------------------------


def score_records(
    records: list[dict],
    *,
    compat: str | None = None,
    policy: str = "drop",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """One scores.json entry: headline values at top level plus the full summary."""
    from calbench.metrics import METRICS, summarize  # lazy: see the note at the imports

    correct = [r["correct"] for r in records]
    conf = [r["confidence"] for r in records]
    ids = [r["id"] for r in records]
    summary = summarize(
        correct, conf, n_bootstrap=n_bootstrap, seed=seed, policy=policy, compat=compat, ids=ids
    )
    entry: dict[str, Any] = {"n": summary["n"]}
    entry.update({m: summary["metrics"][m]["value"] for m in METRICS})
    entry.update(summary)
    return entry


def score_files(
    files: list[str | os.PathLike],
    *,
    compat: str | None = None,
    policy: str = "drop",
    n_bootstrap: int = 1000,
    seed: int = 0,
    by: list[str] | None = None,
    recalibrate: list[str] | None = None,
    recal_folds: int | None = None,
    recal_seed: int = 0,
    calibration_run: str | os.PathLike | None = None,
    regrade: bool = False,
) -> dict[str, dict[str, dict]]:
    """scores.json content for the given inputs: {dataset: {model: entry}}; with ``by``, each
    entry also holds ``by`` = {"keys", "groups": :func:`breakdown`} from the same records; with
    ``recalibrate`` (methods), ``recalibrated`` =
    :func:`calbench.report.recalibrated.recalibrated_entries`, cross-fitted (``recal_folds``,
    ``recal_seed``) or fitted on ``calibration_run``; with ``regrade`` (released outputs only),
    ``regrade`` = :func:`calbench.report.import_grading.regrade_stats` and calbench's verdicts."""
    from calbench.metrics import MetricInputError  # lazy: see the note at the imports

    groups: dict[Key, list[dict]] = {}
    sources: dict[Key, str] = {}
    regrades: dict[Key, dict] = {}
    for f in files:
        try:
            if regrade:
                pairs = regraded_groups(f)
                loaded = {key: recs for key, (recs, _) in pairs.items()}
                regrades.update({key: stats for key, (_, stats) in pairs.items()})
            else:
                loaded = load_records(f)
        except SkippedInput as e:
            print(f"calbench score: {e}", file=sys.stderr)
            continue
        for key, recs in loaded.items():
            if key in groups:
                raise UsageError(
                    f"dataset {key[0]!r}, model {key[1]!r} appears in both {sources[key]} and {f}"
                )
            groups[key] = recs
            sources[key] = str(f)
    if not groups:
        raise UsageError("no records to score in the given inputs")
    cal = None
    if recalibrate and calibration_run:
        from calbench.report.recalibrated import calibration  # lazy: see the imports

        cal = calibration(calibration_run, recalibrate)
    scores: dict[str, dict[str, dict]] = {}
    for (dataset, model), recs in sorted(groups.items()):
        try:
            entry = score_records(
                recs, compat=compat, policy=policy, n_bootstrap=n_bootstrap, seed=seed
            )
            if recalibrate:
                from calbench.report.recalibrated import recalibrated_entries  # lazy: see top

                entry["recalibrated"] = recalibrated_entries(
                    recs,
                    recalibrate,
                    dataset,
                    k=recal_folds,
                    seed=recal_seed,
                    cal=cal,
                    compat=compat,
                    policy=policy,
                    n_bootstrap=n_bootstrap,
                    boot_seed=seed,
                )
        except MetricInputError as e:
            raise UsageError(f"{sources[(dataset, model)]} ({dataset}, {model}): {e}") from None
        entry["source"] = sources[(dataset, model)]
        if (dataset, model) in regrades:
            entry["regrade"] = regrades[(dataset, model)]
        if by:
            entry["by"] = {
                "keys": by,
                "metrics": list(BY_METRICS),
                "groups": breakdown(
                    recs, by, compat=compat, policy=policy, n_bootstrap=n_bootstrap, seed=seed
                ),
            }
        scores.setdefault(dataset, {})[model] = entry
    return scores


# --- the command and its tables --------------------------------------------------------------


def _cell(m: dict) -> str:
    if m["value"] is None:
        return "n/a"
    ci = "" if m["lo"] is None else f" [{m['lo']:.3f}, {m['hi']:.3f}]"
    return f"{m['value']:.3f}{ci}"


def print_breakdown(dataset: str, model: str, rows: list[dict]) -> None:
    # Names and group labels come from the records: shown as plain text, never as rich markup.
    table = Table(title=Text(f"{dataset} · {model}"))
    columns = (
        "group",
        "n",
        "accuracy [95% CI]",
        "parse",
        "mean conf",
        "ECE [95% CI]",
        "Brier [95% CI]",
        "AUROC [95% CI]",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "group" else "right")
    notes = []
    for r in rows:
        mc = "n/a" if r["mean_confidence"] is None else f"{r['mean_confidence']:.3f}"
        table.add_row(
            Text(r["group"]),
            str(r["n"]),
            f"{r['accuracy']:.3f} [{r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}]",
            f"{r['parse_rate']:.0%}",
            mc,
            *(_cell(r[m]) for m in BY_METRICS),
        )
        notes += [f"{r['group']}: {m} undefined: {why}" for m, why in r.get("reasons", {}).items()]
    console = Console(width=max(Console().width, 150))
    console.print(table)
    for note in notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)


def _value(entry: dict, name: str) -> str:
    v = entry["metrics"][name]["value"]
    return "n/a" if v is None else f"{v:.3f}"


def _ci(entry: dict, name: str) -> str:
    m = entry["metrics"][name]
    return "" if m["lo"] is None else f"{m['lo']:.3f}-{m['hi']:.3f}"


def print_table(scores: dict[str, dict[str, dict]]) -> None:
    table = Table(title="calbench score")
    columns = (
        "dataset",
        "model",
        "n",
        "cov",
        "acc",
        "ECE",
        "ECE 95% CI",
        "smECE",
        "Brier",
        "AUROC",
    )
    for col in columns:
        if col in ("dataset", "model"):
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right", no_wrap=True)
    for dataset, models in scores.items():
        for model, e in models.items():
            table.add_row(
                dataset,
                model,
                str(e["n"]),
                f"{e['coverage']:.0%}",
                _value(e, "accuracy"),
                _value(e, "ece"),
                _ci(e, "ece"),
                _value(e, "smooth_ece"),
                _value(e, "brier"),
                _value(e, "auroc"),
            )
    Console(width=max(Console().width, 120)).print(table)


def run(args: argparse.Namespace) -> int:
    if args.n_bootstrap < 0:
        raise UsageError("--n-bootstrap must be >= 0")
    recal = recal_keywords(args, args.calibration_run)
    scores = score_files(
        args.files,
        compat=args.compat,
        policy=args.policy,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        by=[k for k in args.by.split(",") if k] if args.by else None,
        regrade=args.regrade,
        **recal,
    )
    for dataset, models in scores.items():
        for model, entry in models.items():
            if "by" in entry:
                print_breakdown(dataset, model, entry["by"]["groups"])
    out = Path(args.output) / "scores.json"
    atomic_write_json(out, scores)
    print_table(scores)
    if recal:
        from calbench.report.recalibrated import print_recalibrated  # lazy: see the imports

        print_recalibrated(scores)
    print(f"wrote {out}")
    return 0
