"""The Python API: run folders as a pandas DataFrame, and ``calbench eval`` as a function.

    import calbench
    df = calbench.load_runs("results")              # one row per run folder
    paths = calbench.evaluate(model="smollm2-135m", tasks=["chain_sum"], limit=20)

Both are thin layers over what the command line uses: :func:`load_runs_frame` reads runs with
:func:`calbench.core.runs.load_runs` (the loader of ``calbench plot`` and ``leaderboard``), and
:func:`evaluate` parses its options with ``calbench eval``'s own argument parser and calls the
function ``calbench eval`` calls (:func:`calbench.eval.evaluate.evaluate_all`). ``calbench``
exposes them lazily, so ``import calbench`` imports neither pandas nor torch.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from calbench.core.errors import UsageError
from calbench.core.runs import REPORT_METRICS, Run, load_runs, parse_rate
from calbench.eval import evaluate as eval_command

# Columns before the metrics, in this order; every metric then adds NAME, NAME_lo, NAME_hi.
RUN_COLUMNS = (
    "task",
    "model",
    "elicitation",
    "n",
    "n_scored",
    "parse_rate",
    "parse_rate_lo",
    "parse_rate_hi",
    "status",
    "backend",
    "source",
    "recomputed",
    "path",
)


def _metric_names(runs: Sequence[Run]) -> list[str]:
    """The headline metrics first (as the reports order them), then every other metric any run's
    summary holds, in the order they first appear."""
    names = list(REPORT_METRICS)
    for run in runs:
        for name, m in (run.summary.get("metrics") or {}).items():
            if isinstance(m, dict) and name not in names:
                names.append(name)
    return names


def _row(run: Run, metrics: Sequence[str]) -> dict[str, Any]:
    pr = parse_rate(run)
    n_scored = run.summary.get("n_scored")
    row: dict[str, Any] = {
        "task": run.task,
        "model": run.model,
        "elicitation": run.elicitation,
        "n": run.n,
        "n_scored": int(n_scored) if n_scored is not None else None,
        "parse_rate": pr["value"],
        "parse_rate_lo": pr["lo"],
        "parse_rate_hi": pr["hi"],
        "status": run.status,
        "backend": run.manifest.get("backend"),
        # where the numbers came from, when the manifest says (e.g. imported outputs)
        "source": run.manifest.get("source", run.manifest.get("provenance")),
        "recomputed": run.recomputed,
        "path": str(run.path),
    }
    for name in metrics:
        m = run.metric(name)
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = m["value"], m["lo"], m["hi"]
    return row


def load_runs_frame(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, recompute: bool = False
) -> pd.DataFrame:
    """One row per run folder under ``paths`` (a run folder, a folder searched for run folders,
    or a list of them), sorted by path.

    Columns: task, model, elicitation, n, n_scored, parse_rate (share of parsed confidences)
    with its 95% Wilson interval (``parse_rate_lo``/``_hi``), status, backend, source (the
    manifest's ``source`` or ``provenance``, else None), recomputed (True when the summary was
    recomputed from samples.jsonl), path; then every metric of the summaries as NAME, NAME_lo,
    NAME_hi (95% bootstrap interval), the reports' headline metrics first. A metric a run does
    not define is NaN. Raises UsageError (or RecordError) naming the file when a path does not
    exist, holds no run, or a run's files cannot be read."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    runs = load_runs(list(paths), recompute=recompute)
    metrics = _metric_names(runs)
    columns = list(RUN_COLUMNS) + [f"{m}{s}" for m in metrics for s in ("", "_lo", "_hi")]
    df = pd.DataFrame([_row(r, metrics) for r in runs], columns=columns)
    numeric = ["parse_rate", "parse_rate_lo", "parse_rate_hi"] + columns[len(RUN_COLUMNS) :]
    df[numeric] = df[numeric].astype("float64")  # None (undefined) -> NaN
    df["n_scored"] = df["n_scored"].astype("Int64")  # nullable: a summary may lack it
    return df


class _Parser(argparse.ArgumentParser):
    """``calbench eval``'s parser, raising UsageError instead of exiting the interpreter."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _names(value: str | Sequence[str], what: str) -> str:
    """One ``--model`` / ``--tasks`` value from a name or a list of names."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    items = [str(v) for v in value]
    if not items:
        raise UsageError(f"{what}: empty list")
    for v in items:
        if "," in v:
            raise UsageError(
                f"{what}: {v!r} holds a comma, which separates names; pass it on its own"
            )
    return ",".join(items)


def eval_arguments(
    model: str | Sequence[str], tasks: str | Sequence[str], **options: Any
) -> argparse.Namespace:
    """The Namespace ``calbench eval`` would parse from the same settings: each option is the
    flag's name with ``_`` for ``-`` (``limit=20`` is ``--limit 20``); True sets a switch
    (``redact=True``); None leaves an option at its default. UsageError for an unknown option
    or a value the flag refuses."""
    parser = _Parser(prog="calbench.evaluate", add_help=False)
    eval_command.add_arguments(parser)
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv = ["--model", _names(model, "model"), "--tasks", _names(tasks, "tasks")]
    for key, value in options.items():
        action = actions.get(key)
        if action is None:
            known = ", ".join(sorted(k for k in actions if k not in ("model", "tasks")))
            raise UsageError(f"evaluate: unknown option {key!r}; options: {known}")
        if value is None:
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:  # a switch (store_true)
            if not isinstance(value, bool):
                raise UsageError(f"evaluate: {key} is a switch: pass True or False, not {value!r}")
            if value:
                argv.append(flag)
        else:
            argv += [flag, str(value)]
    return parser.parse_args(argv)


def evaluate(model: str | Sequence[str], tasks: str | Sequence[str], **options: Any) -> list[Path]:
    """Run ``calbench eval`` from Python; the run folders written, one per (model, task).

    ``model`` is a name (alias, local folder, adapter, or the server's model name) or a list of
    them; ``tasks`` a task name or a list. ``options`` are ``calbench eval``'s flags
    (:func:`eval_arguments`), e.g. ``limit=20, backend="openai-chat", base_url=...,
    output="results"``. The run goes through the code of the command line: same defaults, same
    run folders and manifests, same summary table on stdout. Errors are raised as UsageError
    (bad settings) or RuntimeFailure (a run that failed); with several models, the others are
    evaluated first. Read the results with ``calbench.load_runs(paths)``."""
    return eval_command.evaluate_all(eval_arguments(model, tasks, **options))
