"""``calbench score FILE... [--compat rlcr] [--output DIR]``: the metric suite from saved records,
without running any model.

Inputs, detected per file:

* calbench ``samples.jsonl`` (the file, or the run folder holding it); dataset and model come from
  the sibling ``manifest.json`` (``task``, ``model``) when present, else the records' ``task``
  field and the folder name;
* RLCR evaluation outputs (JSON lines with ``dataset``, ``model``, ``correct``, ``confidence``),
  grouped by (dataset, model);
* lm-evaluation-harness ``samples_*.jsonl``, through :mod:`calbench.report.lmeval_import` when present.

Writes ``DIR/scores.json`` keyed by dataset, then model: each entry has the headline values at
top level (``n``, ``accuracy``, ``ece``, ``brier``, ``auroc``, ``mean_confidence``, and every
other metric of the suite) and the full :func:`calbench.metrics.summarize` output (CIs, policies,
reliability table, curves). With ``--by KEY[,KEY]`` each entry also holds ``by``: the keys, and
per group of those record meta fields n, accuracy and ECE, Brier and AUROC with CIs
(:func:`breakdown`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from calbench.core.errors import UsageError
from calbench.core.records import (
    REQUIRED_FIELDS,
    RecordError,
    atomic_write_json,
    iter_jsonl_lines,
    read_samples,
)
from calbench.core.runs import wilson_interval
from calbench.report import lmeval_import
from calbench.report.importer import (
    SkippedInput,
    is_rlcr_outputs,
    is_rlcr_parse_cases,
    read_rlcr,
    regraded_groups,
)

# calbench.metrics and calbench.report.recalibrated (numpy, scipy) are imported where records
# are scored, not here: +0.7-1.9 s at import (python -X importtime), and `calbench plot` imports
# this module for group_records while it draws from metrics.json.

Key = tuple[str, str]  # (dataset, model)
BY_METRICS = ("ece", "brier", "auroc")  # per group of --by, with CIs
MAX_GROUPS = 50  # --by: each group is bootstrapped on its own (~0.3 s) and read as a table row


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
    parser.add_argument(
        "--recalibrate",
        default=None,
        metavar="METHOD[,METHOD]",
        help="also score the confidences after post-hoc recalibration: temperature, platt, "
        "isotonic, histogram (cross-fitted; see docs/recalibration.md)",
    )
    parser.add_argument(
        "--recal-folds",
        type=int,
        default=None,
        metavar="K",
        help="cross-fitting folds for --recalibrate (default 5)",
    )
    parser.add_argument(
        "--recal-seed",
        type=int,
        default=None,
        metavar="S",
        help="seed of the cross-fitting folds (default 0)",
    )
    parser.add_argument(
        "--calibration-run",
        default=None,
        metavar="RUN",
        help="fit the --recalibrate maps on this run's records (one dataset/model) and apply "
        "them to every input, instead of cross-fitting",
    )


# --- reading ---------------------------------------------------------------------------------


def _slim(rec: dict) -> dict:
    """What scoring keeps of a validated record (the rest, e.g. prompts, is not needed)."""
    out = {"id": rec["id"], "correct": rec["correct"], "confidence": rec["confidence"]}
    if isinstance(rec.get("meta"), dict):
        out["meta"] = rec["meta"]
    return out


# The RLCR format (outputs, and the parse cases beside them that are skipped) is the importer's.
_is_rlcr, _is_rlcr_parse_cases = is_rlcr_outputs, is_rlcr_parse_cases


def _first_object(path: Path) -> dict | None:
    for _, obj in iter_jsonl_lines(path):
        return obj
    return None


def _read_rlcr(path: Path) -> dict[Key, list[dict]]:
    return {key: [_slim(r) for r in recs] for key, recs in read_rlcr(path).items()}


def _manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def _read_samples(path: Path) -> dict[Key, list[dict]]:
    full = read_samples(path)
    tasks = {str(r["task"]) for r in full if r.get("task")}
    records = [_slim(r) for r in full]
    folder = path.resolve().parent
    manifest = _manifest(folder)
    dataset = manifest.get("task") or (tasks.pop() if len(tasks) == 1 else folder.name)
    model = manifest.get("model") or folder.name
    return {(str(dataset), str(model)): records}


def load_records(path: str | os.PathLike) -> dict[Key, list[dict]]:
    """Records of one input, grouped by (dataset, model). Each record is a dict with ``id``,
    ``correct`` (bool) and ``confidence`` (float in [0, 1], or None when unparsed).

    A malformed file raises RecordError naming the file and line; an unrecognised format raises
    RecordError saying what was expected.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "samples.jsonl").is_file():
            return _read_samples(path / "samples.jsonl")
        if lmeval_import.is_lmeval_samples(path):
            return lmeval_import.read_lmeval_samples(path)
        raise RecordError(f"{path}: folder holds no samples.jsonl (not a calbench run folder)")
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    if lmeval_import.is_lmeval_samples(path):
        return lmeval_import.read_lmeval_samples(path)
    first = _first_object(path)
    if first is None:
        raise RecordError(f"{path}: empty file (no records)")
    if _is_rlcr_parse_cases(first):
        raise SkippedInput(
            f"skipping {path}: RLCR confidence-parsing cases (how the RLCR evaluator read odd "
            "confidences), not evaluation outputs"
        )
    if _is_rlcr(first):
        return _read_rlcr(path)
    if all(k in first for k in REQUIRED_FIELDS):
        return _read_samples(path)
    raise RecordError(
        f"{path}: unknown format: expected calbench samples.jsonl records (id, correct, "
        "confidence), RLCR records (dataset, model, correct, confidence) or lm-eval samples; "
        f"the first record has keys {sorted(first)[:12]}"
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
    ``regrade`` = :func:`calbench.report.importer.regrade_stats` and calbench's verdicts."""
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
    recal = _recal_args(args)
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


def _recal_args(args: argparse.Namespace) -> dict:
    """score_files keywords of --recalibrate, --recal-folds, --recal-seed, --calibration-run."""
    if not any(
        x is not None
        for x in (args.recalibrate, args.recal_folds, args.recal_seed, args.calibration_run)
    ):
        return {}
    from calbench.report.recalibrated import cli_options  # lazy: see the imports

    return cli_options(args.recalibrate, args.recal_folds, args.recal_seed, args.calibration_run)
