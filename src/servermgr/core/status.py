"""The latest status of each node: the status store.

``StatusStore`` is the interface; ``MemoryStatus`` serves one Core process,
a Redis implementation (chosen in ``core/backends.py``) several, which then
see each other's nodes. What the store holds per node is a ``LiveStatus``:
whether it is connected, where, since when, and its latest sample; the API
joins it with the node's registration into a ``records.NodeStatus``.
Methods are ``async``: a store elsewhere is a network call away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from servermgr.common import proto
from servermgr.common.records import NodeDetail, NodeStatus
from servermgr.core.storage import NodeRow


class LiveStatus(msgspec.Struct):
    """What Core knows about a node right now.

    ``core`` names the Core process the node is connected to (``None``:
    not connected), so another Core can route a job to it.
    """

    node_id: str
    online: bool = False
    connected_at: float | None = None
    last_seen: float | None = None
    latest: proto.Sample | None = None
    peer: str | None = None
    core: str | None = None


class StatusStore(Protocol):
    async def get(self, node_id: str) -> LiveStatus | None: ...

    async def all(self) -> list[LiveStatus]:
        """Every node with a status (of every Core sharing the store)."""
        ...

    async def set_online(self, node_id: str, *, now: float, peer: str | None) -> None:
        """The node connected to this Core."""
        ...

    async def set_offline(self, node_id: str) -> None: ...

    async def record_samples(
        self, node_id: str, samples: Sequence[proto.Sample], *, now: float
    ) -> None:
        """A heartbeat arrived: the newest of ``samples`` becomes the latest."""
        ...

    async def forget(self, node_id: str) -> None: ...


class MemoryStatus:
    """In-process latest status; reads are dict lookups."""

    def __init__(self, core: str) -> None:
        self.core = core
        self._nodes: dict[str, LiveStatus] = {}

    async def get(self, node_id: str) -> LiveStatus | None:
        return self._nodes.get(node_id)

    def peek(self, node_id: str) -> LiveStatus | None:
        """``get`` without awaiting: this process's memory only."""
        return self._nodes.get(node_id)

    async def all(self) -> list[LiveStatus]:
        return list(self._nodes.values())

    def _entry(self, node_id: str) -> LiveStatus:
        st = self._nodes.get(node_id)
        if st is None:
            st = self._nodes[node_id] = LiveStatus(node_id=node_id)
        return st

    async def set_online(self, node_id: str, *, now: float, peer: str | None) -> None:
        st = self._entry(node_id)
        st.online = True
        st.connected_at = now
        st.last_seen = now
        st.peer = peer
        st.core = self.core

    async def set_offline(self, node_id: str) -> None:
        st = self._nodes.get(node_id)
        if st is not None:
            st.online = False
            st.connected_at = None
            st.core = None

    async def record_samples(
        self, node_id: str, samples: Sequence[proto.Sample], *, now: float
    ) -> None:
        st = self._entry(node_id)
        newest = max(samples, key=lambda s: s.ts, default=None)
        if newest is not None and (st.latest is None or newest.ts >= st.latest.ts):
            st.latest = newest
        st.last_seen = now

    async def forget(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)


def node_record(row: NodeRow, st: LiveStatus | None, firing: int = 0) -> NodeStatus:
    """A node as the API lists it: its registration joined with its live status."""
    s = st.latest if st else None
    return NodeStatus(
        id=row.id,
        name=row.name,
        status="online" if st and st.online else "offline",
        labels=row.labels,
        first_seen=row.first_seen,
        last_seen=st.last_seen if st and st.last_seen else row.last_seen,
        connected_at=st.connected_at if st else None,
        agent_version=row.agent_version,
        sample_ts=s.ts if s else None,
        cpu_percent=s.cpu_percent if s else None,
        mem_percent=s.mem_percent if s else None,
        disk_percent=s.disk_percent if s else None,
        net_rx_bps=s.net_rx_bps if s else None,
        net_tx_bps=s.net_tx_bps if s else None,
        load1=s.load1 if s else None,
        uptime=s.uptime if s else None,
        procs=s.procs if s else None,
        alerts_firing=firing,
    )


def node_detail(row: NodeRow, st: LiveStatus | None, firing: int = 0) -> NodeDetail:
    """One node as the API shows it: its record, static facts and latest sample."""
    record = node_record(row, st, firing)
    return NodeDetail(
        **{f: getattr(record, f) for f in record.__struct_fields__},
        info=row.info,
        latest=st.latest if st else None,
    )
