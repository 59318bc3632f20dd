"""``calbench import FILE... --output DIR [--regrade]``: evaluation outputs that others released,
as ordinary run folders (``samples.jsonl``, ``metrics.json``, ``manifest.json``), so
``calbench leaderboard``, ``plot`` and ``score`` show them beside generated runs.

Formats, detected per file:

* **RLCR** (the RLCR paper's ``eval_outputs``, read by
  :func:`calbench.report.rlcr_import.read_rlcr`): JSON lines with ``dataset, model, id, correct,
  confidence`` and, to import, ``response`` and ``gold``; other fields
  (``family``, ``classifier_prob``) go to ``meta``. One run per (dataset, model): model
  ``rlcr-paper/<model>``, task the calbench task of that name (``math-500`` -> ``math500``,
  else the name), elicitation ``rlcr`` (the paper's prompt format). ``correct`` is the RLCR
  evaluator's verdict. A file of RLCR confidence-parsing cases is skipped with a note.
* **lm-eval** ``samples_*.jsonl`` (or their folder), read by
  :func:`calbench.report.lmeval_import.read_lmeval_samples`: model and task as it names them,
  elicitation the docs' (calbench tasks) or ``lm-eval``.

Every record keeps the file's ``confidence`` (what its source scored) and gets calbench's reading
of the response (``answer``, ``parse``, ``confidence_as_parsed``). With ``--regrade`` each
response is graded again by :func:`calbench.core.responses.grade_response` with the calbench
task's grader (or ``--grader``): ``correct`` is then calbench's verdict and
``correct_as_published`` the file's. The manifest's ``source`` is ``{"kind": "imported",
"format", "from": {"file", "sha256"}, "grader", "regrade", "confidence"}``; ``grader`` is
``rlcr-evaluator`` or ``lm-eval:<metric>``, or ``calbench:<grader>`` when regraded.

Run folders are ``DIR/<model path>/<task>/<elicitation>``, each component made safe by
:func:`calbench.core.runs.safe_component`. A folder holding an earlier import of the same model
and task is replaced; anything else needs ``--overwrite``. Everything is read, checked and graded
before the first file is written; a bad record stops all with exit 2 naming file:line and field.

This module writes the run folders and holds the command; the inputs become runs in
:mod:`calbench.report.import_runs`, and calbench reads and grades their responses in
:mod:`calbench.report.import_grading`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from calbench import __version__
from calbench.core.errors import UsageError
from calbench.core.grade import GRADERS
from calbench.core.records import atomic_write_json, git_commit, redact, write_jsonl
from calbench.core.runlock import exclusive
from calbench.core.runs import MANIFEST, METRICS, SAMPLES, summarize_records
from calbench.report.import_grading import confidence_stats, task_grader
from calbench.report.import_runs import (
    Imported,
    SkippedInput,
    file_runs,
    regrade_grader,
    regrade_run,
)

# --- writing ---------------------------------------------------------------------------------


def _manifest(run: Imported, n_bootstrap: int, seed: int, redacted: bool) -> dict:
    data_hash = hashlib.sha256()  # what calbench eval records: the questions and golds
    for r in run.records:
        data_hash.update(json.dumps([r["id"], r.get("question"), r.get("gold")]).encode())
    grader = f"calbench:{run.grader}" if run.grader else run.published_grader
    return {
        "status": "complete",
        "calbench_version": __version__,
        "git_commit": git_commit(),
        "command": shlex.join(["calbench", *sys.argv[1:]]),
        "model": run.model,
        "model_info": {"spec": run.model, "kind": "imported", "family": run.family},
        "task": run.task,
        "grader": grader,
        "task_grader": task_grader(run.task),
        "elicitation": run.elicitation,
        "source": {
            "kind": "imported",
            "format": run.fmt,
            "from": {"file": run.file.name, "sha256": run.file_sha256},
            "grader": grader,
            "family": run.family,
            "regrade": run.regrade,
            "confidence": confidence_stats(run.records),
        },
        "n": len(run.records),
        "data_sha256": data_hash.hexdigest(),
        "redacted": redacted,
        "bootstrap": {"n_bootstrap": n_bootstrap, "seed": seed},
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _check_folder(run_dir: Path, run: Imported, overwrite: bool) -> None:
    """A folder may be replaced when it holds an earlier import of the same model and task."""
    if overwrite or not any((run_dir / f).exists() for f in (SAMPLES, METRICS, MANIFEST)):
        return
    try:
        old = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if (
        isinstance(old, dict)
        and (old.get("source") or {}).get("kind") == "imported"
        and old.get("model") == run.model
        and old.get("task") == run.task
    ):
        return
    what = (
        "a run that is not an import of this model and task"
        if isinstance(old, dict)
        else f"results without a readable {MANIFEST}"
    )
    raise UsageError(
        f"{run_dir} holds {what}; pass --overwrite to replace it or --output to write elsewhere"
    )


def write_run(run: Imported, run_dir: Path, *, n_bootstrap: int, seed: int, redacted: bool) -> None:
    """Write ``run``'s samples.jsonl, metrics.json and (last) manifest.json into ``run_dir``."""
    recs, n = run.records, len(run.records)
    metrics = summarize_records(recs, policy="drop", n_bootstrap=n_bootstrap, seed=seed)
    metrics["format"] = {
        "answer_parse_rate": sum(r["answer"] is not None for r in recs) / n,
        "confidence_parse_rate": sum(r["confidence"] is not None for r in recs) / n,
        "confidence_rescaled": sum(bool(r["parse"]["confidence_rescaled"]) for r in recs),
    }
    write_jsonl(run_dir / SAMPLES, [redact(r) for r in recs] if redacted else recs)
    atomic_write_json(run_dir / METRICS, metrics)
    atomic_write_json(run_dir / MANIFEST, _manifest(run, n_bootstrap, seed, redacted))


def import_files(
    files: list[str | os.PathLike],
    output: str | os.PathLike,
    *,
    regrade: bool = False,
    grader: str | None = None,
    redacted: bool = False,
    overwrite: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[tuple[Imported, Path]]:
    """Import ``files`` into run folders under ``output``; the (run, folder) pairs written."""
    output = Path(output)
    runs: list[Imported] = []
    for f in files:
        try:
            runs += file_runs(f)
        except SkippedInput as e:
            print(f"calbench import: {e}", file=sys.stderr)
    if not runs:
        raise UsageError("nothing to import in the given inputs")
    folders: dict[Path, Imported] = {}
    for run in runs:
        d = run.folder(output)
        if d in folders:
            raise UsageError(f"{run.where} and {folders[d].where} both import into {d}")
        folders[d] = run
    command = shlex.join(["calbench", *sys.argv[1:]])
    with contextlib.ExitStack() as held:  # every folder locked from the check to the last write
        for d, run in folders.items():
            held.enter_context(exclusive(d, command))
            _check_folder(d, run, overwrite)
            if regrade:
                regrade_grader(run, grader)  # fail before any grading starts
        for run in runs if regrade else ():
            t0 = time.time()
            s = regrade_run(run, grader)
            print(
                f"calbench import: regraded {run.model} · {run.task}: accuracy "
                f"{s['accuracy_as_published']:.3f} -> {s['accuracy']:.3f} ({s['changed']} "
                f"changed) in {time.time() - t0:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        for d, run in folders.items():
            write_run(run, d, n_bootstrap=n_bootstrap, seed=seed, redacted=redacted)
    return [(run, d) for d, run in folders.items()]


# --- CLI -------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="RLCR outputs .jsonl, or lm-eval samples_*.jsonl (or their folder)",
    )
    p.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="DIR",
        help="results folder to write the run folders into",
    )
    p.add_argument(
        "--regrade",
        action="store_true",
        help="grade every response again with calbench's parser and grader; "
        "correct = calbench's verdict, correct_as_published = the file's",
    )
    p.add_argument(
        "--grader",
        choices=list(GRADERS),
        help="grader for --regrade (default: the calbench task's grader)",
    )
    p.add_argument(
        "--redact",
        action="store_true",
        help="store SHA-256 hashes instead of question and gold text (for runs you "
        "commit); responses are kept",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace run folders that hold something other than an earlier import "
        "of the same model and task",
    )
    p.add_argument(
        "--n-bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for the CIs in metrics.json (default 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def run(args: argparse.Namespace) -> int:
    if args.n_bootstrap < 0:
        raise UsageError("--n-bootstrap must be >= 0")
    if args.grader and not args.regrade:
        raise UsageError("--grader chooses the grader of --regrade; add --regrade")
    done = import_files(
        args.files,
        args.output,
        regrade=args.regrade,
        grader=args.grader,
        redacted=args.redact,
        overwrite=args.overwrite,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
    )
    for imp, d in done:
        acc = sum(bool(r["correct"]) for r in imp.records) / len(imp.records)
        was = f" (published {imp.regrade['accuracy_as_published']:.3f})" if imp.regrade else ""
        differ = confidence_stats(imp.records)["differs_from_parse"]
        print(
            f"{d}: {imp.model} · {imp.task}: n={len(imp.records)}, accuracy {acc:.3f}{was}; "
            f"{differ} kept confidences differ from calbench's parse of the response"
        )
    print(f"imported {len(done)} run{'s' if len(done) != 1 else ''} into {args.output}")
    return 0
