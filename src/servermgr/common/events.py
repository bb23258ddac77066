"""The names of events, one set for every stream.

The same name travels on Core's event bus (``core/bus.py``), the live event
stream (``/api/v1/events``), a job's output stream (``/api/v1/jobs/{id}/stream``
and ``/ws``), Redis channels, and what ``ctl top`` and ``ctl exec`` read.
Pure names: no I/O.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """The ``type`` of an event or stream message (its JSON value is the string)."""

    # Nodes (bus and event stream).
    NODE_ONLINE = "node.online"
    NODE_OFFLINE = "node.offline"
    NODE_REMOVED = "node.removed"
    NODE_RENAMED = "node.renamed"
    NODE_HEARTBEAT = "node.heartbeat"  # on the bus, one per heartbeat
    HEARTBEATS = "heartbeats"  # on the event stream: the heartbeats of a window, coalesced
    # Jobs (bus, event stream, job streams).
    JOB = "job"  # a job stream's first message: the job so far
    JOB_STATE = "job.state"
    JOB_OUTPUT = "job.output"
    JOB_DONE = "job.done"
    JOB_OPEN = "job.open"  # a job stream's last line when its follow window ran out
    JOB_CANCEL = "job.cancel"  # on the bus: Core processes cancel their part of a job
    # Alerts (bus and event stream).
    ALERT_PENDING = "alert.pending"
    ALERT_FIRING = "alert.firing"
    ALERT_RESOLVED = "alert.resolved"
    ALERT_CLEARED = "alert.cleared"
    # Streams.
    SNAPSHOT = "snapshot"
    KEEPALIVE = "keepalive"
    SHUTDOWN = "shutdown"  # Core is stopping (bus and event stream)
    ERROR = "error"


# The reason of a ``node.offline`` a Core says for another Core's node when
# that Core died (core/redis_peers.py): its jobs are this Core's to end.
CORE_STOPPED = "its Core stopped"

NODE_EVENTS = frozenset(
    {
        EventType.NODE_ONLINE,
        EventType.NODE_OFFLINE,
        EventType.NODE_REMOVED,
        EventType.NODE_RENAMED,
    }
)
JOB_EVENTS = frozenset({EventType.JOB_STATE, EventType.JOB_DONE})
ALERT_EVENTS = (
    EventType.ALERT_PENDING,
    EventType.ALERT_FIRING,
    EventType.ALERT_RESOLVED,
    EventType.ALERT_CLEARED,
)
