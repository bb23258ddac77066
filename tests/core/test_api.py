"""Core's REST API in-process: the one error shape, limits, OpenAPI, node routes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import trio
from starlette.routing import Route, WebSocketRoute

from servermgr.common import proto
from servermgr.common.errors import NodeRemovedError
from servermgr.core import api as api_mod
from servermgr.core import auth
from servermgr.core.app import Core
from tests.support import StartNode, make_sample, online, wait_for

TIME_CAP = 20.0
PUBLIC = {"/healthz", "/openapi.json", "/", "/web/{name}"}


@pytest.fixture(autouse=True)
def time_cap(nursery: trio.Nursery) -> None:
    """Every test here has an absolute cap (the nursery is cancelled when the test ends)."""

    async def watchdog() -> None:
        await trio.sleep(TIME_CAP)
        raise TimeoutError(f"test took over {TIME_CAP:g} s")

    nursery.start_soon(watchdog)


@pytest.fixture
async def anon(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=core.url, trust_env=False, timeout=5) as client:
        yield client


@pytest.fixture
async def api(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {core.key.value}"}
    async with httpx.AsyncClient(
        base_url=core.url, headers=headers, trust_env=False, timeout=5
    ) as client:
        yield client


def assert_error(resp: httpx.Response, status: int, code: str) -> str:
    """The one error shape, exactly: ``{"error": {"code": ..., "message": ...}}``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"code", "message"}
    assert doc["error"]["code"] == code
    message = doc["error"]["message"]
    assert isinstance(message, str)
    assert message.strip()
    return message


async def register(api: httpx.AsyncClient, name: str, **labels: str) -> dict[str, Any]:
    resp = await api.post("/api/v1/register", json={"hostname": name, "labels": labels})
    assert resp.status_code == 201, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


async def store_samples(core: Core, name: str, stamps: list[float]) -> None:
    """Samples straight into SQLite, as the writer stores a heartbeat's."""
    row = core.registry.by_ref(name)
    assert row is not None
    rows = [
        (
            row.seq,
            make_sample(
                ts,
                cpu_percent=float(i),
                mem_percent=40.0,
                disks=[proto.DiskUsage(mount="/", fstype="ext4", total=100, used=25, percent=25.0)],
            ),
        )
        for i, ts in enumerate(stamps)
    ]
    await core.db.write(core.db.storage.write_batch, rows, {})


# --- the one error shape ------------------------------------------------------


async def test_unknown_node_unknown_route_and_wrong_method_share_the_error_shape(
    api: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    for path in ("/api/v1/nodes/nope", "/api/v1/nodes/nope/metrics"):
        message = assert_error(await api.get(path), 404, "not_found")
        assert "'nope'" in message
    assert_error(await api.delete("/api/v1/nodes/nope"), 404, "not_found")
    for path in ("/nope", "/api/v1/nope", "/api/v2/nodes"):
        assert_error(await anon.get(path), 404, "not_found")
        assert_error(await api.get(path), 404, "not_found")

    resp = await api.put("/api/v1/nodes")
    message = assert_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["allow"]
    assert "PUT" in message
    resp = await api.post("/api/v1/nodes/nope")
    assert_error(resp, 405, "method_not_allowed")
    assert {"GET", "DELETE"} <= {m.strip() for m in resp.headers["allow"].split(",")}
    assert_error(await api.get("/api/v1/register"), 405, "method_not_allowed")


async def test_register_body_over_64_kib_is_413(api: httpx.AsyncClient) -> None:
    big = b'{"hostname": "node-01", "labels": {"a": "' + b"x" * auth.MAX_BODY + b'"}}'
    # Repeated: a 413 sent while the client still writes used to be lost to a
    # connection reset about one time in six.
    for _ in range(12):
        resp = await api.post(
            "/api/v1/register", content=big, headers={"content-type": "application/json"}
        )
        assert_error(resp, 413, "too_large")
    just_right = b'{"hostname": "node-01", "labels": {"a": "' + b"x" * 200 + b'"}}'
    assert len(just_right) < auth.MAX_BODY
    # A body under the limit goes through.
    resp = await api.post(
        "/api/v1/register", content=just_right, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 201, resp.text
    await api.delete("/api/v1/nodes/node-01")

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit holds while reading the stream.
        for _ in range(20):
            yield b" " * 8192

    resp = await api.post("/api/v1/register", content=chunks())
    assert_error(resp, 413, "too_large")
    assert (await api.get("/api/v1/nodes")).json() == []


async def test_request_heads_are_bounded(api: httpx.AsyncClient) -> None:
    resp = await api.get("/api/v1/nodes", headers={"x-big": "x" * 128 * 1024})
    assert resp.status_code in (400, 413, 414, 431)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"labels": {}}',
        b'{"hostname": ""}',
        b'{"hostname": 7}',
        b'{"hostname": "two words"}',
        b'{"hostname": "-dash-first"}',
        b'{"hostname": "../../etc"}',
        b'{"hostname": "ok", "extra": 1}',
        b'{"hostname": "ok", "labels": {"bad key": "v"}}',
        b'{"hostname": "ok", "labels": {"k": 1}}',
    ],
)
async def test_bad_registration_is_400(api: httpx.AsyncClient, body: bytes) -> None:
    resp = await api.post(
        "/api/v1/register", content=body, headers={"content-type": "application/json"}
    )
    assert_error(resp, 400, "bad_request")
    assert (await api.get("/api/v1/nodes")).json() == []


@pytest.mark.parametrize(
    "query",
    [
        {"since": "bogus"},
        {"since": "-5"},
        {"since": "1e20"},
        {"until": "yesterday"},
        {"since": "9" * 400 + "d"},
        {"until": "9" * 400 + "s"},
        {"limit": "0"},
        {"limit": "abc"},
        {"limit": "²"},
        {"limit": "9" * 5000},
        {"limit": str(api_mod.MAX_POINTS + 1)},
        {"since": " 1h"},
        {"since": "1h\n"},
        {"step": "2m"},
    ],
)
async def test_bad_metrics_range_is_400(api: httpx.AsyncClient, query: dict[str, str]) -> None:
    await register(api, "node-01")
    resp = await api.get("/api/v1/nodes/node-01/metrics", params=query)
    message = assert_error(resp, 400, "bad_request")
    assert any(f"'{v}'" in message or k in message for k, v in query.items()), message


async def test_a_range_that_ends_before_it_starts_has_no_samples(api: httpx.AsyncClient) -> None:
    """Both times are valid (the schema says so), so it is an empty range, not an error."""
    await register(api, "node-01")
    resp = await api.get("/api/v1/nodes/node-01/metrics", params={"since": "1h", "until": "2h"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["samples"] == []


async def test_taken_name_is_409_and_says_how_to_free_it(api: httpx.AsyncClient) -> None:
    first = await register(api, "node-01")
    resp = await api.post("/api/v1/register", json={"hostname": "node-01"})
    message = assert_error(resp, 409, "name_taken")
    assert "servermgr ctl node remove node-01" in message
    nodes = (await api.get("/api/v1/nodes")).json()
    assert [n["id"] for n in nodes] == [first["node_id"]]


async def test_the_node_list_takes_a_target_with_the_job_apis_rules(
    api: httpx.AsyncClient,
) -> None:
    for name, role, env in (
        ("web-1", "web", "prod"),
        ("web-2", "web", "dev"),
        ("db-1", "db", "prod"),
    ):
        await register(api, name, role=role, env=env)

    async def names(target: str) -> list[str]:
        resp = await api.get("/api/v1/nodes", params={"target": target})
        assert resp.status_code == 200, resp.text
        return [n["name"] for n in resp.json()]

    assert await names("web-*") == ["web-1", "web-2"]
    assert await names("role=web,env!=dev") == ["web-1"]
    assert await names("db-1,web-2") == ["db-1", "web-2"]
    assert await names("all") == ["db-1", "web-1", "web-2"]
    assert_error(await api.get("/api/v1/nodes", params={"target": "a,role=x"}), 400, "bad_request")
    assert_error(await api.get("/api/v1/nodes", params={"target": "nope"}), 404, "not_found")


# --- OpenAPI ------------------------------------------------------------------


def _refs(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _refs(value)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict)
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


async def test_openapi_describes_every_route_and_its_refs_resolve(
    core: Core, anon: httpx.AsyncClient
) -> None:
    resp = await anon.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    websockets = {r.path for r in core.app.routes if isinstance(r, WebSocketRoute)}
    for route in core.app.routes:
        if isinstance(route, WebSocketRoute):
            ws = paths.get(route.path, {})
            assert ws.get("x-websocket", {}).get("messages"), f"WebSocket {route.path} undocumented"
            assert ws["x-websocket"]["plain_get"]["status"] == 426
            continue
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD" and route.path not in websockets:
                assert method.lower() in paths.get(route.path, {}), (
                    f"{method} {route.path} is missing from /openapi.json"
                )
    for path, ops in paths.items():
        for method, op in ops.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue  # summary, description, x-websocket
            public = path in PUBLIC
            assert (op.get("security") == []) == public, f"{method} {path} auth is wrong"
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"\{([^}]+)\}", path)), f"{method} {path} params"

    refs = set(_refs(doc))
    assert "#/components/schemas/NodeStatus" in refs
    assert "#/components/schemas/NodeDetail" in refs
    assert "#/components/schemas/Error" in refs
    for ref in refs:
        assert isinstance(_resolve(doc, ref), dict)
    assert "$defs" not in resp.text


async def test_node_answers_are_documented_by_the_records_they_encode(
    core: Core, api: httpx.AsyncClient
) -> None:
    await register(api, "node-01")
    doc = (await api.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]

    def ok(method: str, path: str) -> dict[str, Any]:
        op = doc["paths"][path][method]
        code = next(c for c in op["responses"] if c.startswith("2"))
        schema: dict[str, Any] = op["responses"][code]["content"]["application/json"]["schema"]
        return schema

    assert ok("get", "/api/v1/nodes")["items"] == {"$ref": "#/components/schemas/NodeStatus"}
    assert ok("patch", "/api/v1/nodes/{ref}") == {"$ref": "#/components/schemas/NodeStatus"}
    assert ok("get", "/api/v1/nodes/{ref}") == {"$ref": "#/components/schemas/NodeDetail"}
    (node,) = (await api.get("/api/v1/nodes")).json()
    assert set(node) == set(schemas["NodeStatus"]["properties"])
    assert set(schemas["NodeStatus"]["required"]) <= set(node)
    detail = (await api.get("/api/v1/nodes/node-01")).json()
    assert set(detail) == set(schemas["NodeDetail"]["properties"])


# --- nodes and metrics --------------------------------------------------------


async def test_list_and_show_a_live_node(
    core: Core, api: httpx.AsyncClient, start_node: StartNode
) -> None:
    idle = await register(api, "idle")
    await start_node(core, "node-01", role="web")

    async def live() -> dict[str, Any]:
        while True:
            for n in (await api.get("/api/v1/nodes")).json():
                if n["name"] == "node-01" and n["cpu_percent"] is not None:
                    return dict(n)
            await trio.sleep(0.05)

    with trio.fail_after(5):
        node = await live()
    assert node["status"] == "online"
    assert node["labels"] == {"role": "web"}
    assert 0 <= node["cpu_percent"] <= 100
    assert 0 <= node["mem_percent"] <= 100
    assert node["last_seen"] >= node["first_seen"]
    assert node["connected_at"] is not None

    nodes = (await api.get("/api/v1/nodes")).json()
    assert [n["name"] for n in nodes] == ["idle", "node-01"]
    assert nodes[0]["status"] == "offline"
    assert nodes[0]["id"] == idle["node_id"]
    assert nodes[0]["cpu_percent"] is None
    assert nodes[0]["last_seen"] is None

    by_name = (await api.get("/api/v1/nodes/node-01")).json()
    by_id = (await api.get(f"/api/v1/nodes/{node['id']}")).json()
    assert by_name["id"] == by_id["id"] == node["id"]
    assert by_name["info"]["cpu_count"] >= 1
    assert by_name["latest"]["ts"] > 0
    assert isinstance(by_name["latest"]["disks"], list)
    idle_doc = (await api.get("/api/v1/nodes/idle")).json()
    assert idle_doc["info"] is None
    assert idle_doc["latest"] is None


async def test_metrics_range_and_limit(core: Core, api: httpx.AsyncClient) -> None:
    await register(api, "node-01")
    now = time.time()
    stamps = [now - 7200, now - 3000, now - 1800, now - 600, now - 60]
    await store_samples(core, "node-01", stamps)

    doc = (await api.get("/api/v1/nodes/node-01/metrics")).json()  # default: last hour
    assert doc["name"] == "node-01"
    assert [s["ts"] for s in doc["samples"]] == stamps[1:]
    first = doc["samples"][0]
    assert {"ts", "cpu_percent", "mem_percent", "load1", "disk_percent", "net_rx_bps"} <= set(first)
    assert first["mem_percent"] == 40.0
    assert first["disk_percent"] == 25.0

    got = (await api.get("/api/v1/nodes/node-01/metrics", params={"since": "3h"})).json()
    assert [s["ts"] for s in got["samples"]] == stamps
    got = (await api.get("/api/v1/nodes/node-01/metrics", params={"since": "20m"})).json()
    assert [s["ts"] for s in got["samples"]] == stamps[3:]
    absolute = {"since": str(now - 4000), "until": str(now - 1000)}
    got = (await api.get("/api/v1/nodes/node-01/metrics", params=absolute)).json()
    assert [s["ts"] for s in got["samples"]] == stamps[1:3]
    assert got["since"] == pytest.approx(now - 4000)
    assert got["until"] == pytest.approx(now - 1000)
    # The limit keeps the newest samples, still oldest first.
    got = (
        await api.get("/api/v1/nodes/node-01/metrics", params={"since": "5h", "limit": "2"})
    ).json()
    assert [s["ts"] for s in got["samples"]] == stamps[-2:]
    got = (await api.get("/api/v1/nodes/node-01/metrics", params={"since": "30s"})).json()
    assert got["samples"] == []


async def test_remove_frees_the_name_and_deletes_history(
    core: Core, api: httpx.AsyncClient
) -> None:
    old = await register(api, "node-01")
    other = await register(api, "node-02")
    now = time.time()
    await store_samples(core, "node-01", [now - 30, now - 20, now - 10])
    await store_samples(core, "node-02", [now - 30])
    row = core.registry.by_ref("node-01")
    assert row is not None
    seq = row.seq

    resp = await api.delete("/api/v1/nodes/node-01")
    assert resp.status_code == 200
    assert resp.json() == {"removed": old["node_id"], "name": "node-01"}
    assert_error(await api.get("/api/v1/nodes/node-01"), 404, "not_found")
    assert_error(await api.get(f"/api/v1/nodes/{old['node_id']}"), 404, "not_found")
    assert_error(await api.delete("/api/v1/nodes/node-01"), 404, "not_found")
    assert [n["name"] for n in (await api.get("/api/v1/nodes")).json()] == ["node-02"]
    assert await core.db.read(core.db.storage.count_metrics, seq) == 0

    new = await register(api, "node-01")
    assert new["node_id"] != old["node_id"]
    got = (await api.get("/api/v1/nodes/node-01/metrics", params={"since": "1h"})).json()
    assert got["samples"] == []
    kept = (await api.get("/api/v1/nodes/node-02/metrics")).json()
    assert len(kept["samples"]) == 1
    # Remove by id works too.
    resp = await api.delete(f"/api/v1/nodes/{other['node_id']}")
    assert resp.json()["name"] == "node-02"


async def test_removing_a_connected_node_disconnects_it_for_good(
    core: Core, api: httpx.AsyncClient, start_node: StartNode
) -> None:
    node = await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    first = core.registry.by_ref("node-01")
    assert first is not None
    resp = await api.delete("/api/v1/nodes/node-01")
    assert resp.status_code == 200
    # Its credential is revoked: the agent stops instead of registering again.
    with trio.fail_after(10):
        await node.done.wait()
    assert isinstance(node.error, NodeRemovedError)
    assert core.registry.by_ref("node-01") is None
    assert len(core.registry) == 0
    assert len(core.sessions) == 0


async def test_status_reports_nodes_and_how_old_samples_were_when_stored(
    core: Core, start_node: StartNode, api: httpx.AsyncClient
) -> None:
    from tests.support import wait_for

    await start_node(core, "node-01")
    await wait_for(lambda: core.writer.samples >= 3, limit=5)
    doc = (await api.get("/api/v1/status")).json()
    assert doc["nodes"] == {"known": 1, "online": 1}
    ingest = doc["ingest"]
    assert ingest["samples_stored"] >= 3
    age = ingest["sample_age_ms"]
    assert len(age["counts"]) == len(age["bounds"]) + 1
    assert sum(age["counts"]) >= 3
    # Stored within the writer's 50 ms linger plus a commit, far under a second here.
    assert age["p50"] is not None
    assert 1 <= age["p50"] < 1000
    assert doc["uptime"] >= 0


# --- every error in the one shape (issue #19) ----------------------------------------


async def test_json_bodies_must_say_they_are_json(api: httpx.AsyncClient) -> None:
    resp = await api.post(
        "/api/v1/register",
        content=b'{"hostname": "node-01"}',
        headers={"content-type": "text/plain"},
    )
    message = assert_error(resp, 415, "unsupported_media_type")
    assert "application/json" in message
    assert (await api.get("/api/v1/nodes")).json() == []


async def test_a_hostname_with_a_trailing_newline_is_refused(api: httpx.AsyncClient) -> None:
    resp = await api.post("/api/v1/register", json={"hostname": "abc\n"})
    assert_error(resp, 400, "bad_request")


async def test_an_oversized_body_is_413_naming_the_limit(api: httpx.AsyncClient) -> None:
    resp = await api.post("/api/v1/register", json={"hostname": "y" * 70_000})
    message = assert_error(resp, 413, "too_large")
    assert "65536 bytes" in message


async def test_a_trailing_slash_is_a_404_in_the_error_shape(api: httpx.AsyncClient) -> None:
    resp = await api.get("/api/v1/nodes/")
    message = assert_error(resp, 404, "not_found")
    assert "/api/v1/nodes/" in message


async def test_a_plain_get_to_a_websocket_is_426(
    api: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    for path in ("/api/v1/events", "/api/v1/jobs/x/ws"):
        resp = await api.get(path)
        message = assert_error(resp, 426, "upgrade_required")
        assert "WebSocket" in message
        assert resp.headers["upgrade"] == "websocket"
        assert_error(await anon.get(path), 401, "unauthorized")  # the credential is checked first


async def test_a_request_hypercorn_cannot_parse_gets_the_json_400(core: Core) -> None:
    """Raw non-ASCII bytes in the request target: refused before the app, still in the shape."""
    stream = await trio.open_tcp_stream("127.0.0.1", core.port)
    async with stream:
        await stream.send_all(b"GET /api/v1/nodes/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        with trio.fail_after(5):
            while True:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), data
    assert b"content-type: application/json" in head
    doc = json.loads(body)
    assert doc["error"]["code"] == "bad_request"
    assert "ASCII" in doc["error"]["message"]


async def test_the_document_is_valid_openapi(anon: httpx.AsyncClient) -> None:
    from openapi_spec_validator import validate

    validate((await anon.get("/openapi.json")).json())
