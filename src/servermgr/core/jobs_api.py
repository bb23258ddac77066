"""REST routes for jobs and the audit log (live output: core/job_streams.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servermgr.common import limits, names, proto, timespec
from servermgr.common.selector import TARGET_MAX, TARGET_PATTERN, parse_target
from servermgr.core.api import Api, Handler
from servermgr.core.auth import (
    MAX_QUERY_VALUE,
    Access,
    ApiFailure,
    principal_of,
    read_json,
    read_query,
)
from servermgr.core.entries import JobError, JobSpec
from servermgr.core.jobstore import FINAL_STATES, OPEN_STATES
from servermgr.core.openapi import Doc, Param
from servermgr.core.scheduler import Scheduler

MAX_OUTPUT_CAP = limits.JOB_MAX_OUTPUT_CAP
MAX_SECONDS = limits.JOB_MAX_SECONDS
MIN_TIMEOUT = limits.JOB_MIN_TIMEOUT
MAX_COMMAND = 32 * 1024
MAX_ENV_VALUE = 8 * 1024
STATES = sorted(FINAL_STATES | OPEN_STATES)
IDEMPOTENCY_HEADER = "idempotency-key"
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[!-~]+\Z")]
_key_decoder = msgspec.json.Decoder(IdempotencyKey)
_NO_NUL = r"^[^\x00]*\Z"
_TARGET = re.compile(TARGET_PATTERN)
_UNIT = re.compile(names.UNIT_PATTERN)
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z"

# Each limit below fits in the 64 KiB body on its own (the schema says both).
Command = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_COMMAND,
        pattern=r"^\s*[^\x00\s][^\x00]*\Z",
        description="run with /bin/sh -c; not blank, no NUL",
    ),
]
EnvName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=names.ENV_NAME_MAX,
        pattern=names.ENV_NAME_PATTERN,
        description="a POSIX name: letters, digits and _, not starting with a digit",
    ),
]
EnvValue = Annotated[str, Meta(max_length=MAX_ENV_VALUE, pattern=_NO_NUL)]
Cwd = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=4096,
        pattern=r"^/[^\x00]*\Z",
        description="an absolute path (the node's [exec] policy decides if it may be used)",
    ),
]


# A job's JSON body: the fields (64 KiB is plenty) plus stdin in base64.
MAX_JOB_BODY = 64 * 1024 + proto.MAX_STDIN_BYTES * 4 // 3 + 4


class JobBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/jobs``: exactly one of ``command`` and ``service`` (``JOB_REQUEST``)."""

    target: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=TARGET_MAX,
            extra_json_schema={"pattern": TARGET_PATTERN},  # checked in job_spec
            description="node names or ids (a,b), key=value labels (all must match) or *",
        ),
    ]
    command: Command | None = None
    service: proto.ServiceAction | None = None
    timeout: Annotated[
        float,
        Meta(
            ge=MIN_TIMEOUT,
            le=MAX_SECONDS,
            description=f"seconds, {MIN_TIMEOUT:g} to {MAX_SECONDS:.0f} (7 days)",
        ),
    ] = 60.0
    # JSON Schema's integer: a number without a fraction, 1048576.0 too (a float
    # that is a multiple of 1; the document renders it as "type": "integer").
    output_cap: Annotated[
        float,
        Meta(ge=0, le=MAX_OUTPUT_CAP, multiple_of=1, description="bytes kept per stream and node"),
    ] = 1024 * 1024
    env: Annotated[dict[EnvName, EnvValue], Meta(max_length=256)] = {}
    cwd: Cwd | None = None
    wait: Annotated[
        float,
        Meta(ge=0, le=MAX_SECONDS, description="seconds an offline node may take to come back"),
    ] = 0.0
    # The command's standard input (base64 in JSON), then end of file.
    stdin: (
        Annotated[
            bytes,
            Meta(
                max_length=proto.MAX_STDIN_BYTES,
                extra_json_schema={"pattern": _BASE64},
                description="base64; only with a command that runs now (no wait)",
            ),
        ]
        | None
    ) = None
    # Or: stdin comes on a stream (the stdin WebSocket), any size, with credit.
    stdin_stream: Annotated[
        bool,
        Meta(
            description="the command's stdin comes on /api/v1/stdin/ws once the job is made "
            "(any size); not with stdin or a service action"
        ),
    ] = False
    # Or the Idempotency-Key header: a retry with the same key is the same job.
    idempotency_key: IdempotencyKey | None = None


# What the document says of the body: JobBody, with "exactly one of" as a schema;
# as if/then/else (not oneOf): client generators keep JobBody one model.
JOB_ONE_OF: dict[str, Any] = {
    "if": {"required": ["command"], "properties": {"command": {"type": "string"}}},
    "then": {
        "properties": {"service": {"type": "null"}},
        "allOf": [
            # stdin only with a command that runs now: no stdin, or no wait.
            {
                "anyOf": [
                    {"properties": {"stdin": {"type": "null"}}},
                    {"properties": {"wait": {"maximum": 0}}},
                ]
            },
            # stdin in the body or on a stream, not both.
            {
                "anyOf": [
                    {"properties": {"stdin": {"type": "null"}}},
                    {"properties": {"stdin_stream": {"const": False}}},
                ]
            },
        ],
    },
    "else": {
        "required": ["service"],
        "properties": {
            "service": {"type": "object"},
            "stdin": {"type": "null"},
            "stdin_stream": {"const": False},
        },
    },
}
JOB_REQUEST = Annotated[JobBody, Meta(extra_json_schema=JOB_ONE_OF)]


class JobsQuery(msgspec.Struct):
    """``GET /api/v1/jobs``."""

    node: (
        Annotated[
            str, Meta(min_length=1, max_length=253, description="only jobs that ran on this node")
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    state: (
        Annotated[
            Literal[tuple(STATES)],  # type: ignore[valid-type]
            Meta(description="only jobs with a node in this state"),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    limit: Annotated[int, Meta(ge=1, le=limits.JOBS_PAGE, description="page size")] = 50
    before: (
        Annotated[
            float,
            Meta(ge=0, le=1e11, description="page: jobs created before this time (next_before)"),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class JobQuery(msgspec.Struct):
    """``GET /api/v1/jobs/{job_id}``."""

    output: Annotated[
        Literal["true", "false"],
        Meta(description="false: sizes only (stdout_bytes, stderr_bytes), no output"),
    ] = "true"


# --- answers (the document's response schemas; unknown keys would break them) ---


class ServiceDoc(msgspec.Struct, forbid_unknown_fields=True):
    action: str
    unit: str


class JobNodeDoc(msgspec.Struct, forbid_unknown_fields=True):
    """One node's entry of a job; the output fields only with ``output=true``."""

    node_id: str
    node: str
    state: Literal[tuple(STATES)]  # type: ignore[valid-type]
    exit_code: int | None
    signal: int | None
    error: str | None
    duration: float | None
    sent_at: float | None
    finished_at: float | None
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int
    stderr_bytes: int
    stdout: str | msgspec.UnsetType = msgspec.UNSET
    stderr: str | msgspec.UnsetType = msgspec.UNSET
    stdout_b64: str | msgspec.UnsetType = msgspec.UNSET
    stderr_b64: str | msgspec.UnsetType = msgspec.UNSET


class JobDoc(msgspec.Struct, forbid_unknown_fields=True):
    """A job (``Scheduler.job_doc``): what POST, GET and cancel answer."""

    id: str
    created: float
    command: str | None
    service: ServiceDoc | None
    target: str
    timeout: float
    output_cap: int
    deadline: float
    principal: str
    state: Literal["running", "done"]
    nodes: list[JobNodeDoc]


class JobSummary(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    created: float
    command: str | None
    service: ServiceDoc | None
    target: str
    principal: str
    states: dict[str, int]
    state: Literal["running", "done"]


class JobList(msgspec.Struct, forbid_unknown_fields=True):
    jobs: list[JobSummary]
    next_before: float | None


class AuditEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One row of ``GET /api/v1/audit`` (the answer is an array of them)."""

    ts: float
    principal: str
    action: str
    target: str
    detail: str
    job_id: str | None
    outcome: str | None


class AuditQuery(msgspec.Struct):
    """``GET /api/v1/audit``."""

    since: (
        Annotated[
            str,
            Meta(
                pattern=timespec.TIME_PATTERN, description="duration ago (1h, 7d) or unix seconds"
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    action: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=64,
                description="exec, service, file.push, file.pull, shell, schedule.add, ...",
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    principal: (
        Annotated[str, Meta(min_length=1, max_length=256, description="who ran it")]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    target: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=MAX_QUERY_VALUE,
                description="only rows with exactly this target (a node's name for "
                "file.push, file.pull and shell)",
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    limit: Annotated[
        int, Meta(ge=1, le=limits.AUDIT_ROWS, description="at most this many rows")
    ] = 100


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
                409,
                "idempotency_conflict",
                "the Idempotency-Key header and the idempotency_key field differ",
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
        if _TARGET.match(body.target):
            # Allowed by the schema, so well formed: a label given two values,
            # which no node can match.
            raise NoNodeMatches(f"no node matches {body.target!r}: {exc}") from None
        raise ValueError(f"bad job: {exc}") from None
    if not _TARGET.match(body.target):
        raise ValueError(
            f"bad job: target {body.target[:80]!r}: no spaces or empty items "
            "(node names or ids a,b; key=value labels; or *)"
        )
    unit = body.service.unit if body.service is not None else None
    if unit is not None and not _UNIT.match(unit):
        raise ValueError(
            f"bad job: unit name {unit[:80]!r} is not a systemd unit name (letters, digits, "
            f": _ . \\ @ -, no '/', not starting with '-' or '.', at most {names.UNIT_MAX})"
        )
    if (body.command is None) == (body.service is None):
        raise ValueError("give exactly one of command or service")
    if body.command is not None and not body.command.strip():
        raise ValueError("the command is empty")
    if body.stdin is not None and (body.service is not None or body.wait > 0):
        raise ValueError(
            "stdin goes with a command that runs now: not with a service action or wait"
        )
    if body.stdin_stream and (body.service is not None or body.stdin is not None):
        raise ValueError("stdin_stream goes with a command: not with a service action or stdin")
    return JobSpec(
        target,
        body.command,
        body.service,
        body.timeout,
        int(body.output_cap),
        dict(body.env),
        body.cwd,
        body.wait,
        body.stdin,
        body.stdin_stream,
    )


class NoNodeMatches(ValueError):
    """A well-formed target no node can match."""


def checked_spec(body: JobBody) -> JobSpec:
    """``job_spec``, else 400 (404 ``no_nodes``) in the one error shape."""
    try:
        return job_spec(body)
    except NoNodeMatches as exc:
        raise ApiFailure(404, "no_nodes", str(exc)) from None
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
        q = read_query(request, JobsQuery)
        node_id = None
        if q.node is not msgspec.UNSET:
            row = self.api.registry.by_ref(q.node)
            if row is None:
                raise ApiFailure(404, "not_found", f"no node named {q.node!r}")
            node_id = row.id
        state = None if q.state is msgspec.UNSET else q.state
        before = None if q.before is msgspec.UNSET else q.before
        limit = q.limit
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
        output = read_query(request, JobQuery).output
        doc = await job_or_404(self.jobs, request.path_params["job_id"], output=output == "true")
        return JSONResponse(doc)

    async def cancel(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not await self.jobs.cancel(job_id):
            raise ApiFailure(404, "not_found", f"no job {job_id!r}")
        return JSONResponse(await job_or_404(self.jobs, job_id, output=False))

    async def audit(self, request: Request) -> Response:
        q = read_query(request, AuditQuery)
        now = self.api.clock()
        since = None if q.since is msgspec.UNSET else timespec.parse_api_time(q.since, now=now)
        rows = await self.api.db.read(
            self.jobs.store.audit,
            limit=q.limit,
            since=since,
            action=None if q.action is msgspec.UNSET else q.action,
            principal=None if q.principal is msgspec.UNSET else q.principal,
            target=None if q.target is msgspec.UNSET else q.target,
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
                            {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 128,
                                "pattern": r"^[!-~]+\Z",
                            },
                        ),
                    ),
                    auth=Access.OPERATE,
                    body=JOB_REQUEST,
                    max_body=MAX_JOB_BODY,
                    ok=201,
                    also=(200,),
                    result=JobDoc,
                ),
            ),
            (
                "GET",
                "/api/v1/jobs",
                self.list_jobs,
                Doc("Jobs, newest first", auth=Access.READ, query=JobsQuery, result=JobList),
            ),
            (
                "GET",
                "/api/v1/jobs/{job_id}",
                self.get,
                Doc(
                    "One job: per-node state, exit code, duration and output",
                    auth=Access.READ,
                    params=(jid,),
                    query=JobQuery,
                    result=JobDoc,
                ),
            ),
            (
                "POST",
                "/api/v1/jobs/{job_id}/cancel",
                self.cancel,
                Doc(
                    "Cancel what has not finished",
                    auth=Access.OPERATE,
                    params=(jid,),
                    result=JobDoc,
                ),
            ),
            (
                "GET",
                "/api/v1/audit",
                self.audit,
                Doc(
                    "Audit log of jobs and service actions, newest first",
                    auth=Access.READ,
                    query=AuditQuery,
                    result=list[AuditEntry],
                ),
            ),
        ]
