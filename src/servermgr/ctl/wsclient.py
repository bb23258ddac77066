"""WebSocket client for ctl's live views: Core's address plus a path, the core key."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from trio_websocket import WebSocketConnection

from servermgr.common import addr, ws

if TYPE_CHECKING:
    from servermgr.common.tls import Trust

MAX_MESSAGE = 64 * 1024 * 1024  # a snapshot of a large fleet is big


def connect(
    base_url: str, path: str, key: str | None, trust: Trust | None = None
) -> AbstractAsyncContextManager[WebSocketConnection]:
    """A WebSocket to ``path`` (with its query) on Core, authenticated with the core key.

    ``trust`` (from ``ctl.client.resolve``) says how to check Core's certificate on https.
    """
    return ws.connect(
        addr.ws_url(base_url, path), bearer=key, max_message=MAX_MESSAGE, trust=trust or ws.NO_PIN
    )


class Backoff(ws.Backoff):
    """Reconnect delays for live views: quick, capped at 10 s."""

    def __init__(self) -> None:
        super().__init__(cap=10.0)
