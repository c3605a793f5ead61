"""Untrusted text made visible: no character of an event field may hide, or act, where it is shown.

Event fields (user names, user agents, error messages, request parameters) are attacker-controlled.
Shown raw, a control character acts on the terminal (``\\x1b[2J`` clears it, ``\\x1b]8;;URL\\x07``
makes a hyperlink), a bidi override reorders what follows (``\\u202e``), and an invisible character
makes a look-alike identity look exactly like the real one (``ci-\\u200bdeploy`` is not
``ci-deploy``). Stripping them silently would keep the look-alike; so each one is replaced by a
visible escape instead: ``\\x1b`` for a C0 or C1 control or DEL, ``<U+200B>`` for the rest.

What is revealed: Unicode categories Cc (controls), Cf (format: zero-width, bidi embeddings,
overrides and isolates, the Arabic letter mark, soft hyphen, tags...), Zl and Zp (the line and
paragraph separators), Cs (lone surrogates), and the other default-ignorable code points that render
as nothing (variation selectors, Hangul fillers, U+034F) plus the Braille blank. A test checks the
list against ``unicodedata``. Known gap: homoglyphs (a Cyrillic ``а`` in ``ci-deploy``) are
visible characters and stay as they are.

Used by the terminal renderings (``pipeline.core.output``, ``replay_views``, status and findings text)
and by the Slack messages (``pipeline.service.alerting.messages``), so both show the same thing.
"""

from __future__ import annotations

import re

# (first, last) code points; C0 first, so the JSON variant can leave it out (JSON escapes C0 itself)
_C0 = (0x00, 0x1F)
_RANGES = (
    (0x7F, 0x9F), (0xAD, 0xAD), (0x34F, 0x34F), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x206F), (0x2800, 0x2800), (0x3164, 0x3164),
    (0xD800, 0xDFFF), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _char_class(ranges: tuple[tuple[int, int], ...]) -> re.Pattern[str]:
    return re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]")


HIDDEN = _char_class((_C0, *_RANGES))
HIDDEN_IN_JSON_RANGES = _RANGES  # what ``json_inert`` escapes, for engines other than ``re``
_HIDDEN_IN_JSON = _char_class(_RANGES)
HIDDEN_IN_JSON = _HIDDEN_IN_JSON
_BREAKS = re.compile(r"\r\n|[\r\n\t]")


def _marker(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x20 or 0x7F <= code <= 0x9F else f"<U+{code:04X}>"


def reveal(text: str, keep: str = "") -> str:
    """``text`` with every control, format and invisible character as a visible escape (but the
    characters in ``keep``, e.g. the line breaks of a multi-line text)."""
    if keep:
        return HIDDEN.sub(lambda m: m.group() if m.group() in keep else _marker(m), text)
    return HIDDEN.sub(_marker, text)


def one_line(value: object) -> str:
    """``value`` as one line of inert text: CR, LF and tab become a space (a visible gap, and a
    table row stays one row); every other hidden character is revealed."""
    return reveal(_BREAKS.sub(" ", str(value)))


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code > 0xFFFF:  # JSON writes an astral character as its UTF-16 surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def json_inert(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with every hidden character that
    JSON leaves raw (DEL, C1, format characters) written as a ``\\u`` escape: the same data once
    parsed, and nothing that acts on a terminal. (JSON escapes C0 itself; a raw newline here is the
    indentation's.)"""
    return _HIDDEN_IN_JSON.sub(_json_escape, text)
