"""Public import path of the response parser; the code lives in :mod:`calbench.core.parse`."""

from calbench.core.parse import (  # noqa: F401  (re-exported public API)
    AnswerParse,
    ConfidenceParse,
    extract_answer,
    has_format,
    parse_answer_details,
    parse_confidence,
    parse_confidence_details,
)
