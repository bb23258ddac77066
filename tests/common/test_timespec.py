"""Durations and times as operators type them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    ("low", "least"), [("zero", 0.0), ("positive", 1e-9), ("one", 1.0)], ids=str
)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_duration_the_pattern_allows_is_in_its_range(
    low: str, least: float, data: st.DataObject
) -> None:
    """A schema states a duration's range as duration_pattern: each string it matches
    reads (parse_duration) to a value in that range, and the usual forms match."""
    import re

    from servermgr.common.timespec import duration_pattern

    high = 90 * 86400.0
    pattern = duration_pattern(high, low=low)
    text = data.draw(st.from_regex(pattern))
    assert least <= parse_duration(text) <= high
    for text in ("90", "30s", "1.5m", "2h", "7d", "12w", "90d", "7776000"):
        assert re.fullmatch(pattern, text), text
    for text in (
        "90d1s",
        "7776001",
        "91d",
        "13w",
        "2161h",
        "1e3",
        " 1h",
        "1h\n",
        "-1",
        "1.1234567",
    ):
        assert not re.search(pattern, text), text
    assert bool(re.search(pattern, "0")) == (low == "zero")
    assert bool(re.search(pattern, "0.5s")) == (low != "one")
