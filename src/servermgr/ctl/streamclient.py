"""The ctl end of a file or shell WebSocket (``common/relay.py``): connect, open, read.

Connection and refusal problems become the typed client errors the CLI
reports in one line: 401 ``AuthError``, 403 and the like ``ApiError``, no
answer ``CoreUnreachableError``; an error Core sends on the stream becomes
``ApiError`` with its code (``NotFoundError`` for an unknown node).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection

from servermgr.common import flow, relay
from servermgr.common.errors import (
    ApiError,
    AuthError,
    CoreUnreachableError,
    NotFoundError,
    ProtocolError,
)
from servermgr.ctl import wsclient

if TYPE_CHECKING:
    from servermgr.common.tls import Trust

F = TypeVar("F", relay.Result, relay.Done)
ClientMessage = (
    relay.FileRequest
    | relay.ShellRequest
    | relay.StdinRequest
    | relay.Credit
    | relay.End
    | relay.Resize
    | relay.Eof
)


@asynccontextmanager
async def open_stream(
    base_url: str, key: str | None, trust: Trust | None, path: str
) -> AsyncIterator[WebSocketConnection]:
    try:
        async with wsclient.connect(base_url, path, key, trust) as ws:
            yield ws
    except ConnectionRejected as exc:
        code, message = _rejection(exc)
        if exc.status_code == 401:
            raise AuthError(f"Core refused the key: {message}") from None
        raise ApiError(exc.status_code, code, message) from None
    except (OSError, HandshakeError, trio.TooSlowError) as exc:
        raise CoreUnreachableError(f"cannot reach Core at {base_url}: {exc}") from None


def _rejection(exc: ConnectionRejected) -> tuple[str, str]:
    try:
        doc = json.loads(exc.body or b"{}")
        return str(doc["error"]["code"]), str(doc["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return "http_error", f"HTTP {exc.status_code}"


async def receive(ws: WebSocketConnection) -> relay.CoreMessage | bytes:
    """The next message from Core: a control message, or data; an error raises ApiError."""
    try:
        frame = await ws.get_message()
    except ConnectionClosed as exc:
        reason = exc.reason.reason if exc.reason is not None else None
        raise ApiError(
            0, "closed", f"Core closed the stream{': ' + reason if reason else ''}"
        ) from None
    if isinstance(frame, bytes):
        return frame
    try:
        msg = relay.decode_core(frame)
    except ProtocolError as exc:
        raise ApiError(0, "bad_message", f"Core sent a bad message: {exc.reason}") from None
    if isinstance(msg, relay.Error):
        cls = NotFoundError if msg.error.code == "not_found" else ApiError
        raise cls(0, msg.error.code, msg.error.message)
    return msg


async def send(ws: WebSocketConnection, msg: ClientMessage) -> None:
    await ws.send_message(relay.encode(msg))


async def push(
    ws: WebSocketConnection,
    read: Callable[[int], Awaitable[bytes]],
    last: Callable[[], ClientMessage],
    final: type[F],
) -> F:
    """Send what ``read`` gives within the credit Core passes on, then ``last()``
    once it gives nothing; Core's ``final`` answer (which may come first: the
    other end stopped taking)."""
    credit = flow.Credit()

    async def sender() -> None:
        while True:
            n = await credit.take(flow.CHUNK)
            if n == 0:
                return
            chunk = await read(n)
            if not chunk:
                break
            await ws.send_message(chunk)
            if len(chunk) < n:
                credit.grant(n - len(chunk))
        await send(ws, last())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(quietly, sender)
        while True:
            msg = await receive(ws)
            if isinstance(msg, relay.Credit):
                credit.grant(msg.bytes)
            elif isinstance(msg, final):
                nursery.cancel_scope.cancel()
                return msg
    raise AssertionError("unreachable")  # pragma: no cover


async def quietly(fn: Callable[[], Awaitable[None]]) -> None:
    """Run a sender whose failure (Core closed the stream) the reader reports."""
    with contextlib.suppress(ConnectionClosed):
        await fn()
