"""Text objects for Slack with every event-derived string made inert (see ``messages``)."""

from __future__ import annotations

import re
from typing import Any

from pipeline.core.inert import one_line

MAX_SECTION = 3000
MAX_HEADER = 150
_URL = re.compile(r"(?i)\b(https?|ftp)://")


def untrusted(value: Any, limit: int = 200) -> str:
    """An attacker-controlled value as one line of text for any Slack text object: hidden
    characters shown as markers, ``& < >`` escaped, backticks replaced, URLs defanged, truncated.

    In mrkdwn it is inert only inside a `code span` (``*``, ``_`` and ``~`` would format outside
    one); in a ``plain_text`` object, and in the top-level text posted with ``mrkdwn=False``, it is
    inert as it is."""
    text = one_line(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")
    text = _URL.sub(r"\1[:]//", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(value: Any, limit: int = 120) -> str:
    """An untrusted value as a mrkdwn code span (where nothing formats)."""
    return f"`{untrusted(value, limit)}`"


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:MAX_SECTION], "verbatim": True}


def section(text: str) -> dict[str, Any]:
    if len(text) > MAX_SECTION:
        text = text[: MAX_SECTION - 2] + " …"
    return {"type": "section", "text": mrkdwn(text)}


def plain_section(text: str) -> dict[str, Any]:
    """A section of ``untrusted()`` text: nothing in it formats, links or mentions."""
    if len(text) > MAX_SECTION:
        text = text[: MAX_SECTION - 2] + " …"
    return {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}}


def context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(t) for t in texts if t]}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": untrusted(text, MAX_HEADER), "emoji": False}}
