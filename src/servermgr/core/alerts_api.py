"""REST routes for alerts: what fires, the history, rules, silences, deliveries.

Looking needs the read role; adding or removing rules and silences needs
operate (the on-call's everyday actions, like running a job). Rules from
the config file are listed but cannot be removed through the API.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servermgr.common import timespec
from servermgr.common.alertrule import MAX_RULES, RULE_REQUEST, RuleDoc, RuleRequest, check_rule
from servermgr.core import alertstore
from servermgr.core.alerts import AlertEngine
from servermgr.core.alertstate import State
from servermgr.core.api import Api, Handler
from servermgr.core.auth import (
    MAX_LONG_BODY,
    Access,
    ApiFailure,
    principal_of,
    read_json,
    read_query,
    readable,
)
from servermgr.core.openapi import Doc, Param

MAX_SILENCE = 90 * 86400.0
MAX_SILENCES = 10000


class RangeQuery(msgspec.Struct):
    """``GET /api/v1/alerts/history`` and ``/deliveries``."""

    since: Annotated[
        str,
        Meta(
            pattern=timespec.TIME_PATTERN,
            description="from: a duration ago (10m, 1h, 7d) or unix seconds",
        ),
    ] = "7d"
    limit: Annotated[
        int, Meta(ge=1, le=alertstore.MAX_LISTED, description="at most this many, the newest")
    ] = 200


SILENCE_ID_MAX = 2**53
_SILENCE_ID = re.compile(r"[0-9]{1,16}")


class SilenceBody(msgspec.Struct, forbid_unknown_fields=True, rename={"hold": "for"}):
    target: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=300,
            description="a node (name or id) or a rule; node:X or rule:X when both exist",
        ),
    ]
    hold: Annotated[
        Annotated[float, Meta(gt=0, le=MAX_SILENCE)]
        | Annotated[str, Meta(pattern=timespec.duration_pattern(MAX_SILENCE, low="positive"))],
        Meta(description="for how long: seconds, or 30m, 1h, 7d (above 0, at most 90d)"),
    ] = 3600.0


def _seconds(value: float | str, what: str, high: float) -> float:
    try:
        seconds = timespec.parse_duration(value) if isinstance(value, str) else float(value)
    except ValueError as exc:
        raise ApiFailure(400, "bad_request", f"bad {what}: {exc}") from None
    if not 0 < seconds <= high:
        raise ApiFailure(
            400, "bad_request", f"bad {what}: must be above 0 and at most {high / 86400:g} days"
        )
    return seconds


class AlertsApi:
    def __init__(self, api: Api, engine: AlertEngine) -> None:
        self.api = api
        self.engine = engine

    # --- looking ----------------------------------------------------------

    def _name(self, node_id: str) -> str:
        row = self.api.registry.by_id(node_id)
        return row.name if row is not None else node_id

    async def list_alerts(self, request: Request) -> Response:
        now = self.api.clock()
        out: list[dict[str, Any]] = []
        for a in sorted(
            self.engine.active(), key=lambda a: (a.key.rule, self._name(a.key.node_id))
        ):
            if a.state == State.RESOLVED:
                continue  # only waiting to tell receivers
            out.append(
                {
                    "rule": a.key.rule,
                    "node": self._name(a.key.node_id),
                    "node_id": a.key.node_id,
                    "subject": a.key.subject,
                    "state": a.state.value,
                    "since": a.since,
                    "started": a.started,
                    "value": a.value,
                    "silenced": self.engine.muted(a.key.rule, a.key.node_id, now),
                }
            )
        return JSONResponse(out)

    def _range(self, request: Request) -> tuple[float, int]:
        q = read_query(request, RangeQuery)
        return timespec.parse_api_time(q.since, now=self.api.clock()), q.limit

    async def history(self, request: Request) -> Response:
        since, limit = self._range(request)
        rows = await self.api.db.read(alertstore.history, self.api.db.storage, since, limit)
        return JSONResponse(rows)

    async def deliveries(self, request: Request) -> Response:
        since, limit = self._range(request)
        rows = await self.api.db.read(alertstore.deliveries, self.api.db.storage, since, limit)
        return JSONResponse(rows)

    async def list_rules(self, request: Request) -> Response:
        return JSONResponse(
            [r.doc() for r in sorted(self.engine.rules.values(), key=lambda r: r.name)]
        )

    async def list_silences(self, request: Request) -> Response:
        now = self.api.clock()
        return JSONResponse([s.doc() for s in self.engine.silences if s.until > now])

    # --- changing ---------------------------------------------------------

    async def add_rule(self, request: Request) -> Response:
        doc = await read_json(request, RuleDoc, "rule", max_body=MAX_LONG_BODY)
        try:
            # What the document states (RuleRequest): stricter than RuleDoc, which
            # also reads the config file and rules stored by older versions.
            msgspec.json.decode(msgspec.json.encode(doc), type=RuleRequest)
        except msgspec.ValidationError as exc:
            try:
                check_rule(doc)  # its message says what is wrong, when it knows
            except ValueError as why:
                raise ApiFailure(400, "bad_request", f"bad rule: {why}") from None
            raise ApiFailure(400, "bad_request", f"bad rule: {readable(exc)}") from None
        try:
            rule = check_rule(doc)
        except ValueError as exc:
            # The schema allows only what check_rule takes, but for labels given two
            # values: well formed, but no node can match (as a job's target: 404).
            raise ApiFailure(404, "no_nodes", f"no node can match this rule: {exc}") from None
        for name in rule.notify or ():
            if name not in self.engine.notifier.receivers:
                raise ApiFailure(404, "not_found", f"no receiver named {name!r} in Core's config")
        if rule.name in self.engine.rules:
            raise ApiFailure(409, "exists", f"a rule named {rule.name!r} exists already")
        if len(self.engine.rules) >= MAX_RULES:
            raise ApiFailure(409, "too_many", f"Core holds {MAX_RULES} rules already")
        by = principal_of(request).name
        if not await self.api.db.write(
            alertstore.add_rule, self.api.db.storage, doc, self.api.clock(), by
        ):
            raise ApiFailure(409, "exists", f"a rule named {rule.name!r} exists already")
        self.engine.add_rule(rule)
        return JSONResponse(rule.doc(), status_code=201)

    async def remove_rule(self, request: Request) -> Response:
        name = request.path_params["name"]
        rule = self.engine.rules.get(name)
        if rule is None:
            raise ApiFailure(
                404, "not_found", f"no rule named {name!r} (see: servermgr ctl alert list)"
            )
        if rule.source == "config":
            raise ApiFailure(
                409, "in_config", f"rule {name!r} is defined in Core's config file: remove it there"
            )
        await self.api.db.write(alertstore.remove_rule, self.api.db.storage, name)
        self.engine.remove_rule(name)
        return JSONResponse({"removed": name})

    async def add_silence(self, request: Request) -> Response:
        body = await read_json(request, SilenceBody, "silence")
        hold = _seconds(body.hold, "for", MAX_SILENCE)
        scope, sep, ref = body.target.partition(":")
        if not sep or scope not in ("node", "rule"):
            scope, ref = "", body.target
        node = self.api.registry.by_ref(ref) if scope in ("", "node") else None
        rule = ref in self.engine.rules if scope in ("", "rule") else False
        if node is not None and rule:
            raise ApiFailure(
                409, "ambiguous", f"{ref!r} names a node and a rule: say node:{ref} or rule:{ref}"
            )
        if node is None and not rule:
            raise ApiFailure(404, "not_found", f"no node or rule named {ref!r}")
        if len(self.engine.silences) >= MAX_SILENCES:
            raise ApiFailure(409, "too_many", f"{MAX_SILENCES} silences are active already")
        now = self.api.clock()
        silence = await self.api.db.write(
            alertstore.add_silence,
            self.api.db.storage,
            "node" if node is not None else "rule",
            node.id if node is not None else ref,
            node.name if node is not None else ref,
            now + hold,
            now,
            principal_of(request).name,
        )
        self.engine.set_silences([*self.engine.silences, silence])
        return JSONResponse(silence.doc(), status_code=201)

    async def remove_silence(self, request: Request) -> Response:
        text = request.path_params["id"]
        if not _SILENCE_ID.fullmatch(text) or int(text) > SILENCE_ID_MAX:
            raise ApiFailure(
                400, "bad_request", f"a silence id is a number (0 to {SILENCE_ID_MAX})"
            )
        silence_id = int(text)
        if not await self.api.db.write(alertstore.remove_silence, self.api.db.storage, silence_id):
            raise ApiFailure(404, "not_found", f"no silence {silence_id}")
        self.engine.set_silences([s for s in self.engine.silences if s.id != silence_id])
        return JSONResponse({"removed": silence_id})

    # --- table ------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler, Doc]]:
        rows = {"type": "array", "items": {"type": "object"}}
        return [
            (
                "GET",
                "/api/v1/alerts",
                self.list_alerts,
                Doc("Alerts pending or firing now", auth=Access.READ, result=rows),
            ),
            (
                "GET",
                "/api/v1/alerts/history",
                self.history,
                Doc(
                    "Alert transitions (pending, firing, resolved, cleared)",
                    auth=Access.READ,
                    query=RangeQuery,
                    result=rows,
                ),
            ),
            (
                "GET",
                "/api/v1/alerts/deliveries",
                self.deliveries,
                Doc(
                    "Notification attempts and their outcomes",
                    auth=Access.READ,
                    query=RangeQuery,
                    result=rows,
                ),
            ),
            (
                "GET",
                "/api/v1/alerts/rules",
                self.list_rules,
                Doc("Alert rules (config and API)", auth=Access.READ, result=rows),
            ),
            (
                "POST",
                "/api/v1/alerts/rules",
                self.add_rule,
                Doc(
                    "Add an alert rule",
                    auth=Access.OPERATE,
                    body=RULE_REQUEST,
                    ok=201,
                    max_body=MAX_LONG_BODY,
                ),
            ),
            (
                "DELETE",
                "/api/v1/alerts/rules/{name}",
                self.remove_rule,
                Doc(
                    "Remove an alert rule made through the API",
                    auth=Access.OPERATE,
                    params=(Param("name", "path", "rule name", required=True),),
                ),
            ),
            (
                "GET",
                "/api/v1/alerts/silences",
                self.list_silences,
                Doc("Active silences", auth=Access.READ, result=rows),
            ),
            (
                "POST",
                "/api/v1/alerts/silences",
                self.add_silence,
                Doc(
                    "Silence a node's or a rule's notifications for a while",
                    auth=Access.OPERATE,
                    body=SilenceBody,
                    ok=201,
                ),
            ),
            (
                "DELETE",
                "/api/v1/alerts/silences/{id}",
                self.remove_silence,
                Doc(
                    "End a silence",
                    auth=Access.OPERATE,
                    params=(
                        Param(
                            "id",
                            "path",
                            "silence id",
                            {"type": "integer", "minimum": 0, "maximum": SILENCE_ID_MAX},
                            required=True,
                        ),
                    ),
                ),
            ),
        ]
