"""WebSocket client for ctl's live views, with backoff for reconnecting.

The same care as the node's transport (ctl may not import it): the TCP
stream is opened here so it is closed on every path, including a rejected
handshake, which trio-websocket would leave to the garbage collector.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from servermgr.common import addr

CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0
MAX_MESSAGE = 64 * 1024 * 1024  # a snapshot of a large fleet is big


@asynccontextmanager
async def connect(base_url: str, path: str, key: str | None) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to ``path`` (with its query) on Core, authenticated with the core key.

    Raises ``trio_websocket.ConnectionRejected`` (e.g. 401), ``OSError`` or
    ``trio.TooSlowError`` when it cannot connect.
    """
    url = urlsplit(addr.ws_url(base_url, path))
    host = url.hostname or "127.0.0.1"
    secure = url.scheme == "wss"
    port = url.port or (443 if secure else 80)
    resource = url.path + (f"?{url.query}" if url.query else "")
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    stream: trio.abc.Stream
    with trio.fail_after(CONNECT_TIMEOUT):
        if secure:
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=ssl.create_default_context()
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
    try:
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(CONNECT_TIMEOUT):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        url.netloc,
                        resource,
                        extra_headers=headers,
                        max_message_size=MAX_MESSAGE,
                        message_queue_size=64,
                    )
                try:
                    yield ws
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await ws.aclose()
        except BaseExceptionGroup as group:
            raise _single(group) from None
    finally:
        await trio.aclose_forcefully(stream)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Backoff:
    """Exponential backoff with jitter: ~0.5 s, 1 s, 2 s … capped."""

    def __init__(
        self, *, base: float = 0.5, cap: float = 10.0, rng: Callable[[], float] = random.random
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
