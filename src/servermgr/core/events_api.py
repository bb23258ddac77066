"""Live event stream for clients: ``/api/v1/events`` over WebSocket.

What ``ctl top`` (and any other live view) reads: a snapshot of the fleet,
then what changes. Authenticate with ``Authorization: Bearer <core key or a
token with role read>`` (checked by ``core/auth.py``); without it the
handshake is refused with a real 401 and the error document
(``{"error": {"code": "unauthorized", ...}}``); bad query parameters get 400.

Query parameters, all optional:

    types=node,heartbeat,job,alert   live event kinds to send (default: all)
    nodes=web-1,web-2          only these nodes, by name or id (job events too)
    history=60                 CPU/memory values per node in the snapshot (0..600)
    interval=1                 heartbeat batching window in seconds (0..60, 0: none)

Every message is one JSON text frame with a ``type``:

    snapshot      first, exactly once:
                  {"type": "snapshot", "ts", "version", "heartbeat_interval",
                   "nodes": [<node>, ...],
                   "history": {<node id>: {"ts": [...], "cpu_percent": [...],
                                           "mem_percent": [...]}},   oldest first
                   "jobs_open": [<job id>, ...]}
    node.online   {"type", "ts", "node_id", "name", "node": <node>}
    node.offline  {"type", "ts", "node_id", "name", "reason"}
    node.removed  {"type", "ts", "node_id", "name"}  (an operator removed it)
    node.renamed  {"type", "ts", "node_id", "name", "old_name"}  (an operator renamed it)
    heartbeats    {"type", "ts", "nodes": [<node>, ...]}   the latest of each
                  node that sent a heartbeat in the window (types=heartbeat)
    job.state     {"type", "job_id", "node_id", "node", "state", ...}  one
                  node's entry changed (queued, sent, running, then final:
                  succeeded, failed, timed_out, cancelled, refused, expired,
                  lost; final ones may add exit_code, signal, error, duration)
    job.done      {"type", "job_id"}   every node of the job is final
    alert.pending, alert.firing, alert.resolved, alert.cleared
                  {"type", "ts", "rule", "node_id", "name", "subject", "from", "value"}
                  an alert changed state (docs/alerts.md); <node> carries
                  ``alerts_firing``, the count firing on it
    keepalive     {"type", "ts"}       after 15 s without another message
    shutdown      {"type", "ts", "reason"}  Core is stopping; closes with 1001

``<node>`` is a node exactly as ``GET /api/v1/nodes`` lists it (id, name,
status, labels, cpu_percent, mem_percent, disk_percent, net_rx_bps,
net_tx_bps, load1, uptime, last_seen, ...). Events can repeat what the
snapshot already holds; applying them again is harmless.

A slow client never slows Core nor another client: heartbeats are coalesced
per node, and a client that lets more than 4,096 events or 4 MiB wait for it
is disconnected with close code 1008 and the reason "too slow: ..." (logged
once); it can reconnect and gets a fresh snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import trio
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from servermgr import __version__
from servermgr.common.events import ALERT_EVENTS, EventType
from servermgr.core.api import Api
from servermgr.core.auth import Access, error_body
from servermgr.core.bus import Event, HeartbeatWatchers, SubscriberTooSlow, Subscription
from servermgr.core.openapi import Doc, Param
from servermgr.core.scheduler import Scheduler
from servermgr.core.sessions import CLOSE_GOING_AWAY, CLOSE_POLICY
from servermgr.core.storage import NodeRow, Storage

log = logging.getLogger("servermgr.core.events")
_ENCODER = msgspec.json.Encoder()

KINDS = ("node", "heartbeat", "job", "alert")
KIND_OF = {
    EventType.NODE_ONLINE: "node",
    EventType.NODE_OFFLINE: "node",
    EventType.NODE_REMOVED: "node",
    EventType.NODE_RENAMED: "node",
    EventType.NODE_HEARTBEAT: "heartbeat",
    EventType.JOB_STATE: "job",
    EventType.JOB_DONE: "job",
    **{name: "alert" for name in ALERT_EVENTS},
}
MAX_HISTORY = 600
KEEPALIVE = 15.0
SEND_TIMEOUT = 30.0
MAX_EVENTS = 4096  # what may wait for one client before it is disconnected
MAX_BYTES = 4 * 1024 * 1024


class BadQuery(ValueError):
    pass


class Options:
    """The query parameters of one stream, validated."""

    def __init__(self, query: Any) -> None:
        types = _csv(query.get("types")) or list(KINDS)
        unknown = sorted(set(types) - set(KINDS))
        if unknown:
            raise BadQuery(f"unknown types {', '.join(unknown)} (use {', '.join(KINDS)})")
        self.kinds = frozenset(types)
        self.nodes = frozenset(_csv(query.get("nodes")))
        try:
            self.history = int(query.get("history", "60"))
            self.interval = float(query.get("interval", "1"))
        except ValueError:
            raise BadQuery("history must be an integer and interval a number") from None
        if not 0 <= self.history <= MAX_HISTORY:
            raise BadQuery(f"history must be 0..{MAX_HISTORY}")
        if not 0 <= self.interval <= 60:
            raise BadQuery("interval must be 0..60 seconds")

    def wants_node(self, node_id: str | None, name: str | None) -> bool:
        return not self.nodes or node_id in self.nodes or name in self.nodes


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


class EventsApi:
    def __init__(
        self,
        api: Api,
        scheduler: Scheduler,
        watchers: HeartbeatWatchers,
        *,
        heartbeat_interval: float,
        core_id: str,
    ) -> None:
        self.api = api
        self.core_id = core_id
        self.jobs = scheduler
        self.watchers = watchers
        self.heartbeat_interval = heartbeat_interval

    async def websocket(self, ws: WebSocket) -> None:
        try:
            opts = Options(ws.query_params)
        except BadQuery as exc:
            await _deny(ws, 400, "bad_request", str(exc))
            return
        await ws.accept()
        watch = "heartbeat" in opts.kinds
        if watch:
            self.watchers.count += 1
        code, reason = 1000, ""
        client = ws.client
        label = f"event stream of {client.host}:{client.port}" if client else "event stream"
        try:
            async with (
                self.api.bus.subscribe(
                    max_events=MAX_EVENTS,
                    max_bytes=MAX_BYTES,
                    match=_matcher(opts, self.core_id),
                    label=label,
                ) as live,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_read_until_closed, ws, nursery.cancel_scope)
                await self._send(ws, await self.snapshot(opts))
                await self._pump(ws, live, opts)
                nursery.cancel_scope.cancel()
        except* SubscriberTooSlow as group:
            code, reason = CLOSE_POLICY, str(group.exceptions[0])
        except* (WebSocketDisconnect, RuntimeError, OSError, trio.TooSlowError):
            pass  # the client went away or stopped reading; nothing to keep
        finally:
            if watch:
                self.watchers.count -= 1
            with trio.CancelScope(shield=True):
                await _close(ws, code, reason)

    async def snapshot(self, opts: Options) -> dict[str, Any]:
        now = self.api.clock()
        rows = [r for r in self.api.registry.all() if opts.wants_node(r.id, r.name)]
        nodes = msgspec.to_builtins(await self.api.node_statuses(rows))
        history: dict[str, dict[str, list[Any]]] = {}
        interval = self.heartbeat_interval
        if opts.history and rows:
            since = now - max(60.0, opts.history * interval * 2)
            history = await self.api.db.read(
                _history, self.api.db.storage, rows, since, now, opts.history
            )
        open_jobs = set()
        if "job" in opts.kinds:  # of every Core: SQLite knows them all
            entries = await self.api.db.read(self.jobs.store.open_jobs)
            open_jobs = {job for job, node_id, name in entries if opts.wants_node(node_id, name)}
        return {
            "type": "snapshot",
            "ts": now,
            "version": __version__,
            "heartbeat_interval": interval,
            "nodes": nodes,
            "history": history,
            "jobs_open": sorted(open_jobs),
        }

    async def _pump(self, ws: WebSocket, live: Subscription, opts: Options) -> None:
        """Forward live events; heartbeats are coalesced per node for ``interval``."""
        pending: dict[str, None] = {}
        flush_at = 0.0
        idle_until = trio.current_time() + KEEPALIVE
        while True:
            event: Event | None = None
            with trio.move_on_at(flush_at if pending else idle_until):
                event = await live.receive()
            beat = event is not None and event["type"] == EventType.NODE_HEARTBEAT
            if event is not None and beat:
                if not pending:
                    flush_at = trio.current_time() + opts.interval
                pending[event["node_id"]] = None
                if opts.interval > 0:
                    continue
            if pending:  # the window is over, or another event must not overtake them
                await self._send(ws, await self._heartbeats(pending))
                pending.clear()
            elif event is None:
                await self._send(ws, {"type": EventType.KEEPALIVE, "ts": self.api.clock()})
            idle_until = trio.current_time() + KEEPALIVE
            if event is None or beat:
                continue
            out = await self._translate(event)
            if out is not None:
                await self._send(ws, out)
            if event["type"] == EventType.SHUTDOWN:
                await _close(ws, CLOSE_GOING_AWAY, "Core is shutting down")
                return

    async def _heartbeats(self, node_ids: Iterable[str]) -> dict[str, Any]:
        registry = self.api.registry
        rows = [row for nid in node_ids if (row := registry.by_id(nid)) is not None]
        nodes = [await self.api.node_status(row) for row in rows]
        return {"type": EventType.HEARTBEATS, "ts": self.api.clock(), "nodes": nodes}

    async def _translate(self, event: Event) -> dict[str, Any] | None:
        if event["type"] == EventType.NODE_ONLINE:
            row = self.api.registry.by_id(event["node_id"])
            if row is None:
                return None
            return {**event, "node": await self.api.node_status(row)}
        if event.get("name", "") is None:  # a peer Core's node (core/redis_peers.py)
            row = self.api.registry.by_id(event["node_id"])
            return {**event, "name": row.name if row is not None else event["node_id"]}
        return event  # the same name on the bus and here

    async def _send(self, ws: WebSocket, doc: dict[str, Any]) -> None:
        with trio.fail_after(SEND_TIMEOUT):
            await ws.send_text(_ENCODER.encode(doc).decode())

    def ws_routes(self) -> list[tuple[str, Any, Doc]]:
        return [
            (
                "/api/v1/events",
                self.websocket,
                Doc(
                    "Live events: a snapshot of the fleet, then node online/offline, "
                    "heartbeat summaries and job state changes",
                    auth=Access.READ,
                    websocket=True,
                    params=(
                        Param(
                            "types",
                            "query",
                            "comma list of node, heartbeat, job, alert (default all)",
                        ),
                        Param("nodes", "query", "comma list of node names or ids (default all)"),
                        Param(
                            "history",
                            "query",
                            f"CPU/memory values per node in the snapshot (0..{MAX_HISTORY})",
                            {"type": "integer", "minimum": 0, "maximum": MAX_HISTORY},
                        ),
                        Param(
                            "interval",
                            "query",
                            "heartbeat batching window in seconds (0..60, default 1)",
                            {"type": "number", "minimum": 0, "maximum": 60},
                        ),
                    ),
                    messages="one JSON object per text frame, each with a type: snapshot "
                    "(first, once), node.online, node.offline, node.removed, node.renamed, "
                    "heartbeats, job.state, job.done, keepalive, shutdown (see "
                    "docs/reference/api.md). The client sends nothing.",
                ),
            )
        ]


def _matcher(opts: Options, core_id: str) -> Callable[[Event], bool]:
    """Which bus events this stream takes; runs in publish(), so it stays cheap."""
    jobs_seen: set[str] = set()

    def match(event: Event) -> bool:
        kind = KIND_OF.get(event["type"])
        if kind is None:
            # This Core's own shutdown ends the stream; a peer's does not.
            return bool(event["type"] == EventType.SHUTDOWN and event.get("core") == core_id)
        if kind not in opts.kinds:
            return False
        if not opts.nodes:
            return True
        if event["type"] == EventType.JOB_DONE:
            if event["job_id"] in jobs_seen:
                jobs_seen.discard(event["job_id"])
                return True
            return False
        ok = opts.wants_node(event.get("node_id"), event.get("name") or event.get("node"))
        if ok and kind == "job":
            jobs_seen.add(event["job_id"])
        return ok

    return match


def _history(
    storage: Storage, rows: list[NodeRow], since: float, until: float, limit: int
) -> dict[str, dict[str, list[Any]]]:
    """Recent CPU and memory per node, in one worker-thread call."""
    out: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        samples = storage.query_metrics(row.seq, since, until, limit)
        if samples:
            out[row.id] = {
                "ts": [s["ts"] for s in samples],
                "cpu_percent": [_round(s.get("cpu_percent")) for s in samples],
                "mem_percent": [_round(s.get("mem_percent")) for s in samples],
            }
    return out


def _round(value: float | int | None) -> float | None:
    return None if value is None else round(float(value), 1)


async def _read_until_closed(ws: WebSocket, scope: trio.CancelScope) -> None:
    """Watch for the client's close: sends after it are silently dropped."""
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    scope.cancel()


async def _deny(ws: WebSocket, status: int, code: str, message: str) -> None:
    await ws.send_denial_response(JSONResponse(error_body(code, message), status_code=status))


async def _close(ws: WebSocket, code: int, reason: str = "") -> None:
    try:
        await ws.close(code, reason)
    except (RuntimeError, OSError):
        pass
