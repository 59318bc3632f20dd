"""Read lm-evaluation-harness logged samples (``--log_samples``) as calbench records, so
``calbench score`` can score runs people already have.

lm-eval writes, per task, ``<output_path>/<model_sanitized>/samples_<task>_<date>.jsonl`` (one
JSON object per doc and filter: ``doc_id``, ``doc``, ``target``, ``arguments``
(``{"gen_args_0": {"arg_0": prompt, "arg_1": gen_kwargs}}``), ``resps`` (``[[text, ...]]``),
``filtered_resps``, ``filter``, ``metrics`` (names), hashes, and the per-doc metric values the
task's ``process_results`` returned) next to ``results_<date>.json``.

Fields read, per sample:

* **response**: ``resps[0][0]``, the raw generation (not ``filtered_resps``, which a filter may
  have cut down to the answer and so lost the confidence), prefixed by ``doc["prefill"]`` when
  the doc has one (lm-eval strips ``gen_prefix`` from what it logs; calbench tasks prefill).
* **correct**: the per-doc metric ``correct`` (calbench tasks), else the first of
  ``exact_match``, ``acc``, ``em``, ``exact`` the task logged; it must be 0/1 (or true/false).
* **confidence**: the per-doc metric ``confidence`` (calbench tasks; NaN = unparsed, anything
  else must be a number in [0, 1]), else parsed from the response with
  :func:`calbench.core.parse.parse_confidence`. A file of a task that logs no confidence and in whose
  responses none parses is not a verbalized-confidence run: rejected.
* **id**: ``doc["id"]`` when present, else ``"<task>/<doc_id>"``.
* **answer**: :func:`calbench.core.parse.extract_answer` of the response, else ``filtered_resps[0]``
  (what the task's own filter extracted and graded).
* **task**: ``metadata.calbench_name`` of the task's config in ``results_<date>.json`` (so
  ``calbench_gsm8k`` scores as ``gsm8k``), else the task name from the file name. A task logged
  under several filters (``strict-match``, ``flexible-extract``) yields one dataset per filter,
  ``"<task>:<filter>"``.
* **model**: from the sibling ``results_<date>.json`` (same date as the samples file, else the
  only one): its ``model_name``, else ``config.model_args``'s ``peft=``/``pretrained=``/``model=``/
  ``path=`` (lm-eval's own order), else ``config.model``; without a results file, the folder name
  with lm-eval's ``__`` turned back into ``/``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from calbench.core.records import (
    RecordError,
    check_confidence,
    check_correct,
    iter_jsonl_lines,
    validate_record,
)
from calbench.core.responses import read_response

# lm-eval's date_id is datetime.isoformat() with ":" replaced by "-".
_SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.]+)\.jsonl$")
_SAMPLE_KEYS = ("doc_id", "doc", "resps")
CORRECT_FIELDS = ("correct", "exact_match", "acc", "em", "exact")
# lm-eval's GeneralConfigTracker order: an adapter (peft) names the run better than its base.
_MODEL_ARG_KEYS = ("peft", "delta", "pretrained", "model", "path", "engine")


def _first_object(path: Path) -> dict | None:
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    return obj if isinstance(obj, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return None


def _is_samples_file(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".jsonl"):
        return False
    obj = _first_object(path)
    return obj is not None and all(k in obj for k in _SAMPLE_KEYS)


def _samples_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("samples_*.jsonl") if _is_samples_file(p))
    return [path] if _is_samples_file(path) else []


def is_lmeval_samples(path: str | os.PathLike) -> bool:
    """True when ``path`` is an lm-eval logged-samples JSONL file, or a folder holding some
    (``samples_*.jsonl``, searched recursively). Never raises: unreadable means False."""
    try:
        return bool(_samples_files(Path(path)))
    except OSError:
        return False


def _model_from_args(model_args: Any) -> str | None:
    if isinstance(model_args, dict):
        for key in _MODEL_ARG_KEYS:
            if model_args.get(key):
                return str(model_args[key])
        return None
    if isinstance(model_args, str):
        parts = dict(kv.split("=", 1) for kv in model_args.split(",") if "=" in kv)
        for key in _MODEL_ARG_KEYS:
            if parts.get(key, "").strip():
                return parts[key].strip()
    return None


def _results_for(samples_file: Path) -> dict:
    """The ``results_<date>.json`` written with ``samples_file`` (same date), or the only
    results file beside it; {} when there is none."""
    m = _SAMPLES_NAME.match(samples_file.name)
    candidates = []
    if m:
        candidates.append(samples_file.parent / f"results_{m.group('date')}.json")
    others = sorted(samples_file.parent.glob("results_*.json"))
    if len(others) == 1:
        candidates.extend(others)
    for c in candidates:
        if c.is_file():
            try:
                obj = json.loads(c.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(obj, dict):
                return obj
    return {}


def _model_name(samples_file: Path, results: dict) -> str:
    if results.get("model_name"):
        return str(results["model_name"])
    config = results.get("config") or {}
    name = _model_from_args(config.get("model_args"))
    if name:
        return name
    if isinstance(config.get("model"), str) and config["model"]:
        return config["model"]
    # lm-eval names the folder after the model with "/" (and other path characters) as "__".
    return samples_file.parent.name.replace("__", "/")


def _task_name(samples_file: Path, results: dict) -> str:
    m = _SAMPLES_NAME.match(samples_file.name)
    lm_task = m.group("task") if m else samples_file.stem
    cfg = (results.get("configs") or {}).get(lm_task) or {}
    meta = cfg.get("metadata") if isinstance(cfg, dict) else None
    if isinstance(meta, dict) and meta.get("calbench_name"):
        return str(meta["calbench_name"])
    return lm_task


def _as_confidence(value: Any, where: str) -> float | None:
    # calbench tasks log NaN for an unparsed confidence (lm-eval averages per-doc floats, so it
    # cannot log null); any other value must pass the shared record check.
    if isinstance(value, float) and math.isnan(value):
        return None
    return check_confidence(value, where)


def _generation(sample: dict) -> str | None:
    """The first raw generation, or None when the sample is not from a generate_until task
    (loglikelihood tasks log ``[[["-1.2", "False"]]]``)."""
    resps = sample.get("resps")
    if not isinstance(resps, list) or not resps:
        return None
    first = resps[0]
    if isinstance(first, list):
        if not first:
            return None
        first = first[0]
    return first if isinstance(first, str) else None


def _prompt(sample: dict) -> str | None:
    args = sample.get("arguments")
    if isinstance(args, dict):  # the form lm-eval writes to disk
        first = args.get("gen_args_0") or {}
        p = first.get("arg_0") if isinstance(first, dict) else None
    elif isinstance(args, list) and args and isinstance(args[0], list) and args[0]:
        p = args[0][0]  # the in-memory form, should someone dump it as is
    else:
        p = None
    if isinstance(p, (list, dict)):  # chat APIs log the message list
        p = json.dumps(p, ensure_ascii=False)
    return p if isinstance(p, str) else None


def _doc_meta(doc: dict) -> dict:
    # calbench docs carry their task metadata as JSON text (Arrow needs one schema per row).
    meta = doc.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            return {}
    return meta if isinstance(meta, dict) else {}


def _record(sample: dict, *, task: str, lm_task: str, path: Path, lineno: int) -> dict:
    generated = _generation(sample)
    if generated is None:
        raise RecordError(
            f"{path}:{lineno}: not a generate_until sample (resps holds no generated text)"
        )
    doc = sample.get("doc") if isinstance(sample.get("doc"), dict) else {}
    prefill = str(doc.get("prefill") or "")
    response = prefill + generated
    ans, conf_parse = read_response(response, prefill)  # as the evaluator reads it

    field = next((f for f in CORRECT_FIELDS if f in sample), None)
    if field is None:
        raise RecordError(
            f"{path}:{lineno}: no correctness metric logged (looked for {', '.join(CORRECT_FIELDS)})"
        )
    correct = check_correct(sample[field], f"{path}:{lineno}", field)

    if "confidence" in sample:  # calbench tasks: their process_results already parsed it
        confidence = _as_confidence(sample["confidence"], f"{path}:{lineno}")
        conf_source = "lm-eval"
    else:
        confidence = conf_parse.value
        conf_source = "parsed"
    answer = ans.answer
    if answer is None:
        filtered = sample.get("filtered_resps")
        if isinstance(filtered, list) and filtered and isinstance(filtered[0], str):
            answer = filtered[0].strip() or None

    doc_id = sample.get("doc_id")
    rec: dict[str, Any] = {
        "id": str(doc["id"]) if doc.get("id") is not None else f"{task}/{doc_id}",
        "task": task,
        "elicitation": doc.get("elicitation"),
    }
    if "question" in doc:
        rec["question"] = doc["question"]
    rec["gold"] = doc["gold"] if "gold" in doc else sample.get("target")
    rec.update(
        {
            "prompt": _prompt(sample),
            "response": response,
            "answer": answer,
            "correct": correct,
            "confidence": confidence,
            "parse": {
                "answer_source": ans.source,
                "answer_raw": ans.raw,
                "confidence_source": conf_parse.source,
                "confidence_raw": conf_parse.raw,
                "confidence_rescaled": conf_parse.rescaled,
                "confidence_error": None if confidence is not None else (conf_parse.error or "nan"),
            },
            "meta": {
                **_doc_meta(doc),
                "source": "lm-eval",
                "lm_eval_task": lm_task,
                "doc_id": doc_id,
                "filter": sample.get("filter"),
                "correct_field": field,
                "confidence_from": conf_source,
                "samples_file": path.name,
            },
        }
    )
    return rec


def _doc_order(rec: dict) -> tuple[int, int, str]:
    # lm-eval logs doc_id as an int; sort numerically, anything else after, by its text.
    d = rec["meta"]["doc_id"]
    return (0, d, "") if isinstance(d, int) else (1, 0, str(d))


def _read_file(path: Path) -> tuple[str, str, dict[str, list[dict]]]:
    """(task, model, {filter: records}) of one samples file."""
    results = _results_for(path)
    m = _SAMPLES_NAME.match(path.name)
    lm_task = m.group("task") if m else path.stem
    task = _task_name(path, results)
    model = _model_name(path, results)
    by_filter: dict[str, list[dict]] = {}
    lineno = 0
    seen: dict[str, dict[str, str]] = {}  # ids are unique per filter (one record per doc each)
    for lineno, sample in iter_jsonl_lines(path):
        if not all(k in sample for k in _SAMPLE_KEYS):
            raise RecordError(f"{path}:{lineno}: not an lm-eval sample (needs {_SAMPLE_KEYS})")
        rec = _record(sample, task=task, lm_task=lm_task, path=path, lineno=lineno)
        flt = str(sample.get("filter") or "none")
        rec = validate_record(rec, f"{path}:{lineno}", seen.setdefault(flt, {}))
        by_filter.setdefault(flt, []).append(rec)
    if lineno == 0:
        raise RecordError(f"{path}: no samples")
    for recs in by_filter.values():
        if all(r["confidence"] is None for r in recs) and all(
            r["meta"]["confidence_from"] == "parsed" for r in recs
        ):
            raise RecordError(
                f"{path}: no verbalized confidence parses from any response; "
                "only runs that ask for a confidence can be scored"
            )
        recs.sort(key=_doc_order)
    return task, model, by_filter


def read_lmeval_samples(path: str | os.PathLike) -> dict[tuple[str, str], list[dict]]:
    """calbench records from lm-eval logged samples, keyed by ``(dataset, model)``.

    ``path`` is a ``samples_*.jsonl`` file or a folder searched recursively for them. In a
    folder, files that cannot be scored (loglikelihood tasks, no confidence) are skipped with a
    note on stderr; RecordError when nothing is left, or for a single file that cannot be read.
    When the same (dataset, model) comes from two files (a task rerun), the later one is keyed
    ``"<dataset>@<date>"`` so no records are merged across runs.
    """
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file or folder")
    files = _samples_files(path)
    if not files:
        raise RecordError(f"{path}: not lm-eval logged samples (samples_*.jsonl)")
    out: dict[tuple[str, str], list[dict]] = {}
    skipped = []
    for f in files:
        try:
            task, model, by_filter = _read_file(f)
        except RecordError as e:
            if not path.is_dir():
                raise
            skipped.append(str(e))
            continue
        for flt, recs in by_filter.items():
            dataset = task if len(by_filter) == 1 else f"{task}:{flt}"
            key = (dataset, model)
            if key in out:
                m = _SAMPLES_NAME.match(f.name)
                key = (f"{dataset}@{m.group('date') if m else f.stem}", model)
            if dataset != task:
                for r in recs:
                    r["task"] = dataset
            out[key] = recs
    for s in skipped:
        print(f"calbench: skipped {s}", file=sys.stderr)
    if not out:
        raise RecordError(f"{path}: no lm-eval samples file could be scored")
    return out
