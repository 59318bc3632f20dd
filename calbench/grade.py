"""Public import path of the graders; the code lives in :mod:`calbench.core.grade`."""

from calbench.core.grade import (  # noqa: F401  (re-exported public API)
    ALL_GRADERS,
    GRADER_RULES,
    GRADERS,
    exact_match,
    grade,
    letter_match,
    math_equal,
)
