"""calbench's reading and grading of imported records: the calbench task (and its grader) a
released dataset name means, the gold as a grader compares it, each response read again
(``answer``, ``parse``, ``confidence_as_parsed``) and, when regrading, graded by
:func:`calbench.core.responses.grade_response`; what regrading changed and how the kept
confidences compare with calbench's parse.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from calbench.core.errors import UsageError
from calbench.core.grade import letter_of
from calbench.core.prompts import ELICITATIONS, MULTI_PASS, build_prompt
from calbench.core.records import RecordError
from calbench.core.responses import GradedResponse, grade_response, read_response

_TASKS_DIR = Path(str(resources.files("calbench") / "tasks"))  # calbench's task YAMLs


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
