"""Time ranges as operators type them: ``10m``, ``1h``, ``7d`` or unix seconds."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SECONDS = 100 * 365 * 86400.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


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


def parse_time(text: str, *, now: float) -> float:
    """A point in time: a duration ago (``1h``) or absolute unix seconds."""
    m = _DURATION.match(text)
    if m:
        return now - parse_duration(text)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: use a duration ago (10m, 1h, 7d) or unix seconds"
        ) from None
    if not 0 <= value < 1e11:
        raise ValueError(f"bad time {text!r}: out of range")
    return value
