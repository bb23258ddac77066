"""What the file and shell endpoints share: one ctl WebSocket bridged to a node stream.

The ctl side of the connection (size-limited control frames, data frames
within credit), the node side (``core/streams.py``: messages in order, with
an idle limit) and the audit row.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from servermgr.common import flow, proto, relay
from servermgr.common.errors import ProtocolError, StorageUnavailableError
from servermgr.common.text import printable
from servermgr.core.auth import Principal, principal_of
from servermgr.core.jobstore import JobStore
from servermgr.core.registry import NodeRegistry
from servermgr.core.sessions import CLOSE_POLICY, Sessions
from servermgr.core.storage import NodeRow
from servermgr.core.streams import IDLE_TIMEOUT, NodeStream, StreamFailed, StreamRouter
from servermgr.core.writer import Database

F = TypeVar("F", bound=proto.StreamMessage)

log = logging.getLogger("servermgr.core.streams")

OPEN_TIMEOUT = 10.0  # for ctl's open message
ANSWER_TIMEOUT = 30.0  # for the node's answer to an open (policy, path checks)
CLIENT_CLOSE_WAIT = 5.0  # for ctl to close after the last message


@dataclass
class StreamDeps:
    """What the file and shell endpoints need from Core."""

    router: StreamRouter
    sessions: Sessions
    registry: NodeRegistry
    db: Database
    clock: Callable[[], float]

    @property
    def store(self) -> JobStore:
        return JobStore(self.db.storage)


class Relay:
    """One ctl WebSocket bridged to one node stream."""

    def __init__(self, deps: StreamDeps, ws: WebSocket, node: NodeRow, stream: NodeStream) -> None:
        self.deps = deps
        self.ws = ws
        self.node = node
        self.stream = stream
        self.principal: Principal | None = principal_of(ws)

    @property
    def who(self) -> str:
        return self.principal.name if self.principal is not None else "?"

    async def to_node(self, msg: proto.CoreMessage) -> None:
        outcome = await self.deps.sessions.deliver(self.node.id, msg)
        if outcome != "sent":
            raise StreamFailed("node_offline", f"node {self.node.name} is {outcome}")

    async def to_ctl(self, msg: relay.CoreMessage) -> None:
        try:
            await self.ws.send_text(relay.encode(msg))
        except (RuntimeError, OSError, WebSocketDisconnect):
            raise StreamFailed("client_gone", "the client disconnected") from None

    async def data_to_ctl(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(data)
        except (RuntimeError, OSError, WebSocketDisconnect):
            raise StreamFailed("client_gone", "the client disconnected") from None

    async def from_ctl(self, idle: float = IDLE_TIMEOUT) -> str | bytes:
        """The next frame from ctl: text (control, size-limited) or data (within one chunk)."""
        try:
            with trio.fail_after(idle):
                message = await self.ws.receive()
        except trio.TooSlowError:
            raise StreamFailed("timeout", f"the client sent nothing for {idle:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise StreamFailed("client_gone", "the client disconnected")
        text = message.get("text")
        if text is not None:
            if len(text) > relay.MAX_CONTROL:
                raise StreamFailed("bad_request", f"control message over {relay.MAX_CONTROL} bytes")
            return str(text)
        data = message.get("bytes") or b""
        if not data or len(data) > flow.CHUNK:
            raise StreamFailed("bad_request", f"data frames hold 1 to {flow.CHUNK} bytes")
        return bytes(data)

    async def push(
        self,
        final: type[F],
        forward: Callable[[bytes], Awaitable[None]],
        finish: Callable[[str], Awaitable[None]],
        idle: float = IDLE_TIMEOUT,
    ) -> F:
        """ctl's data to the node within the credit the node grants, then its last word.

        ``forward`` sends one data frame on (the budget is checked already);
        ``finish`` takes the control frame that ends the data and tells the node.
        Returns the node's ``final`` answer, which may come before the end (the
        node stops early) or after it (it still has work to do).
        """
        budget = flow.Budget()  # what the node granted and ctl has not sent
        answer: list[F] = []

        async def node_side(cancel: trio.CancelScope) -> None:
            while True:
                msg = await self.stream.receive(idle)
                if isinstance(msg, proto.StreamCredit):
                    budget.granted(msg.bytes)
                    await self.to_ctl(relay.Credit(bytes=msg.bytes))
                elif isinstance(msg, final):
                    answer.append(msg)
                    cancel.cancel()
                    return

        with unwrap_failure():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node_side, nursery.cancel_scope)
                while True:
                    frame = await self.from_ctl(idle)
                    if isinstance(frame, str):
                        await finish(frame)
                        break
                    if not budget.spend(len(frame)):
                        raise StreamFailed("bad_request", "data past the credit")
                    await forward(frame)
        while not answer:
            msg = await self.stream.receive(idle)
            if isinstance(msg, final):
                answer.append(msg)
        return answer[0]

    async def audit(self, started: float, action: str, detail: str, outcome: str) -> None:
        try:
            await self.deps.db.write(
                self.deps.store.record_audit,
                started,
                self.who,
                action,
                self.node.name,
                detail,
                outcome,
            )
        except StorageUnavailableError:
            log.warning("audit row not stored (database unavailable): %s %s", action, detail)


@contextlib.contextmanager
def unwrap_failure() -> Iterator[None]:
    """A nursery's StreamFailed as itself, not inside an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        failed, rest = group.split(StreamFailed)
        if failed is not None and rest is None:
            first = failed.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        raise


async def accept(
    deps: StreamDeps, ws: WebSocket, decode: Callable[[str], object]
) -> tuple[object, Relay] | None:
    """Accept ctl's WebSocket and read its open message: the request, and its relay
    on a node stream just opened (the caller closes it: ``deps.router.close``).
    None (and an error sent) if bad."""
    await ws.accept()
    try:
        with trio.fail_after(OPEN_TIMEOUT):
            message = await ws.receive()
        text = message.get("text")
        if message["type"] == "websocket.disconnect":
            return None
        if not isinstance(text, str):
            raise ProtocolError("the first message must be a text frame")
        request = decode(text)
        ref = getattr(request, "node", None)
        if not isinstance(ref, str):
            raise ProtocolError("the first message must be an open message")
    except trio.TooSlowError:
        await refuse(ws, "bad_request", f"no open message within {OPEN_TIMEOUT:g} s")
        return None
    except ProtocolError as exc:
        await refuse(ws, "bad_request", f"bad open message: {exc.reason}")
        return None
    node = deps.registry.by_ref(ref)
    if node is None:
        await refuse(
            ws, "not_found", f"no node named {printable(ref)!r} (see: servermgr ctl nodes)"
        )
        return None
    if not deps.sessions.is_online(node.id):
        await refuse(ws, "node_offline", f"node {node.name} is offline")
        return None
    too_old = agent_too_old(deps.sessions, node)
    if too_old is not None:
        await refuse(ws, "too_old", too_old)
        return None
    return request, Relay(deps, ws, node, deps.router.open(node.id))


def agent_too_old(sessions: Sessions, node: NodeRow) -> str | None:
    """Why ``node``'s agent cannot do transfers, shells or upgrades (None: it can)."""
    protocol = sessions.protocol_of(node.id)
    if protocol is None or protocol >= proto.STREAMS_SINCE:
        return None
    return (
        f"node {node.name} runs agent {node.agent_version or '?'} (protocol {protocol}), too old "
        f"for file transfers, shells and upgrades (protocol {proto.STREAMS_SINCE}): "
        "install a newer agent on it by hand"
    )


async def refuse(ws: WebSocket, code: str, message: str) -> None:
    """Send the error and end the stream (``end``)."""
    try:
        await ws.send_text(relay.encode(relay.error(code, message)))
    except (RuntimeError, OSError, WebSocketDisconnect):
        return
    await end(ws, CLOSE_POLICY if code == "bad_request" else 1000)


async def end(ws: WebSocket, code: int = 1000) -> None:
    """Let the client close first; close after ``CLIENT_CLOSE_WAIT`` if it does not.

    ctl closes once it has read the last message (result, exit or error).
    Closing from here as well would cross its close: Hypercorn answers a
    client's close frame from its reader task while the handler writes its
    own, two writers on one socket (trio.BusyResourceError).
    """
    with trio.move_on_after(CLIENT_CLOSE_WAIT):
        while True:  # what the client still sends (data in flight) is dropped
            try:
                message = await ws.receive()
            except (RuntimeError, OSError, WebSocketDisconnect):
                return
            if message["type"] == "websocket.disconnect":
                return
    try:
        await ws.close(code)
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass
