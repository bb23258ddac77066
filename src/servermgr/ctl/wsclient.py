"""WebSocket client for ctl's live views: Core's address plus a path, the core key."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from trio_websocket import WebSocketConnection

from servermgr.common import addr, ws

MAX_MESSAGE = 64 * 1024 * 1024  # a snapshot of a large fleet is big


def connect(
    base_url: str, path: str, key: str | None
) -> AbstractAsyncContextManager[WebSocketConnection]:
    """A WebSocket to ``path`` (with its query) on Core, authenticated with the core key."""
    return ws.connect(addr.ws_url(base_url, path), bearer=key, max_message=MAX_MESSAGE)


class Backoff(ws.Backoff):
    """Reconnect delays for live views: quick, capped at 10 s."""

    def __init__(self) -> None:
        super().__init__(cap=10.0)
