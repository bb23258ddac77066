"""The state machine of one (job, node) entry: every transition in one place.

Pure: no I/O, no trio, no clock of its own. ``step(status, event, limits)``
returns the entry's new status and the effects the scheduler must carry
out (send a message, store, publish, disconnect a stalled node)::

    queued --send-->  sent --started--> running --result--> succeeded | failed |
                                                          timed_out | cancelled | refused
    queued --tick: offline past the deadline-->            expired
    sent   --no job.accepted (nor output) within accept_after, or the send timed out-->
              stalled (final)      when the job's deadline has passed
              queued (retried)     when it may still wait for the node
    sent/running --tick: timeout + lost_grace, no result-->  lost
    queued --cancel--> cancelled;  sent/running --cancel--> (same) + job.cancel
    lost/stalled --late result--> its outcome (the node ran it after all)

The string values are what SQLite stores and the API shows: never rename one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class State(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    REFUSED = "refused"
    EXPIRED = "expired"
    LOST = "lost"
    STALLED = "stalled"

    @property
    def final(self) -> bool:
        return self not in OPEN

    @property
    def takes_result(self) -> bool:
        """Whether a node's result for this entry is still recorded."""
        return self in OPEN or self in LATE


OPEN = frozenset({State.QUEUED, State.SENT, State.RUNNING})
FINAL = frozenset(set(State) - OPEN)
# Final, but a result arriving later still counts: the node ran the job after all.
LATE = frozenset({State.LOST, State.STALLED})

# A node's job.result outcome -> the entry's state.
OUTCOME = {
    "succeeded": State.SUCCEEDED,
    "failed": State.FAILED,
    "timed_out": State.TIMED_OUT,
    "cancelled": State.CANCELLED,
    "refused": State.REFUSED,
    "error": State.FAILED,
}


class Effect(enum.Enum):
    SEND_RUN = "send job.run"
    SEND_CANCEL = "send job.cancel"
    STORE_SENT = "store: sent"
    STORE_FINAL = "store: final state, with the output received so far"
    STORE_RESULT = "store: the node's result"
    PUBLISH = "publish the new state"
    DISCONNECT = "disconnect the node (stalled)"


@dataclass(frozen=True)
class Limits:
    """The times an entry is judged by: its job's, and the scheduler's."""

    timeout: float  # the job's run time limit on the node
    deadline: float  # until when a queued job may wait for its node
    lost_grace: float  # beyond timeout, before a silent entry is lost
    accept_after: float  # a node must answer a job.run within this (else stalled)


@dataclass(frozen=True)
class Status:
    state: State
    sent_at: float | None = None
    heard: bool = False  # the node said something about the job since it was sent
    cancel_requested: bool = False
    error: str | None = None  # why, for a final state reached without a result
    stalls: int = 0  # times the node did not take this job in time


# --- events -------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Core is about to hand the job.run to the node's connection."""

    now: float


@dataclass(frozen=True)
class SendFailed:
    """The node's connection did not take the job.run within its bound."""

    now: float


@dataclass(frozen=True)
class Heard:
    """The node answered: took the job (``job.accepted``) or sent output (``started``)."""

    now: float
    started: bool = True


@dataclass(frozen=True)
class Result:
    outcome: str


@dataclass(frozen=True)
class Tick:
    now: float
    online: bool


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class NodeBack:
    """The node (re)connected; ``has_job``: its hello lists the job (None: unknown)."""

    now: float
    has_job: bool | None


Event = Send | SendFailed | Heard | Result | Tick | Cancel | NodeBack

Step = tuple[Status, tuple[Effect, ...]]

_NOTHING: tuple[Effect, ...] = ()


def step(status: Status, event: Event, limits: Limits) -> Step:
    """The entry's next status and what to do about it."""
    state = status.state
    if isinstance(event, Result):
        if not state.takes_result:
            return status, _NOTHING  # a result already recorded: stored once
        new = OUTCOME.get(event.outcome, State.FAILED)
        return replace(status, state=new, heard=True), (Effect.STORE_RESULT, Effect.PUBLISH)
    if state.final:
        return status, _NOTHING
    if isinstance(event, Send):
        if state is State.QUEUED or state is State.SENT:
            return replace(status, state=State.SENT, sent_at=event.now, heard=False), (
                Effect.SEND_RUN,
            )
        return status, _NOTHING
    if isinstance(event, SendFailed):
        if state is State.SENT and not status.heard:
            return _stalled(status, event.now, limits, "did not take the job within")
        return status, _NOTHING
    if isinstance(event, Heard):
        if state is State.SENT and event.started:
            return replace(status, state=State.RUNNING, heard=True), (Effect.PUBLISH,)
        if state is State.QUEUED:  # it had the job after all (sent before a stall)
            new = State.RUNNING if event.started else State.SENT
            return replace(status, state=new, sent_at=event.now, heard=True), (
                Effect.STORE_SENT,
                Effect.PUBLISH,
            )
        return status if status.heard else replace(status, heard=True), _NOTHING
    if isinstance(event, Cancel):
        if state is State.QUEUED:
            return _final(status, State.CANCELLED, "cancelled before it was sent")
        return replace(status, cancel_requested=True), (Effect.SEND_CANCEL,)
    if isinstance(event, NodeBack):
        return _node_back(status, event, limits)
    return _tick(status, event, limits)


def due(status: Status, limits: Limits) -> float | None:
    """From when a ``Tick`` may change this entry (None: never): the deadline
    checks look at this number instead of stepping every open entry."""
    state = status.state
    if state is State.QUEUED:
        return limits.deadline
    if state.final or status.sent_at is None:
        return None
    lost_at = status.sent_at + limits.timeout + limits.lost_grace
    if state is State.SENT and not status.heard:
        return min(status.sent_at + limits.accept_after, lost_at)
    return lost_at


def _tick(status: Status, event: Tick, limits: Limits) -> Step:
    state, now = status.state, event.now
    if state is State.QUEUED:
        # Only an entry whose node is offline expires: one being dispatched
        # right now (a large fan-out) is not late.
        if now > limits.deadline and not event.online:
            return _final(status, State.EXPIRED, _expired_reason(status))
        return status, _NOTHING
    assert status.sent_at is not None
    if state is State.SENT and not status.heard and now > status.sent_at + limits.accept_after:
        return _stalled(status, now, limits, "did not answer the job within")
    if now > status.sent_at + limits.timeout + limits.lost_grace:
        return _final(
            status,
            State.LOST,
            "no result from the node by the job's timeout + "
            f"{limits.lost_grace:g} s (a late result will still be recorded)",
        )
    return status, _NOTHING


def _node_back(status: Status, event: NodeBack, limits: Limits) -> Step:
    state = status.state
    if state is State.QUEUED:
        if event.has_job:
            # It has the job (sent before a stall or a restart): its result
            # will come; sending it again could only make it re-send.
            return replace(status, state=State.SENT, sent_at=event.now, heard=True), (
                Effect.STORE_SENT,
                Effect.PUBLISH,
            )
        return status, (Effect.SEND_RUN,)  # through Send, by the scheduler
    if event.has_job is False:
        if status.heard:
            # It took the job, then came back without it (its spool was lost):
            # sending it again could run the command twice.
            return _final(
                status,
                State.LOST,
                "the node came back without this job after taking it (its job spool "
                "was lost); not sent again, so it never runs twice",
            )
        return status, (Effect.SEND_RUN,)  # sent, never arrived: send again
    if event.has_job and not status.heard:
        status = replace(status, heard=True)  # it took the job: not a stall
    if status.cancel_requested:
        return status, (Effect.SEND_CANCEL,)
    return status, _NOTHING


def _stalled(status: Status, now: float, limits: Limits, what: str) -> Step:
    reason = (
        f"stalled: the node {what} {limits.accept_after:g} s and was disconnected "
        "(if it resumes and runs it, its result will still be recorded)"
    )
    if now < limits.deadline:  # it may wait: retried when the node is back
        return replace(
            status, state=State.QUEUED, sent_at=None, error=reason, stalls=status.stalls + 1
        ), (Effect.DISCONNECT, Effect.PUBLISH)
    new, effects = _final(replace(status, stalls=status.stalls + 1), State.STALLED, reason)
    return new, (Effect.DISCONNECT, *effects)


def _final(status: Status, state: State, error: str) -> Step:
    return replace(status, state=state, error=error), (Effect.STORE_FINAL, Effect.PUBLISH)


def _expired_reason(status: Status) -> str:
    if status.stalls:
        return "node stalled and did not come back before the job's deadline"
    return "node stayed offline past the job's deadline"
