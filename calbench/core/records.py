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
import math
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
    root = Path(__file__).resolve().parents[2]  # the checkout holding calbench/
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "calbench",
                "tasks",
                ":(exclude)calbench/reference",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _temp_prefix(name: str) -> str:
    return f".{name}."


# mkstemp appends 8 characters from this alphabet (tempfile._RandomNameSequence).
_TEMP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def remove_stale_temp_files(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Remove the temp files that :func:`atomic_write_text` left in ``folder`` for the files
    ``names`` when its writer was killed; return them. Only call it while no writer can be
    active there (holding the folder's lock): a live writer's temp file looks the same."""
    folder = Path(folder)
    prefixes = [_temp_prefix(n) for n in names]
    removed = []
    for p in folder.iterdir() if folder.is_dir() else ():
        rest = [p.name[len(x) :] for x in prefixes if p.name.startswith(x)]
        if (
            rest
            and len(rest[0]) == 8
            and set(rest[0]) <= _TEMP_CHARS
            and p.is_file()
            and not p.is_symlink()
        ):
            p.unlink()
            removed.append(p)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never
    half of it (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), dir=path.parent)
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


def check_correct(value: Any, where: str, field: str = "correct") -> bool:
    """``value`` as a bool: JSON true/false or the number 0/1 (1.0 too: lm-eval logs floats).
    Anything else (a string such as "false" or "0", null, 0.5) raises RecordError naming
    ``where`` and ``field``: a truthy string would otherwise count as a right answer."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise RecordError(f"{where}: '{field}' must be true/false or 0/1, got {value!r}")


def check_confidence(value: Any, where: str, field: str = "confidence") -> float | None:
    """``value`` as a float in [0, 1], or None for an unparsed confidence (JSON null). A bool,
    a string, NaN, an infinity or a number outside [0, 1] raises RecordError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{where}: '{field}' must be a number or null, got {value!r}")
    x = float(value)
    if math.isnan(x):
        raise RecordError(f"{where}: '{field}' is NaN (write null for an unparsed confidence)")
    if not 0.0 <= x <= 1.0:
        raise RecordError(f"{where}: '{field}' must lie in [0, 1], got {value!r}")
    return x


def check_id(value: Any, where: str, seen: dict[str, str] | None = None) -> str | int:
    """``value`` as a record id: a non-empty string or an integer. With ``seen`` (id text ->
    where it was first seen, filled in here), a repeated id raises RecordError naming both
    places. Ids are compared as text because the metrics compare them so (1 and "1" are one
    question), and a repeated id would silently turn the bootstrap into a cluster bootstrap."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise RecordError(f"{where}: 'id' must be a non-empty string or an integer, got {value!r}")
    if seen is not None:
        key = str(value)
        if key in seen:
            raise RecordError(f"{where}: 'id' {value!r} repeats the id at {seen[key]}")
        seen[key] = where
    return value


def validate_record(obj: Any, where: str, seen_ids: dict[str, str] | None = None) -> dict:
    """The one record check behind every reader (score, leaderboard, plot, lm-eval import).

    ``obj`` must be a dict with ``id`` (:func:`check_id`; unique among ``seen_ids`` when given),
    ``correct`` (:func:`check_correct`) and ``confidence`` (:func:`check_confidence`). Returns a
    shallow copy with ``correct`` as a bool and ``confidence`` as a float or None; a violation
    raises RecordError naming ``where`` (file:line) and the field."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise RecordError(f"{where}: record lacks {', '.join(missing)}")
    out = dict(obj)
    out["id"] = check_id(obj["id"], where, seen_ids)
    out["correct"] = check_correct(obj["correct"], where)
    out["confidence"] = check_confidence(obj["confidence"], where)
    return out


def read_samples(path: str | os.PathLike) -> list[dict]:
    """The records of a calbench ``samples.jsonl``, each checked by :func:`validate_record`
    (ids unique within the file). RecordError names the file, line and field of the first
    violation."""
    seen: dict[str, str] = {}
    return [
        validate_record(obj, f"{path}:{lineno}", seen) for lineno, obj in iter_jsonl_lines(path)
    ]


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
