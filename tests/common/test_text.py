"""The escaper: nothing a terminal or a log would act on survives it."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servermgr.common.text import (
    LINE_PATTERN,
    TEXT_PATTERN,
    is_printable,
    printable,
    printable_doc,
)

UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in UNSAFE_CATEGORIES


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain", "plain"),
        ("Debian GNU/Linux 12 (bookworm) é 中", "Debian GNU/Linux 12 (bookworm) é 中"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x7f\x9b", "\\x7f\\x9b"),
        ("x\u202eevil", "x\\u202eevil"),
        ("line\u2028sep", "line\\u2028sep"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("back\\slash", "back\\slash"),
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_lines_keeps_newlines_and_tabs_only() -> None:
    assert printable("a\nb\tc\r\x1b", lines=True) == "a\nb\tc\\r\\x1b"


@given(st.text())
def test_nothing_unsafe_survives_and_safe_text_is_untouched(text: str) -> None:
    out = printable(text)
    assert not any(_unsafe(c) for c in out)
    assert is_printable(out)
    if not any(_unsafe(c) for c in text):
        assert out == text
    assert printable(out) == out  # idempotent on its own output


@given(st.text())
def test_lines_mode_leaves_only_newlines_and_tabs(text: str) -> None:
    out = printable(text, lines=True)
    assert all(c in "\n\t" for c in out if _unsafe(c))


@given(st.text())
def test_the_input_patterns_accept_exactly_printable_text(text: str) -> None:
    assert (re.search(LINE_PATTERN, text) is not None) == is_printable(text)
    assert (re.search(TEXT_PATTERN, text) is not None) == is_printable(text, lines=True)


def test_the_input_patterns_refuse_a_trailing_newline() -> None:
    assert re.search(LINE_PATTERN, "abc\n") is None
    assert re.search(TEXT_PATTERN, "abc\r") is None
    assert re.search(TEXT_PATTERN, "abc\n") is not None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    # Keys without backslashes: "\x1b" escaped and typed out would be one key.
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(blacklist_characters="\\")), inner, max_size=4)
    ),
    max_leaves=20,
)


def _strings(doc: object) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in [k, *_strings(v)]]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return []


@given(JSON)
def test_printable_doc_leaves_nothing_unsafe_and_safe_documents_alone(doc: object) -> None:
    out = printable_doc(doc)
    assert all(is_printable(s) for s in _strings(out))
    if all(is_printable(s) for s in _strings(doc)):
        assert out == doc
    else:
        assert [printable(s) for s in _strings(doc)] == _strings(out)


def test_printable_doc_escapes_every_string_keys_too() -> None:
    doc = {"name": "a\x1b", "info": {"os\r": ["x\x07", 1, None, 2.5]}, "ok": True}
    assert printable_doc(doc) == {
        "name": "a\\x1b",
        "info": {"os\\r": ["x\\x07", 1, None, 2.5]},
        "ok": True,
    }
