"""Typed records of what Core says about nodes, shared by Core's API and ctl.

One name per field from the wire to the API and ctl: a node's figures carry
the names of ``proto.Sample`` (``cpu_percent``, ``mem_percent``, ...), and
``disk_percent`` is ``proto.Sample.disk_percent`` (the fullest disk). The
samples of ``GET /api/v1/nodes/{ref}/metrics`` use the same names.

Pure data: no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from servermgr.common import proto

Presence = Literal["online", "offline"]


class NodeStatus(msgspec.Struct, kw_only=True):
    """A node as ``GET /api/v1/nodes`` lists it, and as event streams carry it."""

    id: str
    name: str
    status: Presence
    labels: dict[str, str]
    first_seen: float
    last_seen: float | None
    connected_at: float | None
    agent_version: str | None
    sample_ts: float | None
    cpu_percent: float | None
    mem_percent: float | None
    disk_percent: float | None
    net_rx_bps: float | None
    net_tx_bps: float | None
    load1: float | None
    uptime: float | None
    procs: int | None
    alerts_firing: int = 0  # alerts firing on the node now


class NodeDetail(NodeStatus, kw_only=True):
    """One node as ``GET /api/v1/nodes/{ref}`` shows it: static facts and the latest sample."""

    info: dict[str, Any] | None
    latest: proto.Sample | None
