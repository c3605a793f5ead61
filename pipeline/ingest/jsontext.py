"""Strict JSON parsing of event text: one rule for every source (files, SLS, LookupEvents).

Python's ``json`` module accepts three things a security store must not take silently:

* **Duplicate keys** (``{"userName": "a", "userName": "b"}``): Python keeps the last value, DuckDB's
  JSON functions over the stored raw text the first, so the typed columns and every query over
  ``raw`` would disagree about who acted. Such a value is refused ("ambiguous"), never guessed.
* **Nesting deeper than the interpreter's recursion limit** raises ``RecursionError``, which is
  not a ``ValueError``: unhandled, one such line used to end a whole ingest.
* Lone surrogates (``"\\ud800"``) parse fine but cannot be stored (Arrow and DuckDB need valid
  UTF-8); :func:`pipeline.ingest.events.normalize` refuses them, since text also arrives already parsed
  (LookupEvents).

Every failure is a :class:`BadJson` whose text is the quarantine reason. Checking duplicates costs
an ``object_pairs_hook`` call per object: measured about +25% on parsing alone (``json.loads`` of
1.3 KB events, see the README's Reliability section for the effect on a whole ingest).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class BadJson(ValueError):
    """Text that is not acceptable JSON; ``str(exc)`` is the quarantine reason."""


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


_strict = json.JSONDecoder(object_pairs_hook=_unique_pairs)
TOO_DEEP = "JSON nested too deeply to read (more levels than the parser's recursion limit)"


def loads(text: str) -> Any:
    """Parse one JSON document; raise :class:`BadJson` with the reason it cannot be used."""
    try:
        return _strict.decode(text)
    except _DuplicateKey:
        raise BadJson(duplicate_reason(text)) from None
    except RecursionError:
        raise BadJson(TOO_DEEP) from None
    except ValueError as exc:
        raise BadJson(f"malformed JSON: {exc}") from None


def raw_decode(text: str, pos: int) -> tuple[Any, int]:
    """The JSON value starting at ``pos`` and the index after it (for arrays read in pieces).

    Raises ``ValueError`` (malformed or cut short: the caller decides which), ``_DuplicateKey``
    or ``RecursionError``; :func:`reason_for` turns any of them into a quarantine reason.
    """
    return _strict.raw_decode(text, pos)


def reason_for(exc: BaseException, text: str) -> str:
    """The quarantine reason for an exception from :func:`raw_decode` on the value ``text``."""
    if isinstance(exc, _DuplicateKey):
        return duplicate_reason(text)
    if isinstance(exc, RecursionError):
        return TOO_DEEP
    return f"malformed JSON: {exc}"


def duplicate_reason(text: str) -> str:
    """Which key is duplicated, and where: ``duplicate key "userName" in userIdentity: ambiguous``.

    Only called once a duplicate was seen, so it can afford a second parse that records where.
    """
    value, dups = loads_marking_duplicates(text)
    found = first_duplicate(value, dups)
    return found or "duplicate key in an object: ambiguous"


def loads_marking_duplicates(text: str) -> tuple[Any, dict[int, str]]:
    """Parse without refusing duplicates; return the value and ``{id(object): duplicated key}``.

    For a LookupEvents body, so that only the events holding a duplicate are refused. Raises
    :class:`BadJson` for anything else that is wrong."""
    dups: dict[int, str] = {}

    def mark(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, val in pairs:
            if key in obj and id(obj) not in dups:
                dups[id(obj)] = key
            obj[key] = val
        return obj

    try:
        return json.JSONDecoder(object_pairs_hook=mark).decode(text), dups
    except RecursionError:
        raise BadJson(TOO_DEEP) from None
    except ValueError as exc:
        raise BadJson(f"malformed JSON: {exc}") from None


def first_duplicate(value: Any, dups: dict[int, str]) -> str | None:
    """The reason for the first object within ``value`` that had a duplicated key, else None."""
    if not dups:
        return None
    for path, obj in _objects(value):
        key = dups.get(id(obj))
        if key is not None:
            where = printable(path, 120) if path else "the event's top level"
            return (f"duplicate key \"{printable(key, 60)}\" in {where}: ambiguous (the raw text and the "
                    "typed columns would disagree about its value)")
    return None


def printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, as ASCII with JSON escapes: attacker-controlled keys
    go into quarantine reasons, which reach terminals; no control or bidi character survives."""
    return json.dumps(text[:limit])[1:-1]


def _objects(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object within ``value`` with its path (``userIdentity.sessionContext``, ``a[2]``),
    depth first, without recursion (the value may be deep)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            yield path, node
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))


def encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (a lone surrogate from a ``\\ud800`` escape cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
