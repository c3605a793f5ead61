"""``trailwarden policy simulate``: would these RAM policies allow this request?"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from models.policy import PolicyError, PolicySet, Request, Result
from pipeline.core.errors import UsageError


def parse_context(pairs: Iterable[str]) -> dict[str, Any]:
    """``acs:SourceIp=1.2.3.4`` pairs; a key given twice holds a list of values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {pair!r}", key="--context")
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


def simulate_one(docs: Sequence[Any], action: str, resource: str, contexts: Iterable[str]) -> Result:
    try:
        policies = PolicySet.from_documents(docs)
    except PolicyError as exc:
        raise UsageError(f"invalid policy: {exc}") from None
    return policies.evaluate(Request(action, resource, parse_context(contexts)))


def simulate_batch(lines: Iterable[str], emit: Callable[[str], None]) -> int:
    """One output line per input line, in order; returns how many lines were invalid."""
    failures = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        ident: Any = None
        try:
            item = json.loads(line)
            ident = item.get("id") if isinstance(item, dict) else None
            result = _one(item)
            emit(json.dumps({"id": ident, "decision": result.decision.value}))
        except (ValueError, PolicyError, TypeError, KeyError) as exc:
            failures += 1
            emit(json.dumps({"id": ident, "error": f"line {number}: {exc}"}))
    return failures


def _one(item: Any) -> Result:
    if not isinstance(item, dict):
        raise ValueError("each line must be a JSON object")
    docs, request = item.get("policies"), item.get("request")
    if not isinstance(docs, list) or not isinstance(request, dict):
        raise ValueError('each line needs "policies" (a list of documents) and "request" (an object)')
    action, resource = request.get("action"), request.get("resource")
    if not isinstance(action, str) or not isinstance(resource, str):
        raise ValueError('"request" needs string "action" and "resource"')
    context = request.get("context") or {}
    if not isinstance(context, dict):
        raise ValueError('"request.context" must be an object of key: value')
    ctx = {str(k): [_text(x) for x in v] if isinstance(v, list) else _text(v) for k, v in context.items()}
    return PolicySet.from_documents(docs).evaluate(Request(action, resource, ctx))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
