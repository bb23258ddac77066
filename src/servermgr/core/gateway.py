"""WebSocket gateway: one session per connected node.

The route is guarded by ``core/auth.py`` (a bad credential gets a real 401
before accepting, so the node can tell "rejected" from "Core down"; a removed
node's gets ``node_removed``). A second connection with the credential of a
node that is connected already is refused (409 ``credential_in_use``): two
agents sharing one identity (a copied data dir) would otherwise replace each
other forever. The session then waits for
``hello``, answers ``welcome``, then reads messages until the node leaves or
falls silent for three heartbeat intervals (one watchdog task checks every
session four times per that limit: no timer per message). Messages to a node are sent
by whichever task has them (each message whole, under the connection's
lock); acks, which come from the writer's callbacks, are written at once
when the socket takes them (``NodeSession.send_now``), else sent by short
tasks in the gateway's nursery. Every send is bounded
(``SEND_TIMEOUT``): a node whose connection does not take a message in that
time is stalled (a stopped process, a node that does not read) and is
disconnected, so it never holds up a sender. No task or queue per session: a
connected node costs Core its connection and little more. The sessions
themselves live in ``core/sessions.py``; the scheduler sends through them and
gets the node's job messages from here (``JobMessages``).

Heartbeats are acked once stored, but at most once per ``ack_interval``
(six heartbeat intervals; the ack is cumulative, and ``welcome`` tells the
node): sending a message costs Core about as much as receiving one, so an
ack per heartbeat would halve the fleet one Core can take. A node keeps
unacked samples and re-sends them after a reconnect; they are stored once.
While the database refuses writes (disk full) the writer holds the samples
and the ack repeats the last stored seq, so the node keeps the rest and
still hears from Core.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import trio
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from servermgr.common import proto
from servermgr.common.errors import ProtocolError, StorageUnavailableError
from servermgr.common.events import EventType
from servermgr.common.text import printable
from servermgr.core.auth import Access, error_body, principal_of
from servermgr.core.bus import EventBus, HeartbeatWatchers
from servermgr.core.openapi import Doc
from servermgr.core.registry import NodeRegistry
from servermgr.core.sessions import (
    CLOSE_POLICY,
    CLOSE_SILENT,
    CLOSE_STALLED,
    CLOSE_TRY_AGAIN,
    SEND_TIMEOUT,
    Closed,
    NodeSession,
    Sessions,
    await_close,
    close_ws,
    receive,
    send_error,
)
from servermgr.core.status import StatusStore
from servermgr.core.storage import NodeRow
from servermgr.core.streams import StreamRouter
from servermgr.core.writer import Ingest, MetricsWriter, spawn_past_outages

log = logging.getLogger("servermgr.core.gateway")

NODE_WS_PATH = "/api/v1/node/ws"
HELLO_TIMEOUT = 10.0
MISSED_INTERVALS = 3
ACK_EVERY = 6  # heartbeat intervals between two heartbeat.acks to a node
MAX_BAD_MESSAGES = 10


@dataclass
class GatewayConfig:
    heartbeat_interval: float
    max_frame: int = proto.MAX_FRAME_BYTES

    @property
    def ack_interval(self) -> float:
        return self.heartbeat_interval * ACK_EVERY

    @property
    def silent_after(self) -> float:
        return self.heartbeat_interval * MISSED_INTERVALS + 1.0

    @property
    def read_within(self) -> float:
        """A node's heartbeats must echo a heartbeat.ack within this, else it is not
        reading its socket: stalled (its next heartbeat after the ack, plus slack)."""
        return self.heartbeat_interval * 2 + SEND_TIMEOUT


class JobMessages(Protocol):
    """What the gateway hands the scheduler: a node came or went, and its job messages."""

    async def node_online(self, node_id: str, known: set[str] | None = None) -> None: ...

    async def node_offline(self, node_id: str) -> None: ...

    async def on_accepted(self, node_id: str, msg: proto.JobAccepted) -> None: ...

    async def on_output(self, node_id: str, msg: proto.JobOutput) -> None: ...

    async def on_result(
        self, node_id: str, msg: proto.JobResult, ack: Callable[[], Awaitable[None]]
    ) -> None:
        """Store the result, then ``ack`` it (StorageUnavailableError: not stored)."""
        ...


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        registry: NodeRegistry,
        status: StatusStore,
        bus: EventBus,
        writer: MetricsWriter,
        sessions: Sessions,
        jobs: JobMessages,
        *,
        clock: Callable[[], float],
        heartbeat_watchers: HeartbeatWatchers,
        streams: StreamRouter | None = None,
    ) -> None:
        self.config = config
        # File transfers and shells: node messages go to their relay (core/streams.py).
        self.streams = streams or StreamRouter()
        self.registry = registry
        self.status = status
        self.bus = bus
        self.writer = writer
        self.sessions = sessions
        self.jobs = jobs
        self.clock = clock
        self.heartbeat_watchers = heartbeat_watchers
        self._handshaking: set[str] = set()  # node ids between accept and their session
        self._nursery: trio.Nursery | None = None  # for sends from sync code, and job catch-up

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The gateway's own tasks: the silence watchdog, and a nursery for short sends."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                await self._watch_silence()
            finally:
                self._nursery = None

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        spawn_past_outages(self._nursery, fn, *args)

    async def _watch_silence(self) -> None:
        """Close sessions whose node sent nothing for three heartbeat intervals."""
        silent_after = self.config.silent_after
        while True:
            # A quarter of the limit: at 20,000 nodes a pass is a few ms, every 4 s at 5 s.
            await trio.sleep(silent_after / 4)
            too_old = trio.current_time() - silent_after
            for session in list(self.sessions.values()):
                if session.last_heard < too_old:
                    session.close(CLOSE_SILENT, f"silent for {silent_after:g} s")

    def ws_routes(self) -> list[tuple[str, Callable[[WebSocket], Awaitable[None]], Doc]]:
        doc = Doc(
            "The node WebSocket (a node's own credential)",
            auth=Access.NODE,
            websocket=True,
            messages="one JSON object per text frame, tagged by type (docs/reference/"
            "protocol.md): the node sends hello first, then heartbeat, job.accepted, "
            "job.output, job.result, error; Core sends welcome, heartbeat.ack, job.run, "
            "job.ack, job.cancel, error.",
        )
        return [(NODE_WS_PATH, self.endpoint, doc)]

    async def endpoint(self, ws: WebSocket) -> None:
        """The node WebSocket route (behind the node-credential guard)."""
        node = principal_of(ws).node
        assert node is not None
        if self.sessions.closing:
            body = error_body("shutting_down", "Core is shutting down")
            await ws.send_denial_response(JSONResponse(body, status_code=503))
            return
        if node.id in self.sessions or node.id in self._handshaking:
            live = self.sessions.get(node.id)
            where = f" from {live.peer}" if live is not None and live.peer else ""
            body = error_body(
                "credential_in_use",
                f"node {node.name} is connected already{where} with this credential: "
                "two agents share one identity (a copied data_dir?); stop one, or give it "
                "its own data_dir and enrol it",
            )
            await ws.send_denial_response(JSONResponse(body, status_code=409))
            return
        self._handshaking.add(node.id)
        try:
            await self._serve_node(ws, node)
        finally:
            self._handshaking.discard(node.id)

    async def _serve_node(self, ws: WebSocket, node: NodeRow) -> None:
        await ws.accept()
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else None
        try:
            hello = await self._receive_hello(ws, node)
        except ProtocolError as exc:
            # Said in an error first: the close reason is cut to 120 bytes.
            log.info("node %s (%s): hello refused: %s", node.name, peer, exc.reason)
            await send_error(ws, "bad_hello", printable(exc.reason)[:1000])
            await close_ws(ws, CLOSE_POLICY, "hello refused")
            await await_close(ws)
            return
        except Closed as exc:
            log.info("node %s (%s): handshake failed: %s", node.name, peer, exc)
            await close_ws(ws, CLOSE_POLICY, str(exc))
            return
        except trio.TooSlowError:
            await close_ws(ws, CLOSE_POLICY, "no hello within 10 s")
            await await_close(ws)
            return
        if hello.hostname != node.name:
            # Core owns names: the one registered stays (docs/security.md).
            log.info(
                "node %s (%s) reports the hostname %s; its name stays %s",
                node.name,
                node.id,
                hello.hostname,
                node.name,
            )
        # The reported hostname is kept as a fact about the node, beside its name.
        info = {**msgspec.to_builtins(hello.info), "hostname": hello.hostname}
        try:
            node = await self.registry.update_hello(
                node, dict(hello.labels), info, hello.agent_version
            )
        except StorageUnavailableError:
            pass  # the hello is not stored this time (Database logs why); the node may connect
        protocol = proto.negotiate(hello) or proto.OLDEST_PROTOCOL  # decode checked it
        session = NodeSession(node, ws, peer, protocol)
        self.sessions.add(session)
        self._handshaking.discard(node.id)
        now = self.clock()
        await self.status.set_online(node.id, now=now, peer=peer)
        log.info("node %s online from %s", node.name, peer)
        self.bus.publish(
            {"type": EventType.NODE_ONLINE, "node_id": node.id, "name": node.name, "ts": now}
        )
        try:
            await session.send(
                proto.Welcome(
                    node_id=node.id,
                    heartbeat_interval=self.config.heartbeat_interval,
                    server_time=now,
                    ack_interval=self.config.ack_interval,
                    # A node that speaks only 1 knows no such field: it is left out.
                    protocol=protocol if hello.protocol > 1 else msgspec.UNSET,
                )
            )
            self._spawn(self.jobs.node_online, node.id, set(hello.jobs))
            with session.cancel_scope:
                await self._read_loop(session)
        finally:
            self.streams.node_gone(node.id)
            if self.sessions.remove(session):
                with trio.CancelScope(shield=True):
                    await self.status.set_offline(node.id)
                    await self.jobs.node_offline(node.id)
                log.info("node %s offline (%s)", node.name, session.close_reason or "disconnected")
                self.bus.publish(
                    {
                        "type": EventType.NODE_OFFLINE,
                        "node_id": node.id,
                        "name": node.name,
                        "ts": self.clock(),
                        "reason": session.close_reason or "disconnected",
                    }
                )
            await session.close_socket()
            session.done.set()

    async def _receive_hello(self, ws: WebSocket, node: NodeRow) -> proto.Hello:
        with trio.fail_after(HELLO_TIMEOUT):
            text = await receive(ws)
        msg = proto.decode_from_node(text, max_size=self.config.max_frame)
        if not isinstance(msg, proto.Hello):
            raise ProtocolError(f"expected hello first, got {type(msg).__name__}")
        if msg.node_id != node.id:
            raise ProtocolError("hello names another node id than the credential's")
        return msg

    async def _read_loop(self, session: NodeSession) -> None:
        bad = 0
        while True:
            try:
                text = await receive(session.ws)
            except Closed as exc:
                session.close_reason = str(exc)
                session.disconnected = True
                return
            session.last_heard = trio.current_time()
            try:
                msg = proto.decode_from_node(text, max_size=self.config.max_frame)
            except ProtocolError as exc:
                bad += 1
                log.warning("node %s sent a bad message: %s", session.node.name, exc.reason)
                await session.send(proto.Error(code="bad_message", message=exc.reason[:1000]))
                if bad >= MAX_BAD_MESSAGES:
                    session.close_code = CLOSE_POLICY
                    session.close_reason = "too many bad messages"
                    return
                continue
            try:
                await self._dispatch(session, msg)
            except StorageUnavailableError:
                # Not acked: the node keeps it and sends it again on its next connection.
                session.close_code = CLOSE_TRY_AGAIN
                session.close_reason = "Core could not store a job message; send it again"
                return

    def _ack(self, session: NodeSession) -> None:
        """Ack the session's stored heartbeats, at most once per ``ack_interval``."""
        t = trio.current_time()
        if t >= session.next_ack:
            session.next_ack = t + self.config.ack_interval
            if session.unread_ack is None:  # the node's heartbeats must echo it (a reader)
                session.unread_ack = (session.stored_seq, t)
            ack = proto.HeartbeatAck(seq=session.stored_seq)
            if not session.send_now(ack):  # a task only when the socket cannot take it now
                self._spawn(session.send, ack)

    def _check_reading(self, session: NodeSession, acked: int) -> None:
        """A node that sends but does not read: its heartbeats never echo our ack."""
        assert session.unread_ack is not None
        seq, at = session.unread_ack
        if acked >= seq:
            session.unread_ack = None
        elif trio.current_time() - at > self.config.read_within:
            log.warning("node %s does not read its connection; disconnecting it", session.node.name)
            session.close(
                CLOSE_STALLED,
                f"stalled: heartbeat.ack not read within {self.config.read_within:g} s",
            )

    async def _dispatch(self, session: NodeSession, msg: proto.NodeMessage) -> None:
        node = session.node
        if isinstance(msg, proto.Heartbeat):
            now = self.clock()
            await self.status.record_samples(node.id, msg.samples, now=now)
            seq = msg.seq
            if msg.acked is not None and session.unread_ack is not None:
                self._check_reading(session, msg.acked)

            def heartbeat_stored() -> None:
                session.stored_seq = max(session.stored_seq, seq)
                self._ack(session)

            def heartbeat_not_stored() -> None:
                # Re-acks what is stored (nothing new): the node must not take Core for silent.
                self._ack(session)

            await self.writer.submit(
                Ingest(node.seq, msg.samples, now, heartbeat_stored, heartbeat_not_stored)
            )
            if self.heartbeat_watchers.count:
                self.bus.publish(
                    {
                        "type": EventType.NODE_HEARTBEAT,
                        "node_id": node.id,
                        "name": node.name,
                        "ts": now,
                    }
                )
        elif isinstance(msg, proto.STREAM_MESSAGES):
            self.streams.from_node(node.id, msg)
        elif isinstance(msg, proto.JobAccepted):
            await self.jobs.on_accepted(node.id, msg)
        elif isinstance(msg, proto.JobOutput):
            await self.jobs.on_output(node.id, msg)
        elif isinstance(msg, proto.JobResult):
            job_id = msg.job_id

            async def job_ack() -> None:
                await session.send(proto.JobAck(job_id=job_id))

            await self.jobs.on_result(node.id, msg, job_ack)
        elif isinstance(msg, proto.Error):
            log.warning("node %s reports %s: %s", node.name, msg.code, msg.message[:200])
        else:  # proto.Hello
            await session.send(proto.Error(code="bad_message", message="hello was already sent"))
