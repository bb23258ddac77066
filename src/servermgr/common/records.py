"""Typed records of what Core says about nodes, shared by Core's API and ctl.

One name per field from the wire to the API and ctl: a node's figures carry
the names of ``proto.Sample`` (``cpu_percent``, ``mem_percent``, ...), and
``disk_percent`` is ``proto.Sample.disk_percent`` (the fullest disk). The
samples of ``GET /api/v1/nodes/{ref}/metrics`` use the same names.

Pure data: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from servermgr.common import proto

Presence = Literal["online", "offline"]
UnixTime = Annotated[float, Meta(description="unix seconds")]


class NodeStatus(msgspec.Struct, kw_only=True):
    """A node as ``GET /api/v1/nodes`` lists it, and as event streams carry it."""

    id: str
    name: str
    status: Presence
    labels: dict[str, str]
    first_seen: UnixTime
    last_seen: UnixTime | None
    connected_at: Annotated[UnixTime | None, Meta(description="unix seconds; null if offline")]
    agent_version: str | None
    sample_ts: Annotated[UnixTime | None, Meta(description="time of the latest sample")]
    cpu_percent: float | None
    mem_percent: float | None
    disk_percent: Annotated[float | None, Meta(description="the fullest disk")]
    net_rx_bps: float | None
    net_tx_bps: float | None
    load1: float | None
    uptime: Annotated[float | None, Meta(description="seconds")]
    procs: int | None
    alerts_firing: Annotated[int, Meta(ge=0, description="alerts firing on the node now")] = 0


class NodeDetail(NodeStatus, kw_only=True):
    """One node as ``GET /api/v1/nodes/{ref}`` shows it: static facts and the latest sample."""

    info: dict[str, Any] | None
    latest: proto.Sample | None
