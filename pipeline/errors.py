"""One root error type; every error says whether retrying can help.

The CLI maps them to exit codes: :class:`UsageError` (bad config, bad input, bad flags) exits 2,
everything else derived from :class:`TrailwardenError` exits 1. Messages are one line a user can
act on, and never carry secrets.
"""

from __future__ import annotations

import re


class TrailwardenError(Exception):
    """Root of every error trailwarden raises on purpose."""

    transient = False
    exit_code = 1
    partition: str | None = None  # the source partition (an SLS shard) it happened on, when one


class UsageError(TrailwardenError):
    """Invalid configuration, inventory, flags or input path: the user must fix something."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        self.message = message
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
