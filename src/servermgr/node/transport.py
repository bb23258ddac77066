"""How a node reaches Core: registration over REST, the session over WebSocket.

httpx is imported only when a node registers, so a running agent with an
identity never loads it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from servermgr.common import addr, proto
from servermgr.common.errors import (
    BadTokenError,
    CoreUnreachableError,
    NameTakenError,
    RegistrationError,
)

CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0
GOODBYE_TIMEOUT = 0.2
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


async def register(
    core_addr: str, token: str, hostname: str, labels: dict[str, str]
) -> dict[str, Any]:
    """``{"node_id", "name", "credential"}`` from Core, or a typed error."""
    import httpx

    url = addr.http_base(core_addr) + "/api/v1/register"
    try:
        async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT, trust_env=False) as client:
            resp = await client.post(
                url,
                json={"hostname": hostname, "labels": labels},
                headers={"Authorization": f"Bearer {token}"},
            )
    except httpx.HTTPError as exc:
        raise CoreUnreachableError(f"cannot reach Core at {url}: {exc}") from None
    message = _error_message(resp)
    if resp.status_code == 401:
        raise BadTokenError(
            "Core rejected the register token: set node.register_token to the key that "
            "`servermgr key show` prints on Core"
        )
    if resp.status_code == 409:
        raise NameTakenError(message)
    if resp.status_code != 201:
        raise RegistrationError(f"registration failed ({resp.status_code}): {message}")
    doc: dict[str, Any] = resp.json()
    return doc


def _error_message(resp: Any) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] if resp.text else f"HTTP {resp.status_code}"


@asynccontextmanager
async def connect(core_addr: str, credential: str | None) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to Core authenticated with the node's credential.

    Opens the TCP stream itself so it is closed on every path: trio-websocket
    leaves the socket to the garbage collector when the handshake is
    rejected (401), which a node retrying for days would feel.
    """
    url = urlsplit(addr.ws_url(core_addr))
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if url.scheme == "wss" else 80)
    host_header = url.netloc
    headers = [(b"authorization", f"Bearer {credential}".encode())] if credential else []
    with trio.fail_after(CONNECT_TIMEOUT):
        stream = await trio.open_tcp_stream(host, port)
    try:
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(CONNECT_TIMEOUT):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        url.path,
                        extra_headers=headers,
                        max_message_size=proto.MAX_FRAME_BYTES,
                        message_queue_size=64,
                    )
                try:
                    yield ws
                except BaseException:
                    # Cancelled (shutdown) or failed: say goodbye (1001) but do
                    # not wait long for Core's reply, whose reader task may be
                    # cancelled too.
                    with trio.move_on_after(GOODBYE_TIMEOUT, shield=True):
                        await ws.aclose(1001, "node agent stopping")
                    await trio.aclose_forcefully(stream)
                    raise
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await ws.aclose()
        except BaseExceptionGroup as group:
            raise _single(group) from None
    finally:
        await trio.aclose_forcefully(stream)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested groups (reader task or body), else the group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Backoff:
    """Exponential backoff with jitter: ~0.5 s, 1 s, 2 s … capped at 30 s."""

    def __init__(
        self,
        *,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_CAP,
        rng: Callable[[], float] = random.random,
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
