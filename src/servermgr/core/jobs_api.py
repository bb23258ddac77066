"""REST routes for jobs and the audit log (live output: core/job_streams.py)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servermgr.common import proto, timespec
from servermgr.common.selector import parse_target
from servermgr.core.api import Api, Handler
from servermgr.core.auth import Access, ApiFailure, principal_of, read_json
from servermgr.core.jobstore import FINAL_STATES, OPEN_STATES
from servermgr.core.openapi import Doc, Param
from servermgr.core.scheduler import JobError, JobSpec, Scheduler

MAX_OUTPUT_CAP = 16 * 1024 * 1024
MAX_SECONDS = 7 * 86400.0
STATES = sorted(FINAL_STATES | OPEN_STATES)
IDEMPOTENCY_HEADER = "idempotency-key"
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
_key_decoder = msgspec.json.Decoder(IdempotencyKey)


# A job's JSON body: the fields (64 KiB is plenty) plus stdin in base64.
MAX_JOB_BODY = 64 * 1024 + proto.MAX_STDIN_BYTES * 4 // 3 + 4


class JobBody(msgspec.Struct, forbid_unknown_fields=True):
    target: Annotated[str, Meta(min_length=1, max_length=32 * 1024)]
    command: proto.LongText | None = None
    service: proto.ServiceAction | None = None
    timeout: Annotated[float, Meta(gt=0, le=MAX_SECONDS)] = 60.0
    output_cap: Annotated[int, Meta(ge=0, le=MAX_OUTPUT_CAP)] = 1024 * 1024
    env: Annotated[dict[proto.ShortText, proto.LongText], Meta(max_length=256)] = {}
    cwd: proto.ShortText | None = None
    wait: Annotated[float, Meta(ge=0, le=MAX_SECONDS)] = 0.0
    # The command's standard input (base64 in JSON), then end of file.
    stdin: Annotated[bytes, Meta(max_length=proto.MAX_STDIN_BYTES)] | None = None
    # Or the Idempotency-Key header: a retry with the same key is the same job.
    idempotency_key: IdempotencyKey | None = None


def idempotency_key(header: str | None, body: JobBody) -> str | None:
    """The submission's key, from the header or the body (both: they must agree)."""
    if header is not None:
        try:
            key = _key_decoder.decode(msgspec.json.encode(header))
        except msgspec.ValidationError:
            raise ApiFailure(
                400, "bad_request", "Idempotency-Key must be 1-128 visible ASCII characters"
            ) from None
        if body.idempotency_key is not None and body.idempotency_key != key:
            raise ApiFailure(
                400, "bad_request", "Idempotency-Key header and idempotency_key field differ"
            )
        return key
    return body.idempotency_key


def request_digest(body: JobBody, principal: str) -> str:
    """What a request asked, to tell a retry (same digest) from a reused key."""
    import hashlib

    canonical = msgspec.structs.replace(
        body, idempotency_key=None, env=dict(sorted(body.env.items()))
    )
    return hashlib.sha256(principal.encode() + b"\0" + msgspec.json.encode(canonical)).hexdigest()


def job_spec(body: JobBody) -> JobSpec:
    """What the scheduler runs for ``body``; ValueError says what is wrong with it.

    One home for the checks a job gets beyond its schema: ``POST /api/v1/jobs``
    and schedules (core/schedules.py) both build their jobs here.
    """
    try:
        target = parse_target(body.target)
    except ValueError as exc:
        raise ValueError(f"bad job: {exc}") from None
    if (body.command is None) == (body.service is None):
        raise ValueError("give exactly one of command or service")
    if body.command is not None and not body.command.strip():
        raise ValueError("the command is empty")
    if body.stdin is not None and (body.service is not None or body.wait > 0):
        raise ValueError(
            "stdin goes with a command that runs now: not with a service action or wait"
        )
    return JobSpec(
        target,
        body.command,
        body.service,
        body.timeout,
        body.output_cap,
        dict(body.env),
        body.cwd,
        body.wait,
        body.stdin,
    )


def checked_spec(body: JobBody) -> JobSpec:
    """``job_spec``, else 400 in the one error shape."""
    try:
        return job_spec(body)
    except ValueError as exc:
        raise ApiFailure(400, "bad_request", str(exc)) from None


async def job_or_404(jobs: Scheduler, job_id: str, *, output: bool) -> dict[str, Any]:
    """The job document (``Scheduler.job_doc``); else 404 in the one error shape."""
    doc = await jobs.job_doc(job_id, output=output)
    if doc is None:
        raise ApiFailure(404, "not_found", f"no job {job_id!r} (see: servermgr ctl jobs)")
    return doc


class JobsApi:
    def __init__(self, api: Api, scheduler: Scheduler) -> None:
        self.api = api
        self.jobs = scheduler

    async def create(self, request: Request) -> Response:
        body = await read_json(request, JobBody, "job", max_body=MAX_JOB_BODY)
        spec = checked_spec(body)
        principal = principal_of(request).name
        key = idempotency_key(request.headers.get(IDEMPOTENCY_HEADER), body)
        replayed = False
        try:
            if key is None:
                job_id = await self.jobs.submit(spec, principal=principal)
            else:
                digest = request_digest(body, principal)
                job_id, replayed = await self.jobs.submit_once(
                    spec, principal=principal, key=key, digest=digest
                )
        except JobError as exc:
            raise ApiFailure(exc.status, exc.code, exc.message) from None
        doc = await self.jobs.job_doc(job_id, output=False)
        if replayed:  # the job the first request made: nothing ran twice
            return JSONResponse(doc, status_code=200, headers={"Idempotent-Replayed": "true"})
        return JSONResponse(doc, status_code=201)

    async def list_jobs(self, request: Request) -> Response:
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
        output = request.query_params.get("output", "true")
        if output not in ("true", "false"):
            raise ApiFailure(400, "bad_request", "output must be true or false")
        doc = await job_or_404(self.jobs, request.path_params["job_id"], output=output == "true")
        return JSONResponse(doc)

    async def cancel(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not await self.jobs.cancel(job_id):
            raise ApiFailure(404, "not_found", f"no job {job_id!r}")
        return JSONResponse(await job_or_404(self.jobs, job_id, output=False))

    async def audit(self, request: Request) -> Response:
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
            target=q.get("target"),
        )
        return JSONResponse(rows)

    def routes(self) -> list[tuple[str, str, Handler, Doc]]:
        jid = Param("job_id", "path", "job id")
        return [
            (
                "POST",
                "/api/v1/jobs",
                self.create,
                Doc(
                    "Run a shell command or service action on the target nodes; returns at once "
                    "(201; 200 with the same job for a request repeated with its idempotency key)",
                    params=(
                        Param(
                            "Idempotency-Key",
                            "header",
                            "a retry with the same key and body is the same job (409 if the "
                            "body differs); or the idempotency_key field",
                        ),
                    ),
                    auth=Access.OPERATE,
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
                    auth=Access.READ,
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
                Doc(
                    "One job: per-node state, exit code, duration and output",
                    auth=Access.READ,
                    params=(
                        jid,
                        Param(
                            "output",
                            "query",
                            "false: sizes only (stdout_bytes, stderr_bytes), no output",
                        ),
                    ),
                ),
            ),
            (
                "POST",
                "/api/v1/jobs/{job_id}/cancel",
                self.cancel,
                Doc("Cancel what has not finished", auth=Access.OPERATE, params=(jid,)),
            ),
            (
                "GET",
                "/api/v1/audit",
                self.audit,
                Doc(
                    "Audit log of jobs and service actions, newest first",
                    auth=Access.READ,
                    params=(
                        Param("since", "query", "duration ago (1h, 7d) or unix seconds"),
                        Param(
                            "action",
                            "query",
                            "exec, service, file.push, file.pull, shell or "
                            "schedule.add/remove/pause/resume",
                        ),
                        Param("principal", "query", "who ran it"),
                        Param(
                            "target",
                            "query",
                            "only rows with exactly this target (a node's name for "
                            "file.push, file.pull and shell)",
                        ),
                        Param("limit", "query", "at most this many rows", {"type": "integer"}),
                    ),
                ),
            ),
        ]
