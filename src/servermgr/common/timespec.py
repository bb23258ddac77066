"""Time ranges as operators type them: ``10m``, ``1h``, ``7d``, ISO 8601 or unix seconds."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SECONDS = 100 * 365 * 86400.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")

# What the REST API takes as a time (``since``, ``until``): a duration ago of
# at most six digits (further back than 1970 means 1970), unix seconds below
# 1e11, or an ISO 8601 date or time (days 1-28, so every match is a date), in
# ASCII, nothing around them. The API schema states this pattern, so every
# string it matches is a time (``parse_api_time``).
_ISO = (
    r"(?:19[7-9][0-9]|2[0-9]{3})-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])?)?"
)
TIME_PATTERN = (
    r"^(?:[0-9]{1,6}(?:\.[0-9]{1,20})?[smhdw]|[0-9]{1,11}(?:\.[0-9]{1,20})?|" + _ISO + r")\Z"
)


def _ints(top: int, *, zero: bool) -> str:
    """A regular expression of the decimal integers from 0 (or 1) to ``top``, no
    leading zeros (``top`` >= 1)."""
    digits = str(top)
    alts = ["0"] if zero else []
    alts += ["[1-9]" + (f"[0-9]{{{k - 1}}}" if k > 1 else "") for k in range(1, len(digits))]
    for i, ch in enumerate(digits):
        low, high = (1 if i == 0 else 0), int(ch) - 1
        if high >= low:
            rest = len(digits) - i - 1
            cls = f"[{low}-{high}]" if high > low else str(low)
            alts.append(digits[:i] + cls + (f"[0-9]{{{rest}}}" if rest else ""))
    alts.append(digits)
    return "(?:" + "|".join(alts) + ")"


_FRACTION = r"(?:\.[0-9]{1,6})?"
_NONZERO_FRACTION = "(?:" + "|".join(f"0{{{k}}}[1-9][0-9]{{0,{5 - k}}}" for k in range(6)) + ")"


def duration_pattern(high: float, *, low: str = "zero") -> str:
    """The full-string pattern of a duration (``90``, ``90s``, ``1.5m``, ``2h``, ``7d``,
    ``1w``: at most 6 decimals) whose value is at most ``high`` seconds and, by
    ``low``: ``"zero"`` at least 0, ``"positive"`` above 0, ``"one"`` at least one of
    its unit. Every string it matches is a duration ``parse_duration`` reads to a
    value in that range, so a schema can state the range of a duration as text.
    """
    alts = []
    for units, factor in (("s?", 1), ("m", 60), ("h", 3600), ("d", 86400), ("w", 7 * 86400)):
        top = int(high // factor)
        if top < 1:
            continue
        whole = f"{top}(?:\\.0{{1,6}})?"
        below = []
        if top > 1 or low == "zero":
            below.append(_ints(top - 1, zero=low == "zero") if top > 1 else "0")
        number = [b + _FRACTION for b in below]
        if low == "positive":
            number.append(r"0\." + _NONZERO_FRACTION)
        number.append(whole)
        alts.append("(?:" + "|".join(number) + ")" + units)
    return "^(?:" + "|".join(alts) + ")\\Z"


def parse_api_time(text: str, *, now: float) -> float:
    """A time as the REST API takes it (``TIME_PATTERN``, exactly); ValueError if not."""
    if not re.match(TIME_PATTERN, text):  # compiled once, at first use (re's cache)
        raise ValueError(f"bad time {text[:40]!r}: use {TIME_FORMS}")
    if text[-1] in _UNITS:
        return max(0.0, now - float(text[:-1]) * _UNITS[text[-1]])
    if "-" in text:
        return _iso(text)
    return float(text)


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1h``, ``7d``, ``2w`` or a plain number of seconds."""
    m = _DURATION.match(text)
    if m:
        value = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"bad duration {text!r}: use e.g. 30s, 10m, 1h, 7d") from None
    if not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"bad duration {text!r}: must be from 0 to 100 years")
    return value


def is_relative(text: str) -> bool:
    """Whether ``text`` is a duration ago (``1h``) rather than a point in time."""
    return _DURATION.match(text) is not None


TIME_FORMS = (
    "a duration ago (10m, 1h, 7d), an ISO 8601 date or time "
    "(2026-11-30, 2026-11-30T08:00, 2026-11-30T08:00Z) or unix seconds"
)


def parse_time(text: str, *, now: float) -> float:
    """A point in time: a duration ago (``1h``), ISO 8601, or absolute unix seconds.

    An ISO date or time without a zone is in this process's local time.
    """
    m = _DURATION.match(text)
    if m:
        return now - parse_duration(text)
    try:
        value = float(text)
    except ValueError:
        value = _iso(text)
    if not 0 <= value < 1e11:
        raise ValueError(f"bad time {text!r}: out of range")
    return value


def _iso(text: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"bad time {text!r}: use {TIME_FORMS}") from None
