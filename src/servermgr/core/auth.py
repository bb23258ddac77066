"""The one authentication layer of Core: who is asking, and may they.

Every entry point (REST routes, the event and job streams, the node
WebSocket) goes through ``Authenticator.authorize`` with the access its route
declares in the route table (``Access``); no handler reads ``Authorization``
itself. Credentials, all sent as ``Authorization: Bearer <credential>``:

    core key      64 hex characters, <data_dir>/core.key      admin: everything
    named token   t<16 hex>.<secret>  (servermgr key create)  its role: read,
                                                              operate or enroll
    node          n<16 hex>.<secret>  (from registration)     that node's WebSocket only

Browsers cannot set headers on a WebSocket, so the event and job streams
also take the credential as their first message: the client asks for the
subprotocol ``servermgr.auth-message`` (and sends no Authorization header),
Core accepts, and the first text frame must be ``{"type": "auth", "token":
"<credential>"}`` (at most 1 KiB, within 5 s). A wrong credential gets an
``{"type": "error", "error": {...}}`` frame and close code 4401 (4403 for a
missing role); the abuse limits count 4401 like a 401. The credential thus
never goes into a URL (where logs and history keep it).

Answers: no or unknown credential 401 (``unauthorized``; the abuse limits
count these), a removed node's credential 401 ``node_removed``, a valid
credential without the access 403 ``forbidden``. Errors have the one JSON
shape ``{"error": {"code", "message"}}``; request bodies are read through
``read_body`` (64 KiB), JSON ones through ``read_json`` (``Content-Type:
application/json`` or 415), query strings through ``read_query``.

The key file and the token table are re-read every second by ``serve``, so
``servermgr key rotate``, ``key create`` and ``key revoke`` reach a running
Core within about a second; WebSockets opened with a token that is revoked
or expires, or with the core key before a rotation, are then ended (close
1008) and must reconnect with a credential that works. Token use times are written in the same pass.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import msgspec
import trio
from msgspec import Meta
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from servermgr.common.errors import KeyFileError, StorageError
from servermgr.common.keyfile import CoreKey, read_key
from servermgr.core import security, tokens
from servermgr.core.registry import NodeRegistry
from servermgr.core.storage import NodeRow
from servermgr.core.tokens import Role, Token
from servermgr.core.writer import Database

log = logging.getLogger("servermgr.core.auth")

MAX_BODY = 64 * 1024
# A body whose strings may be as long as a job's target or command (32 KiB):
# room for each one escaped as JSON (up to 12 bytes a character), so that a
# body is refused for what it says (400), not its size, up to that length.
MAX_LONG_BODY = 512 * 1024
# A query value must fit in the 16 KiB request head, percent-encoded (up to
# 12 bytes a character): longer ones are refused (400) before they get there.
MAX_QUERY_VALUE = 1024
DRAIN_LIMIT = 1024 * 1024
RELOAD_EVERY = 1.0
MAX_CREDENTIAL = 512
PRINCIPAL = "servermgr.principal"  # the ASGI scope key a guarded endpoint finds it under
AUTH_SUBPROTOCOL = "servermgr.auth-message"  # a WebSocket that authenticates by message
FIRST_MESSAGE_TIMEOUT = 5.0
MAX_FIRST_MESSAGE = 1024
CLOSE_UNAUTHORIZED = 4401  # WebSocket close codes of first-message authentication
CLOSE_FORBIDDEN = 4403
CLOSE_POLICY = 1008
CORE_KEY_STREAMS = "core key"  # what streams opened with the core key are held under


class AuthMessage(msgspec.Struct, tag="auth", tag_field="type", forbid_unknown_fields=True):
    """The first message of a WebSocket that authenticates by message."""

    token: Annotated[str, Meta(min_length=1, max_length=MAX_CREDENTIAL)]


_auth_message = msgspec.json.Decoder(AuthMessage)


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
    token_id: str | None = None  # a named token's id

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


async def read_body(request: Request, max_body: int = MAX_BODY) -> bytes:
    """The body, at most ``max_body`` bytes (MAX_BODY; a job with stdin: more); else 413.

    A body up to DRAIN_LIMIT is read to its end (and dropped) before the
    413: answering while the client still sends makes the server close
    with unread data, the kernel resets the connection, and the client
    often never sees the answer.
    """
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isascii() and declared.isdigit() else 0
    too_large = ApiFailure(
        413,
        "too_large",
        f"request body over the limit of {max_body} bytes ({max_body // 1024} KiB)",
    )
    if size > max(DRAIN_LIMIT, max_body):
        raise too_large
    data = bytearray()
    seen = 0
    # aclosing: leaving the loop early must finalize the stream here, not in the GC.
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            seen += len(chunk)
            if seen > max(DRAIN_LIMIT, max_body):
                break
            if seen <= max_body:
                data += chunk
    if seen > max_body:
        raise too_large
    return bytes(data)


B = TypeVar("B")


def is_json(content_type: str) -> bool:
    """``application/json`` or ``application/<x>+json``, with or without parameters."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(
    request: Request, body_type: type[B], what: str, *, max_body: int = MAX_BODY
) -> B:
    """The body (``read_body``) decoded into ``body_type``; else 400 ``bad {what}: ...``.

    A body that does not say it is JSON gets 415 ``unsupported_media_type``.
    """
    raw = await read_body(request, max_body)  # first: a refused body is read to its end
    if not is_json(request.headers.get("content-type", "")):
        raise ApiFailure(
            415,
            "unsupported_media_type",
            f"the {what} body must be JSON: send Content-Type: application/json",
        )
    try:
        return msgspec.json.decode(raw, type=body_type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ApiFailure(400, "bad_request", f"bad {what}: {readable(exc)}") from None


def readable(exc: Exception) -> str:
    """msgspec's message without the regular expression it quotes (the schema states it)."""
    return _REGEX.sub("in the form /openapi.json states - at", str(exc))


_REGEX = re.compile(r"matching regex '.*' - at")


def read_query(request: Request, query_type: type[B]) -> B:
    """The query string decoded into ``query_type`` (a Struct: the route's ``Doc.query``).

    Values are converted from text as JSON Schema says (``"50"`` for an
    integer); a bad one gets 400 naming the parameter.
    """
    try:
        return msgspec.convert(dict(request.query_params), query_type, strict=False)
    except msgspec.ValidationError as exc:
        text = readable(exc).replace("`$.", "parameter `")
        raise ApiFailure(400, "bad_request", f"bad query: {text}") from None


def looks_like_credential(authorization: str) -> bool:
    """Whether the header carries something a credential could be (the abuse limits count only
    those): the core key's 64 hex digits, or ``id.secret``. Nothing, or text no credential
    ever looks like, cannot be a guess."""
    credential = bearer(authorization)
    if credential is None or len(credential) > MAX_CREDENTIAL:
        return False
    if security.split_credential(credential) is not None:
        return True
    return len(credential) == 64 and all(c in "0123456789abcdefABCDEF" for c in credential)


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
        # Open WebSockets by credential (a token id, or CORE_KEY_STREAMS), so a
        # revoked, expired or rotated credential ends them (``_end_streams``).
        self._streams: dict[str, set[trio.CancelScope]] = {}

    async def load(self) -> None:
        """Read the token table (before serving, then every second)."""
        self._tokens = {t.id: t for t in await self._db.read(tokens.load, self._db.storage)}
        now = self._clock()
        for token_id in list(self._streams):
            token = self._tokens.get(token_id)
            if token_id != CORE_KEY_STREAMS and (
                token is None or (token.expires is not None and now >= token.expires)
            ):
                self._end_streams(token_id)

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
        return Principal(token.name, token.role.value, token_id=token.id)

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
            by_message = AUTH_SUBPROTOCOL in ws.scope.get("subprotocols", ())
            if by_message and not header and access not in (Access.PUBLIC, Access.NODE):
                await self._first_message(ws, access, what, endpoint)
                return
            if access is not Access.PUBLIC and access is not Access.NODE:
                await self._catch_up(header)
            try:
                principal = self.authorize(header, access, what)
            except ApiFailure as exc:
                await ws.send_denial_response(error_response(exc.status, exc.code, exc.message))
                return
            ws.scope[PRINCIPAL] = principal
            key = _stream_key(principal)
            if key is None:  # a node: no frame more per connection (see app.node_lane)
                await endpoint(ws)
            else:
                await self._serve_stream(ws, key, endpoint)

        return guarded

    async def _serve_stream(
        self, ws: WebSocket, key: str, endpoint: Callable[[WebSocket], Awaitable[None]]
    ) -> None:
        """Run ``endpoint`` until it ends, or until its credential (``key``: a token id or
        CORE_KEY_STREAMS) is revoked, expires or (the core key) is rotated: then it is
        cancelled and the socket closed (1008).
        """
        scope = trio.CancelScope()
        held = self._streams.setdefault(key, set())
        held.add(scope)
        try:
            with scope:
                await endpoint(ws)
        finally:
            held.discard(scope)
            if not held and self._streams.get(key) is held:
                del self._streams[key]
        if scope.cancelled_caught:  # the endpoint may have closed it already
            with trio.move_on_after(FIRST_MESSAGE_TIMEOUT):
                try:
                    await ws.close(CLOSE_POLICY, "credential revoked, expired or rotated")
                except (WebSocketDisconnect, RuntimeError, OSError):
                    pass

    def _end_streams(self, key: str) -> None:
        scopes = self._streams.get(key, ())
        if scopes:
            log.info(
                "ending %d open stream(s) of a revoked, expired or rotated credential", len(scopes)
            )
        for scope in scopes:
            scope.cancel()

    async def _first_message(
        self,
        ws: WebSocket,
        access: Access,
        what: str,
        endpoint: Callable[[WebSocket], Awaitable[None]],
    ) -> None:
        """Accept, read the credential from the first message, then run ``endpoint``."""
        await ws.accept(subprotocol=AUTH_SUBPROTOCOL)
        try:
            with trio.move_on_after(FIRST_MESSAGE_TIMEOUT) as waited:
                message = await ws.receive()
            if waited.cancelled_caught:
                raise _unauthorized(f"no auth message within {FIRST_MESSAGE_TIMEOUT:g} s")
            if message["type"] == "websocket.disconnect":
                return
            header = "Bearer " + _first_credential(message.get("text"))
            await self._catch_up(header)
            ws.scope[PRINCIPAL] = self.authorize(header, access, what)
        except ApiFailure as exc:
            code = CLOSE_UNAUTHORIZED if exc.status == 401 else CLOSE_FORBIDDEN
            await _refuse(ws, code, exc)
            return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        key = _stream_key(ws.scope[PRINCIPAL])
        if key is None:
            await endpoint(_Accepted(ws))
        else:
            await self._serve_stream(_Accepted(ws), key, endpoint)

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
            self._end_streams(CORE_KEY_STREAMS)


def _stream_key(principal: Principal | None) -> str | None:
    """What a stream of ``principal`` is held under to be ended on revocation; None
    for a node (the gateway ends a removed node's WebSocket) and public routes."""
    if principal is None:
        return None
    if principal.token_id is not None:
        return principal.token_id
    return CORE_KEY_STREAMS if principal.role == "admin" else None


def _first_credential(text: str | None) -> str:
    """The token of a first message; ApiFailure 401 for anything else."""
    if text is None or len(text) > MAX_FIRST_MESSAGE:
        raise _unauthorized(
            f'the first message must be {{"type": "auth", "token": ...}} '
            f"as text, at most {MAX_FIRST_MESSAGE} bytes"
        )
    try:
        return _auth_message.decode(text).token
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _unauthorized(f"bad auth message: {exc}") from None


async def _refuse(ws: WebSocket, code: int, exc: ApiFailure) -> None:
    """The error document as a message, then the close (what a browser can read)."""
    with trio.move_on_after(FIRST_MESSAGE_TIMEOUT):
        try:
            doc = {"type": "error", **error_body(exc.code, exc.message)}
            await ws.send_text(msgspec.json.encode(doc).decode())
            await ws.close(code, exc.code)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass


class _Accepted(WebSocket):
    """A WebSocket the guard accepted already (first-message authentication).

    The endpoint's ``accept`` is then a no-op, and a denial (a 404 for an
    unknown job, a 400 for a bad query) becomes its error document as a
    message and close code 1008: after the accept there is no HTTP answer.
    """

    def __init__(self, ws: WebSocket) -> None:
        super().__init__(ws.scope, ws.receive, ws.send)
        self.client_state = WebSocketState.CONNECTED
        self.application_state = WebSocketState.CONNECTED

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        return None

    async def send_denial_response(self, response: Response) -> None:
        await self.send_text(bytes(response.body).decode())
        await self.close(CLOSE_POLICY, "refused")


def _stamp(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
