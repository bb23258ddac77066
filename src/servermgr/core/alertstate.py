"""The life of one alert: pending, firing, resolved; and what receivers are owed.

One alert is one rule on one node (and one filesystem, for disk rules)::

    (none) --breach--> pending --held for the rule's 'for'--> firing --clear--> resolved
              pending --clear--> cleared (never fired: nobody is told)
              resolved --breach--> pending (again)

A rule with ``for = 0`` fires on its first breach. What receivers hear is
kept apart from the state: an alert owes "firing" while it fires and they
were not told so, "repeat" each ``renotify`` while it fires, and "resolved"
once it resolves after they heard "firing". A muted alert (a silence, quiet
hours) owes nothing until it is not muted any more; it then owes what its
state is at that time, so an alert that fired and resolved entirely within
a silence is never told, and one that is still firing is told once.

Pure logic: the caller gives the time and stores, publishes and sends what
comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal


class State(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    CLEARED = "cleared"  # a pending alert whose condition went away: only in transitions


@dataclass(frozen=True, slots=True)
class Key:
    rule: str
    node_id: str
    subject: str = ""  # the mount point of a disk rule's filesystem


@dataclass(frozen=True, slots=True)
class Alert:
    key: Key
    state: State
    since: float  # when the current state began
    started: float  # when the condition began (the pending time)
    value: float | None
    notified: State | None = None  # what receivers were last told (firing or resolved)
    notified_at: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    key: Key
    old: State | None
    new: State
    at: float
    value: float | None


NoticeKind = Literal["firing", "resolved", "repeat"]


def observe(
    alert: Alert | None, key: Key, breaching: bool, value: float | None, now: float, hold: float
) -> tuple[Alert | None, Transition | None]:
    """A new reading of the condition: the alert after it, and its transition if any."""
    if alert is None or alert.state == State.RESOLVED:
        if not breaching:
            return alert, None
        old = alert.state if alert is not None else None
        state = State.FIRING if hold <= 0 else State.PENDING
        kept = alert if alert is not None else Alert(key, state, now, now, value)
        new = replace(kept, state=state, since=now, started=now, value=value)
        return new, Transition(key, old, state, now, value)
    if breaching:
        if alert.state == State.PENDING and now - alert.started >= hold:
            return replace(alert, state=State.FIRING, since=now, value=value), Transition(
                key, State.PENDING, State.FIRING, now, value
            )
        return (alert if alert.value == value else replace(alert, value=value)), None
    if alert.state == State.PENDING:
        return None, Transition(key, State.PENDING, State.CLEARED, now, value)
    return replace(alert, state=State.RESOLVED, since=now, value=value), Transition(
        key, State.FIRING, State.RESOLVED, now, value
    )


def tick(alert: Alert, now: float, hold: float) -> tuple[Alert, Transition | None]:
    """Time passed with the condition still holding (no new reading: an offline node)."""
    if alert.state == State.PENDING and now - alert.started >= hold:
        return replace(alert, state=State.FIRING, since=now), Transition(
            alert.key, State.PENDING, State.FIRING, now, alert.value
        )
    return alert, None


def owed(alert: Alert, now: float, renotify: float | None, muted: bool) -> NoticeKind | None:
    """What receivers should hear about ``alert`` now, if anything."""
    if muted:
        return None
    if alert.state == State.FIRING:
        if alert.notified != State.FIRING:
            return "firing"
        if renotify is not None and alert.notified_at is not None:
            if now - alert.notified_at >= renotify:
                return "repeat"
        return None
    if alert.state == State.RESOLVED and alert.notified == State.FIRING:
        return "resolved"
    return None


def told(alert: Alert, kind: NoticeKind, now: float) -> Alert | None:
    """The alert once ``kind`` is on its way; None when it is over (resolved and told)."""
    if kind == "resolved":
        return None
    return replace(alert, notified=State.FIRING, notified_at=now)


def settled(alert: Alert) -> bool:
    """A resolved alert that owes nothing more (receivers never heard it fire)."""
    return alert.state == State.RESOLVED and alert.notified != State.FIRING


def next_due(alert: Alert, hold: float, renotify: float | None) -> float | None:
    """When time alone changes what ``alert`` needs: it fires, or is repeated."""
    if alert.state == State.PENDING:
        return alert.started + hold
    if alert.state == State.FIRING and renotify is not None and alert.notified_at is not None:
        return alert.notified_at + renotify
    return None


def in_quiet_hours(minute: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    """Whether ``minute`` of the day (0-1439) falls in one of ``ranges`` (end exclusive;
    a range past midnight, e.g. 22:00-07:00, wraps)."""
    for start, end in ranges:
        if start < end:
            if start <= minute < end:
                return True
        elif minute >= start or minute < end:
            return True
    return False
