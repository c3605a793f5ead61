"""What `alert --dry-run` would post, as text or JSON."""

from __future__ import annotations

from typing import Any

from pipeline.core.output import json_text


def preview_text(posts: list[Any], destination: str, fmt: str) -> str:
    """`alert --dry-run`: each message as the console would show it, or as JSON (text and blocks
    as they would be posted, with the finding ids each carries)."""
    from pipeline.service.alerting.messages import as_text

    if fmt == "json":
        return json_text({"destination": destination, "messages": [p.as_dict() for p in posts]}, indent=2)
    out = []
    for post in posts:
        prefix = "  (updated) " if post.kind == "refresh" else "  (reply) " if post.thread_ts else ""
        out.append(prefix + as_text(post.message).replace("\n", "\n" + prefix) + "\n")
    updated = sum(post.kind == "refresh" for post in posts)  # an incident's message changed in place
    out.append(f"{len(posts) - updated} message(s) would be posted to {destination}"
               + (f" and {updated} updated in place." if updated else "."))
    return "\n".join(out)
