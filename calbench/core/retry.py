"""When to retry an HTTP request and how long to wait: the one rule set of every client calbench
sends requests with (the OpenAI-compatible eval backends and the LLM judge).

Retried: connection errors, timeouts, malformed 2xx responses, HTTP 408/409/425/429 and 5xx.
Other 4xx (401, 403, 404, 422, ...) fail at once: the same request would be refused again. The
wait before a retry is ``Retry-After`` when a 429/503 sends one (at most
:data:`RETRY_AFTER_CAP` seconds), else exponential backoff (0.5, 1, 2, ... s, at most
:data:`BACKOFF_MAX`); there is no wait after the last attempt.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime

RETRY_AFTER_CAP = 60.0  # seconds: a Retry-After longer than this is cut to it
BACKOFF_BASE = 0.5  # seconds before the first retry; doubles per retry
BACKOFF_MAX = 8.0
RETRY_STATUSES = frozenset({408, 409, 425, 429})  # and every 5xx


def retryable_status(status: int) -> bool:
    """Whether an HTTP error status is worth the same request again."""
    return status in RETRY_STATUSES or status >= 500


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait for a ``Retry-After`` header (delta-seconds or an HTTP date), within
    [0, RETRY_AFTER_CAP]; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def backoff_seconds(attempt: int) -> float:
    """The wait after failed attempt number ``attempt`` (1-based) without a Retry-After."""
    return min(BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_MAX)


def wait_before_retry(status: int | None, retry_after: str | None, attempt: int) -> float:
    """The wait after failed attempt ``attempt``: the server's Retry-After on a 429/503, else
    :func:`backoff_seconds`."""
    wait = retry_after_seconds(retry_after) if status in (429, 503) else None
    return backoff_seconds(attempt) if wait is None else wait
