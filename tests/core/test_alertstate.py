"""The alert life cycle (core/alertstate.py): pure, no clock, no I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from servermgr.core import alertstate
from servermgr.core.alertstate import Alert, Key, State

KEY = Key("cpu-high", "n1")


def run(
    events: list[tuple[str, float]], hold: float, renotify: float | None = None
) -> tuple[list[tuple[State | None, State]], list[tuple[str, float]]]:
    """Drive one alert like the engine does; returns its transitions and the notices sent.

    Events: ("breach" | "clear" | "tick" | "mute" | "unmute", time)."""
    alert: Alert | None = None
    muted = False
    transitions: list[tuple[State | None, State]] = []
    notices: list[tuple[str, float]] = []
    for what, now in events:
        if what in ("mute", "unmute"):
            muted = what == "mute"
        elif what == "tick":
            if alert is not None:
                alert, t = alertstate.tick(alert, now, hold)
                if t:
                    transitions.append((t.old, t.new))
        else:
            alert, t = alertstate.observe(alert, KEY, what == "breach", 1.0, now, hold)
            if t:
                transitions.append((t.old, t.new))
        if alert is not None:
            kind = alertstate.owed(alert, now, renotify, muted)
            if kind is not None:
                notices.append((kind, now))
                alert = alertstate.told(alert, kind, now)
            elif alertstate.settled(alert):
                alert = None
    return transitions, notices


def test_breach_held_for_its_duration_fires_once_then_resolves_once() -> None:
    events = [
        ("breach", 0.0),
        ("breach", 30.0),
        ("breach", 60.0),
        ("breach", 90.0),
        ("clear", 95.0),
    ]
    transitions, notices = run(events, hold=60.0)
    assert transitions == [
        (None, State.PENDING),
        (State.PENDING, State.FIRING),
        (State.FIRING, State.RESOLVED),
    ]
    assert notices == [("firing", 60.0), ("resolved", 95.0)]


def test_a_breach_shorter_than_for_is_cleared_and_nobody_is_told() -> None:
    transitions, notices = run([("breach", 0.0), ("breach", 59.0), ("clear", 59.5)], hold=60.0)
    assert transitions == [(None, State.PENDING), (State.PENDING, State.CLEARED)]
    assert notices == []


def test_offline_fires_on_a_tick_without_new_readings() -> None:
    transitions, notices = run([("breach", 0.0), ("tick", 29.0), ("tick", 30.0)], hold=30.0)
    assert transitions[-1] == (State.PENDING, State.FIRING)
    assert notices == [("firing", 30.0)]


def test_zero_for_fires_at_once() -> None:
    transitions, notices = run([("breach", 5.0)], hold=0.0)
    assert transitions == [(None, State.FIRING)]
    assert notices == [("firing", 5.0)]


def test_repeats_while_firing_every_renotify() -> None:
    events = [("breach", 0.0), *[("tick", float(t)) for t in range(10, 100, 10)], ("clear", 100.0)]
    _, notices = run(events, hold=0.0, renotify=30.0)
    assert notices == [
        ("firing", 0.0),
        ("repeat", 30.0),
        ("repeat", 60.0),
        ("repeat", 90.0),
        ("resolved", 100.0),
    ]


def test_a_silence_holds_notices_and_an_alert_over_within_it_is_never_told() -> None:
    events = [("mute", 0.0), ("breach", 0.0), ("clear", 10.0), ("unmute", 20.0)]
    transitions, notices = run(events, hold=0.0)
    assert (State.FIRING, State.RESOLVED) in transitions
    assert notices == []


def test_still_firing_when_a_silence_ends_is_told_then() -> None:
    events = [("mute", 0.0), ("breach", 0.0), ("tick", 10.0), ("unmute", 20.0)]
    _, notices = run(events, hold=0.0)
    assert notices == [("firing", 20.0)]


def test_resolved_during_a_silence_after_firing_was_told_is_told_at_its_end() -> None:
    events = [("breach", 0.0), ("mute", 5.0), ("clear", 10.0), ("unmute", 20.0)]
    _, notices = run(events, hold=0.0)
    assert notices == [("firing", 0.0), ("resolved", 20.0)]


def test_quiet_hours_wrap_past_midnight() -> None:
    night = ((22 * 60, 7 * 60),)
    assert alertstate.in_quiet_hours(23 * 60, night)
    assert alertstate.in_quiet_hours(0, night)
    assert alertstate.in_quiet_hours(6 * 60 + 59, night)
    assert not alertstate.in_quiet_hours(7 * 60, night)
    assert not alertstate.in_quiet_hours(12 * 60, night)
    assert alertstate.in_quiet_hours(12 * 60, ((9 * 60, 17 * 60),))


event = st.tuples(st.sampled_from(["breach", "clear", "tick", "mute", "unmute"]), st.floats(0, 5))


@given(
    st.lists(event, max_size=60), st.sampled_from([0.0, 3.0, 10.0]), st.sampled_from([None, 4.0])
)
def test_receivers_hear_firing_and_resolved_in_turn(
    steps: list[tuple[str, float]], hold: float, renotify: float | None
) -> None:
    now = 0.0
    events = []
    for what, dt in steps:
        now += dt
        events.append((what, now))
    events.append(("unmute", now))
    transitions, notices = run(events, hold, renotify)
    told = [kind for kind, _ in notices if kind != "repeat"]
    # Never resolved before firing, never two of a kind in a row.
    assert told == ["firing", "resolved"] * (len(told) // 2) + ["firing"] * (len(told) % 2)
    # A repeat only while receivers know it fires.
    seen_firing = False
    for kind, _ in notices:
        if kind == "repeat":
            assert seen_firing
        seen_firing = kind in ("firing", "repeat")
    # The state walks the life cycle.
    allowed = {
        (None, State.PENDING),
        (None, State.FIRING),
        (State.PENDING, State.FIRING),
        (State.PENDING, State.CLEARED),
        (State.FIRING, State.RESOLVED),
        (State.RESOLVED, State.PENDING),
        (State.RESOLVED, State.FIRING),
    }
    assert set(transitions) <= allowed
    # Nobody is told of an alert that never fired.
    if not any(new == State.FIRING for _, new in transitions):
        assert notices == []
