"""``calbench regrade RUN_DIR... [--data-dir DIR] [--dry-run]``: read and grade a run's saved
responses again with the current parser and graders (:mod:`calbench.core.responses`), without running
any model. What the model said (``response``, ``stage2_response``, the consistency samples, the
logprob) is kept; each record gets the fields ``calbench eval`` would write for it today.

Gold: the record's ``gold``, or, for a redacted run (``gold_sha256``), the gold of the question
with the record's ``id`` as the evaluator's loader gives it (:func:`calbench.eval.harness.load_docs`
with the run's seed, size and data folder), used only when its SHA-256 equals ``gold_sha256``;
an unknown id or a hash mismatch stops everything with exit 2 naming file:line.

A record whose answer, correct or confidence changes keeps the old verdict under
``regrade.previous`` with the commit that regraded it; the manifest gets ``regraded`` (time,
commit, counts) and ``metrics.json`` is recomputed with the run's policy and bootstrap settings.
All runs are graded before any file is written, and a run whose records and metrics come out
unchanged (after its first regrade) is not written again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.prompts import ELICITATIONS, build_prompt
from calbench.core.records import (
    RecordError,
    atomic_write_json,
    git_commit,
    iter_jsonl_lines,
    redact,
    sha256_text,
    validate_record,
    write_jsonl,
)
from calbench.core.responses import grade_response
from calbench.core.runlock import exclusive
from calbench.core.runs import MANIFEST, METRICS, SAMPLES, find_run_dirs, summarize_records
from calbench.eval.elicit import apply_consistency, apply_stage_two
from calbench.eval.harness import load_docs
from calbench.eval.manifest import grader_used
from calbench.eval.registry import TaskInfo, get_tasks, task_metadata
from calbench.eval.run_task import format_block, loader_metadata

VERDICT = ("answer", "correct", "confidence")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders, or folders searched for them (like the leaderboard)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="local data for redacted runs' golds (default: the run's data_dir)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")


@dataclass
class Regraded:
    """One run graded again, ready to write."""

    path: Path
    records: list[dict]
    metrics: dict
    manifest: dict
    right_to_wrong: int
    wrong_to_right: int
    changed_answer: int
    changed_confidence: int
    before: dict  # point values of the old records (accuracy, ece, brier)
    dirty: bool  # whether anything differs from the files


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return obj


def _read_manifest(path: Path) -> dict:
    if not (path / MANIFEST).is_file():
        raise UsageError(f"{path}: no {MANIFEST}; regrade needs the run's task and elicitation")
    obj = _read_json(path / MANIFEST)
    if obj.get("status", "complete") != "complete":
        raise UsageError(
            f"{path / MANIFEST}: status is {obj['status']!r}, not 'complete' "
            "(a run in progress or killed); finish the run first"
        )
    for key in ("task", "elicitation"):
        if not isinstance(obj.get(key), str):
            raise UsageError(f"{path / MANIFEST}: '{key}' is missing")
    if obj["elicitation"] not in ELICITATIONS:
        raise UsageError(f"{path / MANIFEST}: unknown elicitation {obj['elicitation']!r}")
    if obj.get("judge"):
        raise UsageError(
            f"{path}: graded by an LLM judge; regrading would ask the judge again (not done here)"
        )
    return obj


_QUESTIONS: dict[str, dict[str, dict]] = {}  # loader settings -> {id: doc}, per process


def _questions(
    task: TaskInfo, manifest: dict, data_dir: str | None, where: Path
) -> dict[str, dict]:
    """The task's questions by id, loaded as ``calbench eval`` loads them for this run."""
    meta: dict[str, Any] = {
        **task_metadata(task),
        **loader_metadata(
            manifest["elicitation"],
            int(manifest.get("seed") or 0),
            int(manifest.get("limit") or 0),
            data_dir or manifest.get("data_dir"),
        ),
    }
    key = json.dumps(meta, sort_keys=True, default=str)
    if key not in _QUESTIONS:
        try:
            docs = load_docs(**meta)["test"]
        except UsageError as e:
            raise UsageError(
                f"{where}: cannot load the {task.name} questions to recover "
                f"redacted golds: {e} (pass --data-dir)"
            ) from None
        except Exception as e:
            raise RuntimeFailure(
                f"{where}: loading the {task.name} questions failed: {type(e).__name__}: {e}"
            ) from e
        _QUESTIONS[key] = {str(d["id"]): d for d in docs}
    return _QUESTIONS[key]


def _gold(rec: dict, where: str, questions) -> tuple[str, str]:
    """(gold, question) of a record; for a redacted one from the loaded questions, checked
    against the record's hashes."""
    if rec.get("gold") is not None:
        return _need(rec, where, "gold", str), str(rec.get("question") or "")
    if not isinstance(rec.get("gold_sha256"), str):
        raise RecordError(f"{where}: record has neither 'gold' nor 'gold_sha256'")
    doc = questions().get(str(rec["id"]))
    if doc is None:
        raise RecordError(
            f"{where}: id {rec['id']!r} is not a question of the loaded task "
            "data (other data or settings); not regraded"
        )
    if sha256_text(doc["gold"]) != rec["gold_sha256"]:
        raise RecordError(
            f"{where}: 'gold_sha256' does not match the gold of {rec['id']!r} "
            "in the loaded task data (other data or settings); not regraded"
        )
    q = rec.get("question_sha256")
    if isinstance(q, str) and sha256_text(doc["question"]) != q:
        raise RecordError(
            f"{where}: 'question_sha256' does not match the question of "
            f"{rec['id']!r} in the loaded task data; not regraded"
        )
    return doc["gold"], doc["question"]


def _need(rec: dict, where: str, path: str, kind: type) -> Any:
    """The field at dotted ``path`` of ``rec``; RecordError unless it is there, a ``kind``."""
    obj: Any = rec
    for k in path.split("."):
        if not isinstance(obj, dict) or k not in obj:
            raise RecordError(f"{where}: record lacks '{path}'")
        obj = obj[k]
    if not isinstance(obj, kind):
        raise RecordError(f"{where}: '{path}' must be a {kind.__name__}, got {obj!r:.40}")
    return obj


def regrade_record(
    rec: dict, where: str, *, gold: str, question: str, grader: str, elicitation: str
) -> dict:
    """The record ``calbench eval`` would write today from ``rec``'s model output."""
    prefill = build_prompt("?", elicitation).prefill
    first = _need(
        rec,
        where,
        "consistency.greedy_response" if elicitation == "consistency" else "response",
        str,
    )
    g = grade_response(first, gold, grader, prefill=prefill, question=question)
    new = {k: v for k, v in rec.items() if k != "grading"}
    new.update(g.record_fields(), response=first)
    if elicitation == "two-stage":
        apply_stage_two(new, _need(rec, where, "stage2_response", str))
    elif elicitation == "logprob":  # a probability of the answer tokens: nothing to parse
        old_parse = rec.get("parse") or {}
        new["confidence"] = rec["confidence"]
        new["parse"].update({k: v for k, v in old_parse.items() if k.startswith("confidence")})
    elif elicitation == "consistency":
        texts = _need(rec, where, "consistency.samples", list)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise RecordError(f"{where}: 'consistency.samples' must list the sampled texts")
        doc = {"gold": gold, "question": question, "prefill": prefill, "grader": grader}
        apply_consistency(
            new, doc, texts, k=len(texts), temperature=rec["consistency"].get("temperature")
        )
    return new


def _point(summary: dict, name: str) -> float | None:
    return ((summary.get("metrics") or {}).get(name) or {}).get("value")


def regrade_run(path: Path, data_dir: str | None, commit: str | None) -> Regraded:
    """Grade one run folder again; nothing is written."""
    manifest = _read_manifest(path)
    task = get_tasks([manifest["task"]])[0]
    elicitation = manifest["elicitation"]
    samples = path / SAMPLES
    if not samples.is_file():
        raise UsageError(f"{path}: no {SAMPLES} to regrade")
    old_metrics = _read_json(path / METRICS) if (path / METRICS).is_file() else {}
    loaded: dict[str, dict] | None = None

    def questions() -> dict[str, dict]:
        nonlocal loaded
        if loaded is None:
            loaded = _questions(task, manifest, data_dir, path)
        return loaded

    seen: dict[str, str] = {}
    olds, news, raw_changed = [], [], False
    r2w = w2r = ans_changed = conf_changed = 0
    for lineno, raw in iter_jsonl_lines(samples):
        where = f"{samples}:{lineno}"
        old = validate_record(raw, where, seen)
        for key in ("task", "elicitation"):
            if raw.get(key, manifest[key]) != manifest[key]:
                raise RecordError(
                    f"{where}: '{key}' is {raw[key]!r} but the manifest says {manifest[key]!r}"
                )
        gold, question = _gold(raw, where, questions)
        try:
            new = regrade_record(
                raw,
                where,
                gold=gold,
                question=question,
                grader=task.grader,
                elicitation=elicitation,
            )
        except (UsageError, RecordError, RuntimeFailure):
            raise
        except Exception as e:  # a grader that crashes (e.g. the similarity model is absent)
            raise RuntimeFailure(f"{where}: grading failed: {type(e).__name__}: {e}") from e
        if "gold" not in raw:  # a redacted run stays redacted
            new = redact(new)
        new = validate_record(json.loads(json.dumps(new)), where)
        if any(new[k] != old[k] for k in VERDICT):
            new["regrade"] = {"previous": {k: raw[k] for k in VERDICT}, "grader_commit": commit}
            r2w += old["correct"] and not new["correct"]
            w2r += new["correct"] and not old["correct"]
            ans_changed += new["answer"] != old["answer"]
            conf_changed += new["confidence"] != old["confidence"]
        raw_changed |= new != raw
        olds.append(old)
        news.append(new)
    if not news:
        raise UsageError(f"{samples}: holds no records")
    ci = old_metrics.get("ci") or {}
    settings = {"policy": old_metrics.get("policy", "drop"), "compat": old_metrics.get("compat")}
    before = summarize_records(olds, n_bootstrap=0, **settings)
    metrics = summarize_records(
        news,
        n_bootstrap=int(ci.get("n_bootstrap", 1000)),
        seed=int(ci.get("seed", manifest.get("seed") or 0)),
        **settings,
    )
    metrics["format"] = format_block(news)
    metrics = json.loads(json.dumps(metrics, default=str))
    dirty = raw_changed or metrics != old_metrics or "regraded" not in manifest
    new_manifest = dict(manifest)
    if dirty:
        new_manifest["regraded"] = {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": commit,
            "grader": grader_used(task.grader, None),
            "changed_correct": r2w + w2r,
            "changed_confidence": conf_changed,
            "changed_answer": ans_changed,
            "n": len(news),
        }
    return Regraded(
        path,
        news,
        metrics,
        new_manifest,
        r2w,
        w2r,
        ans_changed,
        conf_changed,
        {k: _point(before, k) for k in ("accuracy", "ece", "brier")},
        dirty,
    )


def write(r: Regraded) -> None:
    """Write a regraded run: samples, then metrics, then the manifest, each atomically."""
    try:
        write_jsonl(r.path / SAMPLES, r.records)
        atomic_write_json(r.path / METRICS, r.metrics)
        atomic_write_json(r.path / MANIFEST, r.manifest)
    except OSError as e:
        raise RuntimeFailure(f"{r.path}: cannot write ({e})") from e


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_table(results: list[Regraded], root: Path | None = None) -> None:
    head = (
        "run",
        "n",
        "correct r->w/w->r",
        "answer",
        "conf",
        "accuracy",
        "ECE",
        "Brier",
        "written",
    )
    rows = []
    for r in results:
        name = (
            str(r.path.relative_to(root)) if root and r.path.is_relative_to(root) else str(r.path)
        )
        rows.append(
            (
                name,
                str(len(r.records)),
                f"{r.right_to_wrong}/{r.wrong_to_right}",
                str(r.changed_answer),
                str(r.changed_confidence),
                *(
                    f"{_fmt(r.before[k])} -> {_fmt(_point(r.metrics, k))}"
                    for k in ("accuracy", "ece", "brier")
                ),
                "yes" if r.dirty else "no (unchanged)",
            )
        )
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


def run(args: argparse.Namespace) -> int:
    dirs = find_run_dirs(args.runs)
    commit = git_commit()
    command = shlex.join(["calbench", *sys.argv[1:]])
    with contextlib.ExitStack() as held:  # no eval or import writes them meanwhile
        for d in dirs if not args.dry_run else ():  # a dry run writes nothing, not even a lock
            held.enter_context(exclusive(d, command))
        results = [regrade_run(d, args.data_dir, commit) for d in dirs]  # all graded, then written
        root = Path(args.runs[0]) if len(args.runs) == 1 else None  # rows named relative to it
        print_table(results, root)
        if args.dry_run:
            print(f"calbench regrade: dry run, nothing written ({len(results)} runs)")
            return 0
        todo = [r for r in results if r.dirty]
        for r in todo:
            write(r)
    print(f"calbench regrade: wrote {len(todo)} of {len(results)} runs (grader commit {commit})")
    return 0
