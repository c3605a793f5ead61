"""Secrets out of what leaves the store: findings' evidence, Slack messages, replay exports, error text.

Two rules, applied recursively over dicts and lists (``redact``) or to one string (``redact_text``):

* **by key**: a string under a key that names a secret - the key, with case and punctuation
  ignored, ends in ``password``, ``passwd``, ``pwd``, ``passphrase``, ``secret``, ``token``,
  ``credential(s)``, ``privatekey``, ``secretkey``, ``secretaccesskey``, ``apikey``,
  ``signature`` or ``authorization`` (``Password``, ``LoginProfile.Password``, ``NewPwd``,
  ``AccessKeySecret``, ``SecurityToken``...) - becomes ``<redacted>``. Paging and idempotency
  tokens (``NextToken``, ``ClientToken``...) are not secrets and stay. A dict or list under such
  a key is walked, not dropped: STS ``Credentials`` keep their ``AccessKeyId`` and
  ``Expiration`` while ``AccessKeySecret`` and ``SecurityToken`` go.
* **by value**, inside any string: ``password=…`` and ``"AccessKeySecret":"…"`` pairs (a
  secret-named key with ``=``, a quoted key with ``:``, or a header-like ``x-acs-security-token:``),
  ``Authorization:`` header values, ``Bearer`` tokens, Slack tokens (``xoxb-…``, ``xapp-…``),
  STS security tokens (``CAIS…``), PEM private keys and the password of a ``scheme://user:pw@``
  URL.

AccessKey IDs (``LTAI…``) are identifiers responders need (agents are matched by them) and are
never redacted here; the process's own credentials are scrubbed from error text by
``pipeline.core.errors.scrub``.

What it misses: a secret under an innocuous key with no telling shape (``{"Value": "hunter2"}``),
an unquoted ``password: hunter2`` in free text (``key: value`` is too common in prose to redact),
and secrets split across several values.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

_SECRET_SUFFIXES = ("password", "passwd", "pwd", "passphrase", "secret", "token", "credential", "credentials",
                    "privatekey", "secretkey", "secretaccesskey", "apikey", "signature", "authorization")
# names that end like a secret but hold none: paging and idempotency tokens
_NOT_SECRET = frozenset({"nexttoken", "clienttoken", "continuationtoken", "paginationtoken", "pagetoken",
                         "idempotencytoken", "nextpagetoken"})
_NON_ALNUM = re.compile(r"[^a-z0-9]")

_SUFFIX = r"(?:password|passwd|pwd|passphrase|secret|token|credentials?|privatekey|secretkey|secretaccesskey|apikey|signature)"
# A cheap first look (``might_hold_secrets``), in C-speed substring searches of the lowered text:
# a secret-naming word followed by a separator (``password=``, ``"Password":``, ``Token\\":``),
# or a word that only secret shapes hold.
_HINT_WORDS = ("password", "passwd", "pwd", "passphrase", "secret", "token", "credential", "privatekey",
               "secretkey", "secretaccesskey", "apikey", "signature")
_HINT_AFTER = re.compile(r"""s?(?:\\?["'])?\s*[:=]""")
_HINT_SHAPES = ("authoriz", "bearer", "xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxc-", "xoxe-",
                "xapp-", "cais", "private key-----")
# for a prefilter written in another engine (``replay`` asks DuckDB which events to look at)
HINT_WORDS, HINT_SHAPES, NOT_SECRET = _HINT_WORDS, _HINT_SHAPES, _NOT_SECRET
_PEM = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.S)
_AUTHORIZATION = re.compile(
    r"""(?i)(\b(?:proxy-)?authorization(?:\\?["'])?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\r\n"',}]+)""")
_PAIR = re.compile(
    r"(?i)(?<![\w.\-])(?P<key>(?P<q>\\?[\"'])?[\w.\-]*?" + _SUFFIX + r"(?P=q)?)(?P<sep>\s*[:=]\s*)"
    r"""(?P<val>\\"(?:(?!\\").)*\\"|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s&,;"'}\])\\]+)""")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_SLACK = re.compile(r"\bx(?:ox[abposrce]|app)-[A-Za-z0-9-]{6,}")
_STS = re.compile(r"\bCAIS[A-Za-z0-9+/=]{40,}")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^/\s@]+)@")


def is_secret_key(name: Any) -> bool:
    """Does this key name a secret? Case and punctuation are ignored (``Access_Key-Secret``)."""
    key = _NON_ALNUM.sub("", str(name).lower())
    return key.endswith(_SECRET_SUFFIXES) and key not in _NOT_SECRET


def redact(value: Any) -> tuple[Any, int]:
    """A copy of ``value`` (dicts, lists, scalars) with secrets replaced, and how many were."""
    counter = [0]
    return _walk(value, counter), counter[0]


def redacted(value: Any) -> Any:
    """``redact`` without the count."""
    return redact(value)[0]


def might_hold_secrets(text: str) -> bool:
    """False when neither ``redact_text`` nor, for JSON text, ``redact`` of it parsed would
    replace anything (keys are seen as JSON writes them, ``"Password":``): a whole event's raw
    JSON is checked at once, and only the rare event that may hold a secret is walked."""
    low = text.lower()
    for word in _HINT_WORDS:
        at = low.find(word)
        while at != -1:
            if _HINT_AFTER.match(low, at + len(word)):
                return True
            at = low.find(word, at + 1)
    if any(shape in low for shape in _HINT_SHAPES):
        return True
    return "://" in low and _URL_PASSWORD.search(text) is not None


def redact_text(text: str) -> tuple[str, int]:
    """``text`` with secret-shaped parts replaced (see the module docstring), and how many were."""
    if not might_hold_secrets(text):
        return text, 0
    total = 0
    for substitute in (_pem, _authorization, _pairs, _bearer, _slack, _sts, _url_password):
        text, n = substitute(text)
        total += n
    return text, total


def _walk(value: Any, counter: list[int]) -> Any:
    if isinstance(value, dict):
        return {k: _secret_value(v, counter) if is_secret_key(k) else _walk(v, counter) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, counter) for v in value]
    if isinstance(value, str):
        text, n = redact_text(value)
        counter[0] += n
        return text
    return value


def _secret_value(value: Any, counter: list[int]) -> Any:
    """A value under a secret's key: containers are walked (their other keys may be needed); a
    string goes unless empty or already redacted. Numbers and flags stay: they count or say
    something (``{"InvalidSecurityToken": 3}`` error codes, ``PasswordResetRequired``)."""
    if isinstance(value, dict | list | tuple):
        return _walk(value, counter)
    if not isinstance(value, str | bytes) or value in ("", b"", REDACTED):
        return value
    counter[0] += 1
    return REDACTED


def _pem(text: str) -> tuple[str, int]:
    return _PEM.subn(REDACTED, text)


def _authorization(text: str) -> tuple[str, int]:
    return _AUTHORIZATION.subn(lambda m: m[1] + REDACTED, text)


def _pairs(text: str) -> tuple[str, int]:
    count = 0

    def one(m: re.Match[str]) -> str:
        nonlocal count
        quoted_key = m["q"] is not None
        header_like = "-" in m["key"]
        if not is_secret_key(m["key"]) or m["val"].strip("\\\"'") in ("", REDACTED):
            return m[0]
        if "=" not in m["sep"] and not quoted_key and not header_like:
            return m[0]  # ``token: x`` in prose
        count += 1
        val = m["val"]
        quote = val[:2] if val.startswith("\\") else val[:1] if val[:1] in "\"'" else ""
        return m["key"] + m["sep"] + quote + REDACTED + quote
    return _PAIR.sub(one, text), count


def _bearer(text: str) -> tuple[str, int]:
    return _BEARER.subn(lambda m: m[1] + REDACTED, text)


def _slack(text: str) -> tuple[str, int]:
    return _SLACK.subn(REDACTED, text)


def _sts(text: str) -> tuple[str, int]:
    return _STS.subn(REDACTED, text)


def _url_password(text: str) -> tuple[str, int]:
    return _URL_PASSWORD.subn(lambda m: m[1] + REDACTED + "@", text)
