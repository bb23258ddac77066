"""The event bus: what happens in Core, fanned out to live streams.

``EventBus`` is the interface; ``MemoryBus`` serves one Core process, a
Redis implementation (chosen in ``core/backends.py``) several. Event
names are ``common/events.py``'s. ``publish`` never blocks and never
fails: an implementation that sends elsewhere queues what it publishes and
sends it from a task of its own. Each subscriber reads through its own
bounded ``Subscription``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import trio

log = logging.getLogger("servermgr.core.bus")


Event = dict[str, Any]
Match = Callable[[Event], bool]

EVENT_OVERHEAD = 256  # what one queued event costs besides its output data, roughly


class SubscriberTooSlow(Exception):
    """A subscriber's queue overflowed: it was closed, and this says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventBus(Protocol):
    def publish(self, event: Event) -> None:
        """Hand ``event`` to every matching subscriber (of every Core); never blocks."""
        ...

    def subscriptions(self) -> list[Subscription]:
        """This process's open subscriptions."""
        ...

    def subscribe(
        self,
        *,
        max_events: int = 1024,
        max_bytes: int = 4 * 1024 * 1024,
        match: Match | None = None,
        label: str = "subscriber",
    ) -> AbstractAsyncContextManager[Subscription]: ...


class HeartbeatWatchers:
    """How many live client streams of this Core want heartbeat events.

    None: the gateway publishes no heartbeat event, and a Redis bus follows
    no other Core's samples (core/redis_bus.py).
    """

    def __init__(self) -> None:
        self.count = 0


class MemoryBus:
    """Fan-out of events to subscribers, each with a bounded queue.

    A subscriber that falls behind never slows Core nor another subscriber:
    when its queue holds more than ``max_events`` events or ``max_bytes``
    (output data plus a fixed overhead per event), it is closed at once, its
    queue freed, and one warning logged; its reader then gets
    ``SubscriberTooSlow`` with the reason to pass on to its client.
    ``match`` filters what a subscriber receives (e.g. one job's events).
    """

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscriptions(self) -> list[Subscription]:
        """The open subscriptions, e.g. to see what waits for each."""
        return list(self._subs)

    def publish(self, event: Event) -> None:
        for sub in list(self._subs):
            if (sub.match is None or sub.match(event)) and not sub.offer(event):
                self._subs.discard(sub)

    @asynccontextmanager
    async def subscribe(
        self,
        *,
        max_events: int = 1024,
        max_bytes: int = 4 * 1024 * 1024,
        match: Match | None = None,
        label: str = "subscriber",
    ) -> AsyncIterator[Subscription]:
        sub = Subscription(max_events=max_events, max_bytes=max_bytes, match=match, label=label)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)
            sub.close()


class Subscription:
    """One subscriber's queue: bounded in events and bytes, read with ``receive()``."""

    def __init__(self, *, max_events: int, max_bytes: int, match: Match | None, label: str) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.match = match
        self.label = label
        self.queued_bytes = 0
        self.peak_bytes = 0
        self.too_slow: str | None = None
        self._queue: deque[tuple[Event, int]] = deque()
        self._closed = False
        self._waiting = trio.lowlevel.ParkingLot()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, event: Event) -> bool:
        """Queue ``event``; False when this subscriber is closed (now or before)."""
        if self._closed:
            return False
        size = EVENT_OVERHEAD + len(event.get("data") or "")
        if len(self._queue) >= self.max_events or self.queued_bytes + size > self.max_bytes:
            self.too_slow = (
                f"too slow: over {self.max_events} events or "
                f"{self.max_bytes // 1024} KiB waiting to be read"
            )
            log.warning(
                "%s disconnected, it read too slowly: %d events (%d bytes) were waiting",
                self.label,
                len(self._queue),
                self.queued_bytes,
            )
            self.close()
            return False
        self._queue.append((event, size))
        self.queued_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.queued_bytes)
        self._waiting.unpark_all()
        return True

    def close(self) -> None:
        """Stop queueing and free what is queued; a waiting reader wakes up."""
        self._closed = True
        self._queue.clear()
        self.queued_bytes = 0
        self._waiting.unpark_all()

    async def receive(self) -> Event:
        """The next event; raises SubscriberTooSlow once closed for overflowing,
        trio.EndOfChannel once closed otherwise."""
        await trio.lowlevel.checkpoint()
        while not self._queue:
            if self._closed:
                break
            await self._waiting.park()
        if self.too_slow is not None:
            raise SubscriberTooSlow(self.too_slow)
        if not self._queue:
            raise trio.EndOfChannel
        event, size = self._queue.popleft()
        self.queued_bytes -= size
        return event

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
