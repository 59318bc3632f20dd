"""Parse a model's answer and verbalized confidence out of its raw response.

The parsing half of the response contract (:mod:`calbench.core.responses` adds prefill repair and
grading); every client reads responses through it, so a number means the same thing everywhere.

Contract (also in docs/elicitation.md, "Response contract"):

* ``extract_answer``: content of the last complete answer tag — the last ``</answer>`` and the
  last ``<answer>`` before it (tags case-insensitive, content stripped, empty -> None). A
  ``</answer>`` with no ``<answer>`` anywhere before it: the response began inside the answer (a
  prefilled tag the caller left out), so the content runs from the start (source
  ``tag_unopened``). With no answer tag, the last line starting with ``Answer:`` or
  ``Final answer:``; otherwise None. With ``unclosed_ok`` (a prefilled ``<answer>``: the model was
  made to start its answer), a final unclosed ``<answer>`` counts too: its content runs to the
  next ``<confidence>`` tag or the end (source ``prefill_unclosed``).
* ``parse_confidence``: from the last complete ``<confidence>…</confidence>``; a final unclosed
  ``<confidence>`` after it counts when its content up to the next ``<`` is a number (source
  ``tag_unclosed``: the model stopped after the number, or a stop sequence cut the closing tag),
  except "0" or a number ending in "." (what a token limit leaves of "0.8");
  with no tag, the last line starting with ``Confidence:`` or ``Confidence level:``.
  The content (stripped, one trailing period removed) is used if it *is* a number, optionally
  with ``%``; otherwise (complete tags and lines only) if it contains exactly one number
  (optionally with ``%``); else None. ``%`` values must lie in [0, 100] and are divided by 100;
  bare values in [0, 1] are kept; bare values in (1, 100] are read as percentages and flagged;
  anything else -> None. The last complete tag wins even when its content is unparseable.
  Content longer than :data:`MAX_CONFIDENCE_CHARS` is not a confidence.

Every function is linear in the length of the response: tags are located with one scan (no
regex that re-scans the text from each unclosed tag).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_ANSWER_TAGS = re.compile(r"<(/?)answer>", re.IGNORECASE)
_CONF_TAGS = re.compile(r"<(/?)confidence>", re.IGNORECASE)
_CONF_OPEN = re.compile(r"<confidence>", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*(?:final\s+answer|answer)\s*:(.*)$", re.IGNORECASE)
_CONF_LINE = re.compile(r"^\s*confidence(?:\s+level)?\s*:(.*)$", re.IGNORECASE)
# A decimal number: 0.85, .25, 1e-1, 1.0000, -3. No thousands separators: "0,8" is two numbers.
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_WHOLE_NUMBER = re.compile(rf"({_NUMBER})\s*(%?)")
_ONE_NUMBER = re.compile(rf"(?<![\w.])({_NUMBER})(?![\w.])\s*(%?)")
# An unclosed tag holding "0" or "0." may be a longer number cut by the token limit ("0.8"): it
# is not read as 0.
_CUT_NUMBER = re.compile(r"\s*[+-]?(?:0|\d*\.)\s*")
# "0.85" or "I'd say about 85% sure" fit easily; a longer content is prose, not a confidence
# (and the bound keeps the number search linear on hostile input).
MAX_CONFIDENCE_CHARS = 200


@dataclass(frozen=True)
class AnswerParse:
    answer: str | None
    source: str | None  # "tag" | "tag_unopened" | "prefill_unclosed" | "line" | None
    raw: str | None  # tag/line content before stripping to None


@dataclass(frozen=True)
class ConfidenceParse:
    value: float | None
    source: str | None  # "tag" | "tag_unclosed" | "line" | None
    raw: str | None  # the tag or line content as written
    rescaled: bool  # True when a bare number in (1, 100] was read as a percentage
    error: str | None  # why value is None ("missing", "not a number", "out of range", ...)


def _tag_spans(pattern: re.Pattern, text: str) -> tuple[tuple[int, int, bool] | None, int | None]:
    """One scan over the tags of ``pattern``: ((start, end, opened) of the content of the last
    complete tag, or None; end of a final opening tag that no closing tag follows, or None).

    A complete tag is a closing tag and the last opening tag before it. A closing tag with no
    opening tag anywhere before it spans from the start of the text (``opened`` False); a stray
    closing tag after a complete one is ignored."""
    pending: int | None = None  # end of an opening tag not yet closed
    seen_open = False
    last: tuple[int, int, bool] | None = None
    for m in pattern.finditer(text):
        if not m.group(1):
            pending, seen_open = m.end(), True
        elif pending is not None:
            last, pending = (pending, m.start(), True), None
        elif not seen_open:
            last = (0, m.start(), False)
    return last, pending


def parse_answer_details(text: str | None, *, unclosed_ok: bool = False) -> AnswerParse:
    """Answer with provenance; see :func:`extract_answer` and the module docstring."""
    if not text:
        return AnswerParse(None, None, None)
    span, unclosed = _tag_spans(_ANSWER_TAGS, text)
    if unclosed_ok and unclosed is not None:
        stop = _CONF_OPEN.search(text, unclosed)
        raw = text[unclosed : stop.start() if stop else len(text)]
        return AnswerParse(raw.strip() or None, "prefill_unclosed", raw)
    if span is not None:
        raw = text[span[0] : span[1]]
        return AnswerParse(raw.strip() or None, "tag" if span[2] else "tag_unopened", raw)
    for line in reversed(text.splitlines()):
        m = _ANSWER_LINE.match(line)
        if m:
            return AnswerParse(m.group(1).strip() or None, "line", m.group(1))
    return AnswerParse(None, None, None)


def extract_answer(text: str | None) -> str | None:
    """Content of the last ``<answer>…</answer>``, else of the last ``Answer:`` line, else None."""
    return parse_answer_details(text).answer


def _number_to_confidence(
    number: str, percent: bool, raw: str, source: str | None
) -> ConfidenceParse:
    x = float(number)  # the regex only admits floats
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


def confidence_from_content(
    raw: str, source: str | None = None, *, whole_only: bool = False
) -> ConfidenceParse:
    """Read a confidence from the content of a tag or line (the rules of the module docstring).
    ``whole_only``: the content must be a number (no number inside text)."""
    content = raw.strip()  # str.strip() strips Unicode whitespace too (NBSP, thin space)
    if content.endswith("."):
        content = content[:-1].strip()
    if not content:
        return ConfidenceParse(None, source, raw, False, "empty")
    if len(content) > MAX_CONFIDENCE_CHARS:
        return ConfidenceParse(None, source, raw, False, "too long")
    whole = _WHOLE_NUMBER.fullmatch(content)
    if whole:
        return _number_to_confidence(whole.group(1), bool(whole.group(2)), raw, source)
    if whole_only:
        return ConfidenceParse(None, source, raw, False, "not a number")
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
    span, unclosed = _tag_spans(_CONF_TAGS, text)
    if unclosed is not None:
        stop = text.find("<", unclosed)
        raw = text[unclosed : stop if stop >= 0 else len(text)]
        if not _CUT_NUMBER.fullmatch(raw):
            got = confidence_from_content(raw, "tag_unclosed", whole_only=True)
            if got.value is not None:
                return got
    if span is not None:
        return confidence_from_content(text[span[0] : span[1]], "tag")
    for line in reversed(text.splitlines()):
        m = _CONF_LINE.match(line)
        if m:
            return confidence_from_content(m.group(1), "line")
    return ConfidenceParse(None, None, None, False, "missing")


def parse_confidence(text: str | None) -> float | None:
    """Verbalized confidence in [0, 1] from the last ``<confidence>`` tag or ``Confidence:`` line."""
    return parse_confidence_details(text).value


def has_format(text: str | None) -> bool:
    """True when the response has a complete answer tag and a complete confidence tag."""
    if not text:
        return False
    answer, _ = _tag_spans(_ANSWER_TAGS, text)
    conf, _ = _tag_spans(_CONF_TAGS, text)
    return answer is not None and conf is not None
