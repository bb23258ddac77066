"""Text a peer sent, made safe to show: one escaper for terminals and logs.

A node chooses the strings it reports (OS name, disk and interface names,
error texts). Written raw, an ESC, CR or OSC sequence in one of them could
rewrite the operator's screen or forge a log line. ``printable`` turns every
character a terminal would act on (C0 and C1 controls, DEL, Unicode format
characters such as bidirectional overrides, line and paragraph separators,
lone surrogates) into a visible escape like ``\\x1b``, ``\\n`` or ``\\u202e``; all
other text, including non-ASCII letters, stays as it is.

``LINE_PATTERN`` and ``TEXT_PATTERN`` are the same character set as input
rules for wire fields: a single line with nothing to escape, or the same
with newlines and tabs allowed (multi-line error texts). Pure logic.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # not typing's: it costs ctl's start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

# Unicode categories Cc, Cf, Zl, Zp and Cs (Unicode 14), as ranges.
_UNSAFE_RANGES = (
    r"\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    r"\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff"
    r"\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
# The same without tab (\x09) and newline (\x0a).
_UNSAFE_BUT_LINES = _UNSAFE_RANGES.replace(r"\x00-\x1f", r"\x00-\x08\x0b-\x1f", 1)

_COMPILED: dict[bool, re.Pattern[str]] = {}


def _unsafe(lines: bool) -> re.Pattern[str]:
    """The unsafe characters (but tab and newline when ``lines``) as a pattern,
    compiled at first use: most text takes the ``isprintable`` fast path, and
    compiling both costs every ctl command ~2.5 ms of start-up."""
    pattern = _COMPILED.get(lines)
    if pattern is None:
        pattern = _COMPILED[lines] = re.compile(
            f"[{_UNSAFE_BUT_LINES if lines else _UNSAFE_RANGES}]"
        )
    return pattern


# Whole-string patterns (``\Z``: a trailing newline is not let through).
LINE_PATTERN = rf"^[^{_UNSAFE_RANGES}]*\Z"
TEXT_PATTERN = rf"^[^{_UNSAFE_BUT_LINES}]*\Z"


_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with every unsafe character escaped (newlines and tabs kept when ``lines``)."""
    if text.isprintable():  # fast path: no Cc, Cf, Cs, Zl, Zp (nor Co, Cn, Zs)
        return text
    pattern = _unsafe(lines)
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def is_printable(text: str, *, lines: bool = False) -> bool:
    """True when ``printable`` would leave ``text`` as it is."""
    return text.isprintable() or _unsafe(lines).search(text) is None


def printable_doc(doc: Any) -> Any:
    """A JSON document with every string in it (keys too) made ``printable``.

    The document itself when nothing in it needs escaping, which one pass
    over its JSON text tells at C speed, many times faster than walking it
    (a big fleet's node list is drawn often): the JSON text holds control
    characters only as backslash escapes, and any other unsafe character
    makes it fail ``str.isprintable``.
    """
    import msgspec  # ctl's fast paths do not need it unless they draw a table

    try:
        raw = msgspec.json.encode(doc)
    except (TypeError, ValueError):
        return _walk(doc)
    if b"\\" not in raw and raw.decode().isprintable():
        return doc
    return _walk(doc)


def _walk(doc: Any) -> Any:
    if isinstance(doc, str):
        return printable(doc)
    if isinstance(doc, dict):
        return {printable(k) if isinstance(k, str) else k: _walk(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_walk(v) for v in doc]
    return doc
