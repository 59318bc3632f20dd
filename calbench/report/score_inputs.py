"""The inputs ``calbench score`` reads, as records grouped by (dataset, model).

Detected per file:

* calbench ``samples.jsonl`` (the file, or the run folder holding it); dataset and model come from
  the sibling ``manifest.json`` (``task``, ``model``) when present, else the records' ``task``
  field and the folder name;
* RLCR evaluation outputs (JSON lines with ``dataset``, ``model``, ``correct``, ``confidence``),
  grouped by (dataset, model); the RLCR confidence-parsing cases beside them are skipped;
* lm-evaluation-harness ``samples_*.jsonl``, through :mod:`calbench.report.lmeval_import`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from calbench.core.records import REQUIRED_FIELDS, RecordError, read_samples
from calbench.report import lmeval_import

# Released outputs (RLCR, lm-eval) are detected and read by import_runs, as for `calbench import`.
from calbench.report.import_runs import UnknownFormat, read_released
from calbench.report.rlcr_import import RLCR

Key = tuple[str, str]  # (dataset, model)


def _slim(rec: dict) -> dict:
    """What scoring keeps of a validated record (the rest, e.g. prompts, is not needed)."""
    out = {"id": rec["id"], "correct": rec["correct"], "confidence": rec["confidence"]}
    if isinstance(rec.get("meta"), dict):
        out["meta"] = rec["meta"]
    return out


def _slimmed(groups: dict[Key, list[dict]]) -> dict[Key, list[dict]]:
    return {key: [_slim(r) for r in recs] for key, recs in groups.items()}


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
    try:
        fmt, groups = read_released(path)  # RLCR outputs, lm-eval samples (or SkippedInput)
    except UnknownFormat as e:
        if all(k in e.first for k in REQUIRED_FIELDS):
            return _read_samples(path)
        raise RecordError(
            f"{path}: unknown format: expected calbench samples.jsonl records (id, correct, "
            "confidence), RLCR records (dataset, model, correct, confidence) or lm-eval samples; "
            f"the first record has keys {sorted(e.first)[:12]}"
        ) from None
    return _slimmed(groups) if fmt == RLCR else groups
