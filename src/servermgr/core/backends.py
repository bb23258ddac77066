"""Where Core keeps what several Core processes may share: the one place that chooses.

    status store   the latest status of each node     core/status.py
    event bus      events for live streams            core/bus.py
    job queue      jobs addressed to nodes            core/jobqueue.py

Without ``[storage] redis_url`` each is in this process's memory (one Core
process, the default). ``open_backends`` is the only code that looks at the
setting; Core's parts get the chosen implementations when they are built.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from servermgr.common.config import Config
from servermgr.core.bus import EventBus, HeartbeatWatchers, MemoryBus
from servermgr.core.jobqueue import JobQueue, MemoryJobQueue
from servermgr.core.status import MemoryStatus, StatusStore

log = logging.getLogger("servermgr.core")


@dataclass(frozen=True)
class Backends:
    """The shared parts of one Core process, and the name it has among its peers."""

    core_id: str
    status: StatusStore
    bus: EventBus
    queue: JobQueue
    shared: bool = False  # other Core processes may share them (and the fleet)
    # Whether the other Core processes can be reached now (Redis is up).
    peers_reachable: Callable[[], bool] = lambda: True
    # This Core's live streams that want heartbeats (the gateway publishes for them).
    watchers: HeartbeatWatchers = field(default_factory=HeartbeatWatchers)


def new_core_id() -> str:
    """A name for this Core process, unique among those sharing a fleet."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def memory_backends(core_id: str | None = None) -> Backends:
    """Everything in this process's memory: one Core, the default."""
    core_id = core_id or new_core_id()
    return Backends(core_id, MemoryStatus(core_id), MemoryBus(), MemoryJobQueue())


@asynccontextmanager
async def open_backends(config: Config, *, core_id: str | None = None) -> AsyncIterator[Backends]:
    """The backends ``config`` asks for, open for as long as the block runs."""
    if not config.storage.redis_url:
        yield memory_backends(core_id)
        return
    from servermgr.core.redis_backends import open_redis  # redis-py only when configured

    core_id = core_id or new_core_id()
    async with open_redis(config, core_id) as (status, bus, queue):
        yield Backends(
            core_id,
            status,
            bus,
            queue,
            shared=True,
            peers_reachable=lambda: status.link.up,
            watchers=bus.watchers,
        )
