"""Parse a model's answer and verbalized confidence out of its raw response.

This is the single parser shared by the evaluator (``tasks/*/utils.py``), ``calbench score``
and the trainer's reward functions, so a number means the same thing everywhere.

Contract (see README "Parser"):

* ``extract_answer``: content of the LAST ``<answer>…</answer>`` (tags case-insensitive, content
  stripped, empty -> None); with no answer tag, the last line starting with ``Answer:`` or
  ``Final answer:``; otherwise None.
* ``parse_confidence``: from the LAST complete ``<confidence>…</confidence>`` (an unclosed tag does
  not count); with no tag, the last line starting with ``Confidence:`` or ``Confidence level:``.
  The content (stripped, one trailing period removed) is used if it *is* a number, optionally with
  ``%``; otherwise if it contains exactly one number (optionally with ``%``); else None.
  ``%`` values must lie in [0, 100] and are divided by 100; bare values in [0, 1] are kept; bare
  values in (1, 100] are read as percentages and flagged; anything else -> None.
  The last tag wins even when its content is unparseable.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_CONF_TAG = re.compile(r"<confidence>(.*?)</confidence>", re.IGNORECASE | re.DOTALL)
_ANSWER_LINE = re.compile(r"^\s*(?:final\s+answer|answer)\s*:(.*)$", re.IGNORECASE)
_CONF_LINE = re.compile(r"^\s*confidence(?:\s+level)?\s*:(.*)$", re.IGNORECASE)
# A decimal number: 0.85, .25, 1e-1, 1.0000, -3. No thousands separators: "0,8" is two numbers.
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_WHOLE_NUMBER = re.compile(rf"({_NUMBER})\s*(%?)")
_ONE_NUMBER = re.compile(rf"(?<![\w.])({_NUMBER})(?![\w.])\s*(%?)")


@dataclass(frozen=True)
class AnswerParse:
    answer: str | None
    source: str | None  # "tag" | "line" | None
    raw: str | None  # tag/line content before stripping to None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ConfidenceParse:
    value: float | None
    source: str | None  # "tag" | "line" | None
    raw: str | None  # the tag or line content as written
    rescaled: bool  # True when a bare number in (1, 100] was read as a percentage
    error: str | None  # why value is None ("missing", "not a number", "out of range", ...)

    def to_dict(self) -> dict:
        return asdict(self)


def _strip(s: str) -> str:
    # str.strip() with no argument already strips Unicode whitespace (NBSP, thin space, ...).
    return s.strip()


def parse_answer_details(text: str | None) -> AnswerParse:
    """Answer with provenance; see :func:`extract_answer` for the rules."""
    if not text:
        return AnswerParse(None, None, None)
    tags = _ANSWER_TAG.findall(text)
    if tags:
        raw = tags[-1]
        content = _strip(raw)
        return AnswerParse(content or None, "tag", raw)
    for line in reversed(text.splitlines()):
        m = _ANSWER_LINE.match(line)
        if m:
            content = _strip(m.group(1))
            return AnswerParse(content or None, "line", m.group(1))
    return AnswerParse(None, None, None)


def extract_answer(text: str | None) -> str | None:
    """Content of the last ``<answer>…</answer>``, else of the last ``Answer:`` line, else None."""
    return parse_answer_details(text).answer


def _number_to_confidence(number: str, percent: bool, raw: str, source: str) -> ConfidenceParse:
    try:
        x = float(number)
    except ValueError:  # pragma: no cover - the regex only admits floats
        return ConfidenceParse(None, source, raw, False, "not a number")
    if not math.isfinite(x):
        return ConfidenceParse(None, source, raw, False, "not finite")
    if percent:
        if 0.0 <= x <= 100.0:
            return ConfidenceParse(x / 100.0, source, raw, False, None)
        return ConfidenceParse(None, source, raw, False, "percent out of range")
    if 0.0 <= x <= 1.0:
        return ConfidenceParse(x, source, raw, False, None)
    if 1.0 < x <= 100.0:
        return ConfidenceParse(x / 100.0, source, raw, True, None)
    return ConfidenceParse(None, source, raw, False, "out of range")


def confidence_from_content(raw: str, source: str | None = None) -> ConfidenceParse:
    """Read a confidence from the content of a tag or line (the rules of the module docstring)."""
    content = _strip(raw)
    if content.endswith("."):
        content = _strip(content[:-1])
    if not content:
        return ConfidenceParse(None, source, raw, False, "empty")
    whole = _WHOLE_NUMBER.fullmatch(content)
    if whole:
        return _number_to_confidence(whole.group(1), bool(whole.group(2)), raw, source)
    numbers = _NUMBER_RE.findall(content)
    if len(numbers) == 1:
        m = _ONE_NUMBER.search(content)
        if m:
            return _number_to_confidence(m.group(1), bool(m.group(2)), raw, source)
        return ConfidenceParse(None, source, raw, False, "number inside a word")
    if not numbers:
        return ConfidenceParse(None, source, raw, False, "not a number")
    return ConfidenceParse(None, source, raw, False, "several numbers")


def parse_confidence_details(text: str | None) -> ConfidenceParse:
    """Confidence with provenance and the reason for a failure; see :func:`parse_confidence`."""
    if not text:
        return ConfidenceParse(None, None, None, False, "missing")
    tags = _CONF_TAG.findall(text)
    if tags:
        return confidence_from_content(tags[-1], "tag")
    for line in reversed(text.splitlines()):
        m = _CONF_LINE.match(line)
        if m:
            return confidence_from_content(m.group(1), "line")
    return ConfidenceParse(None, None, None, False, "missing")


def parse_confidence(text: str | None) -> float | None:
    """Verbalized confidence in [0, 1] from the last ``<confidence>`` tag or ``Confidence:`` line."""
    return parse_confidence_details(text).value


def has_format(text: str | None) -> bool:
    """True when the response has both a complete answer tag and a complete confidence tag."""
    return bool(text) and bool(_ANSWER_TAG.search(text)) and bool(_CONF_TAG.search(text))
