"""The event bus over Redis pub/sub: every Core's events reach every Core's streams.

Channels are docs/redis.md's. ``publish`` hands the event to this
process's subscribers at once (a ``MemoryBus``) and, for the events other
Cores and outside programs want, queues it for Redis: a task of its own
(``serve``) sends the queue in pipelines, with ``"core"`` (this Core's id)
added. Another task reads the channels on pub/sub's own thread and hands
what other Cores published to this process's subscribers. Other Cores'
samples (``servermgr:events:samples``, the most traffic by far) are
followed only while a live stream of this Core wants heartbeats
(``HeartbeatWatchers``): subscribed when the first such stream opens,
unsubscribed when the last closes, so a Core nobody watches decodes none.

``publish`` never blocks and never fails. While Redis is down the queue
keeps the newest ``max_queued`` events (older ones are dropped and counted,
one warning per outage); pub/sub keeps nothing, so what other Cores
published meanwhile is not seen here. Job results are in SQLite whatever
happens to an event.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import redis
import trio

from servermgr.common.errors import RedisUnavailableError
from servermgr.common.events import JOB_EVENTS, NODE_EVENTS, EventType
from servermgr.core.bus import Event, HeartbeatWatchers, Match, MemoryBus, Subscription
from servermgr.core.redisio import RedisLink

log = logging.getLogger("servermgr.core.redis")

PREFIX = "servermgr:events:"
NODES = PREFIX + "nodes"
JOBS = PREFIX + "jobs"
OUTPUT = PREFIX + "output"
ALERTS = PREFIX + "alerts"
SAMPLES = PREFIX + "samples"  # written by the status store (core/redis_status.py)
CHANNELS = (NODES, JOBS, OUTPUT, ALERTS)

_SAMPLES_ONLY = frozenset({SAMPLES})
_NONE: frozenset[str] = frozenset()

MAX_QUEUED = 10_000
BATCH = 500


def channel_of(event: Event) -> str | None:
    """The channel an event goes to, or None for one that stays in this process."""
    kind = event.get("type")
    if kind in NODE_EVENTS:
        return NODES
    if kind in JOB_EVENTS or kind == EventType.JOB_CANCEL:
        return JOBS
    if kind == EventType.JOB_OUTPUT:
        return OUTPUT
    if isinstance(kind, str) and kind.startswith("alert"):
        return ALERTS
    return None


class RedisBus:
    """``EventBus`` over Redis (see the module docstring)."""

    def __init__(
        self,
        core: str,
        link: RedisLink,
        *,
        max_queued: int = MAX_QUEUED,
        local: MemoryBus | None = None,
        samples: Callable[[bytes], None] | None = None,
        watchers: HeartbeatWatchers | None = None,
    ) -> None:
        self.core = core
        self.link = link
        self.local = local or MemoryBus()
        self.samples = samples  # other Cores' samples messages (core/redis_peers.py)
        # Samples are followed while this Core's live streams want heartbeats.
        self.watchers = watchers or HeartbeatWatchers()
        self.max_queued = max_queued
        self._queue: deque[tuple[str, bytes]] = deque()
        self._ready = trio.Event()
        self.dropped = 0
        self.sent = 0
        self.received = 0
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(dict[str, Any]).decode
        # How samples messages start, this Core's own (core/redis_status.py encodes them).
        self._samples_prefix = self._encode({"type": "samples"})[:-1] + b","
        self._own_samples = self._encode({"type": "samples", "core": core})[:-1] + b","

    # --- EventBus ---------------------------------------------------------

    def publish(self, event: Event) -> None:
        self.local.publish(event)
        channel = channel_of(event)
        if channel is None:
            return
        if len(self._queue) >= self.max_queued:
            self._queue.popleft()
            if not self.dropped:
                log.warning(
                    "Redis has not taken events for a while: the oldest are dropped "
                    "(%d kept); other Cores miss them",
                    self.max_queued,
                )
            self.dropped += 1
        self._queue.append((channel, self._encode({**event, "core": self.core})))
        self._ready.set()

    def subscriptions(self) -> list[Subscription]:
        return self.local.subscriptions()

    @asynccontextmanager
    async def subscribe(
        self,
        *,
        max_events: int = 1024,
        max_bytes: int = 4 * 1024 * 1024,
        match: Match | None = None,
        label: str = "subscriber",
    ) -> AsyncIterator[Subscription]:
        async with self.local.subscribe(
            max_events=max_events, max_bytes=max_bytes, match=match, label=label
        ) as sub:
            yield sub

    # --- tasks --------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the queue, and read the channels; both outlive Redis outages."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop)
            await nursery.start(self._receive_loop)
            task_status.started()

    async def _send_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            while self._queue:
                if not self.link.up:
                    await self.link.wait_up()
                batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]

                def send(client: redis.Redis, batch: list[tuple[str, bytes]] = batch) -> None:
                    pipe = client.pipeline(transaction=False)
                    for channel, data in batch:
                        pipe.publish(channel, data)
                    pipe.execute()

                try:
                    await self.link.call(send)
                except RedisUnavailableError:
                    continue  # kept; sent when the link is back
                for _ in batch:
                    if self._queue:
                        self._queue.popleft()
                self.sent += len(batch)
                if self.dropped and not self._queue:
                    log.warning("Redis takes events again; %d were dropped", self.dropped)
                    self.dropped = 0

    async def _receive_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Other Cores' events to this process's subscribers; subscribed again after an outage."""
        await self.link.follow(
            CHANNELS,
            lambda m: self._deliver(m[1]),
            buffer=1000,
            wanted=self._wanted,
            task_status=task_status,
        )

    def _wanted(self) -> frozenset[str]:
        """The channels followed on demand (called from pub/sub's thread)."""
        if self.samples is not None and self.watchers.count > 0:
            return _SAMPLES_ONLY
        return _NONE

    def _deliver(self, data: bytes) -> None:
        if data.startswith(self._own_samples):
            return  # ours (each node's sample, ~1,000 a second per 10,000 nodes): not decoded
        if data.startswith(self._samples_prefix):
            if self.samples is not None:
                self.samples(data)  # decoded there, into typed records
            return
        try:
            event = self._decode(data)
        except msgspec.DecodeError:
            return
        if event.get("core") == self.core:
            return  # ours: delivered here when published
        if event.get("type") == "samples":  # written with its keys in another order
            if self.samples is not None:
                self.samples(data)
            return
        self.received += 1
        self.local.publish(event)
