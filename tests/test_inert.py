"""``pipeline.core.inert``: which characters are shown as escapes, and that nothing else changes."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from pipeline.core.inert import HIDDEN, json_inert, one_line, reveal


def test_every_control_format_and_separator_character_is_revealed():
    """The hand-written ranges cover Unicode's Cc, Cf, Zl, Zp and Cs in this Python's database."""
    categories = ("Cc", "Cf", "Zl", "Zp", "Cs")
    missed = [f"U+{c:04X}" for c in range(sys.maxunicode + 1)
              if unicodedata.category(chr(c)) in categories and not HIDDEN.fullmatch(chr(c))]
    assert missed == []


@pytest.mark.parametrize("text", ["ci-deploy", "ram-user:ops-debug", "用户 ci 部署", "🔴 ✅ café naïve", "a b\u00a0c",
                                  "Привет", "*bold* _it_ ~strike~ `code` <!channel> &amp;"])
def test_visible_text_is_left_alone(text):
    assert reveal(text) == text and one_line(text) == text


@pytest.mark.parametrize(("raw", "shown"), [
    ("ci-\u200bdeploy", "ci-<U+200B>deploy"),  # a look-alike identity looks different
    ("\x1b]8;;http://evil\x07click\x1b]8;;\x07", "\\x1b]8;;http://evil\\x07click\\x1b]8;;\\x07"),
    ("\x1b[2J", "\\x1b[2J"),
    ("safe\u202etxt.exe", "safe<U+202E>txt.exe"),
    ("a\u2028b\u2029c\x85d\u061ce", "a<U+2028>b<U+2029>c\\x85d<U+061C>e"),
    ("\ufeff\u2060\u2066x\u2069\u00ad\u034f\u3164\ufe0f\U000e0041", "<U+FEFF><U+2060><U+2066>x<U+2069><U+00AD>"
     "<U+034F><U+3164><U+FE0F><U+E0041>"),
    ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),
    ("line\r\nnext\nlast\ttab\rcr", "line next last tab cr"),  # one_line: breaks and tabs are spaces
])
def test_one_line_shows_what_would_hide_or_act(raw, shown):
    assert one_line(raw) == shown


def test_reveal_can_keep_line_breaks():
    assert reveal("a\nb\tc\rd\x1b", keep="\n\t") == "a\nb\tc\\x0dd\\x1b"


def test_json_inert_keeps_the_data_and_escapes_what_json_leaves_raw():
    value = {"k\u202e": ["\x1b[2J", "\x7f\x85\u200b", "\U000e0041", "é 🔴"]}
    text = json_inert(json.dumps(value, ensure_ascii=False, indent=2))
    assert json.loads(text) == value
    assert not HIDDEN.search(text.replace("\n", ""))
    assert "é 🔴" in text  # readable text stays readable
