"""The job entry state machine, pure: (status, event) -> (status, effects)."""

from __future__ import annotations

import pytest

from servermgr.core.jobstate import (
    FINAL,
    OPEN,
    Cancel,
    Effect,
    Heard,
    Limits,
    NodeBack,
    Result,
    Send,
    SendFailed,
    State,
    Status,
    Tick,
    due,
    step,
)

NOW = 1000.0
WAITS = Limits(timeout=60, deadline=NOW + 120, lost_grace=30, accept_after=5)
NO_WAIT = Limits(timeout=60, deadline=NOW, lost_grace=30, accept_after=5)


def sent(at: float = NOW, *, heard: bool = False) -> Status:
    return Status(State.SENT, sent_at=at, heard=heard)


def test_stored_values_never_change() -> None:
    # What SQLite holds and the API shows: renaming one breaks old databases.
    assert [s.value for s in State] == [
        "queued",
        "sent",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "refused",
        "expired",
        "lost",
        "stalled",
    ]
    assert OPEN | FINAL == set(State)
    assert not OPEN & FINAL


def test_a_run_goes_queued_sent_running_and_ends_with_the_result() -> None:
    status, effects = step(Status(State.QUEUED), Send(NOW), NO_WAIT)
    assert (status.state, status.sent_at, effects) == (State.SENT, NOW, (Effect.SEND_RUN,))
    status, effects = step(status, Heard(NOW + 0.1), NO_WAIT)
    assert (status.state, effects) == (State.RUNNING, (Effect.PUBLISH,))
    status, effects = step(status, Result("failed"), NO_WAIT)
    assert status.state is State.FAILED
    assert effects == (Effect.STORE_RESULT, Effect.PUBLISH)


@pytest.mark.parametrize(
    ("outcome", "state"),
    [("succeeded", State.SUCCEEDED), ("timed_out", State.TIMED_OUT), ("error", State.FAILED)],
)
def test_outcomes_map_to_states(outcome: str, state: State) -> None:
    assert step(sent(), Result(outcome), NO_WAIT)[0].state is state


def test_a_result_is_recorded_once() -> None:
    done = Status(State.SUCCEEDED)
    assert step(done, Result("failed"), NO_WAIT) == (done, ())


@pytest.mark.parametrize("late", [State.LOST, State.STALLED])
def test_a_late_result_still_counts_after_lost_or_stalled(late: State) -> None:
    status, effects = step(Status(late, sent_at=NOW), Result("succeeded"), NO_WAIT)
    assert status.state is State.SUCCEEDED
    assert Effect.STORE_RESULT in effects


def test_an_unanswered_job_run_stalls_the_node_after_accept_after() -> None:
    assert step(sent(), Tick(NOW + 4.9, online=True), NO_WAIT)[1] == ()
    status, effects = step(sent(), Tick(NOW + 5.1, online=True), NO_WAIT)
    assert status.state is State.STALLED
    assert effects == (Effect.DISCONNECT, Effect.STORE_FINAL, Effect.PUBLISH)
    assert status.error is not None
    assert "stalled" in status.error


def test_a_node_that_took_the_job_is_not_stalled_while_it_waits_for_a_slot() -> None:
    status, effects = step(sent(), Heard(NOW + 1, started=False), NO_WAIT)
    assert (status.state, status.heard, effects) == (State.SENT, True, ())
    assert step(status, Tick(NOW + 60, online=True), NO_WAIT)[1] == ()


def test_a_node_that_answered_is_never_stalled_only_lost() -> None:
    running = Status(State.RUNNING, sent_at=NOW, heard=True)
    assert step(running, Tick(NOW + 89, online=True), NO_WAIT)[1] == ()
    status, effects = step(running, Tick(NOW + 91, online=True), NO_WAIT)
    assert status.state is State.LOST
    assert effects == (Effect.STORE_FINAL, Effect.PUBLISH)


def test_a_node_back_without_a_job_it_never_took_gets_it_again() -> None:
    status, effects = step(sent(), NodeBack(NOW + 1, has_job=False), WAITS)
    assert effects == (Effect.SEND_RUN,)
    again, effects = step(status, Send(NOW + 1), WAITS)
    assert (again.state, effects) == (State.SENT, (Effect.SEND_RUN,))


@pytest.mark.parametrize("heard", ["sent", "running"])
def test_a_node_back_without_a_job_it_took_is_lost_never_run_twice(heard: str) -> None:
    took = sent(heard=True)
    if heard == "running":
        took, _ = step(sent(), Heard(NOW + 1), WAITS)
        assert took.state is State.RUNNING
    status, effects = step(took, NodeBack(NOW + 2, has_job=False), WAITS)
    assert status.state is State.LOST
    assert effects == (Effect.STORE_FINAL, Effect.PUBLISH)
    assert status.error is not None
    assert "never runs twice" in status.error


def test_a_send_that_timed_out_stalls_at_once() -> None:
    status, effects = step(sent(), SendFailed(NOW + 5), NO_WAIT)
    assert status.state is State.STALLED
    assert Effect.DISCONNECT in effects


def test_a_stalled_job_that_may_wait_is_retried_when_the_node_is_back() -> None:
    status, effects = step(sent(), SendFailed(NOW + 5), WAITS)
    assert status.state is State.QUEUED
    assert effects == (Effect.DISCONNECT, Effect.PUBLISH)
    # Back without the job: sent again. Back with it: it will report, no resend.
    assert step(status, NodeBack(NOW + 10, has_job=False), WAITS)[1] == (Effect.SEND_RUN,)
    has, effects = step(status, NodeBack(NOW + 10, has_job=True), WAITS)
    assert (has.state, effects) == (State.SENT, (Effect.STORE_SENT, Effect.PUBLISH))
    # Not back by the deadline: expired, saying why.
    expired, _ = step(status, Tick(NOW + 121, online=False), WAITS)
    assert expired.state is State.EXPIRED
    assert expired.error is not None
    assert "stalled" in expired.error


def test_queued_expires_only_offline_and_past_the_deadline() -> None:
    queued = Status(State.QUEUED)
    assert step(queued, Tick(NOW + 121, online=True), WAITS)[1] == ()  # its turn is coming
    assert step(queued, Tick(NOW + 119, online=False), WAITS)[1] == ()
    assert step(queued, Tick(NOW + 121, online=False), WAITS)[0].state is State.EXPIRED


def test_cancel_ends_queued_and_asks_the_node_for_the_rest() -> None:
    status, effects = step(Status(State.QUEUED), Cancel(), WAITS)
    assert (status.state, effects) == (State.CANCELLED, (Effect.STORE_FINAL, Effect.PUBLISH))
    status, effects = step(sent(heard=True), Cancel(), WAITS)
    assert (status.state, status.cancel_requested, effects) == (
        State.SENT,
        True,
        (Effect.SEND_CANCEL,),
    )
    # A node that missed the cancel gets it again when it is back.
    assert step(status, NodeBack(NOW, has_job=True), WAITS)[1] == (Effect.SEND_CANCEL,)


def test_final_states_ignore_everything_but_a_result() -> None:
    for state in FINAL:
        status = Status(state, sent_at=NOW)
        for event in (Send(NOW), Heard(NOW), Cancel(), Tick(NOW + 999, online=False)):
            assert step(status, event, NO_WAIT) == (status, ())


@pytest.mark.parametrize(
    "status",
    [
        Status(State.QUEUED),
        sent(),
        sent(heard=True),
        Status(State.RUNNING, sent_at=NOW, heard=True),
        Status(State.LOST, sent_at=NOW),
    ],
)
def test_due_says_when_a_tick_can_first_change_an_entry(status: Status) -> None:
    for limits in (WAITS, NO_WAIT):
        when = due(status, limits)
        if when is None:
            assert step(status, Tick(NOW + 10_000, online=False), limits)[1] == ()
            continue
        assert step(status, Tick(when - 0.01, online=False), limits)[1] == ()
        assert step(status, Tick(when + 0.01, online=False), limits)[1] != ()
