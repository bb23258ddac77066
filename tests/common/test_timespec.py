"""Durations and times as operators type them."""

from __future__ import annotations

import pytest

from servermgr.common.timespec import parse_duration, parse_time


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("1h", 3600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1.5h", 5400),
        ("30", 30),
        (" 5m ", 300),
        ("0", 0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "5y", "nan", "inf", "1e308", "9" * 400 + "d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_times_are_a_duration_ago_or_absolute() -> None:
    assert parse_time("1h", now=10_000.0) == 6400.0
    assert parse_time("1700000000", now=0.0) == 1_700_000_000.0
    with pytest.raises(ValueError, match="bad time"):
        parse_time("yesterday", now=0.0)
    with pytest.raises(ValueError, match="bad duration"):
        parse_time("9" * 400 + "d", now=0.0)
