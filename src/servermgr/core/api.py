"""REST routes of Core, each with the access it needs (``core/auth.py`` checks it).

Errors have one shape everywhere: ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from servermgr import __version__
from servermgr.common import names, proto, selector, timespec
from servermgr.common.errors import NameTakenError, StorageUnavailableError
from servermgr.common.events import EventType
from servermgr.common.records import NodeDetail, NodeStatus
from servermgr.common.text import printable
from servermgr.core import history, rollup
from servermgr.core.auth import (
    MAX_QUERY_VALUE,
    Access,
    ApiFailure,
    Authenticator,
    error_response,
    principal_of,
    read_json,
    read_query,
)
from servermgr.core.bus import EventBus
from servermgr.core.openapi import Doc, Param
from servermgr.core.registry import NodeRegistry
from servermgr.core.sessions import CLOSE_REMOVED, Sessions
from servermgr.core.status import StatusStore, node_detail, node_record
from servermgr.core.storage import NodeRow
from servermgr.core.writer import AGE_BOUNDS_MS, Database, MetricsWriter

log = logging.getLogger("servermgr.core.api")

MAX_POINTS = 10000


Handler = Callable[[Request], Awaitable[Response]]
WsEndpoint = Callable[[WebSocket], Awaitable[None]]
HttpRoute = tuple[str, str, Handler, Doc]  # method, path, handler, doc
WsRoute = tuple[str, WsEndpoint, Doc]  # path, endpoint, doc


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    hostname: proto.NodeName
    labels: proto.Labels = {}


class RenameBody(msgspec.Struct, forbid_unknown_fields=True):
    name: proto.NodeName


MAX_TARGET = MAX_QUERY_VALUE  # in the query; a job's target (in its body) may be 32 KiB


class Registered(msgspec.Struct):
    """The answer to ``POST /api/v1/register``: keep ``credential`` (shown once)."""

    node_id: str
    name: str
    credential: str


class Health(msgspec.Struct):
    status: Literal["ok"]
    version: str


class MetricsQuery(msgspec.Struct):
    """``GET /api/v1/nodes/{ref}/metrics``."""

    since: Annotated[
        str,
        Meta(
            pattern=timespec.TIME_PATTERN,
            description="start: duration ago (10m, 1h, 7d) or unix seconds",
        ),
    ] = "1h"
    until: (
        Annotated[
            str,
            Meta(
                pattern=timespec.TIME_PATTERN,
                description="end: duration ago or unix seconds (default now)",
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    limit: Annotated[
        int, Meta(ge=1, le=MAX_POINTS, description="at most this many samples (newest kept)")
    ] = MAX_POINTS
    step: Annotated[
        Literal["auto", "raw", "1m", "1h"],
        Meta(description="resolution; auto (default): raw up to 6 h, 1m below 7 d, else 1h"),
    ] = "auto"


def _name_failure(name: str, what: str) -> ApiFailure | None:
    """The 400 for a name that breaks the rule (common/names.py), else None."""
    problem = names.name_problem(name)
    if problem is None:
        return None
    return ApiFailure(400, "bad_request", f"bad {what} '{printable(name)}': {problem}")


@dataclass(frozen=True)
class Api:
    """The node and Core routes; other modules' routes join them in ``core/routes.py``."""

    auth: Authenticator
    registry: NodeRegistry
    status: StatusStore
    db: Database
    sessions: Sessions
    bus: EventBus
    writer: MetricsWriter
    clock: Callable[[], float]
    # What the metrics route can find at which age (from [storage]).
    retention: rollup.Retention = field(default_factory=rollup.Retention)
    started: float = 0.0
    gc_pauses: Callable[[], dict[str, Any]] = dict
    # How many alerts fire on a node (core/alerts.py), shown with each node.
    firing: Callable[[str], int] = lambda node_id: 0

    # --- helpers --------------------------------------------------------

    def _node(self, ref: str) -> NodeRow:
        row = self.registry.by_ref(ref)
        if row is None:
            raise ApiFailure(404, "not_found", f"no node named {ref!r} (see: servermgr ctl nodes)")
        return row

    async def node_status(self, row: NodeRow) -> NodeStatus:
        return node_record(row, await self.status.get(row.id), self.firing(row.id))

    async def node_statuses(self, rows: list[NodeRow]) -> list[NodeStatus]:
        """The records of ``rows``, with one read of the status store."""
        live = {st.node_id: st for st in await self.status.all()}
        return [node_record(row, live.get(row.id), self.firing(row.id)) for row in rows]

    # --- handlers -------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return Response(
            msgspec.json.encode(Health("ok", __version__)), media_type="application/json"
        )

    async def register(self, request: Request) -> Response:
        body = await read_json(request, RegisterBody, "registration")
        failure = _name_failure(body.hostname, "hostname")
        if failure is not None:
            raise failure
        try:
            row, credential = await self.registry.register(body.hostname, dict(body.labels))
        except NameTakenError as exc:
            raise ApiFailure(409, "name_taken", exc.message) from None
        log.info(
            "registered node %s as %s (enrolled with %s)",
            row.name,
            row.id,
            principal_of(request).describe(),
        )
        answer = Registered(row.id, row.name, credential)
        return Response(msgspec.json.encode(answer), 201, media_type="application/json")

    async def core_status(self, request: Request) -> Response:
        writer = self.writer
        age = writer.age
        now = self.clock()
        return JSONResponse(
            {
                "version": __version__,
                "started": self.started,
                "uptime": max(0.0, now - self.started),
                "nodes": {"known": len(self.registry), "online": len(self.sessions)},
                "gc": self.gc_pauses(),
                "storage": self.db.outage.doc(),
                "ingest": {
                    "samples_stored": writer.samples,
                    "batches": writer.batches,
                    "queued": writer.queued,
                    "held": writer.held,
                    "failed_batches": writer.failed_batches,
                    "sample_age_ms": {
                        "p50": age.quantile(0.5),
                        "p99": age.quantile(0.99),
                        "bounds": AGE_BOUNDS_MS,
                        "counts": age.counts,
                    },
                },
            }
        )

    async def list_nodes(self, request: Request) -> Response:
        rows = self.registry.all()
        spec = request.query_params.get("target")
        if spec is not None:
            # The job API's rules (common/selector.py): ctl nodes TARGET asks here.
            try:
                target = selector.parse_target(spec[:MAX_TARGET])
            except ValueError as exc:
                raise ApiFailure(400, "bad_request", f"bad target: {exc}") from None
            if len(spec) > MAX_TARGET or not re.match(selector.TARGET_PATTERN, spec):
                raise ApiFailure(400, "bad_request", "bad target: no spaces or empty items")
            rows, unknown = selector.select(target, rows)
            if unknown:
                raise ApiFailure(
                    404, "not_found", f"unknown node(s): {printable(', '.join(unknown))}"
                )
        return _json(await self.node_statuses(list(rows)))

    async def get_node(self, request: Request) -> Response:
        row = self._node(request.path_params["ref"])
        return _json(node_detail(row, await self.status.get(row.id), self.firing(row.id)))

    async def remove_node(self, request: Request) -> Response:
        row = self._node(request.path_params["ref"])
        self.sessions.disconnect(row.id, CLOSE_REMOVED, "node removed by an operator")
        await self.registry.remove(row)
        await self.status.forget(row.id)
        self.bus.publish(
            {
                "type": EventType.NODE_REMOVED,
                "node_id": row.id,
                "name": row.name,
                "ts": self.clock(),
            }
        )
        log.info("removed node %s (%s); its credential is revoked", row.name, row.id)
        return JSONResponse({"removed": row.id, "name": row.name})

    async def rename_node(self, request: Request) -> Response:
        row = self._node(request.path_params["ref"])
        body = await read_json(request, RenameBody, "rename")
        failure = _name_failure(body.name, "name")
        if failure is not None:
            raise failure
        renamed = row
        if body.name != row.name:
            try:
                renamed = await self.registry.rename(row, body.name) or row
            except NameTakenError as exc:
                raise ApiFailure(409, "name_taken", exc.message) from None
            self.sessions.renamed(renamed)
            self.bus.publish(
                {
                    "type": EventType.NODE_RENAMED,
                    "node_id": row.id,
                    "name": renamed.name,
                    "old_name": row.name,
                    "ts": self.clock(),
                }
            )
            log.info("renamed node %s (%s) to %s", row.name, row.id, renamed.name)
        return _json(await self.node_status(renamed))

    async def metrics(self, request: Request) -> Response:
        row = self._node(request.path_params["ref"])
        now = self.clock()
        q = read_query(request, MetricsQuery)
        since = timespec.parse_api_time(q.since, now=now)
        until = now if q.until is msgspec.UNSET else timespec.parse_api_time(q.until, now=now)
        limit = q.limit
        step = rollup.choose_step(since, until, now=now, retention=self.retention, requested=q.step)
        # since after until is an empty range: no samples (both are valid times)
        rows = (
            []
            if since > until
            else await self.db.read(
                history.query, self.db.storage, step, row.seq, since, until, limit
            )
        )
        doc = {
            "node_id": row.id,
            "name": row.name,
            "since": since,
            "until": until,
            "step": step,
            "samples": rows,
        }
        # msgspec: ~7x faster than json.dumps on 10,000 points.
        return Response(msgspec.json.encode(doc), media_type="application/json")

    # --- table ----------------------------------------------------------

    def routes(self) -> list[HttpRoute]:
        """This module's REST routes: ``(method, path, handler, Doc)``; ``Doc`` says how."""
        ref = Param("ref", "path", "node name or id")
        return [
            (
                "GET",
                "/healthz",
                self.healthz,
                Doc("Liveness probe", auth=Access.PUBLIC, result=Health),
            ),
            (
                "POST",
                "/api/v1/register",
                self.register,
                Doc(
                    "Register a node (an enroll token or the core key); returns its id and "
                    "credential",
                    auth=Access.ENROLL,
                    body=RegisterBody,
                    ok=201,
                    result=Registered,
                ),
            ),
            (
                "GET",
                "/api/v1/status",
                self.core_status,
                Doc(
                    "Core's own figures: nodes known and online, samples stored, how old "
                    "samples were when stored (histogram, cumulative since start)",
                    auth=Access.READ,
                ),
            ),
            (
                "GET",
                "/api/v1/nodes",
                self.list_nodes,
                Doc(
                    "List nodes with status and latest sample",
                    auth=Access.READ,
                    params=(
                        Param(
                            "target",
                            "query",
                            "only the nodes this target picks (as a job's: 'web-*', "
                            "role=web,env!=dev)",
                            {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_TARGET,
                                "pattern": selector.TARGET_PATTERN,
                            },
                        ),
                    ),
                    result=list[NodeStatus],
                ),
            ),
            (
                "GET",
                "/api/v1/nodes/{ref}",
                self.get_node,
                Doc(
                    "One node: static info and latest sample",
                    auth=Access.READ,
                    params=(ref,),
                    result=NodeDetail,
                ),
            ),
            (
                "DELETE",
                "/api/v1/nodes/{ref}",
                self.remove_node,
                Doc(
                    "Remove a node and its history and revoke its credential; frees its name",
                    auth=Access.ADMIN,
                    params=(ref,),
                ),
            ),
            (
                "PATCH",
                "/api/v1/nodes/{ref}",
                self.rename_node,
                Doc(
                    "Rename a node (Core owns names: a node cannot rename itself)",
                    auth=Access.ADMIN,
                    params=(ref,),
                    body=RenameBody,
                    result=NodeStatus,
                ),
            ),
            (
                "GET",
                "/api/v1/nodes/{ref}/metrics",
                self.metrics,
                Doc(
                    "Metrics of a node for a time range: raw samples or 1-minute/1-hour "
                    "rollups (avg under the field name, plus <field>_min and <field>_max)",
                    auth=Access.READ,
                    params=(ref,),
                    query=MetricsQuery,
                ),
            ),
        ]


def _json(record: msgspec.Struct | list[NodeStatus]) -> Response:
    return Response(msgspec.json.encode(record), media_type="application/json")


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the one error shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.url.path}"
    allow = (exc.headers or {}).get("Allow")
    if exc.status_code == 405 and allow:
        message = f"{request.method} is not allowed on {request.url.path} (allowed: {allow})"
    response = error_response(exc.status_code, code, message)
    if allow:
        response.headers["Allow"] = allow
    return response


STORAGE_RETRY_AFTER = 30  # seconds, in the 503's Retry-After


async def storage_error_handler(request: Request, exc: Exception) -> Response:
    """503 while the database refuses writes (disk full); Database has logged it, once."""
    assert isinstance(exc, StorageUnavailableError)
    response = error_response(
        503,
        "storage_unavailable",
        f"Core cannot write to its database now ({exc.reason}); try again later",
    )
    response.headers["Retry-After"] = str(STORAGE_RETRY_AFTER)
    return response


async def server_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error (see Core's log)")
