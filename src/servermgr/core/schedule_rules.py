"""When a schedule runs: pure rules, no I/O and no clock of their own.

A schedule repeats either ``every`` N seconds (anchored at its creation, so
runs do not drift) or at the times of a 5-field cron expression evaluated
in a time zone (UTC unless given; cronsim, which follows Debian's cron,
DST transitions included).

Missed runs (Core down, or paused and resumed): **one run at once, the rest
skipped**. When Core finds a schedule whose due time has passed, it runs it
once and sets the next due time to the first one after now, however many
were missed, so a nightly backup missed during a restart still happens, and
a Core down for a week does not fire seven backups in a row.

Several Core processes sharing the database each look for due schedules;
each run is *claimed* first (``claim``): an UPDATE that succeeds only while
the row still holds the due time this Core read. SQLite serializes writers,
so exactly one Core wins each due time and submits the job.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MIN_EVERY = 1.0  # seconds
MAX_EVERY = 366 * 86400.0
MAX_CRON = 256
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
_NAME = re.compile(NAME_PATTERN)


class ScheduleRuleError(ValueError):
    """A schedule that cannot be: bad name, interval, cron expression or time zone."""


@dataclass(frozen=True)
class When:
    """How a schedule repeats: exactly one of ``every`` (seconds) and ``cron``."""

    every: float | None = None
    cron: str | None = None
    tz: str = "UTC"
    anchor: float = 0.0  # unix seconds the ``every`` runs are counted from

    def describe(self) -> str:
        if self.every is not None:
            return f"every {_span(self.every)}"
        zone = "" if self.tz == "UTC" else f" ({self.tz})"
        return f"cron '{self.cron}'{zone}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ScheduleRuleError(
            f"bad schedule name {name[:80]!r}: 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def make_when(*, every: float | None, cron: str | None, tz: str | None, anchor: float) -> When:
    """A checked ``When``; ScheduleRuleError says what is wrong."""
    if (every is None) == (cron is None):
        raise ScheduleRuleError("give exactly one of every or cron")
    zone_name = tz or "UTC"
    if every is not None:
        if tz is not None:
            raise ScheduleRuleError("a time zone goes with cron, not with every")
        if not (math.isfinite(every) and MIN_EVERY <= every <= MAX_EVERY):
            raise ScheduleRuleError(
                f"every must be from {MIN_EVERY:g} s to {_span(MAX_EVERY)}, not {every:g} s"
            )
        return When(every=float(every), anchor=anchor)
    assert cron is not None
    if len(cron) > MAX_CRON:
        raise ScheduleRuleError(f"the cron expression is over {MAX_CRON} characters")
    fields = cron.split()
    when = When(cron=" ".join(fields), tz=zone_name, anchor=anchor)
    if len(fields) != 5:
        raise ScheduleRuleError(
            f"bad cron expression {cron!r}: five fields (minute hour day month weekday), "
            "e.g. '0 3 * * *'"
        )
    try:
        next_due(when, anchor)
    except CronSimError as exc:
        raise ScheduleRuleError(f"bad cron expression {cron!r}: {exc}") from None
    except StopIteration:
        raise ScheduleRuleError(f"the cron expression {cron!r} never matches") from None
    return when


def available_zones() -> set[str]:
    """The IANA names ``zone`` knows on this machine (the API schema lists them)."""
    from zoneinfo import available_timezones

    return set(available_timezones())


def zone(name: str) -> tzinfo:
    """The time zone ``name``; UTC needs no time zone database."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleRuleError(
            f"unknown time zone {name[:80]!r} (an IANA name, e.g. Europe/Berlin, or UTC)"
        ) from None


def next_due(when: When, after: float) -> float:
    """The first due time strictly after ``after`` (unix seconds)."""
    if when.every is not None:
        k = math.floor((after - when.anchor) / when.every) + 1
        due = when.anchor + k * when.every
        return due if due > after else due + when.every  # float rounding at the boundary
    assert when.cron is not None
    start = datetime.fromtimestamp(after, UTC).astimezone(zone(when.tz))
    return next(CronSim(when.cron, start)).timestamp()


@dataclass(frozen=True)
class Claim:
    """What to write when a due run is taken: the run's due time and the next one."""

    due: float
    next: float
    missed: int  # due times skipped (0: on time)


def plan_run(when: When, due: float, now: float) -> Claim | None:
    """The claim for a schedule whose next due time is ``due``; None if not due yet.

    One run now however many were missed; the next due time is the first
    one after ``now``.
    """
    if due > now:
        return None
    following = next_due(when, due)
    nxt = following if following > now else next_due(when, now)
    missed = 0 if following > now else _missed(when, following, now)
    return Claim(due, nxt, missed)


def _missed(when: When, first: float, now: float) -> int:
    """How many due times from ``first`` up to ``now`` are skipped (bounded count)."""
    if when.every is not None:
        return int((now - first) // when.every) + 1
    count, t = 0, first
    while t <= now and count < 1000:
        count += 1
        t = next_due(when, t)
    return count


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
