"""Connected nodes: one ``NodeSession`` per connection, and the table of them.

``Sessions`` is what other parts use to reach a node now: whether it is
connected here, a bounded send, a disconnect. The gateway (``core/gateway.py``)
adds and removes sessions as nodes connect and leave; the scheduler sends
through it. Every send is bounded (``SEND_TIMEOUT``): a node whose connection
does not take a message in that time is stalled and disconnected, so it never
holds up a sender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from servermgr.common import proto
from servermgr.core.storage import NodeRow
from servermgr.core.wslane import SEND_NOWAIT

Delivery = Literal["sent", "offline", "stalled"]

CLOSE_WAIT = 2.0
SEND_TIMEOUT = 5.0  # a node's connection must take a message within this

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_SILENT = 4000
CLOSE_REMOVED = 4004
CLOSE_STALLED = 4008


class NodeSession:
    """A live connection to one node."""

    def __init__(
        self, node: NodeRow, ws: WebSocket, peer: str | None = None, protocol: int = 1
    ) -> None:
        self.node = node
        self.ws = ws
        self.peer = peer
        self.protocol = protocol  # the version this session speaks (proto.negotiate)
        self.cancel_scope = trio.CancelScope()
        self.close_code = CLOSE_GOING_AWAY
        self.close_reason = ""
        self.done = trio.Event()
        self.last_heard = trio.current_time()
        self.next_ack = 0.0  # trio time from which a heartbeat.ack may be sent
        # Highest seq stored in this session: the writer commits in order and
        # holds every heartbeat after a failed one, so all below it are stored too.
        self.stored_seq = 0
        self.unread_ack: tuple[int, float] | None = None  # (seq, trio time) not echoed yet
        # Our sends one at a time, and none while or after the socket closes
        # (Hypercorn's close does not wait for a send in progress).
        self._sending = trio.Lock()
        self._closed = False
        self._broken = False  # a send was cut short: the stream is not whole any more
        self.disconnected = False  # the connection is gone already: nothing to close
        nowait = ws.scope.get("extensions", {}).get(SEND_NOWAIT)
        self._send_nowait: Callable[[str], bool] | None = nowait["send"] if nowait else None

    def send_now(self, msg: proto.CoreMessage) -> bool:
        """Send ``msg`` at once, from synchronous code, if the connection takes it
        without waiting (core/wslane.py); False: ``send`` it instead."""
        if self._send_nowait is None or self._closed or self._sending.locked():
            return False
        if self.cancel_scope.cancel_called:
            return False
        return self._send_nowait(proto.encode(msg))

    async def send(self, msg: proto.CoreMessage) -> None:
        """Send ``msg`` now; a connection that fails ends the session (never raises)."""
        await self.deliver(msg)

    async def deliver(self, msg: proto.CoreMessage) -> Delivery:
        """Send ``msg`` within ``SEND_TIMEOUT``; a connection that fails or does not
        take it in time ends the session ("offline" or "stalled"; never raises)."""
        with trio.move_on_after(SEND_TIMEOUT):
            async with self._sending:
                if self._closed or self.cancel_scope.cancel_called:
                    return "offline"
                try:
                    await self.ws.send_text(proto.encode(msg))
                except (RuntimeError, OSError, WebSocketDisconnect):
                    self.close(CLOSE_GOING_AWAY, "connection lost while sending")
                    return "offline"
                return "sent"
        # Cut short mid-frame perhaps: nothing more may be written but the close.
        self._broken = True
        self.close(CLOSE_STALLED, f"stalled: did not take a message within {SEND_TIMEOUT:g} s")
        return "stalled"

    async def close_socket(self) -> None:
        """Close the WebSocket with the session's code, after any send in progress."""
        self._closed = True
        if self.disconnected:
            return
        with trio.CancelScope(shield=True):
            # A send stuck on a node that does not read gets 5 s, then the close goes
            # anyway; the close itself is bounded too (its frame waits for room).
            locked = False
            with trio.move_on_after(SEND_TIMEOUT):
                await self._sending.acquire()
                locked = True
            try:
                with trio.move_on_after(SEND_TIMEOUT):
                    await close_ws(self.ws, self.close_code, self.close_reason)
            finally:
                if locked:
                    self._sending.release()
            if self._broken:
                return  # no closing handshake to wait for on a stream cut mid-frame
            await await_close(self.ws)

    def close(self, code: int, reason: str) -> None:
        """End the session; the handler closes the socket with ``code``."""
        self.close_code = code
        self.close_reason = reason
        self.cancel_scope.cancel()


class Sessions:
    """The nodes connected to this Core, by node id."""

    def __init__(self) -> None:
        self._by_node: dict[str, NodeSession] = {}
        self.closing = False

    def __getitem__(self, node_id: str) -> NodeSession:
        return self._by_node[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_node

    def __len__(self) -> int:
        return len(self._by_node)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_node)

    def get(self, node_id: str) -> NodeSession | None:
        return self._by_node.get(node_id)

    def values(self) -> list[NodeSession]:
        return list(self._by_node.values())

    def add(self, session: NodeSession) -> None:
        self._by_node[session.node.id] = session

    def remove(self, session: NodeSession) -> bool:
        """Drop ``session``; False if another one (or none) holds its node now."""
        if self._by_node.get(session.node.id) is not session:
            return False
        del self._by_node[session.node.id]
        return True

    def is_online(self, node_id: str) -> bool:
        """Connected, and not being closed."""
        session = self._by_node.get(node_id)
        return session is not None and not session.cancel_scope.cancel_called

    async def deliver(self, node_id: str, msg: proto.CoreMessage) -> Delivery:
        """Send ``msg`` to a connected node, bounded (``NodeSession.deliver``)."""
        session = self._by_node.get(node_id)
        if session is None:
            return "offline"
        return await session.deliver(msg)

    def protocol_of(self, node_id: str) -> int | None:
        """The protocol version of a connected node's session (None: offline)."""
        session = self._by_node.get(node_id)
        return None if session is None else session.protocol

    def disconnect(self, node_id: str, code: int, reason: str) -> None:
        session = self._by_node.get(node_id)
        if session is not None:
            session.close(code, reason)

    def disconnect_stalled(self, node_id: str, reason: str) -> None:
        """Close a node that does not answer (the scheduler saw its job.run go unanswered)."""
        self.disconnect(node_id, CLOSE_STALLED, reason[:120])

    def renamed(self, row: NodeRow) -> None:
        """A connected node's session goes on under its new name."""
        session = self._by_node.get(row.id)
        if session is not None:
            session.node = row

    async def close_all(self, reason: str = "Core is shutting down") -> None:
        """Tell every node to go (1001) and wait until their sessions ended."""
        self.closing = True
        sessions = list(self._by_node.values())
        for session in sessions:
            session.close(CLOSE_GOING_AWAY, reason)
        with trio.move_on_after(5):
            for session in sessions:
                await session.done.wait()


class Closed(Exception):
    pass


async def receive(ws: WebSocket) -> str | bytes:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise Closed(f"closed by node (code {message.get('code', 1000)})")
    data: str | bytes | None = message.get("text")
    if data is None:
        data = message.get("bytes") or b""
    return data


async def send_error(ws: WebSocket, code: str, message: str) -> None:
    try:
        await ws.send_text(proto.encode(proto.Error(code=code, message=message)))
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass


async def await_close(ws: WebSocket) -> None:
    """Wait (briefly, shielded) for the node's closing frame after ours.

    Returning at once lets Hypercorn shut the socket while its reader may
    still be answering the node's own close; the two collide
    (trio.BusyResourceError) and can take the server down.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT):
        while True:
            try:
                await receive(ws)
            except (Closed, RuntimeError, OSError, WebSocketDisconnect):
                break


async def close_ws(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason[:120])
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass
