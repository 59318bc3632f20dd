"""The RLCR paper's released ``eval_outputs``, read as calbench records.

An outputs file holds JSON lines with ``dataset, model, id, correct, confidence`` and, to
import, ``response`` and ``gold``; other fields (``family``, ``classifier_prob``) go to
``meta`` when imported. ``correct`` is the RLCR evaluator's verdict. Imported runs are named
``rlcr-paper/<model>`` with elicitation ``rlcr`` (the paper's prompt format). A file of RLCR
confidence-parsing cases (``raw_confidence_cases.jsonl``) is recognised and is not outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

from calbench.core.records import RecordError, iter_jsonl_lines, validate_record

Key = tuple[str, str]  # (dataset, model) as the file names them
RLCR = "rlcr"  # the format's name
RLCR_FIELDS = ("dataset", "model", "id", "correct", "confidence")
RLCR_MODEL_PREFIX = "rlcr-paper"
RLCR_ELICITATION = "rlcr"
RLCR_GRADER = "rlcr-evaluator"
# ``raw_confidence_cases.jsonl`` beside the RLCR outputs: odd responses and how the RLCR
# evaluator parsed them (parser test material, repeating ids of the outputs), not outputs.
_RLCR_PARSE_CASES = ("eval_parsed_confidence", "stored_confidence_used_in_metrics")


def is_rlcr_outputs(obj: dict) -> bool:
    """Whether a file's first object is an RLCR outputs record."""
    return "dataset" in obj and "model" in obj and "correct" in obj


def is_rlcr_parse_cases(obj: dict) -> bool:
    """Whether a file's first object is an RLCR confidence-parsing case (not an output)."""
    return "confidence" not in obj and all(k in obj for k in _RLCR_PARSE_CASES)


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
