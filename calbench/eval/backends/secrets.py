"""Keeping API keys and URL credentials out of everything calbench prints or writes.

Two kinds of secret reach calbench: the API key (read from the environment variable named by
``--api-key-env``) and credentials written into a URL (``https://user:password@host/v1``).
Both are registered with :func:`add_secret` the moment they are read, and :func:`redact`
replaces every registered secret, and the user-info part of every URL, with ``***``.

:func:`install_log_redaction` applies :func:`redact` to every log record as it is created
(message, arguments and traceback), whichever library logs it; the manifest's command line and
endpoint go through :func:`command_line` / :func:`strip_credentials`, and calbench's own error
messages are built from credential-free URLs.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "***"
_SECRETS: set[str] = set()
# scheme://userinfo@ — the userinfo may be "user", "user:password" or ":password"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@'\"]*@")


def add_secret(value: str | None) -> None:
    """Register a secret (and its URL-encoded forms) so :func:`redact` masks it everywhere."""
    if not value:
        return
    _SECRETS.update(v for v in {value, quote(value, safe=""), unquote(value)} if v)
    install_log_redaction()


def redact(text: str) -> str:
    """``text`` with URL credentials and every registered secret replaced by ``***``."""
    text = _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(secret, MASK)
    return text


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, as manifests and lock files record it: the program's
    name and its arguments, URL credentials and registered secrets masked."""
    argv = sys.argv if argv is None else argv
    return redact(" ".join([Path(argv[0]).name, *argv[1:]]) if argv else "")


def strip_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(``url`` without its user-info, user, password), URL-decoded. The password is registered
    as a secret; so is the user when there is no password (``https://TOKEN@host``)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    add_secret(password if password else user)
    return urlunsplit(parts._replace(netloc=netloc)), user, password


def install_log_redaction() -> None:
    """Make every log record created from now on pass through :func:`redact` (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "calbench_redacts", False):
        return

    def redacting_factory(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None:
            # handlers print exc_text when set; format the traceback now, redacted
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text)
        return record

    redacting_factory.calbench_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
