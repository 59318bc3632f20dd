"""Scores after post-hoc recalibration, shared by ``calbench score --recalibrate`` and
``calbench leaderboard --recalibrate``.

A run's records are recalibrated by :mod:`calbench.metrics.recalibration` -- cross-fitted (each
record scored by a map fitted on the other folds; records sharing an id share a fold) or by a
map fitted on another run -- and the recalibrated confidences go through
:func:`calbench.metrics.summarize` like stated ones. The bootstrap CIs are conditional on the
fitted maps (``CI_NOTE``): refitting k maps in each of 1,000 resamples would leave the
count-based bootstrap of the suite for a per-resample loop, too slow for every run of a
leaderboard.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from calbench.core.errors import UsageError
from calbench.core.records import RecordError
from calbench.core.runs import Run, summarize_records
from calbench.metrics import MetricInputError, summarize
from calbench.metrics import recalibration as recal
from calbench.report.score_inputs import load_records

CI_NOTE = (
    "conditional on the fitted maps: the bootstrap resamples the recalibrated confidences with "
    "the maps held fixed (not refitted in each resample), so the intervals leave out the "
    "variability of the fit itself and are narrower than a refit-in-every-resample bootstrap"
)
FOLDS_NOTE = (
    "stratified by outcome: units (records; records sharing an id together) shuffled with the "
    "seed, sorted by share right, dealt round-robin; each fold scored by the map fitted on the "
    "other folds"
)
TABLE_NOTE = (
    "Recalibrated rows: {mode}. Their 95% CIs are conditional on the fitted maps (not refitted "
    "in each bootstrap resample), so they are somewhat too narrow."
)


def parse_methods(text: str, flag: str = "--recalibrate") -> list[str]:
    """``"temperature,platt"`` -> the listed methods in order, once each; UsageError naming
    ``flag`` for an empty list or an unknown method."""
    names = list(dict.fromkeys(m.strip() for m in str(text).split(",") if m.strip()))
    if not names:
        raise UsageError(f"{flag}: name one or more of {', '.join(recal.METHODS)}")
    unknown = [m for m in names if m not in recal.METHODS]
    if unknown:
        raise UsageError(
            f"{flag}: unknown method {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(recal.METHODS)}"
        )
    return names


def cli_options(
    recalibrate: str | None, folds: int | None, seed: int | None, calibration_run: str | None = None
) -> dict:
    """The build/score_files keywords of ``--recalibrate``, ``--recal-folds``, ``--recal-seed``
    (and for score ``--calibration-run``); empty without ``--recalibrate``; UsageError for
    values or combinations that cannot mean anything."""
    if recalibrate is None:
        given = [
            flag
            for flag, v in (
                ("--recal-folds", folds),
                ("--recal-seed", seed),
                ("--calibration-run", calibration_run),
            )
            if v is not None
        ]
        if given:
            raise UsageError(f"{' and '.join(given)} only apply with --recalibrate")
        return {}
    if calibration_run is not None:
        if folds is not None or seed is not None:
            raise UsageError(
                "--recal-folds/--recal-seed set the cross-fitting folds; with "
                "--calibration-run the maps are fitted on that run instead"
            )
        return {"recalibrate": parse_methods(recalibrate), "calibration_run": calibration_run}
    if folds is not None and folds < 2:
        raise UsageError(f"--recal-folds must be >= 2, got {folds}")
    if seed is not None and seed < 0:
        raise UsageError(f"--recal-seed must be >= 0, got {seed}")
    return {
        "recalibrate": parse_methods(recalibrate),
        "recal_folds": folds,
        "recal_seed": 0 if seed is None else seed,
    }


def _arrays(records: list[dict]) -> tuple[list[bool], list[float], list[str]]:
    correct = [bool(r["correct"]) for r in records]
    conf = [math.nan if r["confidence"] is None else float(r["confidence"]) for r in records]
    return correct, conf, [str(r["id"]) for r in records]


def _brief(m: dict) -> dict:
    """The few numbers of a fitted map worth recording for each fold."""
    keep = {"temperature": ("T", "at_bound"), "platt": ("a", "b")}.get(m["method"], ())
    out: dict[str, Any] = {"n_fit": m["n_fit"]} | {k: m[k] for k in keep}
    if m["method"] == "isotonic":
        out["n_points"] = len(m["x"])
    elif m["method"] == "histogram":
        out["n_bins_used"] = len(m["values"])
    return out


def crossfit_records(
    records: list[dict], method: str, k: int = recal.CROSSFIT_K, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """Cross-fitted confidences of ``records`` (NaN where unparsed) and the fit settings."""
    correct, conf, ids = _arrays(records)
    out, _, maps = recal.crossfit_detail(correct, conf, method, k, seed, groups=ids)
    settings: dict[str, Any] = {
        "method": method,
        "mode": "crossfit",
        "k": k,
        "seed": seed,
        "unit": "id" if len(set(ids)) < len(ids) else "record",
        "folds": FOLDS_NOTE,
    }
    settings.update(_map_settings(method))
    settings["fold_maps"] = [_brief(m) for m in maps]
    return out, settings


def _map_settings(method: str) -> dict:
    if method in ("temperature", "platt"):
        return {"eps": recal.EPS}
    if method == "histogram":
        return {"n_bins": recal.HIST_BINS}
    return {}


def apply_records(records: list[dict], recal_map: dict, source: str) -> tuple[np.ndarray, dict]:
    """``recal_map`` applied to ``records`` (NaN where unparsed) and the fit settings."""
    _, conf, _ = _arrays(records)
    settings = {
        "method": recal_map["method"],
        "mode": "calibration_run",
        "calibration_run": source,
        "map": recal_map,
    }
    return recal.apply(recal_map, conf), settings


def score_entry(
    records: list[dict],
    conf: np.ndarray,
    settings: dict,
    *,
    compat: str | None = None,
    policy: str = "drop",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """``recalibrated.<method>`` of a scores.json entry: the suite (values and CIs) of the
    recalibrated confidences under the same policy, compat and bootstrap as the stated ones."""
    correct, _, ids = _arrays(records)
    s = summarize(
        correct,
        [None if math.isnan(c) else float(c) for c in conf],
        n_bootstrap=n_bootstrap,
        seed=seed,
        policy=policy,
        compat=compat,
        ids=ids,
    )
    out = {
        "fit": settings,
        "n": s["n"],
        "n_scored": s["n_scored"],
        "coverage": s["coverage"],
        "policy": s["policy"],
        "compat": s["compat"],
        "metrics": s["metrics"],
        "ci": s["ci"] | {"conditional": CI_NOTE},
    }
    if s.get("reasons"):
        out["reasons"] = s["reasons"]
    return out


def calibration(path, methods: list[str]) -> dict:
    """``--calibration-run``: the maps of ``methods`` fitted on the records of ``path`` (a file or
    run folder :func:`calbench.report.score_inputs.load_records` reads as one dataset/model), with
    where they came from (for :func:`recalibrated_entries`)."""
    try:
        loaded = load_records(path)
    except RecordError as e:
        raise UsageError(f"--calibration-run: {e}") from None
    if len(loaded) != 1:
        raise UsageError(
            f"--calibration-run {path}: holds {len(loaded)} dataset/model groups; "
            "name a file or run folder holding one"
        )
    (((dataset, _), records),) = loaded.items()
    source = str(path)
    correct, conf, ids = _arrays(records)
    try:
        maps = {m: recal.fit(correct, conf, m) for m in methods}
    except MetricInputError as e:
        raise UsageError(f"--calibration-run {source}: {e}") from None
    return {"source": source, "dataset": dataset, "ids": set(ids), "maps": maps}


def recalibrated_entries(
    records: list[dict],
    methods: list[str],
    dataset: str,
    *,
    k: int | None = None,
    seed: int = 0,
    cal: dict | None = None,
    compat: str | None = None,
    policy: str = "drop",
    n_bootstrap: int = 1000,
    boot_seed: int = 0,
) -> dict:
    """``recalibrated`` of a scores.json entry: {method: :func:`score_entry`}, cross-fitted
    (``k`` folds, default ``CROSSFIT_K``; ``seed``), or with ``cal`` (:func:`calibration`) by
    the calibration run's maps (``shared_ids`` counts the scored ids the maps were fitted on,
    when the datasets match).
    ``compat``, ``policy``, ``n_bootstrap``, ``boot_seed``: as for the stated confidences."""
    k = recal.CROSSFIT_K if k is None else k
    shared = 0
    if cal is not None and cal["dataset"] == dataset:
        shared = len({str(r["id"]) for r in records} & cal["ids"])
    if shared:
        print(
            f"calbench: warning: {dataset}: {shared} of the scored records' ids are in "
            f"--calibration-run {cal['source']}: those questions are scored by maps fitted "
            "on them (in-sample)",
            file=sys.stderr,
        )
    out = {}
    for method in methods:
        if cal is None:
            conf, settings = crossfit_records(records, method, k, seed)
        else:
            conf, settings = apply_records(records, cal["maps"][method], cal["source"])
            settings["shared_ids"] = shared
        out[method] = score_entry(
            records,
            conf,
            settings,
            compat=compat,
            policy=policy,
            n_bootstrap=n_bootstrap,
            seed=boot_seed,
        )
    return out


# --- leaderboard ----------------------------------------------------------------------------


def recalibrated_run(run: Run, method: str, k: int = recal.CROSSFIT_K, seed: int = 0) -> Run:
    """A derived run: ``run``'s records with cross-fitted ``method`` confidences, model named
    ``<model> +<method>``, ``manifest["recalibration"]`` = the fit settings, and its summary
    recomputed under the original summary's policy, compat and bootstrap."""
    if not run.records:
        raise UsageError(f"{run.path}: no samples.jsonl records to recalibrate")
    try:
        conf, settings = crossfit_records(run.records, method, k, seed)
    except MetricInputError as e:
        raise UsageError(f"{run.path}: --recalibrate {method}: {e}") from None
    records = [
        dict(r, confidence=None if math.isnan(c) else float(c))
        for r, c in zip(run.records, conf, strict=True)
    ]
    ci = run.summary.get("ci") or {}
    summary = summarize_records(
        records,
        policy=str(run.summary.get("policy") or "drop"),
        compat=run.summary.get("compat"),
        n_bootstrap=int(ci.get("n_bootstrap", 1000)),
        seed=int(ci.get("seed", 0)),
    )
    summary["ci"]["conditional"] = CI_NOTE
    manifest = dict(run.manifest, model=f"{run.model} +{method}", recalibration=settings)
    return Run(path=run.path, manifest=manifest, summary=summary, recomputed=True, _records=records)


def recalibrated_runs(
    runs: list[Run], methods: list[str], k: int | None = None, seed: int = 0
) -> list[Run]:
    """:func:`recalibrated_run` of every run and method, in that order. A run without
    samples.jsonl records, or with fewer parsed confidences than folds (a leaderboard lists
    runs whose confidences never parsed), gets no recalibrated rows: a note on stderr says so."""
    k = recal.CROSSFIT_K if k is None else k
    out = []
    for run in runs:
        for m in methods:
            try:
                out.append(recalibrated_run(run, m, k, seed))
            except UsageError as e:
                print(f"calbench: note: no recalibrated row: {e}", file=sys.stderr)
                break
    return out


# --- printing ------------------------------------------------------------------------------


def _cell(metrics: dict, name: str) -> str:
    m = metrics[name]
    if m["value"] is None:
        return "n/a"
    ci = "" if m["lo"] is None else f" [{m['lo']:.3f}, {m['hi']:.3f}]"
    return f"{m['value']:.3f}{ci}"


def print_recalibrated(scores: dict[str, dict[str, dict]]) -> None:
    """Each entry's stated and recalibrated ECE, smooth ECE, Brier and AUROC, with 95% CIs."""
    table = Table(title="calbench score: after recalibration")
    cols = ("dataset", "model", "confidence", "ECE", "smooth ECE", "Brier", "AUROC")
    for col in cols[:3]:
        table.add_column(col, overflow="fold")
    for col in cols[3:]:
        table.add_column(col, justify="right", no_wrap=True)
    modes = set()
    for dataset, models in scores.items():
        for model, e in models.items():
            rows = [("stated", e["metrics"])]
            for method, r in (e.get("recalibrated") or {}).items():
                fit = r["fit"]
                modes.add(
                    f"cross-fitted, k={fit['k']}, seed={fit['seed']}"
                    if fit["mode"] == "crossfit"
                    else f"fitted on {fit['calibration_run']}"
                )
                rows.append((f"+{method}", r["metrics"]))
            for label, metrics in rows:
                table.add_row(
                    dataset,
                    model,
                    label,
                    *(_cell(metrics, m) for m in ("ece", "smooth_ece", "brier", "auroc")),
                )
    console = Console(width=max(Console().width, 160))
    console.print(table)
    console.print(TABLE_NOTE.format(mode="; ".join(sorted(modes))))
