"""The status store in Redis: each node's latest status, shared by every Core.

Keys and channels are docs/redis.md's. The nodes connected to this Core
live in this process's memory first (a ``MemoryStatus``): a heartbeat is a
dict update and nothing more, so ingest never waits for Redis. A task of
its own (``serve``) writes what changed behind, once per ``flush_every``,
in one script call: the key of each node that came online or went offline
meanwhile, and of each node whose key holds a sample ``sample_every`` older
than its newest (a heartbeat is not a write: at a 5 s interval each key is
written every 10 s, well within its TTL); and with it a ``samples`` event
on ``servermgr:events:samples`` with those nodes' newest samples, when
anyone subscribes to that channel (other Cores follow it only while one of
their live streams wants heartbeats: core/redis_bus.py). This Core's
liveness key is renewed by a thread of its own (``keep_alive``), apart
from those writes and from trio's loop, so that a Core starved of CPU is
not taken for dead by its peers.

Other Cores' nodes are read from Redis when someone lists the fleet, at
most once per ``refresh_every`` (a listing reads this process's copy; the
copy is refreshed behind it). While Redis is down, writes wait (what
changed is remembered per node, so memory stays bounded by the fleet),
listings show this Core's nodes and the others as last read, and when
Redis is back every node of this Core is written again (the resync).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import redis
import trio

from servermgr.common import proto
from servermgr.common.errors import RedisUnavailableError
from servermgr.core.redisio import RedisLink
from servermgr.core.status import LiveStatus, MemoryStatus

log = logging.getLogger("servermgr.core.redis")

PREFIX = "servermgr:"
STATUS = PREFIX + "status:"
CORE = PREFIX + "core:"
SAMPLES_CHANNEL = PREFIX + "events:samples"

FLUSH_EVERY = 1.0
WRITE_SOON = 0.05  # an online/offline change is written within this, with the others meanwhile
SAMPLE_EVERY = 10.0  # a node's key is written when its newest sample is this much newer
SAMPLE_SLACK = 0.95  # ... times this (samples 5 s apart are 10 s apart, give or take)
STALE_AFTER = 10.0  # and at least this often (trio time), whatever its samples
REFRESH_EVERY = 1.0
HEARD_FRESH = 3.0  # seconds another Core's sample heard on the channel serves ``get``
CORE_TTL = 10
CORE_EVERY = 1.0  # the liveness key is renewed this often
CORE_RETRY = 0.2  # ... and tried again this soon when Redis did not take it
SCAN_COUNT = 1000
MGET_CHUNK = 1000
SET_CHUNK = 1000  # status keys per script call (Redis runs one call at a time: ~1 ms)

# Every status key of one write in one command: redis-py packs a pipeline at
# 11-14 us of Core's CPU per SET, this at about 2 (measured, 2,000 keys).
_SET_MANY = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1]) end
return #KEYS
"""

_encode = msgspec.json.Encoder().encode
_decode_status = msgspec.json.Decoder(LiveStatus).decode


def status_ttl(heartbeat_interval: float) -> int:
    """Seconds a status key lives without being written again."""
    return max(30, int(heartbeat_interval * 6 + 0.999))


class RedisStatus:
    """``StatusStore`` on Redis (see the module docstring)."""

    def __init__(
        self,
        core: str,
        link: RedisLink,
        *,
        heartbeat_interval: float,
        url: str = "",
        flush_every: float = FLUSH_EVERY,
        write_soon: float = WRITE_SOON,
        sample_every: float = SAMPLE_EVERY,
        refresh_every: float = REFRESH_EVERY,
        ttl: int | None = None,
    ) -> None:
        self.core = core
        self.link = link
        self.url = url
        self.ttl = ttl or status_ttl(heartbeat_interval)
        self.flush_every = flush_every
        self.write_soon = min(write_soon, flush_every)
        self.sample_every = sample_every
        self.refresh_every = refresh_every
        self.local = MemoryStatus(core)
        self._set_many = link.client.register_script(_SET_MANY)
        self._others: dict[str, LiveStatus] = {}
        self._online: set[str] = set()  # connected here (counted in this Core's key)
        self._heard_at: dict[str, float] = {}  # node id -> trio time its sample was heard
        self._dead: set[str] = set()  # Cores whose liveness key expired (core/redis_peers.py)
        self._dirty: set[str] = set()  # a heartbeat since: written if its key is old
        self._urgent: set[str] = set()  # online/offline, or a resync: written next flush
        self._gone: set[str] = set()  # forgotten here: their keys to delete
        # node id -> (newest sample's ts, trio time) when its key was last written
        self._written: dict[str, tuple[float, float]] = {}
        self._listened = True  # anyone subscribes to the samples channel (as of the last write)
        self._renew = threading.Event()  # the liveness key: write it now (the count changed)
        self._counted = -1  # nodes in the liveness key as last written
        self._refreshed = -float("inf")  # trio time of the last read of every key
        self._refreshing = False
        self._wake = trio.Event()
        self._started = time.monotonic()
        self.writes = 0  # keys written, for tests and figures
        self.flushes = 0
        self.renewals = 0  # liveness key writes

    # --- StatusStore ----------------------------------------------------

    async def get(self, node_id: str) -> LiveStatus | None:
        own = await self.local.get(node_id)
        if own is not None and own.online:
            return own
        heard = self._others.get(node_id)
        if heard is not None and heard.online:
            at = self._heard_at.get(node_id)
            if at is not None and trio.current_time() - at < HEARD_FRESH:
                return heard  # another Core's sample, just heard: no read needed
        try:
            raw = await self.link.call(lambda c: c.get(STATUS + node_id))
        except RedisUnavailableError:
            return own or self._others.get(node_id)
        if raw is None:
            return own
        try:
            found = _alive_only(_decode_status(raw), self._dead)
        except msgspec.ValidationError:
            return own
        return found if own is None or found.online else own

    async def all(self) -> list[LiveStatus]:
        await self._maybe_refresh()
        merged = dict(self._others)
        for st in await self.local.all():
            other = merged.get(st.node_id)
            if other is None or st.online or not other.online:
                merged[st.node_id] = st
        return list(merged.values())

    async def set_online(self, node_id: str, *, now: float, peer: str | None) -> None:
        await self.local.set_online(node_id, now=now, peer=peer)
        self._online.add(node_id)
        self._others.pop(node_id, None)
        self._heard_at.pop(node_id, None)
        self._gone.discard(node_id)
        self._changed(node_id)

    async def set_offline(self, node_id: str) -> None:
        await self.local.set_offline(node_id)
        self._online.discard(node_id)
        self._changed(node_id)

    async def record_samples(
        self, node_id: str, samples: Sequence[proto.Sample], *, now: float
    ) -> None:
        await self.local.record_samples(node_id, samples, now=now)
        self._dirty.add(node_id)  # written with the next flush; no wake-up per heartbeat

    async def forget(self, node_id: str) -> None:
        await self.local.forget(node_id)
        self._online.discard(node_id)
        self._others.pop(node_id, None)
        self._heard_at.pop(node_id, None)
        self._dirty.discard(node_id)
        self._urgent.discard(node_id)
        self._written.pop(node_id, None)
        self._gone.add(node_id)
        self._wake.set()

    def _changed(self, node_id: str) -> None:
        self._urgent.add(node_id)
        self._wake.set()  # online/offline: written at once, not at the next flush

    # --- writing behind ---------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write what changed, once per ``flush_every`` (an online/offline change
        within ``write_soon``, with what changed meanwhile: a fleet connecting
        is not one write per node); all of it again after an outage."""
        connects = self.link.connects
        async with trio.open_nursery() as nursery:
            await nursery.start(self.keep_alive)
            task_status.started()
            while True:
                with trio.move_on_after(self.flush_every):
                    await self._wake.wait()
                    await trio.sleep(self.write_soon)
                self._wake = trio.Event()
                if not self.link.up:
                    await self.link.wait_up()
                if self.link.connects != connects:  # back after an outage: write everything
                    connects = self.link.connects
                    self._urgent.update(st.node_id for st in await self.local.all())
                try:
                    await self.flush()
                except RedisUnavailableError:
                    pass  # the link logs it; what changed stays marked

    def _due(self, node_id: str, latest: float, now: float) -> bool:
        """Whether a node's key is old enough to write again (after a heartbeat)."""
        last = self._written.get(node_id)
        return (
            last is None
            or latest - last[0] >= self.sample_every * SAMPLE_SLACK
            or now - last[1] >= STALE_AFTER
        )

    async def flush(self) -> None:
        """Write the keys of the nodes that changed (online/offline) or whose key
        is old, and a samples event with the latter when anyone listens."""
        dirty, urgent, gone = self._dirty, self._urgent, self._gone
        self._dirty, self._urgent, self._gone = set(), set(), set()
        now = trio.current_time()
        writes: list[tuple[str, bytes]] = []
        samples: list[dict[str, Any]] = []
        written: dict[str, tuple[float, float]] = {}
        listened = self._listened
        peek = self.local.peek
        for node_id in dirty | urgent if urgent else dirty:
            st = peek(node_id)
            if st is None:
                continue
            latest = st.latest
            ts = latest.ts if latest is not None else 0.0
            if node_id not in urgent and not self._due(node_id, ts, now):
                continue  # its next heartbeat asks again
            writes.append((STATUS + node_id, _encode(st)))
            written[node_id] = (ts, now)
            if listened and latest is not None and st.online:
                samples.append({"node_id": node_id, "sample": latest})
        event = (
            _encode({"type": "samples", "core": self.core, "nodes": samples}) if samples else None
        )
        ttl = self.ttl
        set_many = self._set_many

        def write(client: redis.Redis) -> bool:
            for i in range(0, len(writes), SET_CHUNK):
                chunk = writes[i : i + SET_CHUNK]
                set_many(
                    keys=[key for key, _ in chunk],
                    args=[ttl, *(value for _, value in chunk)],
                    client=client,
                )
            pipe = client.pipeline(transaction=False)
            for node_id in gone:
                pipe.delete(STATUS + node_id)
            if event is not None:
                pipe.publish(SAMPLES_CHANNEL, event)
            # Whether to build the next samples event: anyone subscribed to
            # the channel, or any pattern subscription at all (it may match).
            pipe.pubsub_numsub(SAMPLES_CHANNEL)
            pipe.pubsub_numpat()
            *_, numsub, numpat = pipe.execute()
            return bool(numpat) or any(n for _, n in numsub)

        try:
            self._listened = await self.link.call(write)
        except RedisUnavailableError:
            self._dirty |= dirty
            self._urgent |= urgent
            self._gone |= gone
            raise
        self._written.update(written)
        self.writes += len(writes)
        self.flushes += 1
        if len(self._online) != self._counted:
            self._renew.set()  # the liveness key says how many: now, not within a second
        # Offline nodes written once: the key then expires with its TTL.

    # --- this Core's liveness key -----------------------------------------------

    def _core_doc(self) -> bytes:
        self._counted = online = len(self._online)  # not a pass over the fleet each write
        return _encode(
            {
                "id": self.core,
                "url": self.url,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "nodes": online,
                "up_s": round(time.monotonic() - self._started, 1),
            }
        )

    async def keep_alive(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Renew ``servermgr:core:<id>`` every ``CORE_EVERY`` s from a thread of its own.

        Not queued behind the status writes nor trio's loop: a Core whose
        loop is starved of CPU (its thousands of nodes taken offline at the
        other Cores if its key lapsed) still renews it, as the thread needs
        only the GIL for a moment each second. A failed write (Redis down)
        is tried again a second later; the link says what went wrong.
        """
        client, key, renew = self.link.client, CORE + self.core, self._renew

        def loop() -> None:
            while True:
                trio.from_thread.check_cancelled()
                every = CORE_EVERY
                try:
                    client.set(key, self._core_doc(), ex=CORE_TTL)
                    self.renewals += 1
                except (redis.RedisError, OSError, ValueError):
                    every = CORE_RETRY  # down: the link says so; written soon after it is back
                until = time.monotonic() + every
                while (left := until - time.monotonic()) > 0:
                    trio.from_thread.check_cancelled()
                    if renew.wait(min(left, 0.5)):
                        renew.clear()
                        break

        task_status.started()
        await trio.to_thread.run_sync(loop, limiter=trio.CapacityLimiter(1))

    # --- reading the others' -----------------------------------------------

    async def _maybe_refresh(self) -> None:
        if self._refreshing or trio.current_time() - self._refreshed < self.refresh_every:
            return
        self._refreshing = True
        try:
            self._others = await self.link.call(_read_all, self.core, frozenset(self._dead))
            self._heard_at.clear()
            self._refreshed = trio.current_time()
        except RedisUnavailableError:
            self._refreshed = trio.current_time()  # not again at once: the link retries
        finally:
            self._refreshing = False

    def others(self) -> dict[str, LiveStatus]:
        """Other Cores' nodes as last read (for tests and figures)."""
        return dict(self._others)

    async def refresh(self) -> None:
        """Read every other Core's nodes now (raises ``RedisUnavailableError``)."""
        self._others = await self.link.call(_read_all, self.core, frozenset(self._dead))
        self._heard_at.clear()
        self._refreshed = trio.current_time()

    def is_local(self, node_id: str) -> bool:
        """Connected to this Core now."""
        own = self.local.peek(node_id)
        return own is not None and own.online

    def heard(self, node_id: str, sample: proto.Sample, core: str, now: float) -> bool:
        """Another Core's node sent ``sample`` (its samples channel said so);
        False when this Core knows better (the node is connected here, or that
        Core is dead)."""
        own = self.local.peek(node_id)
        if (own is not None and own.online) or core in self._dead:
            return False
        st = self._others.get(node_id)
        if st is None or st.core != core:
            st = LiveStatus(node_id=node_id, online=True, core=core)
        st = msgspec.structs.replace(st, online=True, latest=sample, last_seen=now)
        self._others[node_id] = st
        self._heard_at[node_id] = trio.current_time()
        return True

    def peers(self, alive: set[str], gone: set[str]) -> None:
        """Which other Cores are alive, and which died (core/redis_peers.py): a dead
        Core's nodes are not online, whatever their keys say until they expire."""
        self._dead = (self._dead | gone) - alive
        for node_id, st in list(self._others.items()):
            if st.online and st.core in self._dead:
                self._others[node_id] = _alive_only(st, self._dead)
                self._heard_at.pop(node_id, None)


def _alive_only(st: LiveStatus, dead: set[str] | frozenset[str]) -> LiveStatus:
    """``st``, offline if the Core that wrote it is dead."""
    if not st.online or st.core not in dead:
        return st
    return msgspec.structs.replace(st, online=False, connected_at=None, core=None)


def _read_all(client: redis.Redis, core: str, dead: frozenset[str]) -> dict[str, LiveStatus]:
    """Every status key not written by ``core`` (SCAN, then MGET in chunks); the
    nodes of ``dead`` Cores offline."""
    keys: list[bytes] = []
    for key in client.scan_iter(match=STATUS + "*", count=SCAN_COUNT):
        keys.append(key)
    found: dict[str, LiveStatus] = {}
    for i in range(0, len(keys), MGET_CHUNK):
        values = client.mget(keys[i : i + MGET_CHUNK])
        for raw in values:
            if raw is None:
                continue
            try:
                st = _decode_status(raw)
            except msgspec.ValidationError:
                continue
            if st.core != core or not st.online:
                found[st.node_id] = _alive_only(st, dead)
    return found
