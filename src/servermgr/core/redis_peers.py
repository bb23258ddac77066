"""The other Core processes sharing the fleet: their nodes' news, and their deaths.

Two things a Core learns from its peers through Redis that no event says:

- **their nodes' samples**: each Core publishes on ``servermgr:events:samples``
  (core/redis_status.py) at a reduced rate; ``heard`` turns another Core's
  message into this Core's ``node.heartbeat`` events, with the status store
  updated first, so live views here (``ctl top``, the web page) follow the
  nodes connected elsewhere too;
- **a Core that died**: a Core killed hard says nothing; its liveness key
  ``servermgr:core:<core_id>`` (TTL 10 s) is what goes. ``serve`` reads the
  liveness keys every ``check_every`` s; a Core seen alive before and gone
  now is dead (unless Redis itself restarted meanwhile, empty: its
  ``run_id`` says so): the status store stops taking its nodes' keys for online
  (they expire with their TTL), and each of its nodes not connected
  anywhere else now is ``node.offline`` here. A node that moved to another
  Core meanwhile is not: that Core said ``node.online``.

Events go to this process's subscribers only (``MemoryBus``): every Core
sees its peers die by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis
import trio

from servermgr.common import proto
from servermgr.common.errors import RedisUnavailableError
from servermgr.common.events import CORE_STOPPED, EventType
from servermgr.core.bus import MemoryBus
from servermgr.core.redis_status import CORE, RedisStatus
from servermgr.core.redisio import RedisLink

log = logging.getLogger("servermgr.core.redis")

CHECK_EVERY = 2.0


class _NodeSample(msgspec.Struct):
    node_id: str
    sample: proto.Sample


class _Samples(msgspec.Struct):
    """A ``samples`` message (core/redis_status.py writes them)."""

    core: str
    nodes: list[_NodeSample]


_decode_samples = msgspec.json.Decoder(_Samples).decode


class Peers:
    """Other Cores' samples and deaths, made this Core's events (module docstring)."""

    def __init__(
        self,
        core: str,
        link: RedisLink,
        status: RedisStatus,
        local: MemoryBus,
        *,
        check_every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.link = link
        self.status = status
        self.local = local
        self.check_every = check_every
        self.clock = clock
        self.alive: set[str] | None = None  # as last read; None: not read yet
        self._run_id = ""  # the Redis server's run (a restarted Redis is empty)
        self.heard_samples = 0
        self.deaths = 0

    def heard(self, data: bytes) -> None:
        """Another Core's ``samples`` message (as published): its nodes' latest,
        as heartbeats here. Decoded straight into typed records (a dict per
        sample converted after cost twice as much)."""
        try:
            message = _decode_samples(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        core = message.core
        if core == self.core:
            return
        now = self.clock()
        for item in message.nodes:
            node_id, sample = item.node_id, item.sample
            if not self.status.heard(node_id, sample, core, now):
                continue
            self.heard_samples += 1
            self.local.publish(
                {"type": EventType.NODE_HEARTBEAT, "node_id": node_id, "name": None, "ts": now}
            )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read which Cores are alive every ``check_every`` s; report the dead ones' nodes."""
        task_status.started()
        while True:
            if not self.link.up:
                self.alive = None  # an outage: keys may have expired meanwhile, no death
                await self.link.wait_up()
            try:
                run_id, alive = await self.link.call(_alive_cores)
            except RedisUnavailableError:
                alive = None
            if alive is not None:
                if run_id != self._run_id:  # Redis restarted, empty: no key means nothing yet
                    self._run_id, self.alive = run_id, None
                await self._compare(alive | {self.core})
            await trio.sleep(self.check_every)

    async def _compare(self, alive: set[str]) -> None:
        before, self.alive = self.alive, alive
        gone = set() if before is None else before - alive
        was = {
            node_id: st.core
            for node_id, st in self.status.others().items()
            if st.online and st.core in gone
        }
        self.status.peers(alive, gone)
        if not gone:
            return
        self.deaths += len(gone)
        try:
            await self.status.refresh()
        except RedisUnavailableError:
            pass  # the store says offline anyway: their Core is dead
        now = self.status.others()
        offline: dict[str, list[str]] = {core: [] for core in gone}
        for node_id, core in sorted(was.items()):
            st = now.get(node_id)
            if (st is not None and st.online) or self.status.is_local(node_id):
                continue  # moved: the Core it is connected to said so
            offline[str(core)].append(node_id)
            self.local.publish(
                {
                    "type": EventType.NODE_OFFLINE,
                    "node_id": node_id,
                    "name": None,
                    "ts": self.clock(),
                    "reason": CORE_STOPPED,
                }
            )
        for core, nodes in sorted(offline.items()):
            if not nodes:
                continue  # stopped cleanly, or its nodes moved
            log.warning(
                "Core %s is gone (its liveness key expired); %d of its nodes are offline "
                "until they connect to another Core",
                core,
                len(nodes),
            )


def _alive_cores(client: redis.Redis) -> tuple[str, set[str]]:
    """The Redis server's run id, and the Cores whose liveness key it holds."""
    info: dict[str, Any] = client.info("server")
    out: set[str] = set()
    for key in client.scan_iter(match=CORE + "*", count=1000):
        text: Any = key.decode() if isinstance(key, bytes) else key
        out.add(str(text)[len(CORE) :])
    return str(info.get("run_id", "")), out
