"""The node WebSocket served on its own lane: the app's ASGI chain, without Hypercorn.

Every connected node costs Core one WebSocket frame per heartbeat, and at
thousands of nodes that per-frame cost is Core's ceiling. Through Hypercorn
a frame wakes two tasks (the connection's reader, which runs it through
h11's and Hypercorn's protocol layers and puts it on the app's channel, and
then the app's task) and about half of Core's CPU went there
(docs/performance.md). Here the node's session task reads its own socket:
one task, one wake per frame, and a frame reader made for this one job
(``core/wsframes.py``).

It is an ASGI server for one kind of request only, a WebSocket upgrade on
a path of ``paths``: ``core/listen.py`` reads each connection's first
request head and hands it here, or to Hypercorn with the head replayed. The
app is the same chain Hypercorn runs (the unauthenticated-connection gate,
the abuse limits, the auth guard, the gateway), so what a node is allowed,
refused or counted for does not change. What it supports is what that
chain uses: ``websocket.accept`` (with a subprotocol), ``send`` (text or
bytes), ``close``, and a refusal as an HTTP response (the
``websocket.http.response`` extension). No compression extension is
offered: heartbeats are small, and inflating what a peer sends is work and
risk Core does not need.

Frames a node sends are taken when the app asks for a message: a ping is
answered and a close is answered then. A frame that breaks the protocol, or
a message over ``max_message`` bytes, closes the connection with the code
RFC 6455 names (1002, 1007, 1009). Sends are one at a time (a lock: an answer to
a ping and a message from the scheduler may meet).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import deque
from typing import Any
from urllib.parse import unquote

import h11
import trio
from starlette.types import ASGIApp, Message

from servermgr.core.wsframes import (
    CLOSE_NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameReader,
    Received,
    accept_token,
    close_frame,
    frame,
)

log = logging.getLogger("servermgr.core.wslane")

MAX_RECV = 65536
CLOSE_ABNORMAL = 1006
CLOSE_DRAIN = 2.0
SEND_NOWAIT = "servermgr.send_nowait"  # the ASGI extension (scope["extensions"])
CLOSE_INTERNAL = 1011

_UPGRADE = re.compile(rb"\r\nupgrade:[ \t]*websocket[ \t]*\r\n", re.IGNORECASE)

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


def may_be_upgrade(data: bytes, paths: frozenset[bytes]) -> bool:
    """Whether ``data`` (a request head's first bytes) may be a request for one of ``paths``."""
    for path in paths:
        start = b"GET " + path
        if data[: len(start)] == start[: len(data)]:
            return True
    return False


def upgrade_path(head: bytes, paths: frozenset[bytes]) -> bool:
    """Whether ``head`` (a connection's first bytes) asks for a WebSocket on one of ``paths``.

    The request line and an ``Upgrade: websocket`` header are looked at (a
    plain GET goes to Hypercorn and the app); an upgrade that is not valid
    after all (no key, another version) is answered here (400), as Hypercorn would.
    """
    if not head.startswith(b"GET /"):
        return False
    line_end = head.find(b"\r\n")
    if line_end < 0:
        return False
    parts = head[4:line_end].split(b" ")
    if len(parts) != 2 or parts[1] != b"HTTP/1.1":
        return False
    return parts[0].partition(b"?")[0] in paths and _UPGRADE.search(head) is not None


class _Handshake:
    """The upgrade request's checks (RFC 6455 4.2.1) and the 101 that accepts it."""

    def __init__(self, request: h11.Request) -> None:
        self.request = request
        self.key: bytes | None = None
        self.subprotocols: list[str] = []
        upgrade = b""
        version = None
        tokens: list[str] = []
        for name, value in request.headers:  # h11 gives names lower-cased
            if name == b"connection":
                tokens.extend(_comma_list(value))
            elif name == b"sec-websocket-key":
                self.key = value
            elif name == b"sec-websocket-protocol":
                self.subprotocols.extend(_comma_list(value))
            elif name == b"sec-websocket-version":
                version = value
            elif name == b"upgrade":
                upgrade = value
        self.valid = (
            request.method == b"GET"
            and self.key is not None
            and version == b"13"
            and upgrade.lower() == b"websocket"
            and any(token.lower() == "upgrade" for token in tokens)
        )

    def accept(self, subprotocol: str | None) -> h11.InformationalResponse:
        assert self.key is not None
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", accept_token(self.key)),
        ]
        if subprotocol is not None:
            if subprotocol not in self.subprotocols:
                raise RuntimeError(f"subprotocol {subprotocol!r} was not offered")
            headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        return h11.InformationalResponse(status_code=101, headers=headers)


class WebSocketLane:
    """One WebSocket connection served to an ASGI app, on the raw stream."""

    __slots__ = (
        "_close_sent",
        "_closed",
        "_fd",
        "_handshake",
        "_http",
        "_pending",
        "_reader",
        "_response",
        "_rest",
        "_send_lock",
        "_state",
        "_stream",
        "_unread",
    )

    def __init__(self, stream: Stream, *, max_message: int) -> None:
        self._stream = stream
        # Read straight from the descriptor when there is no TLS layer (see _read).
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        self._handshake: _Handshake | None = None
        self._reader = FrameReader(max_message)
        self._state = "handshake"  # -> open, or -> response; then closed
        self._pending: deque[Message] = deque([{"type": "websocket.connect"}])
        self._closed: int | None = None  # the close code once the connection ended
        self._close_sent = False
        self._unread = False  # input left unread after a refused frame (see _drain)
        self._response: dict[str, Any] | None = None
        self._send_lock = trio.Lock()
        self._rest = b""  # a frame's end the kernel did not take (send_nowait)

    async def serve(
        self,
        app: ASGIApp,
        head: bytes,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> None:
        """Parse ``head``, run ``app`` on the connection, and close it when the app ends."""
        self._http.receive_data(head)
        try:
            request = self._http.next_event()
            if isinstance(request, h11.Request):
                self._http.next_event()  # its end (a GET has no body), so h11 may answer 101
        except h11.RemoteProtocolError:
            request = None
        handshake = _Handshake(request) if isinstance(request, h11.Request) else None
        if handshake is None or not handshake.valid:
            with contextlib.suppress(OSError):
                await self._refuse(400)
            return
        self._handshake = handshake
        raw_path, _, query = handshake.request.target.partition(b"?")
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"spec_version": "2.3", "version": "3.0"},
            "scheme": "wss" if isinstance(self._stream, trio.SSLStream) else "ws",
            "http_version": "1.1",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": list(handshake.request.headers),
            "client": client,
            "server": server,
            "state": {},
            "subprotocols": handshake.subprotocols,
            "extensions": {
                "websocket.http.response": {},
                # Core's own: a frame written at once from synchronous code (acks).
                SEND_NOWAIT: {"send": self.send_nowait},
            },
        }
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            log.exception("the WebSocket handler of %s failed", scope["path"])
        with contextlib.suppress(OSError):
            if self._state == "handshake":
                await self._refuse(500)
            elif self._state == "open" and self._closed is None:
                await self._send_close(CLOSE_INTERNAL, "")
        if self._unread:
            await self._drain()

    async def _drain(self) -> None:
        """Read and drop what the node still sends after a frame Core refused (the rest
        of a message too big, say), until it closes or ``CLOSE_DRAIN`` s: a socket closed
        with unread input is reset, and the node would lose Core's close frame with it."""
        with trio.move_on_after(CLOSE_DRAIN):
            try:
                while await self._read():
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def receive(self) -> Message:
        """The next ASGI message: connect first, then each whole message, then disconnect."""
        while not self._pending:
            if self._closed is not None:
                return {"type": "websocket.disconnect", "code": self._closed}
            try:
                data = await self._read()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self._closed = CLOSE_ABNORMAL
                continue
            try:
                await self._take(self._reader.feed(data))
            except FrameError as exc:
                log.info(
                    "WebSocket from %s: %s; closing it (%d)", _peer(self._stream), exc, exc.code
                )
                self._closed = exc.code
                self._unread = True
                with contextlib.suppress(OSError):
                    await self._send_close(exc.code, exc.reason)
            except OSError:  # a pong or a close's answer could not be written
                self._closed = CLOSE_ABNORMAL
        return self._pending.popleft()

    async def _read(self) -> bytes | bytearray:
        """The next bytes the node sent (b"" at its end).

        On a plain socket: one wait and one read(2) per wake. trio's
        ``receive_some`` first tries the read (which fails: the next heartbeat is
        seconds away), then waits, reads, and yields once more after.
        """
        fd = self._fd
        if fd < 0:
            return await self._stream.receive_some(MAX_RECV)
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                return os.read(fd, MAX_RECV)
            except BlockingIOError:  # woken, but another read took it: wait again
                continue

    async def _take(self, received: list[Received]) -> None:
        for got in received:
            if got.opcode == OP_TEXT:
                self._pending.append({"type": "websocket.receive", "text": got.text})
            elif got.opcode == OP_BINARY:
                self._pending.append({"type": "websocket.receive", "bytes": got.data})
            elif got.opcode == OP_PING:
                if not self._close_sent:
                    await self._write(frame(OP_PONG, got.data))
            elif got.opcode == OP_CLOSE:
                self._closed = got.code
                # Answered with the node's own code (none for none), unless Core closed first.
                if not self._close_sent:
                    self._close_sent = True
                    code = got.code
                    await self._write(
                        frame(OP_CLOSE, b"") if code == CLOSE_NO_STATUS else close_frame(code, "")
                    )
                return  # nothing after a close counts

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if self._state != "open" or self._closed is not None or self._close_sent:
                raise OSError("the WebSocket is closed")
            data = message.get("bytes")
            if data is not None:
                await self._write(frame(OP_BINARY, bytes(data)))
            else:
                await self._write(frame(OP_TEXT, message["text"].encode()))
        elif kind == "websocket.accept" and self._state == "handshake":
            assert self._handshake is not None
            response = self._handshake.accept(message.get("subprotocol"))
            data = self._http.send(response) or b""
            self._state = "open"
            # Bytes the node sent after its request head (it should wait for the 101).
            early = self._http.trailing_data[0]
            if early:
                try:
                    await self._take(self._reader.feed(early))
                except FrameError as exc:
                    self._closed = exc.code
            with contextlib.suppress(OSError):  # gone: the app reads the disconnect next
                await self._write(data)
        elif kind == "websocket.close":
            # A close on a connection that is gone is done already: nothing to report.
            with contextlib.suppress(OSError):
                if self._state == "handshake":
                    await self._refuse(403)
                elif self._state == "open":
                    code = int(message.get("code", 1000))
                    await self._send_close(code, message.get("reason") or "")
        elif kind == "websocket.http.response.start" and self._state == "handshake":
            self._response = dict(message)
            self._state = "response"
        elif kind == "websocket.http.response.body" and self._state == "response":
            body = bytes(message.get("body", b""))
            with contextlib.suppress(OSError):  # a refused client that left: nothing to report
                await self._respond(body, more=message.get("more_body", False))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in state {self._state}")

    async def _respond(self, body: bytes, *, more: bool) -> None:
        """The app's refusal (an HTTP response in place of the upgrade)."""
        if self._response is not None:
            start, self._response = self._response, None
            headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
            if not any(k.lower() == b"content-length" for k, _ in headers):
                headers.append((b"transfer-encoding", b"chunked"))
            headers.append((b"connection", b"close"))
            await self._write(
                self._http.send(h11.Response(status_code=int(start["status"]), headers=headers))
                or b""
            )
        data = (self._http.send(h11.Data(data=body)) or b"") if body else b""
        if not more:
            data += self._http.send(h11.EndOfMessage()) or b""
            self._state = "closed"
            self._closed = 1000
        await self._write(data)

    async def _refuse(self, status: int) -> None:
        """Answer the upgrade with ``status`` and an empty body (as Hypercorn does)."""
        self._state = "closed"
        self._closed = CLOSE_ABNORMAL
        response = h11.Response(
            status_code=status, headers=[(b"content-length", b"0"), (b"connection", b"close")]
        )
        try:
            data = (self._http.send(response) or b"") + (self._http.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # h11 saw no request it could answer
            data = b"HTTP/1.1 %d \r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % status
        await self._write(data)

    async def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        await self._write(close_frame(code, reason))

    def send_nowait(self, text: str) -> bool:
        """Write ``text`` as a frame now, if no send is in progress and the socket takes
        it without waiting; False: send it the usual way.

        For messages sent from synchronous code, heartbeat.acks mostly: a task per
        ack, and the ASGI send path, cost as much as a heartbeat's whole receive.
        A frame the kernel takes only in part (its buffer full: the node does not
        read) has the rest sent before anything else.
        """
        if self._fd < 0 or self._state != "open" or self._closed is not None:
            return False
        if self._close_sent or self._send_lock.locked() or self._rest:
            return False
        data = frame(OP_TEXT, text.encode())
        try:
            sent = os.write(self._fd, data)
        except OSError:  # full (BlockingIOError), or gone: the usual path finds out
            return False
        self._rest = data[sent:]
        return True

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        async with self._send_lock:
            try:
                if self._rest:  # the end of a frame send_nowait began
                    data, self._rest = self._rest + data, b""
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = CLOSE_ABNORMAL
                raise OSError("the connection is gone") from exc


def socket_of(stream: Stream) -> trio.socket.SocketType:
    """The TCP socket under ``stream`` (under its TLS layer, if any)."""
    return stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else stream.socket


def _peer(stream: Stream) -> str:
    sock = socket_of(stream)
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "a node"
    return f"{host}:{port}"


def _comma_list(value: bytes) -> list[str]:
    return [part.strip() for part in value.decode("latin-1").split(",") if part.strip()]
