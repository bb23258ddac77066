"""The one authentication layer of Core: who is asking, and may they.

Every entry point (REST routes, the event and job streams, the node
WebSocket) goes through ``Authenticator.authorize`` with the access its route
declares in the route table (``Access``); no handler reads ``Authorization``
itself. Credentials, all sent as ``Authorization: Bearer <credential>``:

    core key      64 hex characters, <data_dir>/core.key      admin: everything
    named token   t<16 hex>.<secret>  (servermgr key create)  its role: read,
                                                              operate or enroll
    node          n<16 hex>.<secret>  (from registration)     that node's WebSocket only

Answers: no or unknown credential 401 (``unauthorized``; the abuse limits
count these), a removed node's credential 401 ``node_removed``, a valid
credential without the access 403 ``forbidden``. Errors have the one JSON
shape ``{"error": {"code", "message"}}``; request bodies are read through
``read_body`` (64 KiB).

The key file and the token table are re-read every second by ``serve``, so
``servermgr key rotate``, ``key create`` and ``key revoke`` reach a running
Core within about a second. Token use times are written in the same pass.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import msgspec
import trio
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from servermgr.common.errors import KeyFileError, StorageError
from servermgr.common.keyfile import CoreKey, read_key
from servermgr.core import security, tokens
from servermgr.core.registry import NodeRegistry
from servermgr.core.storage import NodeRow
from servermgr.core.tokens import Role, Token
from servermgr.core.writer import Database

log = logging.getLogger("servermgr.core.auth")

MAX_BODY = 64 * 1024
DRAIN_LIMIT = 1024 * 1024
RELOAD_EVERY = 1.0
MAX_CREDENTIAL = 512
PRINCIPAL = "servermgr.principal"  # the ASGI scope key a guarded endpoint finds it under


class Access(StrEnum):
    """What a route needs; every route in the route table names one."""

    PUBLIC = "public"  # no credential
    READ = "read"  # look: nodes, metrics, jobs, audit, status, events
    OPERATE = "operate"  # also run jobs, cancel them, service actions
    ENROLL = "enroll"  # register nodes
    ADMIN = "admin"  # the core key only: remove nodes, everything else
    NODE = "node"  # a node's own WebSocket, with that node's credential
    # No credential from a loopback address, else read: /metrics with
    # [server] metrics_loopback = true (a scraper on the same host).
    LOOPBACK = "loopback"


GRANTS: dict[str, frozenset[Access]] = {
    "admin": frozenset({Access.PUBLIC, Access.READ, Access.OPERATE, Access.ENROLL, Access.ADMIN}),
    Role.OPERATE.value: frozenset({Access.PUBLIC, Access.READ, Access.OPERATE}),
    Role.READ.value: frozenset({Access.PUBLIC, Access.READ}),
    Role.ENROLL.value: frozenset({Access.PUBLIC, Access.ENROLL}),
    "node": frozenset({Access.PUBLIC, Access.NODE}),
}


@dataclass(frozen=True)
class Principal:
    """Who made a request: ``name`` is what the audit records."""

    name: str
    role: str  # admin, read, operate, enroll or node
    node: NodeRow | None = None

    def may(self, access: Access) -> bool:
        return access in GRANTS[self.role]

    def describe(self) -> str:
        if self.role == "admin":
            return "the core key"
        if self.role == "node":
            return f"node {self.name}'s credential"
        return f"token {self.name!r} (role {self.role})"


ADMIN = Principal(tokens.ADMIN_NAME, "admin")


class ApiFailure(Exception):
    """Raised by handlers and the guard; becomes the JSON error document."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def principal_of(conn: HTTPConnection) -> Principal:
    """The principal the guard admitted for this request or WebSocket."""
    principal = conn.scope.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise RuntimeError("no principal: the route is not guarded")
    return principal


def is_loopback(conn: HTTPConnection) -> bool:
    """Whether the TCP peer is a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)."""
    client = conn.client
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client.host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def bearer(authorization: str) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, else None."""
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


async def read_body(request: Request) -> bytes:
    """The body, at most MAX_BODY bytes; else 413.

    A body up to DRAIN_LIMIT is read to its end (and dropped) before the
    413: answering while the client still sends makes the server close
    with unread data, the kernel resets the connection, and the client
    often never sees the answer.
    """
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isascii() and declared.isdigit() else 0
    too_large = ApiFailure(413, "too_large", f"request body over {MAX_BODY} bytes")
    if size > DRAIN_LIMIT:
        raise too_large
    data = bytearray()
    seen = 0
    # aclosing: leaving the loop early must finalize the stream here, not in the GC.
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                break
            if seen <= MAX_BODY:
                data += chunk
    if seen > MAX_BODY:
        raise too_large
    return bytes(data)


B = TypeVar("B")


async def read_json(request: Request, body_type: type[B], what: str) -> B:
    """The body (``read_body``) decoded into ``body_type``; else 400 ``bad {what}: ...``."""
    raw = await read_body(request)
    try:
        return msgspec.json.decode(raw, type=body_type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ApiFailure(400, "bad_request", f"bad {what}: {exc}") from None


def _unauthorized(message: str) -> ApiFailure:
    return ApiFailure(401, "unauthorized", message)


class Authenticator:
    """Resolves credentials to principals; keeps the key and tokens fresh (``serve``)."""

    def __init__(
        self, key: CoreKey, registry: NodeRegistry, db: Database, *, clock: Callable[[], float]
    ) -> None:
        self._key = key.value
        self._key_path = key.path
        self._key_stamp = _stamp(key.path)
        self._registry = registry
        self._db = db
        self._clock = clock
        self._tokens: dict[str, Token] = {}
        self._used: dict[str, float] = {}

    async def load(self) -> None:
        """Read the token table (before serving, then every second)."""
        self._tokens = {t.id: t for t in await self._db.read(tokens.load, self._db.storage)}

    async def _catch_up(self, authorization: str) -> None:
        """Look up a token id the last read of the table did not hold.

        A token made a moment ago then works at once, not up to a second
        later. One indexed read per unknown id; made-up ids also count as
        failed authentications for the abuse limits.
        """
        credential = bearer(authorization)
        parts = security.split_credential(credential) if credential else None
        if parts is None or not parts[0].startswith(tokens.TOKEN_PREFIX):
            return
        if parts[0] in self._tokens:
            return
        try:
            token = await self._db.read(tokens.by_id, self._db.storage, parts[0])
        except (StorageError, sqlite3.Error):
            return  # the once-a-second pass says so
        if token is not None:
            self._tokens = {**self._tokens, token.id: token}

    # --- resolving -------------------------------------------------------

    def authenticate(self, authorization: str) -> Principal:
        """The principal of an Authorization header; ApiFailure 401 if there is none."""
        credential = bearer(authorization)
        if credential is None:
            raise _unauthorized(
                "no credential: send Authorization: Bearer <core key or token> "
                "(ctl: --key / SERVERMGR_KEY)"
            )
        if len(credential) > MAX_CREDENTIAL:
            raise _unauthorized("wrong key or token")
        parts = security.split_credential(credential)
        if parts is None:
            if security.tokens_equal(credential, self._key):
                return ADMIN
            raise _unauthorized("wrong key or token")
        ident, secret = parts
        if ident.startswith(tokens.TOKEN_PREFIX):
            return self._token(ident, secret)
        node = self._registry.authenticate(credential)
        if node is not None:
            return Principal(node.name, "node", node)
        removed = self._registry.removed(credential)
        if removed is not None:
            raise ApiFailure(
                401,
                "node_removed",
                f"node {removed.name} was removed from Core by an operator; its credential "
                "is revoked. To enrol it again, delete identity.json in its data_dir and "
                "start it with an enroll token as register_token",
            )
        raise _unauthorized("unknown or revoked node credential")

    def _token(self, token_id: str, secret: str) -> Principal:
        token = self._tokens.get(token_id)
        if token is None:
            security.credential_matches(secret, "0" * 64)  # the same work either way
            raise _unauthorized("wrong key or token (revoked or never made)")
        if not security.credential_matches(secret, token.secret_hash):
            raise _unauthorized("wrong key or token")
        now = self._clock()
        if token.expires is not None and now >= token.expires:
            raise _unauthorized(f"token {token.name!r} has expired; make a new one")
        self._used[token.id] = now
        return Principal(token.name, token.role.value)

    def authorize(self, authorization: str, access: Access, what: str) -> Principal | None:
        """The principal allowed ``access`` (None for a public route); else ApiFailure.

        ``what`` names the route in the 403 message.
        """
        if access is Access.PUBLIC:
            return None
        principal = self.authenticate(authorization)
        if principal.may(access):
            return principal
        if principal.role == "node":
            message = f"a node credential cannot use {what}: it is for the node's own WebSocket"
        elif access is Access.ADMIN:
            message = f"{principal.describe()} cannot use {what}: it needs the core key"
        else:
            message = f"{principal.describe()} cannot use {what}: it needs role {access.value}"
        raise ApiFailure(403, "forbidden", message)

    # --- guards ------------------------------------------------------------

    def guard(
        self, access: Access, what: str, handler: Callable[[Request], Awaitable[Any]]
    ) -> Callable[[Request], Awaitable[Any]]:
        """``handler`` behind the check of ``access`` (the principal goes in the scope)."""

        async def guarded(request: Request) -> Any:
            header = request.headers.get("authorization", "")
            needed = access
            if access is Access.LOOPBACK:
                needed = Access.PUBLIC if is_loopback(request) else Access.READ
            if needed is not Access.PUBLIC:
                await self._catch_up(header)
            principal = self.authorize(header, needed, what)
            request.scope[PRINCIPAL] = principal
            return await handler(request)

        guarded.__name__ = handler.__name__
        return guarded

    def guard_ws(
        self, access: Access, what: str, endpoint: Callable[[WebSocket], Awaitable[None]]
    ) -> Callable[[WebSocket], Awaitable[None]]:
        """A WebSocket endpoint behind the check: refused with a real 401/403 before accept."""

        async def guarded(ws: WebSocket) -> None:
            header = ws.headers.get("authorization", "")
            if access is not Access.PUBLIC and access is not Access.NODE:
                await self._catch_up(header)
            try:
                principal = self.authorize(header, access, what)
            except ApiFailure as exc:
                await ws.send_denial_response(error_response(exc.status, exc.code, exc.message))
                return
            ws.scope[PRINCIPAL] = principal
            await endpoint(ws)

        return guarded

    # --- keeping fresh ------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every second: pick up a rotated key and changed tokens; store token use times."""
        task_status.started()
        trouble = ""
        while True:
            await trio.sleep(RELOAD_EVERY)
            try:
                await self.refresh()
            except (StorageError, sqlite3.Error) as exc:
                # Disk full or the like: keep the tokens Core has; say so once.
                if str(exc) != trouble:
                    log.warning("cannot refresh API tokens (keeping those loaded): %s", exc)
                trouble = str(exc)
            else:
                trouble = ""

    async def refresh(self) -> None:
        await self._reload_key()
        await self.load()
        used, self._used = self._used, {}
        if used:
            await self._db.write(tokens.record_use, self._db.storage, used)

    async def _reload_key(self) -> None:
        stamp = _stamp(self._key_path)
        if stamp == self._key_stamp or stamp is None:
            return
        self._key_stamp = stamp
        try:
            key = await trio.to_thread.run_sync(read_key, self._key_path)
        except KeyFileError as exc:
            log.warning(
                "the core key file changed but cannot be read (%s); keeping the old key", exc.reason
            )
            return
        if not security.tokens_equal(key.value, self._key):
            self._key = key.value
            log.info("the core key was rotated: the old key no longer works")


def _stamp(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
