"""The WebSocket client every role uses to reach Core, with reconnect backoff.

It opens the TCP stream itself so the socket is closed on every path:
trio-websocket leaves it to the garbage collector when the handshake is
rejected (401), which a node retrying for days, or a dashboard, would feel.
Imported only by the roles that open WebSockets (node agent, ctl live views).
"""

from __future__ import annotations

import functools
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from servermgr.common.errors import single_error

CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0
GOODBYE_TIMEOUT = 0.2


@asynccontextmanager
async def connect(
    url: str, *, bearer: str | None, max_message: int
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to ``url`` (``ws://`` or ``wss://``, with its query) sending ``bearer``.

    Raises ``trio_websocket.ConnectionRejected`` (e.g. 401), ``OSError`` or
    ``trio.TooSlowError`` when it cannot connect. Leaving normally closes
    gracefully; leaving by an exception (cancelled: shutting down) says
    goodbye (1001) without waiting long for the reply.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [(b"authorization", f"Bearer {bearer}".encode())] if bearer else []
    stream: trio.abc.Stream
    with trio.fail_after(CONNECT_TIMEOUT):
        if secure:
            stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=_tls_context())
        else:
            stream = await trio.open_tcp_stream(host, port)
    try:
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(CONNECT_TIMEOUT):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        parts.netloc,
                        resource,
                        extra_headers=headers,
                        max_message_size=max_message,
                        message_queue_size=64,
                    )
                try:
                    yield ws
                except BaseException:
                    # The reader task that would see the reply may be cancelled too.
                    with trio.move_on_after(GOODBYE_TIMEOUT, shield=True):
                        await ws.aclose(1001, "going away")
                    await trio.aclose_forcefully(stream)
                    raise
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await ws.aclose()
        except BaseExceptionGroup as group:
            raise single_error(group) from None
    finally:
        await trio.aclose_forcefully(stream)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context of every ``wss://`` connection, made once per process.

    Making one loads the system's CA certificates (measured: 20-33 ms of CPU
    each time), and a node reconnects every few seconds while Core is away.
    """
    return ssl.create_default_context()


class Backoff:
    """Exponential backoff with jitter: ~0.5 s, 1 s, 2 s … capped at ``cap``."""

    def __init__(
        self, *, base: float = 0.5, cap: float = 30.0, rng: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        delay: float = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return delay * (0.5 + self.rng() / 2)

    def reset(self) -> None:
        self.attempt = 0
