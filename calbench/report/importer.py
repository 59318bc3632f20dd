"""``calbench import FILE... --output DIR [--regrade]``: evaluation outputs that others released,
as ordinary run folders (``samples.jsonl``, ``metrics.json``, ``manifest.json``), so
``calbench leaderboard``, ``plot`` and ``score`` show them beside generated runs.

Formats, detected per file:

* **RLCR** (the RLCR paper's ``eval_outputs``): JSON lines with ``dataset, model, id, correct,
  confidence`` (:func:`read_rlcr`) and, to import, ``response`` and ``gold``; other fields
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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from calbench import __version__
from calbench.core.errors import UsageError
from calbench.core.grade import GRADERS, letter_of
from calbench.core.prompts import ELICITATIONS, MULTI_PASS, build_prompt
from calbench.core.records import (
    REQUIRED_FIELDS,
    RecordError,
    atomic_write_json,
    git_commit,
    iter_jsonl_lines,
    redact,
    sha256_text,
    validate_record,
    write_jsonl,
)
from calbench.core.responses import GradedResponse, grade_response, read_response
from calbench.core.runs import MANIFEST, METRICS, SAMPLES, safe_component, summarize_records
from calbench.report import lmeval_import

Key = tuple[str, str]  # (dataset, model) as the file names them
RLCR, LMEVAL = "rlcr", "lm-eval"
RLCR_FIELDS = ("dataset", "model", "id", "correct", "confidence")
RLCR_MODEL_PREFIX = "rlcr-paper"
RLCR_ELICITATION = "rlcr"
RLCR_GRADER = "rlcr-evaluator"
LMEVAL_ELICITATION = "lm-eval"  # tasks that are not calbench's carry no elicitation
# ``raw_confidence_cases.jsonl`` beside the RLCR outputs: odd responses and how the RLCR
# evaluator parsed them (parser test material, repeating ids of the outputs), not outputs.
_RLCR_PARSE_CASES = ("eval_parsed_confidence", "stored_confidence_used_in_metrics")
_TASKS_DIR = Path(str(resources.files("calbench") / "tasks"))  # calbench's task YAMLs


class SkippedInput(RecordError):
    """An input that is recognised but holds nothing to score or import (reported, not fatal)."""


def is_rlcr_outputs(obj: dict) -> bool:
    return "dataset" in obj and "model" in obj and "correct" in obj


def is_rlcr_parse_cases(obj: dict) -> bool:
    return "confidence" not in obj and all(k in obj for k in _RLCR_PARSE_CASES)


# --- reading ---------------------------------------------------------------------------------


def read_rlcr(path: str | os.PathLike) -> dict[Key, list[dict]]:
    """The records of an RLCR outputs file by (dataset, model): each line's object checked by
    :func:`calbench.core.records.validate_record` (ids unique per dataset and model), plus
    ``_where`` (file:line). RecordError names file:line and field."""
    path = Path(path)
    out: dict[Key, list[dict]] = {}
    seen: dict[Key, dict[str, str]] = {}
    for lineno, obj in iter_jsonl_lines(path):
        where = f"{path}:{lineno}"
        missing = [k for k in RLCR_FIELDS if k not in obj]
        if missing:
            raise RecordError(f"{where}: RLCR record lacks {', '.join(missing)}")
        for k in ("dataset", "model"):
            if not isinstance(obj[k], str) or not obj[k].strip():
                raise RecordError(f"{where}: '{k}' must be a non-empty string, got {obj[k]!r}")
        key = (obj["dataset"], obj["model"])
        rec = validate_record(obj, where, seen.setdefault(key, {}))
        rec["_where"] = where
        out.setdefault(key, []).append(rec)
    if not out:
        raise RecordError(f"{path}: empty file (no records)")
    return out


def read_released(path: str | os.PathLike) -> tuple[str, dict[Key, list[dict]]]:
    """(format, records by (dataset, model)) of a released-outputs file or lm-eval folder.
    SkippedInput for RLCR parse cases; RecordError naming file:line for anything else."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file or folder")
    if lmeval_import.is_lmeval_samples(path):
        return LMEVAL, lmeval_import.read_lmeval_samples(path)
    if path.is_dir():
        raise RecordError(f"{path}: a folder without lm-eval samples_*.jsonl; name the files")
    for lineno, first in iter_jsonl_lines(path):
        if is_rlcr_parse_cases(first):
            raise SkippedInput(f"skipping {path}: RLCR confidence-parsing cases, not outputs")
        if is_rlcr_outputs(first):
            return RLCR, read_rlcr(path)
        what = (
            "a calbench run's record (regrade calbench runs with `calbench regrade`)"
            if all(k in first for k in REQUIRED_FIELDS)
            else f"a record with keys {sorted(first)[:12]}"
        )
        raise RecordError(
            f"{path}:{lineno}: unknown format: expected RLCR outputs (dataset, model, id, correct, "
            f"confidence, response, gold) or lm-eval samples_*.jsonl; found {what}"
        )
    raise RecordError(f"{path}: empty file (no records)")


# --- grading ---------------------------------------------------------------------------------


def task_grader(task: str) -> str | None:
    """``metadata.grader`` of calbench's ``<task>.yaml`` (its ``calbench_name`` being ``task``;
    lm-eval's ``<task>:<filter>`` reads as ``task``), or None when calbench has no such task."""
    base = task.split(":", 1)[0]
    path = _TASKS_DIR / f"{base}.yaml"
    if not re.fullmatch(r"[a-z0-9_]+", base) or not path.is_file():
        return None
    try:
        meta = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("metadata") or {}
    except (OSError, yaml.YAMLError):
        return None
    ok = meta.get("calbench_name") == base and meta.get("grader")
    return str(meta["grader"]) if ok else None


def calbench_task(dataset: str) -> str:
    """The calbench task a released dataset name means: the name lower-cased without
    punctuation when that is a calbench task (``math-500`` -> ``math500``), else the name."""
    norm = re.sub(r"[^a-z0-9]", "", dataset.lower())
    return norm if task_grader(norm) is not None else dataset


def gold_for(grader: str | None, gold: Any, where: str) -> str:
    """The gold as ``grader`` compares it: for ``letter``, the option letter ("Option A which
    is : bank" -> "A", as calbench's loader gives it); RecordError naming ``where`` if none."""
    if gold is None or isinstance(gold, (dict, list, bool)):
        raise RecordError(f"{where}: 'gold' must be text or a number, got {gold!r}")
    text = str(gold)
    if grader == "letter":
        letter = letter_of(text)
        if letter is None:
            raise RecordError(f"{where}: 'gold' {text[:60]!r} names no option letter")
        return letter
    return text


def reread(rec: dict, where: str, grader: str | None) -> None:
    """Give ``rec`` calbench's reading of its response (``answer``, ``parse``,
    ``confidence_as_parsed``); with ``grader``, calbench's verdict as ``correct`` and the
    file's as ``correct_as_published``. The file's ``confidence`` stays."""
    text, elicitation = rec.get("response"), rec.get("elicitation")
    if not isinstance(text, str):
        raise RecordError(f"{where}: 'response' must be text, got {type(text).__name__}")
    if grader and elicitation in MULTI_PASS:
        raise UsageError(
            f"{where}: --regrade: elicitation {elicitation!r} takes its confidence "
            "from further requests; regrade calbench runs with `calbench regrade`"
        )
    # The prefill the response was generated after is part of it (an unclosed <answer>).
    prefill = build_prompt("?", elicitation).prefill if elicitation in ELICITATIONS else ""
    if grader is None:
        graded = GradedResponse(*read_response(text, prefill), bool(rec["correct"]), None)
    else:
        graded = grade_response(
            text, rec["gold"], grader, prefill=prefill, question=str(rec.get("question") or "")
        )
        rec.setdefault("correct_as_published", rec["correct"])  # the file's, kept on a rerun
    fields = graded.record_fields()
    fields.pop("confidence")
    rec.update(fields, confidence_as_parsed=graded.confidence.value, meta=rec.pop("meta", {}))


def regrade_stats(records: list[dict], grader: str) -> dict:
    """What regrading changed in one run: counts and both accuracies."""
    n = len(records)
    rw = sum(1 for r in records if r["correct_as_published"] and not r["correct"])
    wr = sum(1 for r in records if not r["correct_as_published"] and r["correct"])
    return {
        "grader": f"calbench:{grader}",
        "n": n,
        "changed": rw + wr,
        "right_to_wrong": rw,
        "wrong_to_right": wr,
        "accuracy_as_published": sum(bool(r["correct_as_published"]) for r in records) / n,
        "accuracy": sum(bool(r["correct"]) for r in records) / n,
        "no_answer": sum(r["answer"] is None for r in records),
    }


def confidence_stats(records: list[dict]) -> dict:
    """How the kept (published) confidences compare with calbench's parse of the responses."""

    def differs(r: dict) -> bool:
        a, b = r["confidence"], r["confidence_as_parsed"]
        return (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9)

    return {
        "kept": "as published",
        "n": len(records),
        "differs_from_parse": sum(map(differs, records)),
        "unparsed_by_calbench": sum(r["confidence_as_parsed"] is None for r in records),
    }


# --- runs ------------------------------------------------------------------------------------


@dataclass
class Imported:
    """One (dataset, model) of an input file, as a run to write."""

    key: Key  # as the file names it
    model: str
    task: str
    elicitation: str
    records: list[dict]
    fmt: str
    file: Path
    file_sha256: str
    published_grader: str
    family: str | None = None
    grader: str | None = None  # calbench's, once regraded
    regrade: dict | None = None

    @property
    def where(self) -> str:
        return f"{self.file} ({self.model}, {self.task})"

    def folder(self, output: Path) -> Path:
        parts = [safe_component(p) for p in self.model.split("/") if p]
        run_dir = output.joinpath(
            *parts, safe_component(self.task), safe_component(self.elicitation)
        )
        if not run_dir.resolve().is_relative_to(output.resolve()):
            raise UsageError(
                f"run folder {run_dir} resolves outside --output {output}; remove "
                "the symlink or choose another --output"
            )
        return run_dir


def _sha256(path: Path) -> str:
    if path.is_dir():  # an lm-eval output folder: its samples files' names and hashes
        files = sorted(p for p in path.rglob("samples_*.jsonl") if p.is_file())
        return sha256_text(json.dumps([[str(p.relative_to(path)), _sha256(p)] for p in files]))
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rlcr_run(path: Path, key: Key, objs: list[dict], sha: str) -> Imported:
    dataset, model = key
    task = calbench_task(dataset)
    grader = task_grader(task)
    records = []
    for obj in objs:
        where = obj.pop("_where")
        extra = {
            k: v for k, v in obj.items() if k not in RLCR_FIELDS + ("question", "gold", "response")
        }
        rec = {
            "id": obj["id"],
            "task": task,
            "elicitation": RLCR_ELICITATION,
            "question": obj.get("question"),
            "gold": gold_for(grader, obj.get("gold"), where),
            "response": obj.get("response"),
            "correct": obj["correct"],
            "confidence": obj["confidence"],
            "meta": {
                "source": RLCR,
                "dataset": dataset,
                "model": model,
                "line": int(where.rsplit(":", 1)[1]),
                **extra,
            },
        }
        reread(rec, where, None)
        records.append(rec)
    family = sorted({str(o["family"]) for o in objs if o.get("family") is not None})
    return Imported(
        key,
        f"{RLCR_MODEL_PREFIX}/{model}",
        task,
        RLCR_ELICITATION,
        records,
        RLCR,
        path,
        sha,
        RLCR_GRADER,
        family=", ".join(family) or None,
    )


def _lmeval_run(path: Path, key: Key, records: list[dict], sha: str) -> Imported:
    elic = {r.get("elicitation") for r in records}
    elicitation = str(elic.pop()) if len(elic) == 1 and None not in elic else LMEVAL_ELICITATION
    for r in records:
        reread(r, _where(r, path), None)
    fields = sorted({r["meta"]["correct_field"] for r in records})
    return Imported(
        key, key[1], key[0], elicitation, records, LMEVAL, path, sha, f"lm-eval:{','.join(fields)}"
    )


def _where(rec: dict, path: Path) -> str:
    meta = rec.get("meta") or {}
    if "line" in meta:
        return f"{path}:{meta['line']}"
    return f"{path}: {meta.get('samples_file', '')} doc {meta.get('doc_id')}"


def file_runs(path: str | os.PathLike) -> list[Imported]:
    """The runs of one input (SkippedInput for a file with nothing to import)."""
    path = Path(path)
    fmt, groups = read_released(path)
    sha = _sha256(path)
    make = _rlcr_run if fmt == RLCR else _lmeval_run
    return [make(path, key, recs, sha) for key, recs in groups.items()]


def regrade_grader(run: Imported, grader: str | None = None) -> str:
    """The grader that regrades ``run``: ``grader``, else its calbench task's; UsageError when
    there is none or it needs a model (a judge, embeddings)."""
    grader = grader or task_grader(run.task)
    if grader is None:
        raise UsageError(
            f"{run.where}: --regrade: calbench has no task {run.task!r}, so no "
            f"grader; name one with --grader ({', '.join(GRADERS)})"
        )
    if grader not in GRADERS:
        raise UsageError(
            f"{run.where}: --regrade: grader {grader!r} needs a judge or an "
            f"embedding model; calbench import regrades with {', '.join(GRADERS)}"
        )
    return grader


def regrade_run(run: Imported, grader: str | None = None) -> dict:
    """Grade ``run``'s responses with calbench (:func:`regrade_grader`); its stats."""
    grader = regrade_grader(run, grader)
    for r in run.records:
        where = _where(r, run.file)
        r["gold"] = gold_for(grader, r.get("gold"), where)
        reread(r, where, grader)
    run.grader, run.regrade = grader, regrade_stats(run.records, grader)
    return run.regrade


def regraded_groups(path: str | os.PathLike) -> dict[Key, tuple[list[dict], dict]]:
    """``calbench score --regrade``: each (dataset, model) of a released-outputs file, as the
    file names it, with its records regraded by calbench and :func:`regrade_stats`."""
    runs = file_runs(path)
    for run in runs:
        regrade_grader(run)  # every group has a grader before any grading starts
    return {run.key: (run.records, regrade_run(run)) for run in runs}


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
        _check_folder(d, run, overwrite)
        if regrade:
            regrade_grader(run, grader)  # fail before any grading starts
        folders[d] = run
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
