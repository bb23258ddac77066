"""Failed authentication is rate-limited per client address, at the ASGI edge.

``AuthFailureGuard`` wraps Core's whole ASGI app (REST, event and job
streams, node WebSocket). It does not authenticate anything itself: it
watches what the app answers, and every 401 (an HTTP response, the
denial response of a WebSocket, or close code 4401 of a WebSocket that
authenticates by its first message) to a request that carried something
shaped like a credential (``auth.looks_like_credential``; for a WebSocket
without an Authorization header, its first message) counts as one failure
of the client's address in a ``FailureLimiter``. A request with no
credential, or with text no credential ever looks like, cannot be a guess:
its 401 does not count (an API client or a fuzzer probing routes without
its key is told 401, not locked out). An address over its limit gets
``429 rate_limited`` with ``Retry-After`` *before* the app sees the request,
so a guesser learns nothing more, not even whether a right key would have
been taken. A right key from a limited address is refused too, until the
limit lifts (the address, not the key, is what misbehaved).

Refusals are logged once per address per minute with a count, never once
per attempt.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servermgr.core.auth import CLOSE_UNAUTHORIZED, error_body, looks_like_credential
from servermgr.core.ratelimit import FailureLimiter, LogThrottle

log = logging.getLogger("servermgr.core.abuse")

_START = ("http.response.start", "websocket.http.response.start")


def client_address(scope: Scope) -> str:
    """The client's IP address as the server saw it ("unknown" when not a socket)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _authorization(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return ""


class AuthFailureGuard:
    """ASGI middleware: refuse addresses with too many recent 401s (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: FailureLimiter,
        *,
        clock: Callable[[], float],
        throttle: LogThrottle | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.clock = clock
        self.throttle = throttle or LogThrottle(60.0)
        self.refused = 0  # requests answered 429, for /api/v1/status and tests

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: a node's WebSocket stays inside the app for days, and
        # handing back the app's own awaitable keeps no frame of ours beside it.
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        address = client_address(scope)
        wait = self.limiter.retry_after(address, self.clock())
        if wait > 0:
            self._refuse_log(address)
            return self._deny(scope, send, wait)
        header = _authorization(scope)
        if looks_like_credential(header):
            return self.app(scope, receive, self._watch(address, send, denials=True))
        if scope["type"] == "websocket" and not header:
            # It may authenticate by its first message: a refusal (4401) counts.
            return self.app(scope, receive, self._watch(address, send, denials=False))
        return self.app(scope, receive, send)

    def _watch(self, address: str, send: Send, *, denials: bool) -> Send:
        """``send``, counting a 401 (``denials``) or a 4401 close as a failure of ``address``."""
        limiter, clock = self.limiter, self.clock

        async def watch(message: Message) -> None:
            if (denials and message["type"] in _START and message.get("status") == 401) or (
                message["type"] == "websocket.close" and message.get("code") == CLOSE_UNAUTHORIZED
            ):
                limiter.failed(address, clock())
            await send(message)

        return watch

    def _refuse_log(self, address: str) -> None:
        self.refused += 1
        count = self.throttle.event(address, self.clock())
        if count is not None:
            log.warning(
                "refusing %s: too many failed authentications (%d allowed per %g s)%s",
                address,
                self.limiter.limit,
                self.limiter.window,
                "" if count == 1 else f"; {count} requests refused since the last such line",
            )

    async def _deny(self, scope: Scope, send: Send, wait: float) -> None:
        seconds = max(1, math.ceil(wait))
        body = json.dumps(
            error_body(
                "rate_limited",
                f"too many failed authentications from this address; retry in {seconds} s",
            )
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(seconds).encode()),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # a server without denial responses: a bare close (403)
            await send({"type": "websocket.close", "code": 1008})
