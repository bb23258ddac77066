"""The WebSocket client every role uses to reach Core, with reconnect backoff.

It opens the TCP stream itself so the socket is closed on every path:
trio-websocket leaves it to the garbage collector when the handshake is
rejected (401), which a node retrying for days, or a dashboard, would feel.
Imported only by the roles that open WebSockets (node agent, ctl live views).

On ``wss://`` the TLS handshake is finished and Core's certificate checked
(``common/tls.py``: a pin, a CA file or the system's CAs) before the upgrade
request, which carries the credential, is written. A ``ws://`` handshake that
fails is followed by a TLS probe, to say "use wss://" instead of a bare
failure; trio-websocket does not notice the connection Core closes in that
case, so this takes the connect timeout.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from trio_websocket import HandshakeError, WebSocketConnection, wrap_client_stream

from servermgr.common import tls
from servermgr.common.errors import single_error
from servermgr.common.tls import Trust

CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0
GOODBYE_TIMEOUT = 0.2
NO_PIN = Trust()  # the system's CAs


@asynccontextmanager
async def connect(
    url: str, *, bearer: str | None, max_message: int, trust: Trust = NO_PIN
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to ``url`` (``ws://`` or ``wss://``, with its query) sending ``bearer``.

    Raises ``trio_websocket.ConnectionRejected`` (e.g. 401), ``OSError`` or
    ``trio.TooSlowError`` when it cannot connect, and TlsError when Core's
    certificate is not the one ``trust`` accepts (checked before ``bearer``
    is sent) or only one side speaks TLS. Leaving normally closes
    gracefully; leaving by an exception (cancelled: shutting down) says
    goodbye (1001) without waiting long for the reply.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [(b"authorization", f"Bearer {bearer}".encode())] if bearer else []
    where = f"{parts.scheme}://{parts.netloc}"
    stream: trio.abc.Stream
    with trio.fail_after(CONNECT_TIMEOUT):
        if secure:
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=tls.client_context(trust)
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
    try:
        if isinstance(stream, trio.SSLStream):
            await _tls_handshake(stream, where, trust)
        try:
            async with trio.open_nursery() as nursery:
                try:
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
                except (trio.TooSlowError, HandshakeError, trio.BrokenResourceError):
                    if not secure and await _speaks_tls(host, port):
                        raise tls.speaks_tls(where) from None
                    raise
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


async def _tls_handshake(
    stream: trio.SSLStream[trio.SocketStream], where: str, trust: Trust
) -> None:
    """Finish the TLS handshake and check the pin, before anything is sent."""
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        found = tls.explain(cause, where, trust) if cause is not None else None
        if found is not None:
            raise found from None
        raise
    tls.check_pin(trust, stream.getpeercert(binary_form=True), where)


async def _speaks_tls(host: str, port: int) -> bool:
    """Whether ``host:port`` completes a TLS handshake (asked after a plain one failed)."""
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=tls.probe_context()
            )
            try:
                await stream.do_handshake()
            finally:
                await trio.aclose_forcefully(stream)
    except (OSError, trio.BrokenResourceError, trio.TooSlowError):
        return False
    return True


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
