"""REST and streaming routes for jobs and the audit log.

The live output of a job is one event sequence served two ways: NDJSON over
HTTP (``/stream``, what ctl and curl read) and WebSocket text frames
(``/ws``, for browsers). Each starts with the job so far, then live events,
and ends with ``{"type": "done"}`` once every node is final. Output events
carry byte offsets so a reader can drop what it already has.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from servermgr.common import proto, timespec
from servermgr.common.selector import parse_target
from servermgr.core.api import Api, ApiFailure, Handler
from servermgr.core.gateway import error_body
from servermgr.core.jobstore import FINAL_STATES, OPEN_STATES
from servermgr.core.openapi import Doc, Param
from servermgr.core.scheduler import JobError, JobSpec, Scheduler
from servermgr.core.security import tokens_equal

MAX_OUTPUT_CAP = 16 * 1024 * 1024
MAX_SECONDS = 7 * 86400.0
STATES = sorted(FINAL_STATES | OPEN_STATES)


class JobBody(msgspec.Struct, forbid_unknown_fields=True):
    target: Annotated[str, Meta(min_length=1, max_length=32 * 1024)]
    command: proto.LongText | None = None
    service: proto.ServiceAction | None = None
    timeout: Annotated[float, Meta(gt=0, le=MAX_SECONDS)] = 60.0
    output_cap: Annotated[int, Meta(ge=0, le=MAX_OUTPUT_CAP)] = 1024 * 1024
    env: Annotated[dict[proto.ShortText, proto.LongText], Meta(max_length=256)] = {}
    cwd: proto.ShortText | None = None
    wait: Annotated[float, Meta(ge=0, le=MAX_SECONDS)] = 0.0


class JobsApi:
    def __init__(self, api: Api, scheduler: Scheduler) -> None:
        self.api = api
        self.jobs = scheduler

    async def create(self, request: Request) -> Response:
        self.api._authorize(request)
        raw = await self.api._body(request)
        try:
            body = msgspec.json.decode(raw, type=JobBody)
            target = parse_target(body.target)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            raise ApiFailure(400, "bad_request", f"bad job: {exc}") from None
        if (body.command is None) == (body.service is None):
            raise ApiFailure(400, "bad_request", "give exactly one of command or service")
        if body.command is not None and not body.command.strip():
            raise ApiFailure(400, "bad_request", "the command is empty")
        spec = JobSpec(
            target,
            body.command,
            body.service,
            body.timeout,
            body.output_cap,
            dict(body.env),
            body.cwd,
            body.wait,
        )
        try:
            job_id = await self.jobs.submit(spec, principal="core-key")
        except JobError as exc:
            raise ApiFailure(exc.status, exc.code, exc.message) from None
        doc = await self.jobs.job_doc(job_id, output=False)
        return JSONResponse(doc, status_code=201)

    async def list_jobs(self, request: Request) -> Response:
        self.api._authorize(request)
        q = request.query_params
        node_id = None
        if "node" in q:
            row = self.api.registry.by_ref(q["node"])
            if row is None:
                raise ApiFailure(404, "not_found", f"no node named {q['node']!r}")
            node_id = row.id
        state = q.get("state")
        if state is not None and state not in STATES:
            raise ApiFailure(400, "bad_request", f"state must be one of {', '.join(STATES)}")
        try:
            limit = int(q.get("limit", "50"))
            before = float(q["before"]) if "before" in q else None
        except ValueError:
            raise ApiFailure(400, "bad_request", "limit and before must be numbers") from None
        if not 1 <= limit <= 1000:
            raise ApiFailure(400, "bad_request", "limit must be 1..1000")
        rows = await self.api.db.read(
            self.jobs.store.list_jobs, node_id=node_id, state=state, limit=limit, before=before
        )
        out = []
        for job, counts in rows:
            out.append(
                {
                    "id": job.id,
                    "created": job.created,
                    "command": job.command,
                    "service": job.service,
                    "target": job.target,
                    "principal": job.principal,
                    "states": counts,
                    "state": "running" if any(s in OPEN_STATES for s in counts) else "done",
                }
            )
        next_before = out[-1]["created"] if len(out) == limit else None
        return JSONResponse({"jobs": out, "next_before": next_before})

    async def get(self, request: Request) -> Response:
        self.api._authorize(request)
        doc = await self._doc(request.path_params["job_id"])
        return JSONResponse(doc)

    async def cancel(self, request: Request) -> Response:
        self.api._authorize(request)
        job_id = request.path_params["job_id"]
        if not await self.jobs.cancel(job_id):
            raise ApiFailure(404, "not_found", f"no job {job_id!r}")
        return JSONResponse(await self._doc(job_id, output=False))

    async def stream(self, request: Request) -> Response:
        self.api._authorize(request)
        job_id = request.path_params["job_id"]
        await self._doc(job_id, output=False)  # 404 before the stream starts

        async def lines() -> AsyncIterator[bytes]:
            async for event in self.events(job_id):
                yield json.dumps(event).encode() + b"\n"

        return StreamingResponse(
            lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"}
        )

    async def websocket(self, ws: WebSocket) -> None:
        auth = ws.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not tokens_equal(token.strip(), self.api.core_key):
            await ws.send_denial_response(
                JSONResponse(error_body("unauthorized", "wrong or missing core key"), 401)
            )
            return
        job_id = ws.path_params["job_id"]
        if await self.jobs.job_doc(job_id, output=False) is None:
            await ws.send_denial_response(
                JSONResponse(error_body("not_found", f"no job {job_id!r}"), 404)
            )
            return
        await ws.accept()
        try:
            async for event in self.events(job_id):
                await ws.send_text(json.dumps(event))
            await ws.close(1000)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """The job so far, then live events until every node is final."""
        async with self.jobs.bus.subscribe(
            buffer=10000, match=lambda e: e.get("job_id") == job_id
        ) as live:
            doc = await self.jobs.job_doc(job_id)
            if doc is None:
                return
            nodes = doc.pop("nodes")
            yield {
                "type": "job",
                "job": doc
                | {
                    "nodes": [
                        {k: v for k, v in n.items() if not k.startswith(("stdout", "stderr"))}
                        for n in nodes
                    ]
                },
            }
            for n in nodes:
                for stream in ("stdout", "stderr"):
                    data = n[f"{stream}_b64"]
                    if data:
                        yield {
                            "type": "output",
                            "job_id": job_id,
                            "node_id": n["node_id"],
                            "node": n["node"],
                            "stream": stream,
                            "offset": 0,
                            "data": data,
                        }
                if n["state"] in FINAL_STATES:
                    yield {
                        "type": "state",
                        "job_id": job_id,
                        "node_id": n["node_id"],
                        "node": n["node"],
                        "state": n["state"],
                        "exit_code": n["exit_code"],
                        "signal": n["signal"],
                        "error": n["error"],
                        "duration": n["duration"],
                    }
            if doc["state"] == "done":
                yield {"type": "done", "job_id": job_id}
                return
            async for event in live:
                yield event
                if event["type"] == "done":
                    return

    async def audit(self, request: Request) -> Response:
        self.api._authorize(request)
        q = request.query_params
        try:
            since = timespec.parse_time(q["since"], now=self.api.clock()) if "since" in q else None
            limit = int(q.get("limit", "100"))
        except ValueError as exc:
            raise ApiFailure(400, "bad_request", str(exc)) from None
        if not 1 <= limit <= 10000:
            raise ApiFailure(400, "bad_request", "limit must be 1..10000")
        rows = await self.api.db.read(
            self.jobs.store.audit,
            limit=limit,
            since=since,
            action=q.get("action"),
            principal=q.get("principal"),
        )
        return JSONResponse(rows)

    async def _doc(self, job_id: str, *, output: bool = True) -> dict[str, Any]:
        doc = await self.jobs.job_doc(job_id, output=output)
        if doc is None:
            raise ApiFailure(404, "not_found", f"no job {job_id!r} (see: servermgr ctl jobs)")
        return doc

    def routes(self) -> list[tuple[str, str, Handler, Doc]]:
        jid = Param("job_id", "path", "job id")
        return [
            (
                "POST",
                "/api/v1/jobs",
                self.create,
                Doc(
                    "Run a shell command or service action on the target nodes; returns at once",
                    body=msgspec.json.schema(JobBody),
                    ok=201,
                ),
            ),
            (
                "GET",
                "/api/v1/jobs",
                self.list_jobs,
                Doc(
                    "Jobs, newest first",
                    params=(
                        Param("node", "query", "only jobs that ran on this node (name or id)"),
                        Param("state", "query", "only jobs with a node in this state"),
                        Param(
                            "limit", "query", "page size (1..1000, default 50)", {"type": "integer"}
                        ),
                        Param(
                            "before",
                            "query",
                            "page: jobs created before this time (next_before)",
                            {"type": "number"},
                        ),
                    ),
                ),
            ),
            (
                "GET",
                "/api/v1/jobs/{job_id}",
                self.get,
                Doc("One job: per-node state, exit code, duration and output", params=(jid,)),
            ),
            (
                "POST",
                "/api/v1/jobs/{job_id}/cancel",
                self.cancel,
                Doc("Cancel what has not finished", params=(jid,)),
            ),
            (
                "GET",
                "/api/v1/jobs/{job_id}/stream",
                self.stream,
                Doc("Live events as NDJSON: job, output, state, done", params=(jid,)),
            ),
            (
                "GET",
                "/api/v1/audit",
                self.audit,
                Doc(
                    "Audit log of jobs and service actions, newest first",
                    params=(
                        Param("since", "query", "duration ago (1h, 7d) or unix seconds"),
                        Param("action", "query", "exec or service"),
                        Param("principal", "query", "who ran it"),
                        Param("limit", "query", "at most this many rows", {"type": "integer"}),
                    ),
                ),
            ),
        ]

    def ws_routes(self) -> list[tuple[str, Any, Doc]]:
        return [
            (
                "/api/v1/jobs/{job_id}/ws",
                self.websocket,
                Doc(
                    "Live events over WebSocket (same as /stream)",
                    websocket=True,
                    params=(Param("job_id", "path", "job id"),),
                ),
            )
        ]
