"""One root error type; every error says whether retrying can help.

The CLI maps them to exit codes: :class:`UsageError` (bad config, bad input, bad flags) exits 2,
everything else derived from :class:`TrailwardenError` exits 1. Messages are one line a user can
act on, and never carry secrets.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import quote, quote_plus

from pipeline.core.redact import redact_text

# The process's own credentials: never in an error, a log line, the store or Slack.
SECRET_ENV = ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN",
              "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")
_MIN_SECRET = 6  # shorter values would blank out ordinary words; real credentials are 16+ characters


def scrub(text: str) -> str:
    """Error text fit to print, log, store or post: the current values of :data:`SECRET_ENV`
    (as given and URL-encoded) become ``<NAME>``, and secret-shaped parts (tokens, Authorization
    headers, ``password=...``: ``pipeline.core.redact.redact_text``) become ``<redacted>``. Servers echo
    requests in their errors, so anything quoted from a response passes through here."""
    for name in SECRET_ENV:
        value = os.environ.get(name, "").strip()
        if len(value) < _MIN_SECRET:
            continue
        for form in sorted({value, quote(value, safe=""), quote_plus(value), quote(value)}, key=len, reverse=True):
            text = text.replace(form, f"<{name}>")
    return redact_text(text)[0]


class ScrubFilter(logging.Filter):
    """A handler filter: every log record's message (and traceback) passes :func:`scrub` - the
    SDKs log requests at debug level, and our own lines quote errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it when the record is formatted
            return True
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


class TrailwardenError(Exception):
    """Root of every error trailwarden raises on purpose. Its message is scrubbed of the process's
    secrets (:func:`scrub`) when it is made, so no caller can print or store them."""

    transient = False
    exit_code = 1
    partition: str | None = None  # the source partition (an SLS shard) it happened on, when one

    def __init__(self, *args: object):
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class UsageError(TrailwardenError):
    """Invalid configuration, inventory, flags or input path: the user must fix something."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        self.message = scrub(message)
        where = ": ".join(p for p in (path, key) if p and not _names(message, p))
        super().__init__(f"{where}: {message}" if where else message)


def _names(message: str, part: str) -> bool:
    """Whether ``message`` already names ``part`` (a file or key) as a whole word, as in
    "--since must be before --until" or "x.yaml: agents[0].name: ...": then the prefix would only
    repeat it ("--since: --since must ...")."""
    return re.search(rf"(?<![\w-]){re.escape(part)}(?![\w-])", message) is not None


class TransientError(TrailwardenError):
    """Throttling, 5xx, timeouts, a held lock: worth retrying with backoff."""

    transient = True


class TerminalError(TrailwardenError):
    """Bad credentials, a missing channel, a corrupt store: retrying will not help."""
