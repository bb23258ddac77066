"""REST routes for schedules (core/schedules.py): operate to change, read to list."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servermgr.common import selector
from servermgr.core import schedule_rules
from servermgr.core.api import Api, Handler
from servermgr.core.auth import Access, ApiFailure, principal_of, read_json
from servermgr.core.jobs_api import JOB_ONE_OF, MAX_JOB_BODY, JobBody, checked_spec
from servermgr.core.openapi import Doc, Param
from servermgr.core.schedule_rules import (
    MAX_CRON,
    MAX_EVERY,
    MIN_EVERY,
    NAME_PATTERN,
    ScheduleRuleError,
)
from servermgr.core.schedules import Schedule, ScheduleExistsError, ScheduleStore
from servermgr.core.storage import NodeRow

SCHEDULE_SCHEMA = {"type": "object"}


# Minute, hour, day of month, month, day of week: *, */step or numbers in range, in
# lists. Ranges (a-b), names and the like also work, but the pattern cannot say
# a <= b, so it states the subset that always works.
def _cron_field(value: str) -> str:
    item = rf"(?:\*(?:/[1-6])?|{value})"
    return rf"{item}(?:,{item}){{0,9}}"


_CRON = " ".join(
    _cron_field(v)
    for v in (
        r"[0-5]?[0-9]",
        r"(?:[01]?[0-9]|2[0-3])",
        r"(?:0?[1-9]|[12][0-9])",  # days 1-29: in every month, so the expression matches
        r"(?:0?[1-9]|1[0-2])",
        r"[0-6]",
    )
)
CRON_PATTERN = rf"^{_CRON}\Z"
_ZONES = sorted({"UTC"} | schedule_rules.available_zones())


class ScheduleBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[
        str, Meta(min_length=1, max_length=64, extra_json_schema={"pattern": NAME_PATTERN})
    ]
    # The job exactly as POST /api/v1/jobs takes it (without idempotency_key).
    job: Annotated[
        JobBody,
        Meta(
            extra_json_schema={
                **JOB_ONE_OF,
                "properties": {"idempotency_key": {"type": "null"}, "stdin": {"type": "null"}},
            }
        ),
    ]
    every: Annotated[float, Meta(ge=MIN_EVERY, le=MAX_EVERY)] | None = None
    cron: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=MAX_CRON,
                extra_json_schema={"pattern": CRON_PATTERN},
                description="five fields: minute hour day month weekday, e.g. '0 3 * * *'",
            ),
        ]
        | None
    ) = None
    tz: (
        Annotated[str, Meta(min_length=1, max_length=64, extra_json_schema={"enum": _ZONES})] | None
    ) = None
    paused: bool = False


def picks(schedule: Schedule, node: NodeRow) -> bool:
    """Whether the schedule's target picks ``node`` as it stands now (its labels today)."""
    try:
        target = selector.parse_target(schedule.job.target)
    except ValueError:
        return False
    return bool(selector.select(target, [node])[0])


# Exactly one of every and cron; a time zone only with cron. As if/then/else
# (not oneOf): client generators keep ScheduleBody one model.
SCHEDULE_REQUEST = Annotated[
    ScheduleBody,
    Meta(
        extra_json_schema={
            "if": {"required": ["every"], "properties": {"every": {"type": "number"}}},
            "then": {"properties": {"cron": {"type": "null"}, "tz": {"type": "null"}}},
            "else": {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
        }
    ),
]


class SchedulesApi:
    def __init__(self, api: Api, store: ScheduleStore) -> None:
        self.api = api
        self.store = store

    def _schedule_or_404(self, schedule: Schedule | None, name: str) -> Schedule:
        if schedule is None:
            raise ApiFailure(
                404, "not_found", f"no schedule named {name!r} (see: servermgr ctl schedule list)"
            )
        return schedule

    async def create(self, request: Request) -> Response:
        # A schedule's job is a job's body (its schema allows stdin's length, even
        # if a schedule refuses stdin): the same limit, so it is refused for that.
        body = await read_json(request, ScheduleBody, "schedule", max_body=MAX_JOB_BODY)
        now = self.api.clock()
        try:
            schedule_rules.check_name(body.name)
            when = schedule_rules.make_when(
                every=body.every, cron=body.cron, tz=body.tz, anchor=now
            )
        except ScheduleRuleError as exc:
            raise ApiFailure(400, "bad_request", str(exc)) from None
        if body.job.idempotency_key is not None:
            raise ApiFailure(400, "bad_request", "a schedule's job takes no idempotency_key")
        checked_spec(body.job)  # the job's own checks, now rather than at its first run
        schedule = Schedule(
            name=body.name,
            when=when,
            job=body.job,
            paused=body.paused,
            created=now,
            principal=principal_of(request).name,
            next_run=schedule_rules.next_due(when, now),
        )
        try:
            await self.api.db.write(self.store.add, schedule)
        except ScheduleExistsError as exc:
            raise ApiFailure(409, "name_taken", str(exc)) from None
        return JSONResponse(schedule.doc(), status_code=201)

    async def list_schedules(self, request: Request) -> Response:
        schedules = await self.api.db.read(self.store.all)
        ref = request.query_params.get("node")
        if ref is not None:
            node = self.api.registry.by_ref(ref)
            if node is None:
                raise ApiFailure(
                    404, "not_found", f"no node named {ref!r} (see: servermgr ctl nodes)"
                )
            schedules = [s for s in schedules if picks(s, node)]
        return JSONResponse([s.doc() for s in schedules])

    async def get_schedule(self, request: Request) -> Response:
        name = request.path_params["name"]
        found = await self.api.db.read(self.store.get, name)
        return JSONResponse(self._schedule_or_404(found, name).doc())

    async def remove(self, request: Request) -> Response:
        name = request.path_params["name"]
        who = principal_of(request).name
        removed = await self.api.db.write(
            self.store.remove, name, now=self.api.clock(), principal=who
        )
        return JSONResponse({"removed": self._schedule_or_404(removed, name).name})

    async def _set_paused(self, request: Request, paused: bool) -> Response:
        name = request.path_params["name"]
        who = principal_of(request).name
        found = await self.api.db.write(
            self.store.set_paused, name, paused, now=self.api.clock(), principal=who
        )
        return JSONResponse(self._schedule_or_404(found, name).doc())

    async def pause(self, request: Request) -> Response:
        return await self._set_paused(request, True)

    async def resume(self, request: Request) -> Response:
        return await self._set_paused(request, False)

    def routes(self) -> list[tuple[str, str, Handler, Doc]]:
        name = Param("name", "path", "schedule name")
        one = "/api/v1/schedules/{name}"
        return [
            (
                "POST",
                "/api/v1/schedules",
                self.create,
                Doc(
                    "Make a schedule: a job run every N seconds or at cron times",
                    auth=Access.OPERATE,
                    body=SCHEDULE_REQUEST,
                    max_body=MAX_JOB_BODY,
                    ok=201,
                    result=SCHEDULE_SCHEMA,
                ),
            ),
            (
                "GET",
                "/api/v1/schedules",
                self.list_schedules,
                Doc(
                    "Every schedule, by name",
                    auth=Access.READ,
                    params=(
                        Param(
                            "node",
                            "query",
                            "only schedules whose target picks this node now (name or id)",
                        ),
                    ),
                    result={"type": "array", "items": SCHEDULE_SCHEMA},
                ),
            ),
            (
                "GET",
                one,
                self.get_schedule,
                Doc("One schedule", auth=Access.READ, params=(name,), result=SCHEDULE_SCHEMA),
            ),
            (
                "DELETE",
                one,
                self.remove,
                Doc("Remove a schedule (its past jobs stay)", auth=Access.OPERATE, params=(name,)),
            ),
            (
                "POST",
                one + "/pause",
                self.pause,
                Doc(
                    "Pause a schedule: no runs until resumed",
                    auth=Access.OPERATE,
                    params=(name,),
                    result=SCHEDULE_SCHEMA,
                ),
            ),
            (
                "POST",
                one + "/resume",
                self.resume,
                Doc(
                    "Resume a schedule; runs missed while paused are skipped",
                    auth=Access.OPERATE,
                    params=(name,),
                    result=SCHEDULE_SCHEMA,
                ),
            ),
        ]
