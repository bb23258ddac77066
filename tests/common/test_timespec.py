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


def test_times_in_iso_8601() -> None:
    assert parse_time("2026-11-30T08:00:00Z", now=0.0) == 1_796_025_600.0
    assert parse_time("2026-11-30T09:00+01:00", now=0.0) == 1_796_025_600.0
    # Without a zone: local time, whatever it is here.
    from datetime import datetime

    assert parse_time("2026-11-30", now=0.0) == datetime(2026, 11, 30).timestamp()


@pytest.mark.parametrize("text", ["1y", "2026-13-01", "30/11/2026", "next week"])
def test_bad_times_name_every_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601") as err:
        parse_time(text, now=0.0)
    assert "10m" in str(err.value)
    assert "unix seconds" in str(err.value)


def test_api_times_are_exactly_the_schema_pattern() -> None:
    """What the API schema states (TIME_PATTERN) is what Core takes: nothing around it."""
    from servermgr.common.timespec import parse_api_time

    assert parse_api_time("1h", now=10_000.0) == 6400.0
    assert parse_api_time("999999w", now=10_000.0) == 0.0  # before 1970 is 1970
    assert parse_api_time("2026-11-28T08:00:00Z", now=0.0) == 1_795_852_800.0
    for text in ("9" * 400 + "d", " 1h", "1h\n", "1e9", "inf", "1_000", "-5", "2026-02-30"):
        with pytest.raises(ValueError, match="bad time"):
            parse_api_time(text, now=0.0)
