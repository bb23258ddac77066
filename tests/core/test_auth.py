"""The one authentication layer: every route against every kind of credential.

The route list below is written by hand on purpose: the walk fails when
Core serves a route that is not in it, so a new route cannot ship without
someone deciding who may use it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from starlette.routing import Route, WebSocketRoute
from trio_websocket import ConnectionRejected

from servermgr.common import addr
from servermgr.core.app import Core
from servermgr.core.auth import Access
from tests.support import (
    StartNode,
    finished,
    make_token,
    online,
    submit,
    wait_for,
    ws_handshake,
)

PUBLIC, READ, OPERATE, ENROLL, ADMIN, NODE = (
    Access.PUBLIC,
    Access.READ,
    Access.OPERATE,
    Access.ENROLL,
    Access.ADMIN,
    Access.NODE,
)

EXPECTED: dict[str, Access] = {
    "GET /healthz": PUBLIC,
    "GET /openapi.json": PUBLIC,
    "GET /": PUBLIC,
    "GET /web/{name}": PUBLIC,
    "GET /api/v1/whoami": READ,
    "POST /api/v1/register": ENROLL,
    "GET /api/v1/status": READ,
    "GET /metrics": READ,
    "GET /api/v1/nodes": READ,
    "GET /api/v1/nodes/{ref}": READ,
    "DELETE /api/v1/nodes/{ref}": ADMIN,
    "PATCH /api/v1/nodes/{ref}": ADMIN,
    "GET /api/v1/nodes/{ref}/metrics": READ,
    "POST /api/v1/jobs": OPERATE,
    "GET /api/v1/jobs": READ,
    "GET /api/v1/jobs/{job_id}": READ,
    "POST /api/v1/jobs/{job_id}/cancel": OPERATE,
    "GET /api/v1/jobs/{job_id}/stream": READ,
    "GET /api/v1/jobs/{job_id}/output/{node}/{stream}": READ,
    "GET /api/v1/audit": READ,
    "POST /api/v1/schedules": OPERATE,
    "GET /api/v1/schedules": READ,
    "GET /api/v1/schedules/{name}": READ,
    "DELETE /api/v1/schedules/{name}": OPERATE,
    "POST /api/v1/schedules/{name}/pause": OPERATE,
    "POST /api/v1/schedules/{name}/resume": OPERATE,
    "GET /api/v1/alerts": READ,
    "GET /api/v1/alerts/history": READ,
    "GET /api/v1/alerts/deliveries": READ,
    "GET /api/v1/alerts/rules": READ,
    "POST /api/v1/alerts/rules": OPERATE,
    "DELETE /api/v1/alerts/rules/{name}": OPERATE,
    "GET /api/v1/alerts/silences": READ,
    "POST /api/v1/alerts/silences": OPERATE,
    "DELETE /api/v1/alerts/silences/{id}": OPERATE,
    "WS /api/v1/node/ws": NODE,
    "WS /api/v1/events": READ,
    "WS /api/v1/files/ws": OPERATE,
    "WS /api/v1/shell/ws": OPERATE,
    "WS /api/v1/stdin/ws": OPERATE,
    "POST /api/v1/nodes/{ref}/upgrade": ADMIN,
    "WS /api/v1/jobs/{job_id}/ws": READ,
    # A plain GET to a WebSocket route: 426 upgrade_required once past the check.
    "GET /api/v1/node/ws": NODE,
    "GET /api/v1/events": READ,
    "GET /api/v1/jobs/{job_id}/ws": READ,
    "GET /api/v1/files/ws": OPERATE,
    "GET /api/v1/shell/ws": OPERATE,
    "GET /api/v1/stdin/ws": OPERATE,
}

# Who may use what, per kind of credential.
ALLOWED: dict[str, set[Access]] = {
    "none": {PUBLIC},
    "wrong": {PUBLIC},
    "enroll": {PUBLIC, ENROLL},
    "read": {PUBLIC, READ},
    "operate": {PUBLIC, READ, OPERATE},
    "admin": {PUBLIC, READ, OPERATE, ENROLL, ADMIN},
    "node": {PUBLIC, NODE},
}


def served_routes(core: Core) -> set[str]:
    out = set()
    for route in core.app.routes:
        if isinstance(route, WebSocketRoute):
            out.add(f"WS {route.path}")
        elif isinstance(route, Route):
            out |= {f"{m} {route.path}" for m in route.methods or () if m != "HEAD"}
    return out


@pytest.fixture
async def credentials(core: Core) -> dict[str, str | None]:
    admin = core.key.value
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=core.url, headers=headers, timeout=5) as client:
        resp = await client.post("/api/v1/register", json={"hostname": "node-01"})
    assert resp.status_code == 201, resp.text
    return {
        "none": None,
        "wrong": "0" * 64,
        "enroll": await make_token(core, "enrol-bot", "enroll"),
        "read": await make_token(core, "viewer", "read"),
        "operate": await make_token(core, "ci", "operate"),
        "admin": admin,
        "node": resp.json()["credential"],
    }


async def status_of(core: Core, route: str, credential: str | None) -> int:
    """What Core answers ``credential`` on ``route`` ("WS path" opens a WebSocket)."""
    method, template = route.split(" ", 1)
    path = re.sub(r"\{[^}]+\}", "nope", template)
    if method == "WS":
        headers = [(b"authorization", f"Bearer {credential}".encode())] if credential else []
        try:
            await ws_handshake(core, addr.ws_url(core.url, path), headers)
        except ConnectionRejected as exc:
            rejected = exc
        else:
            return 101
        assert rejected.body is not None
        assert set(json.loads(rejected.body)) == {"error"}
        return rejected.status_code
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    async with httpx.AsyncClient(base_url=core.url, timeout=5) as client:
        # An empty body: a request that gets past the check is refused as a bad one (400).
        resp = await client.request(method, path, headers=headers, json={})
    if resp.status_code in (401, 403):
        doc = resp.json()
        assert set(doc) == {"error"}
        assert set(doc["error"]) == {"code", "message"}
    return resp.status_code


async def test_every_route_against_every_credential(
    core: Core, credentials: dict[str, str | None]
) -> None:
    assert served_routes(core) == set(EXPECTED), "a route without a decided role"
    declared = {f"{m} {p}": d.auth for m, p, d in core.routes.docs()}
    wrong = []
    for route, needs in EXPECTED.items():
        key = route if not route.startswith("WS ") else "GET " + route[3:]
        assert declared[key] is needs, f"{route} declares {declared[key]}, expected {needs}"
        for who, credential in credentials.items():
            status = await status_of(core, route, credential)
            allowed = needs in ALLOWED[who]
            if allowed and status in (401, 403):
                wrong.append(f"{who} refused ({status}) on {route}")
            if not allowed:
                expected = 401 if who in ("none", "wrong") else 403
                if status != expected:
                    wrong.append(f"{who} got {status} on {route}, expected {expected}")
    assert not wrong, "\n".join(wrong)
    # The walk changed nothing: node-01 is still there.
    assert core.registry.by_ref("node-01") is not None


@pytest.fixture
async def admin(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {core.key.value}"}
    async with httpx.AsyncClient(base_url=core.url, headers=headers, timeout=5) as client:
        yield client


def as_(core: Core, token: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(base_url=core.url, headers=headers, timeout=5)


async def test_refusals_say_what_was_wrong(core: Core, credentials: dict[str, str | None]) -> None:
    async with as_(core, str(credentials["read"])) as viewer:
        resp = await viewer.post("/api/v1/jobs", json={"target": "all", "command": "id"})
    assert resp.status_code == 403
    assert resp.json()["error"] == {
        "code": "forbidden",
        "message": "token 'viewer' (role read) cannot use POST /api/v1/jobs: it needs role operate",
    }
    async with as_(core, str(credentials["node"])) as node:
        resp = await node.get("/api/v1/nodes")
    assert resp.status_code == 403
    assert "node credential" in resp.json()["error"]["message"]
    async with as_(core, "wrong") as anon:
        resp = await anon.get("/api/v1/nodes")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    for secret in credentials.values():
        assert secret is None or secret not in resp.text


async def test_revoked_and_expired_tokens_stop_working(
    core: Core, admin: httpx.AsyncClient
) -> None:
    from servermgr.core import tokens

    token = await make_token(core, "temp", "read")
    async with as_(core, token) as client:
        assert (await client.get("/api/v1/nodes")).status_code == 200
        assert await core.db.write(tokens.revoke, core.db.storage, "temp")
        await core.auth.refresh()
        resp = await client.get("/api/v1/nodes")
        assert resp.status_code == 401
    old = await make_token(core, "old", "read", expires=time.time() - 1)
    async with as_(core, old) as client:
        resp = await client.get("/api/v1/nodes")
    assert resp.status_code == 401
    assert "expired" in resp.json()["error"]["message"]


async def test_a_token_made_a_moment_ago_works_at_once(core: Core) -> None:
    """What ``servermgr key create`` writes works on the next request, no call into Core."""
    from servermgr.core import tokens

    _, token = await core.db.write(
        tokens.create, core.db.storage, "late", tokens.Role.READ, now=time.time(), expires=None
    )
    async with as_(core, token) as client:
        assert (await client.get("/api/v1/nodes")).status_code == 200
    # ... and its use is recorded, as ``key list`` shows it.
    await wait_for(lambda: _last_used(core) is not None)


def _last_used(core: Core) -> float | None:
    from servermgr.core import tokens

    (token,) = tokens.load(core.db.storage)
    return token.last_used


async def test_the_audit_names_the_token(
    core: Core, admin: httpx.AsyncClient, start_node: StartNode
) -> None:
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    token = await make_token(core, "deploy-bot", "operate")
    async with as_(core, token) as client:
        resp = await client.post("/api/v1/jobs", json={"target": "node-01", "command": "true"})
    assert resp.status_code == 201, resp.text
    await finished(core, resp.json()["id"])
    await finished(core, (await submit(core, target="node-01", command="true"))["id"])
    rows = (await admin.get("/api/v1/audit")).json()
    assert [r["principal"] for r in rows] == ["core-key", "deploy-bot"]


async def test_a_thousand_wrong_keys_crash_nothing(core: Core, admin: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=core.url, timeout=10) as anon:
        for i in range(1000):
            headers = {"Authorization": f"Bearer {i:064x}"}
            resp = await anon.get("/api/v1/nodes", headers=headers)
            assert resp.status_code in (401, 429)
    assert (await admin.get("/api/v1/nodes")).status_code == 200


async def test_a_rotated_key_replaces_the_old_one_and_nodes_keep_working(
    core: Core, start_node: StartNode
) -> None:
    from servermgr.common.keyfile import rotate_key

    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    old = core.key.value
    new = rotate_key(core.key.path).value
    assert new != old
    async with as_(core, new) as client:
        # Picked up by Core's own once-a-second pass, no call into it.
        with trio.fail_after(10):
            while (await client.get("/api/v1/nodes")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.05)
    async with as_(core, old) as client:
        assert (await client.get("/api/v1/nodes")).status_code == 401
    row = core.registry.by_ref("node-01")
    assert row is not None
    session = core.sessions[row.id]
    await trio.sleep(0.5)  # a few heartbeats: the node's session was not touched
    assert online(core, "node-01")
    assert core.sessions[row.id] is session


async def test_a_failing_database_does_not_stop_authentication(
    tmp_path: Path, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    from servermgr.common.keyfile import load_or_create_key
    from servermgr.core.auth import Authenticator
    from servermgr.core.registry import NodeRegistry
    from servermgr.core.storage import Storage
    from servermgr.core.writer import Database

    storage = Storage.open(tmp_path / "core.db")
    db = Database(storage)
    key = load_or_create_key(tmp_path / "core.key")
    auth = Authenticator(key, NodeRegistry(db, clock=time.time), db, clock=time.time)
    await auth.load()
    storage.close()  # every refresh now fails
    async with trio.open_nursery() as nursery:
        await nursery.start(auth.serve)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    said = [r for r in caplog.records if "cannot refresh API tokens" in r.getMessage()]
    assert len(said) == 1  # once, not every second
    assert auth.authenticate(f"Bearer {key.value}").role == "admin"


async def _closed(ws: object, limit: float = 10) -> None:
    """Read ``ws`` until Core closes it; fails after ``limit`` seconds."""
    from trio_websocket import ConnectionClosed, WebSocketConnection

    assert isinstance(ws, WebSocketConnection)
    with trio.fail_after(limit):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            return


async def test_revoking_a_token_or_rotating_the_key_ends_its_open_streams(core: Core) -> None:
    from servermgr.common.keyfile import rotate_key
    from servermgr.core import tokens
    from servermgr.ctl.wsclient import connect

    viewer = await make_token(core, "viewer", "read")
    other = await make_token(core, "other", "read")
    path = "/api/v1/events?types=node"
    async with (
        connect(core.url, path, viewer) as revoked,
        connect(core.url, path, other) as kept,
        connect(core.url, path, core.key.value) as by_key,
    ):
        for ws in (revoked, kept, by_key):
            with trio.fail_after(10):
                assert json.loads(await ws.get_message())["type"] == "snapshot"
        await core.db.write(tokens.revoke, core.db.storage, "viewer")
        await core.auth.refresh()
        await _closed(revoked)
        assert not kept.closed
        rotate_key(core.key.path)
        await _closed(by_key)  # Core's own once-a-second pass picks up the new key
        assert not kept.closed
    with pytest.raises(ConnectionRejected) as again:
        async with connect(core.url, path, viewer):
            pass
    assert again.value.status_code == 401
