"""Latest status per node and the event bus.

These are the seams a Redis backend will fill later (several Core processes
sharing one fleet). Today both run in memory: ``MemoryStatus`` holds what
``ctl nodes`` shows without touching SQLite, and ``MemoryBus`` fans events
out to live client streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from servermgr.common import proto


@dataclass(slots=True)
class NodeStatus:
    """What Core knows about a node right now."""

    node_id: str
    online: bool = False
    connected_at: float | None = None
    last_seen: float | None = None
    latest: proto.Sample | None = None
    peer: str | None = None


class StatusStore(Protocol):
    def get(self, node_id: str) -> NodeStatus | None: ...
    def all(self) -> Iterable[NodeStatus]: ...
    def set_online(self, node_id: str, *, now: float, peer: str | None) -> None: ...
    def set_offline(self, node_id: str) -> None: ...
    def update_sample(self, node_id: str, sample: proto.Sample, *, now: float) -> None: ...
    def forget(self, node_id: str) -> None: ...


@dataclass
class MemoryStatus:
    """In-process latest status; reads are dict lookups."""

    _nodes: dict[str, NodeStatus] = field(default_factory=dict)

    def get(self, node_id: str) -> NodeStatus | None:
        return self._nodes.get(node_id)

    def all(self) -> Iterable[NodeStatus]:
        return self._nodes.values()

    def _entry(self, node_id: str) -> NodeStatus:
        st = self._nodes.get(node_id)
        if st is None:
            st = self._nodes[node_id] = NodeStatus(node_id)
        return st

    def set_online(self, node_id: str, *, now: float, peer: str | None) -> None:
        st = self._entry(node_id)
        st.online = True
        st.connected_at = now
        st.last_seen = now
        st.peer = peer

    def set_offline(self, node_id: str) -> None:
        st = self._nodes.get(node_id)
        if st is not None:
            st.online = False
            st.connected_at = None

    def update_sample(self, node_id: str, sample: proto.Sample, *, now: float) -> None:
        st = self._entry(node_id)
        if st.latest is None or sample.ts >= st.latest.ts:
            st.latest = sample
        st.last_seen = now

    def forget(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)


Event = dict[str, Any]
Match = Callable[[Event], bool]


class EventBus(Protocol):
    def publish(self, event: Event) -> None: ...

    def subscribe(
        self, *, buffer: int = 1024, match: Match | None = None
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Event]]: ...


class MemoryBus:
    """Fan-out of events to subscribers with bounded buffers.

    A subscriber that falls behind loses events rather than slowing Core; it
    learns so from a ``{"type": "dropped", "count": N}`` event. ``match``
    filters what a subscriber receives (e.g. one job's events).
    """

    def __init__(self) -> None:
        self._subs: set[_Subscriber] = set()

    def publish(self, event: Event) -> None:
        for sub in list(self._subs):
            if sub.match is None or sub.match(event):
                sub.offer(event)

    @asynccontextmanager
    async def subscribe(
        self, *, buffer: int = 1024, match: Match | None = None
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Event]]:
        send, recv = trio.open_memory_channel[Event](buffer)
        sub = _Subscriber(send, match)
        self._subs.add(sub)
        try:
            async with recv:
                yield recv
        finally:
            self._subs.discard(sub)
            send.close()


class _Subscriber:
    def __init__(self, send: trio.MemorySendChannel[Event], match: Match | None) -> None:
        self.send = send
        self.match = match
        self.dropped = 0

    def offer(self, event: Event) -> None:
        try:
            if self.dropped:
                self.send.send_nowait({"type": "dropped", "count": self.dropped})
                self.dropped = 0
            self.send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
