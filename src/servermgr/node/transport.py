"""How a node reaches Core: registration over REST, the session over WebSocket.

httpx is imported only when a node registers, so a running agent with an
identity never loads it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from trio_websocket import WebSocketConnection, open_websocket_url

from servermgr.common import addr, proto
from servermgr.common.errors import (
    BadTokenError,
    CoreUnreachableError,
    NameTakenError,
    RegistrationError,
)

CONNECT_TIMEOUT = 5.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


async def register(core_addr: str, token: str, hostname: str, labels: dict[str, str]) -> dict[str, Any]:
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


def connect(core_addr: str, credential: str) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket_url(
        addr.ws_url(core_addr),
        extra_headers=[(b"authorization", f"Bearer {credential}".encode())],
        max_message_size=proto.MAX_FRAME_BYTES,
        message_queue_size=64,
        connect_timeout=CONNECT_TIMEOUT,
        disconnect_timeout=CONNECT_TIMEOUT,
    )


class Backoff:
    """Exponential backoff with jitter: ~0.5 s, 1 s, 2 s … capped at 30 s."""

    def __init__(self, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP,
                 rng: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay * (0.5 + self.rng() / 2)

    def reset(self) -> None:
        self.attempt = 0
