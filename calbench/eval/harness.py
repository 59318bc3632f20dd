"""calbench's bridge to lm-evaluation-harness, the execution engine.

Two halves:

* hooks called from the lm-eval task plugins in ``calbench/tasks/_calbench/hooks.py``: :func:`make_docs` renders
  each question into the prompt fields the YAML templates read (``description: "{{system}}"``,
  ``doc_to_text: "{{user}}"``, ``gen_prefix: "{{prefill}}"``), and :func:`process_results`
  grades a response with :mod:`calbench.core.responses` — the same code the trainer's rewards use;
* :func:`lmeval_samples_to_records`, turning lm-eval's logged samples into calbench records.

Because the prompt is rendered into the doc, plain ``lm_eval --include_path tasks/
--apply_chat_template`` sends exactly the prompt ``calbench eval`` sends.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from calbench.core.grade import ALL_GRADERS
from calbench.core.loaders import LOADERS
from calbench.core.prompts import build_prompt
from calbench.core.responses import grade_response

# The task plugins ship inside the package (calbench/tasks/, package data), so a wheel install
# finds them too; `calbench tasks --path` prints this folder for `lm_eval --include_path`.
TASKS_DIR = Path(str(resources.files("calbench") / "tasks"))


def load_docs(
    *,
    loader: str | None = None,
    calbench_name: str | None = None,
    elicitation: str = "tags",
    grader: str = "math",
    judge: dict | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """The ``custom_dataset`` hook of every calbench task YAML (via ``tasks/_calbench``).

    lm-eval calls it with the task's ``metadata`` merged with what ``calbench eval`` (or
    ``lm_eval --metadata``) passes: ``loader`` picks a function of
    :data:`calbench.core.loaders.LOADERS` (default: the task's calbench name), which gets the rest
    (``data_dir``, ``seed``, ``size``, ``split``, ``file``, ``fields``, ...).
    """
    name = loader or calbench_name
    if name not in LOADERS:
        raise ValueError(f"unknown loader {name!r}; known: {sorted(LOADERS)}")
    items = LOADERS[name](task=calbench_name or name, **metadata)
    return make_docs(items, elicitation=elicitation, grader=grader, judge=judge)


def make_docs(
    items: list[dict],
    *,
    elicitation: str = "tags",
    grader: str = "math",
    judge: dict | None = None,
    **_: object,
) -> dict[str, Any]:
    """lm-eval ``custom_dataset`` result: ``{"test": Dataset}`` of docs with prompt fields."""
    # lazy: datasets +0.6-1.8 s at import (python -X importtime); `calbench tasks`, eval's
    # argument checks and `calbench regrade` import this module, mostly without building docs
    import datasets

    if grader not in ALL_GRADERS:
        raise ValueError(f"unknown grader {grader!r}; known: {sorted(ALL_GRADERS)}")
    docs = []
    for it in items:
        p = build_prompt(it["question"], elicitation)
        docs.append(
            {
                "id": it["id"],
                "question": it["question"],
                "gold": it["gold"],
                "system": p.messages[0]["content"],
                "user": p.user,
                "prefill": p.prefill,
                "elicitation": elicitation,
                "grader": grader,
                "judge": json.dumps(judge or {}),
                # JSON text, not a nested dict: Arrow needs one schema for every row.
                "meta": json.dumps(it.get("meta", {}), sort_keys=True),
            }
        )
    return {"test": datasets.Dataset.from_list(docs)}


def grade_doc(doc: dict, response: str) -> dict[str, Any]:
    """The graded record fields of a full response (prefill included) to ``doc``, read and graded
    by :mod:`calbench.core.responses` with the grader, judge, question and prefill the doc carries."""
    g = grade_response(
        response,
        doc["gold"],
        doc.get("grader", "math"),
        prefill=doc.get("prefill") or "",
        question=doc.get("question", ""),
        judge=json.loads(doc.get("judge") or "{}"),
    )
    return g.record_fields()


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval ``process_results`` hook: per-doc numbers lm-eval can aggregate and log.

    lm-eval strips ``gen_prefix`` from what it hands back, so the prefill is put back first.
    """
    response = (doc.get("prefill") or "") + (results[0] if results else "")
    g = grade_doc(doc, response)
    conf = g["confidence"]
    return {
        "correct": float(g["correct"]),
        "confidence": float(conf) if conf is not None else math.nan,
        "confidence_parsed": float(conf is not None),
        "answer_parsed": float(g["answer"] is not None),
    }


def nanmean(values: list[float]) -> float:
    """Aggregation for ``confidence``: mean over parsed confidences (NaN = unparsed)."""
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def lmeval_samples_to_records(
    samples: list[dict], *, task: str, count_tokens: Callable[[str], int] | None = None
) -> list[dict]:
    """Turn lm-eval logged samples of a calbench task into calbench records (sorted by doc_id)."""
    records = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        doc = s["doc"]
        prompt = s["arguments"][0][0] if s.get("arguments") else ""
        prompt = getattr(prompt, "prompt", prompt)  # chat APIs: JsonChatStr -> messages JSON
        if isinstance(prompt, (list, tuple)):  # ... or its JSON-serialised form
            prompt = (
                prompt[0]
                if len(prompt) == 1 and isinstance(prompt[0], str)
                else json.dumps(prompt, ensure_ascii=False)
            )
        generated = s["resps"][0][0] if s.get("resps") and s["resps"][0] else ""
        response = (doc.get("prefill") or "") + generated
        g = grade_doc(doc, response)
        rec = {
            "id": doc["id"],
            "task": task,
            "elicitation": doc.get("elicitation"),
            "question": doc["question"],
            "gold": doc["gold"],
            "prompt": prompt,
            "response": response,
            **g,
            "tokens": {
                "prompt": count_tokens(prompt) if count_tokens else None,
                "response": count_tokens(generated) if count_tokens else None,
            },
            "meta": json.loads(doc.get("meta") or "{}"),
        }
        records.append(rec)
    return records
