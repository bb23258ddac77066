"""The Redis backends: status store, event bus and job queue on one Redis link.

``open_redis`` is what ``core/backends.py`` opens when ``[storage]
redis_url`` is set. It runs the link (checks and reconnects with backoff)
and the three parts' own tasks (status written behind, events sent and
received, job streams read) for as long as its block runs. Redis down at
start is no error: Core starts, says why once, and works from memory
until the link comes up.

    open_redis
    ├── RedisLink.serve        checks; reconnects with backoff
    ├── RedisStatus.serve      writes what changed, once a second
    ├── RedisBus.serve         sends queued events; reads other Cores'
    ├── RedisJobQueue.serve    reads the held nodes' job streams
    └── Peers.serve            other Cores: their samples as heartbeats here, their deaths
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from servermgr.common.config import Config
from servermgr.common.errors import RedisUnavailableError
from servermgr.core.bus import HeartbeatWatchers, MemoryBus
from servermgr.core.redis_bus import RedisBus
from servermgr.core.redis_peers import Peers
from servermgr.core.redis_queue import RedisJobQueue
from servermgr.core.redis_status import SAMPLE_EVERY, RedisStatus
from servermgr.core.redisio import RedisLink

log = logging.getLogger("servermgr.core.redis")

FINAL_FLUSH = 2.0  # seconds a stopping Core gives its last status write


@asynccontextmanager
async def open_redis(
    config: Config, core_id: str
) -> AsyncIterator[tuple[RedisStatus, RedisBus, RedisJobQueue]]:
    url = config.storage.redis_url
    assert url
    link = RedisLink(url, name=f"servermgr-core-{core_id}")
    interval = config.server.heartbeat_interval
    # Other Cores' live views follow this Core's nodes through the samples channel.
    sample_every = min(SAMPLE_EVERY, 2 * interval)
    status = RedisStatus(core_id, link, heartbeat_interval=interval, sample_every=sample_every)
    local = MemoryBus()
    peers = Peers(core_id, link, status, local)
    bus = RedisBus(core_id, link, local=local, samples=peers.heard, watchers=HeartbeatWatchers())
    queue = RedisJobQueue(core_id, link)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(link.serve)
            await nursery.start(status.serve)
            await nursery.start(bus.serve)
            await nursery.start(queue.serve)
            await nursery.start(peers.serve)
            try:
                yield status, bus, queue
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(FINAL_FLUSH):
                    try:
                        await status.flush()  # the nodes this Core let go: offline
                    except RedisUnavailableError:
                        pass
                nursery.cancel_scope.cancel()
    finally:
        link.close()
