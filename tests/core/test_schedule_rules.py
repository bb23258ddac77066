"""When schedules run: pure rules, driven by explicit times (no clock, no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servermgr.core import schedule_rules
from servermgr.core.schedule_rules import (
    ScheduleRuleError,
    check_name,
    make_when,
    next_due,
    plan_run,
)
from servermgr.core.schedules_api import CRON_PATTERN


def ts(text: str) -> float:
    """Unix seconds of an ISO time in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


T0 = ts("2026-03-01T10:00:00")


def test_every_counts_from_its_anchor_without_drift() -> None:
    when = make_when(every=3600, cron=None, tz=None, anchor=T0)
    assert next_due(when, T0) == T0 + 3600
    assert next_due(when, T0 + 1) == T0 + 3600
    assert next_due(when, T0 + 3600) == T0 + 7200  # strictly after
    # A run taken late does not move the later ones.
    assert next_due(when, T0 + 3600 + 17.5) == T0 + 7200


def test_cron_in_utc_and_in_a_time_zone() -> None:
    when = make_when(every=None, cron="0 3 * * *", tz=None, anchor=T0)
    assert next_due(when, T0) == ts("2026-03-02T03:00:00")
    berlin = make_when(every=None, cron="0 3 * * *", tz="Europe/Berlin", anchor=T0)
    assert next_due(berlin, T0) == ts("2026-03-02T02:00:00")  # 03:00 CET is 02:00 UTC


def test_cron_across_a_dst_change_runs_once() -> None:
    # 29 March 2026: Berlin skips from 02:00 to 03:00; a 02:30 job runs once
    # that day, at 03:00 local (as Debian's cron does), then at 02:30 again.
    when = make_when(every=None, cron="30 2 * * *", tz="Europe/Berlin", anchor=T0)
    first = next_due(when, ts("2026-03-28T23:00:00"))
    assert first == ts("2026-03-29T01:00:00")
    assert next_due(when, first) == ts("2026-03-30T00:30:00")


def test_not_due_yet_then_on_time() -> None:
    when = make_when(every=60, cron=None, tz=None, anchor=T0)
    due = next_due(when, T0)
    assert plan_run(when, due, now=due - 0.5) is None
    claim = plan_run(when, due, now=due + 0.3)
    assert claim is not None
    assert (claim.due, claim.next, claim.missed) == (due, due + 60, 0)


def test_missed_runs_make_one_run_and_the_next_is_after_now() -> None:
    when = make_when(every=60, cron=None, tz=None, anchor=T0)
    due = T0 + 60
    now = T0 + 60 * 10 + 5  # Core was down for ten due times
    claim = plan_run(when, due, now)
    assert claim is not None
    assert claim.due == due
    assert claim.next == T0 + 60 * 11
    assert claim.missed == 9  # 120, 180, ... 600: skipped; 60 ran (late)


def test_missed_cron_runs_are_counted_too() -> None:
    when = make_when(every=None, cron="0 * * * *", tz=None, anchor=T0)
    due = ts("2026-03-01T11:00:00")
    claim = plan_run(when, due, now=ts("2026-03-01T14:30:00"))
    assert claim is not None
    assert claim.next == ts("2026-03-01T15:00:00")
    assert claim.missed == 3  # 12:00, 13:00, 14:00


@pytest.mark.parametrize(
    ("every", "cron", "tz", "message"),
    [
        (None, None, None, "exactly one of every or cron"),
        (60, "* * * * *", None, "exactly one of every or cron"),
        (0.5, None, None, "every must be from 1 s"),
        (float("inf"), None, None, "every must be from 1 s"),
        (60, None, "UTC", "time zone goes with cron"),
        (None, "0 3 * *", None, "five fields"),
        (None, "0 3 * * * *", None, "five fields"),
        (None, "61 * * * *", None, "bad cron expression"),
        (None, "0 0 30 2 *", None, "bad cron expression .*day-of-month"),
        (None, "0 3 * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_bad_schedules_say_why(
    every: float | None, cron: str | None, tz: str | None, message: str
) -> None:
    with pytest.raises(ScheduleRuleError, match=message):
        make_when(every=every, cron=cron, tz=tz, anchor=T0)


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "a\n", "a/b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ScheduleRuleError, match="bad schedule name"):
        check_name(name)


def test_describe() -> None:
    assert make_when(every=3600, cron=None, tz=None, anchor=0).describe() == "every 1h"
    assert make_when(every=90, cron=None, tz=None, anchor=0).describe() == "every 90s"
    cron = make_when(every=None, cron="0  3 * * *", tz="Europe/Berlin", anchor=0)
    assert cron.describe() == "cron '0 3 * * *' (Europe/Berlin)"


@given(st.from_regex(CRON_PATTERN))
def test_every_cron_the_api_schema_allows_is_valid(cron: str) -> None:
    """POST /api/v1/schedules never refuses a cron expression its schema allows."""
    schedule_rules.make_when(every=None, cron=cron, tz=None, anchor=0.0)
