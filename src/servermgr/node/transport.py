"""How a node reaches Core: registration over REST, the session over WebSocket.

Registration is one POST over the small stdlib HTTP client
(``common/rest.py``) in a worker thread, imported only when a node registers:
httpx cost the registering agent ~10 MiB of RSS for that one request, and
even this client is not needed by an agent that has an identity.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import WebSocketConnection

from servermgr.common import addr, proto, ws
from servermgr.common.errors import (
    BadTokenError,
    CoreUnreachableError,
    NameTakenError,
    RegistrationError,
)

if TYPE_CHECKING:
    from servermgr.common.rest import Response
    from servermgr.common.tls import Trust

CONNECT_TIMEOUT = ws.CONNECT_TIMEOUT
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
REGISTER_PATH = "/api/v1/register"
REGISTER_MAX_ANSWER = 64 * 1024  # the answer is an id, a name and a credential


async def register(
    core_addr: str,
    token: str,
    hostname: str,
    labels: dict[str, str],
    *,
    trust: Trust = ws.NO_PIN,
) -> dict[str, Any]:
    """``{"node_id", "name", "credential"}`` from Core, or a typed error.

    On https, Core's certificate is checked (``trust``) before the token is sent.
    """
    from servermgr.common import rest

    base = addr.http_base(core_addr)
    url = base + REGISTER_PATH
    post = partial(
        rest.post_json,
        base,
        REGISTER_PATH,
        {"hostname": hostname, "labels": labels},
        headers={"Authorization": f"Bearer {token}"},
        timeout=CONNECT_TIMEOUT,
        max_body=REGISTER_MAX_ANSWER,
        trust=trust,
    )
    try:
        # A blocking call: a worker thread, left behind if the agent is stopped
        # meanwhile (its socket timeout ends it).
        resp = await trio.to_thread.run_sync(post, abandon_on_cancel=True)
    except OSError as exc:
        found = await trio.to_thread.run_sync(rest.tls_failure, exc, base, trust)
        if found is not None:
            raise found from None
        raise CoreUnreachableError(f"cannot reach Core at {url}: {rest.reason(exc)}") from None
    message = _error_message(resp)
    if resp.status_code == 401:
        raise BadTokenError(
            f"Core rejected the register token ({message}): set node.register_token to an "
            "enroll token (on Core: servermgr key create --role enroll --name NAME)"
        )
    if resp.status_code == 403:
        raise BadTokenError(
            f"Core refused to register this node with node.register_token ({message}); "
            "it must be an enroll token (on Core: servermgr key create --role enroll --name NAME)"
        )
    if resp.status_code == 409:
        raise NameTakenError(message)
    if resp.status_code == 429:  # this address failed too often lately: retried with backoff
        raise CoreUnreachableError(f"Core refuses this address for now: {message}")
    if resp.status_code != 201:
        raise RegistrationError(f"registration failed ({resp.status_code}): {message}")
    doc: dict[str, Any] = resp.json()
    return doc


def _error_message(resp: Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] if resp.text else f"HTTP {resp.status_code}"


def rejection(body: bytes | None) -> tuple[str, str]:
    """``(code, message)`` of the error document of a refused WebSocket handshake."""
    import msgspec

    try:
        err = msgspec.json.decode(body or b"")["error"]
        return str(err["code"]), " ".join(str(err["message"]).split())[:300]
    except (msgspec.DecodeError, KeyError, TypeError):
        return "http_error", ""


def connect(
    core_addr: str, credential: str | None, *, trust: Trust = ws.NO_PIN
) -> AbstractAsyncContextManager[WebSocketConnection]:
    """The node's WebSocket to Core, authenticated with its credential.

    On ``wss://`` the credential is sent only once Core's certificate passed ``trust``.
    """
    return ws.connect(
        addr.ws_url(core_addr), bearer=credential, max_message=proto.MAX_FRAME_BYTES, trust=trust
    )


class Backoff(ws.Backoff):
    """Reconnect delays: a first retry within about a second, capped at 30 s."""

    def __init__(self, *, rng: Callable[[], float] = random.random) -> None:
        super().__init__(base=BACKOFF_BASE, cap=BACKOFF_CAP, rng=rng)
