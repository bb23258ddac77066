"""Core's HTTP server: Hypercorn's trio worker, with Core's own accept loop.

    serve()
    ├── accept loop per listener     caps unauthenticated connections per address;
    │                                out of file descriptors: log once a minute, retry
    └── per connection               its first request head read (read_head), then:
        ├── WebSocketLane            a node's WebSocket upgrade (core/wslane.py)
        └── TCPServer                everything else: Hypercorn's HTTP/1.1 + WebSocket
                                     (+ TLS) handling, the head replayed

``hypercorn.trio.serve`` builds its listeners and runs ``trio.serve_listeners``
inside, and neither can be given a hook: nothing sees a connection before its
request head is complete, so nothing could count the connections one address
holds without a request, and when accept(2) fails with EMFILE trio logs an
error with a traceback ten times a second. So Core runs the same parts
itself (Hypercorn's ``TCPServer`` per connection, its ``WorkerContext`` and
graceful shutdown), with these differences:

- A connection counts as unauthenticated from accept until it is answered
  with anything but 401 or 429, or its WebSocket is accepted. An address
  holding ``unauthenticated`` of them has further connections closed at once.
  Hypercorn's ``keep_alive_timeout`` (``[limits] handshake_timeout``) closes
  one that sends no complete request head in time.
- accept(2) out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM): one warning
  a minute with the count, then retried every 0.1 s (as trio does). Connected
  nodes hold their sockets and keep working meanwhile; new ones get in as
  soon as slow clients are dropped.
- A connection its peer closes is released at once, not when Hypercorn's
  idle timer fires (``_EofWatch``).
- A request Hypercorn refuses itself (h11 cannot parse it: raw non-ASCII
  bytes in the request target, a malformed header, a head over 16 KiB) is
  answered in Core's one error shape, not with an empty body
  (``json_protocol_error``).
- No ASGI lifespan (Core's app has no startup or shutdown handlers), no
  QUIC, no statsd.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import parse_socket_addr, repr_socket_addr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servermgr.core.ratelimit import AddressCounter, LogThrottle
from servermgr.core.wslane import WebSocketLane, may_be_upgrade, socket_of, upgrade_path

log = logging.getLogger("servermgr.core.listen")

OUT_OF_FILES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_RETRY = 0.1
HEAD_LIMIT = 16 * 1024  # Hypercorn's (h11_max_incomplete_size): it refuses a longer head
MAX_RECV = 65536
_NOT_AUTHENTICATED = (401, 429)

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]

# Hypercorn's own refusal of a request h11 could not parse: a status line and
# these two headers first, and no body. Nothing Core's app sends starts so.
_PROTOCOL_ERROR = re.compile(
    rb"HTTP/1\.1 (4\d\d) [^\r\n]*\r\ncontent-length: 0\r\nconnection: close\r\n"
)
_PROTOCOL_MESSAGES = {
    400: "bad request: not valid HTTP/1.1 (a request target must be ASCII: "
    "percent-encode other bytes; header names and values must be valid)",
    431: "request head (request line and headers) over the limit of 16 KiB",
}


def json_protocol_error(data: bytes) -> bytes | None:
    """Hypercorn's empty refusal of an unparsable request, as the JSON error; else None."""
    m = _PROTOCOL_ERROR.match(data)
    if m is None:
        return None
    status = int(m.group(1))
    message = _PROTOCOL_MESSAGES.get(status, "bad request: not valid HTTP/1.1")
    body = json.dumps({"error": {"code": "bad_request", "message": message}}).encode()
    return (
        b"HTTP/1.1 %d \r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(body), body)
    )


class Gate:
    """Per-address accounting of connections that have not authenticated yet."""

    def __init__(
        self,
        unauthenticated: int,
        *,
        send_timeout: float = 30.0,
        throttle: LogThrottle | None = None,
    ) -> None:
        self.pending = AddressCounter(unauthenticated)
        self.send_timeout = send_timeout
        self.throttle = throttle or LogThrottle(60.0)
        self.refused = 0  # connections closed at accept for the cap
        self.accept_failures = 0  # accept(2) out of descriptors

    def admit(self, address: str) -> bool:
        if self.pending.acquire(address):
            return True
        self.refused += 1
        count = self.throttle.event(f"cap {address}", trio.current_time())
        if count is not None:
            log.warning(
                "closed %d new connection(s) from %s: it holds %d that have not "
                "authenticated ([limits] unauthenticated_connections)",
                count,
                address,
                self.pending.cap,
            )
        return False

    def out_of_files(self, exc: OSError) -> None:
        self.accept_failures += 1
        count = self.throttle.event("accept", trio.current_time())
        if count is not None:
            log.warning(
                "cannot accept connections: %s (%s)%s; connected nodes keep working, new "
                "ones get in when descriptors free up (raise the open-file limit if it persists)",
                errno.errorcode.get(exc.errno or 0, "?"),
                os.strerror(exc.errno or 0),
                "" if count == 1 else f", {count} times since the last such line",
            )


class _Connection:
    """One accepted connection's ASGI app: counted against its address until it
    authenticates. Called, not awaited itself (no frame of its own kept beside
    a node's WebSocket for the connection's life)."""

    __slots__ = ("address", "app", "gate", "pending")

    def __init__(self, app: ASGIApp, gate: Gate, address: str) -> None:
        self.app = app
        self.gate = gate
        self.address = address
        self.pending = True

    def authenticated(self) -> None:
        """Stop counting it (also called when it closes)."""
        if self.pending:
            self.pending = False
            self.gate.pending.release(self.address)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if not self.pending:
            return self.app(scope, receive, send)

        async def watch(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept" or (
                kind == "http.response.start" and message["status"] not in _NOT_AUTHENTICATED
            ):
                self.authenticated()
            await send(message)

        return self.app(scope, receive, watch)


class _EofWatch:
    """``stream``, telling ``peer_closed`` when the peer has closed its side
    (and sending Hypercorn's own refusals as JSON errors: ``send_all``).

    Hypercorn's idle timer runs from accept to the first request head and
    between requests; a connection the peer closes meanwhile (a scanner, a
    client gone away) is released only when that timer fires, holding its
    descriptor and its place in the count until then. Hypercorn handles end
    of input as the connection's end anyway, so the timer can stop there.
    """

    __slots__ = ("_head", "_peer_closed", "_stream")

    def __init__(
        self, stream: Stream, peer_closed: Callable[[], Awaitable[None]], head: bytes = b""
    ) -> None:
        self._stream = stream
        self._peer_closed = peer_closed
        self._head = head  # what Core read first (read_head): handed on before the stream

    def __getattr__(self, name: str) -> Any:  # everything else is the stream's own
        return getattr(self._stream, name)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # Hypercorn sends a refusal's head in one piece: see json_protocol_error.
        replaced = json_protocol_error(bytes(data[:256])) if data[:9] == b"HTTP/1.1 " else None
        await self._stream.send_all(data if replaced is None else replaced)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            head, self._head = self._head, b""
            return head
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._peer_closed()
            raise
        if not data:
            await self._peer_closed()
        return data


def _drop_when_unread(stream: Stream, seconds: float) -> None:
    """Let the kernel drop the connection once what Core sent stays unread ``seconds``.

    A client that stops reading (a stalled stream subscriber, a stopped node)
    leaves Hypercorn's send waiting on a full socket forever, shielded from
    Core's cancellation; with TCP_USER_TIMEOUT the kernel gives up on data
    unacknowledged (or a zero window) for that long and the send fails, so
    the task and the descriptor are freed. A reader that reads, however
    slowly, keeps its connection.
    """
    sock = socket_of(stream)
    with contextlib.suppress(OSError, AttributeError):  # not TCP (a test's socketpair)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))


async def read_head(stream: Stream, within: float, lanes: frozenset[bytes]) -> bytes:
    """A connection's first bytes, for ``upgrade_path``: its first read, and more up to
    the end of its request head (or past ``HEAD_LIMIT``) while they may be an upgrade
    on one of ``lanes``; b"" if it sent nothing ``within`` s (a TLS handshake
    included) or closed.

    Anything else is Hypercorn's as soon as it is seen not to be such an upgrade, so
    it answers as it always did (a TLS hello sent to a plain port gets its 400 at once).
    """
    data = b""
    with trio.move_on_after(within):
        try:
            while not data or (
                b"\r\n\r\n" not in data and len(data) <= HEAD_LIMIT and may_be_upgrade(data, lanes)
            ):
                chunk = await stream.receive_some(MAX_RECV)
                if not chunk:
                    break
                data += chunk
            return data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""
    return b""


def socket_addresses(stream: Stream) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The (client, server) addresses of an ASGI scope."""
    sock = socket_of(stream)
    try:
        return (
            parse_socket_addr(sock.family, sock.getpeername()),
            parse_socket_addr(sock.family, sock.getsockname()),
        )
    except OSError:
        return None, None


def peer_address(stream: Stream) -> str:
    sock = socket_of(stream)
    return str(sock.getpeername()[0])


async def serve(
    app: ASGIApp,
    config: HyperConfig,
    gate: Gate,
    *,
    lanes: frozenset[bytes] = frozenset(),
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown_trigger`` returns; reports the binds.

    A connection whose first request is a WebSocket upgrade on a path in ``lanes``
    is served by ``core/wslane.py``; every other by Hypercorn.
    """
    context = WorkerContext(None)
    sockets = config.create_sockets()
    listeners: list[trio.SocketListener | trio.SSLListener[trio.SocketStream]] = []
    binds = []
    for sock in sockets.secure_sockets:
        ssl_context = config.create_ssl_context()
        assert ssl_context is not None  # secure sockets exist only with a certificate
        sock.listen(config.backlog)
        listeners.append(
            trio.SSLListener(
                trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
                ssl_context,
                https_compatible=True,
            )
        )
        binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")

    async def handle(stream: Stream, address: str) -> None:
        conn = _Connection(app, gate, address)
        server: TCPServer | None = None

        async def peer_closed() -> None:
            if server is not None:
                await server.idle_task.stop()

        try:
            head = await read_head(stream, config.keep_alive_timeout, lanes)
            if not head:
                return  # closed, or silent for the whole handshake time
            if upgrade_path(head, lanes):
                lane = WebSocketLane(stream, max_message=config.websocket_max_message_size)
                await lane.serve(conn, head, *socket_addresses(stream))
                return
            wrapped = ASGIWrapper(conn)  # type: ignore[arg-type]  # Starlette's ASGI types
            watched = _EofWatch(stream, peer_closed, head)
            server = TCPServer(wrapped, config, context, {}, watched)  # type: ignore[arg-type]
            try:
                await server.run()
            except* trio.BusyResourceError:
                # Hypercorn answers a client's WebSocket close from its reader while
                # the handler may be writing on the same socket: that connection is
                # broken, not Core (without this, the error ends the listener).
                log.info("connection from %s: two writers collided; closed", address)
        finally:
            conn.authenticated()  # closed: stop counting it
            await trio.aclose_forcefully(stream)

    async def accept_loop(
        listener: trio.SocketListener | trio.SSLListener[trio.SocketStream],
        handlers: trio.Nursery,
    ) -> None:
        async with listener:
            while True:
                try:
                    stream: Stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in OUT_OF_FILES:
                        raise
                    gate.out_of_files(exc)
                    await trio.sleep(ACCEPT_RETRY)
                    continue
                try:
                    address = peer_address(stream)
                except OSError:  # gone already
                    await trio.aclose_forcefully(stream)
                    continue
                if gate.admit(address):
                    _drop_when_unread(stream, gate.send_timeout)
                    handlers.start_soon(handle, stream, address)
                else:
                    await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as handlers:
        try:
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(accept_loop, listener, handlers)
                task_status.started(binds)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
        finally:
            await context.terminated.set()
            handlers.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
