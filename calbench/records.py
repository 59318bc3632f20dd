"""calbench's on-disk run format: ``samples.jsonl`` records, atomic JSON writes, loading runs.

A run folder holds ``samples.jsonl`` (one record per question), ``metrics.json`` and
``manifest.json``. One record::

    {"id": "gsm8k/test/17", "task": "gsm8k", "elicitation": "tags",
     "question": "...", "gold": "72",             # or question_sha256 / gold_sha256 if redacted
     "prompt": "...",                             # full rendered prompt (chat template applied)
     "response": "...",                           # raw model text, including any prefill
     "answer": "72", "correct": true, "confidence": 0.8,   # confidence None when unparsed
     "parse": {"answer_source": "tag", "answer_raw": "72", "confidence_source": "tag",
               "confidence_raw": "0.8", "confidence_rescaled": false, "confidence_error": null},
     "tokens": {"prompt": 143, "response": 37},
     "meta": {...}}                               # task-specific (difficulty, options order, ...)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REQUIRED_FIELDS = ("id", "correct", "confidence")


class RecordError(ValueError):
    """A results file that cannot be read as calbench records (exit code 2 at the CLI)."""


def git_commit() -> str | None:
    """The calbench commit that produced a run or an adapter, suffixed ``-dirty`` when the
    package or task files differ from it (then the commit alone does not reproduce the result);
    None outside a git checkout (an installed wheel). The shipped adapters in
    ``calbench/reference`` are not code: ``calbench reproduce`` publishes new ones there and
    then evaluates them (a run records the adapter's weights hash), so they do not count."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "calbench",
                                "tasks", ":(exclude)calbench/reference"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never
    half of it (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary shared files
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def iter_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSONL file; an unreadable file
    or a malformed line raises RecordError naming the file and line."""
    path = Path(path)
    try:
        f = path.open(encoding="utf-8")
    except OSError as e:
        raise RecordError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, obj


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the JSON objects of a JSONL file (see :func:`iter_jsonl_lines`)."""
    for _, obj in iter_jsonl_lines(path):
        yield obj


def read_samples(path: str | os.PathLike) -> list[dict]:
    """Read a calbench ``samples.jsonl`` and check every record has id, correct and confidence."""
    records = list(iter_jsonl(path))
    for i, r in enumerate(records, 1):
        missing = [k for k in REQUIRED_FIELDS if k not in r]
        if missing:
            raise RecordError(f"{path}: record {i} lacks {', '.join(missing)}")
        c = r["confidence"]
        if c is not None and not isinstance(c, (int, float)):
            raise RecordError(f"{path}: record {i}: confidence must be a number or null")
    return records


def redact(record: dict) -> dict:
    """A copy of ``record`` fit to commit: question, gold and prompt replaced by their SHA-256, so
    benchmark text stays out of git (contamination; the text is not ours)."""
    out = dict(record)
    for key in ("question", "gold", "prompt", "stage2_prompt"):
        if key in out and out[key] is not None:
            out[f"{key}_sha256"] = sha256_text(str(out.pop(key)))
    grading = out.get("grading")
    if isinstance(grading, dict) and grading.get("judge_prompt"):  # embeds the question
        grading = dict(grading)
        grading["judge_prompt_sha256"] = sha256_text(grading.pop("judge_prompt"))
        out["grading"] = grading
    return out
