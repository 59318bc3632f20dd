"""Released outputs as runs to import: each input's format detected (RLCR outputs,
:mod:`calbench.report.rlcr_import`; lm-eval samples, :mod:`calbench.report.lmeval_import`), its
records grouped by (dataset, model) into :class:`Imported` runs with calbench's reading of every
response, and on request regraded by calbench (:func:`regrade_run`).

RLCR runs: model ``rlcr-paper/<model>``, task the calbench task of the dataset's name
(``math-500`` -> ``math500``, else the name), elicitation ``rlcr``, published grader
``rlcr-evaluator``. lm-eval runs: model and task as lm-eval names them, elicitation the docs'
(calbench tasks) or ``lm-eval``, published grader ``lm-eval:<metric>``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from calbench.core.errors import UsageError
from calbench.core.grade import GRADERS
from calbench.core.records import REQUIRED_FIELDS, RecordError, iter_jsonl_lines, sha256_text
from calbench.core.runs import safe_component
from calbench.report import lmeval_import
from calbench.report.import_grading import (
    calbench_task,
    gold_for,
    regrade_stats,
    reread,
    task_grader,
)
from calbench.report.rlcr_import import (
    RLCR,
    RLCR_ELICITATION,
    RLCR_FIELDS,
    RLCR_GRADER,
    RLCR_MODEL_PREFIX,
    Key,
    is_rlcr_outputs,
    is_rlcr_parse_cases,
    read_rlcr,
)

LMEVAL = "lm-eval"  # the format's name
LMEVAL_ELICITATION = "lm-eval"  # tasks that are not calbench's carry no elicitation


class SkippedInput(RecordError):
    """An input that is recognised but holds nothing to score or import (reported, not fatal)."""


class UnknownFormat(RecordError):
    """A file of JSON records that are neither RLCR outputs nor lm-eval samples; ``first`` is
    its first record (a caller that reads other formats, e.g. calbench samples, checks it)."""

    def __init__(self, message: str, first: dict) -> None:
        super().__init__(message)
        self.first = first


def read_released(path: str | os.PathLike) -> tuple[str, dict[Key, list[dict]]]:
    """(format, records by (dataset, model)) of a released-outputs file or lm-eval folder.
    SkippedInput for RLCR parse cases; UnknownFormat for other records; RecordError naming
    file:line for anything else."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file or folder")
    if lmeval_import.is_lmeval_samples(path):
        return LMEVAL, lmeval_import.read_lmeval_samples(path)
    if path.is_dir():
        raise RecordError(f"{path}: a folder without lm-eval samples_*.jsonl; name the files")
    for lineno, first in iter_jsonl_lines(path):
        if is_rlcr_parse_cases(first):
            raise SkippedInput(
                f"skipping {path}: RLCR confidence-parsing cases (how the RLCR evaluator read odd "
                "confidences), not evaluation outputs"
            )
        if is_rlcr_outputs(first):
            return RLCR, read_rlcr(path)
        what = (
            "a calbench run's record (regrade calbench runs with `calbench regrade`)"
            if all(k in first for k in REQUIRED_FIELDS)
            else f"a record with keys {sorted(first)[:12]}"
        )
        raise UnknownFormat(
            f"{path}:{lineno}: unknown format: expected RLCR outputs (dataset, model, id, correct, "
            f"confidence, response, gold) or lm-eval samples_*.jsonl; found {what}",
            first,
        )
    raise RecordError(f"{path}: empty file (no records)")


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
