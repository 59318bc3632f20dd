"""Correctness graders shared by the evaluator, ``calbench score`` and the trainer's rewards.

A grader is ``grade(prediction, gold) -> bool``. The prediction is the already-extracted answer
(see :mod:`calbench.parse`), or None when the model gave none (always wrong).
"""

from __future__ import annotations

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
