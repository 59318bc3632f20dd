"""A model's response -> a graded record: the one reading that every client shares.

The evaluator (:mod:`calbench.eval.harness`), the multi-request elicitations (:mod:`calbench.eval.elicit`),
the trainer's rewards (:mod:`calbench.train.rewards`) and the lm-eval import all turn a response
into (answer, correct, confidence) through this module, so one response means one thing:

1. **prefill repair** (:func:`restore_prefill`): a completion sampled after a prefilled assistant
   turn (``<answer>``) is read with the prefill in front — unless it already starts with it;
2. **parse** (:func:`read_response`, rules in :mod:`calbench.core.parse`): after an ``<answer>``
   prefill, a final unclosed answer tag is the answer (the model was made to start it, so
   stopping ends it: ``prefill_unclosed``); a final unclosed ``<confidence>`` holding a number
   is the confidence (``tag_unclosed``);
3. **grade** (:func:`calbench.core.grade.grade`) the parsed answer against the gold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from calbench.core.grade import grade
from calbench.core.parse import (
    AnswerParse,
    ConfidenceParse,
    parse_answer_details,
    parse_confidence_details,
)

ANSWER_PREFILL = "<answer>"
# The contract in one line, for `calbench tasks`.
RESPONSE_RULE = (
    "answer = the last complete <answer> tag (after an <answer> prefill, an unclosed one runs to "
    "the end or to <confidence>), else the last 'Answer:' line; confidence = the last complete "
    "<confidence> tag, or a final unclosed one holding a number, else the last 'Confidence:' "
    "line; 85% and bare 85 read as 0.85"
)


def restore_prefill(completion: str, prefill: str | None) -> str:
    """The response as the model's whole assistant turn: ``prefill + completion``, unless the
    completion already starts with the prefill (case-insensitive, leading spaces ignored)."""
    if prefill and not completion.lstrip().lower().startswith(prefill.lower()):
        return prefill + completion
    return completion


def opens_answer(prefill: str | None) -> bool:
    """Whether a prefill starts the answer tag (then an unclosed answer tag is an answer)."""
    return bool(prefill) and prefill.strip().lower() == ANSWER_PREFILL


def read_response(
    text: str | None, prefill: str | None = ""
) -> tuple[AnswerParse, ConfidenceParse]:
    """Answer and confidence of a full response (prefill included) under the contract above."""
    return (
        parse_answer_details(text, unclosed_ok=opens_answer(prefill)),
        parse_confidence_details(text),
    )


@dataclass(frozen=True)
class GradedResponse:
    """One response read and graded: what a record stores and a reward is made of."""

    answer: AnswerParse
    confidence: ConfidenceParse
    correct: bool
    grading: dict | None  # grader details (similarity scores, judge verdict), if any

    @property
    def format_ok(self) -> bool:
        """Both tags complete and the confidence parsed (the trainer's format term)."""
        return (
            self.confidence.value is not None
            and self.answer.source == "tag"
            and self.confidence.source == "tag"
        )

    def record_fields(self) -> dict[str, Any]:
        """The graded fields of a ``samples.jsonl`` record."""
        a, c = self.answer, self.confidence
        out: dict[str, Any] = {
            "answer": a.answer,
            "correct": self.correct,
            "confidence": c.value,
            "parse": {
                "answer_source": a.source,
                "answer_raw": a.raw,
                "confidence_source": c.source,
                "confidence_raw": c.raw,
                "confidence_rescaled": c.rescaled,
                "confidence_error": c.error,
            },
        }
        if self.grading is not None:
            out["grading"] = self.grading
        return out


Grader = str | Callable[[str | None, str], bool]


def grade_answer(
    answer: str | None,
    gold: str,
    grader: Grader = "math",
    *,
    question: str = "",
    judge: dict | None = None,
) -> tuple[bool, dict | None]:
    """Grade a parsed answer with a named grader (:func:`calbench.core.grade.grade`) or a callable
    ``f(answer, gold) -> bool``; no answer is always wrong."""
    if answer is None:
        return False, None
    if callable(grader):
        return bool(grader(answer, gold)), None
    correct, details = grade(grader, answer, gold, question=question, judge=judge)
    return bool(correct), details


def grade_response(
    text: str | None,
    gold: str,
    grader: Grader = "math",
    *,
    prefill: str | None = "",
    question: str = "",
    judge: dict | None = None,
) -> GradedResponse:
    """Read a full response (prefill included, see :func:`restore_prefill`) and grade it."""
    ans, conf = read_response(text, prefill)
    correct, details = grade_answer(ans.answer, gold, grader, question=question, judge=judge)
    return GradedResponse(ans, conf, correct, details)
