"""A Core with ``[storage] redis_url`` against a real redis-server: the keys and
channels docs/redis.md documents, and Redis down at start, killed and back."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from servermgr.common.events import CORE_STOPPED
from servermgr.core.app import Core
from servermgr.ctl.client import events_path
from servermgr.ctl.wsclient import connect
from tests.support import (
    RedisServer,
    StartCore,
    StartNode,
    api,
    core_config,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.redis


def redis_config(tmp_path: Path, url: str) -> Any:
    return core_config(tmp_path, extra=f'[storage]\nredis_url = "{url}"\n')


async def nodes(core: Core) -> dict[str, dict[str, Any]]:
    async with api(core) as client:
        resp = await client.get("/api/v1/nodes")
    assert resp.status_code == 200, resp.text
    listed: list[dict[str, Any]] = resp.json()
    return {n["name"]: n for n in listed}


async def run_job(core: Core, command: str) -> dict[str, Any]:
    """Submit to every node and wait until the job is done; its document."""
    async with api(core) as client:
        resp = await client.post("/api/v1/jobs", json={"target": "all", "command": command})
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]
        with trio.fail_after(30):
            while True:
                doc: dict[str, Any] = (await client.get(f"/api/v1/jobs/{job_id}")).json()
                if doc["state"] == "done":
                    return doc
                await trio.sleep(0.05)


async def test_status_keys_and_events_as_documented(
    start_core: StartCore, start_node: StartNode, redis_server: RedisServer, tmp_path: Path
) -> None:
    # An outside program subscribes with redis-cli, as docs/redis.md shows.
    cli = subprocess.Popen(  # noqa: ASYNC220 (read after the test, killed)
        ["redis-cli", "-p", str(redis_server.port), "subscribe", "servermgr:events:nodes"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        core = (await start_core(redis_config(tmp_path, redis_server.url))).core
        await start_node(core, "node-01")
        await wait_for(lambda: core.registry.by_ref("node-01") is not None)
        row = core.registry.by_ref("node-01")
        assert row is not None
        key = f"servermgr:status:{row.id}"
        await wait_for(lambda: key in redis_server.cli("--scan", "--pattern", "servermgr:*"))
        doc = json.loads(redis_server.cli("get", key))
        assert doc["online"] is True
        assert 0 < int(redis_server.cli("ttl", key)) <= 30
        await wait_for(lambda: (json.loads(redis_server.cli("get", key)).get("latest")) is not None)
    finally:
        cli.kill()
        out = cli.communicate(timeout=10)[0].decode()
    assert "node.online" in out
    assert "node-01" in out


async def test_core_starts_without_redis_and_uses_it_once_up(
    start_core: StartCore,
    start_node: StartNode,
    start_redis: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    core = (await start_core(redis_config(tmp_path, f"redis://127.0.0.1:{port}/0"))).core
    assert "is unreachable" in caplog.text  # one clear line; Core serves from memory
    await start_node(core, "node-01")
    await wait_for(lambda: core.registry.by_ref("node-01") is not None)

    async def is_online() -> bool:
        return (await nodes(core)).get("node-01", {}).get("status") == "online"

    with trio.fail_after(15):
        while not await is_online():  # noqa: ASYNC110
            await trio.sleep(0.05)
    doc = await run_job(core, "echo from-memory")
    assert doc["nodes"][0]["stdout"] == "from-memory\n"
    server = RedisServer(redis_exe(), tmp_path / "late-redis")
    server.port = port
    server.start()
    try:
        row = core.registry.by_ref("node-01")
        assert row is not None
        await wait_for(lambda: f"servermgr:status:{row.id}" in server.cli("keys", "*"), limit=30)
        assert "is back after" in caplog.text
    finally:
        server.kill()


def redis_exe() -> str:
    exe = shutil.which("redis-server")
    assert exe is not None
    return exe


async def test_redis_killed_mid_run_loses_no_sample_and_no_job(
    start_core: StartCore, start_node: StartNode, redis_server: RedisServer, tmp_path: Path
) -> None:
    core = (await start_core(redis_config(tmp_path, redis_server.url))).core
    await start_node(core, "node-01")
    await start_node(core, "node-02")
    await wait_for(lambda: len(redis_server.cli("keys", "servermgr:status:*").split()) == 2)
    redis_server.kill()
    stored = core.writer.samples
    results = [await run_job(core, f"echo run-{i}") for i in range(3)]
    assert [sorted(n["stdout"] for n in d["nodes"]) for d in results] == [
        [f"run-{i}\n", f"run-{i}\n"] for i in range(3)
    ]
    await wait_for(lambda: core.writer.samples > stored + 10)  # ingest goes on
    redis_server.start()  # empty: nothing was persisted
    keys = "servermgr:status:*"
    await wait_for(lambda: len(redis_server.cli("keys", keys).split()) == 2, limit=30)
    after = await run_job(core, "echo after")
    assert sorted(n["stdout"] for n in after["nodes"]) == ["after\n", "after\n"]


async def test_a_redis_that_does_not_answer_stalls_nothing(
    start_core: StartCore,
    start_node: StartNode,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = (await start_core(redis_config(tmp_path, redis_server.url))).core
    await start_node(core, "node-01")
    await wait_for(lambda: len(redis_server.cli("keys", "servermgr:status:*").split()) == 1)
    redis_server.pause()
    try:
        stored = core.writer.samples
        doc = await run_job(core, "echo still-here")
        assert doc["nodes"][0]["stdout"] == "still-here\n"
        await wait_for(lambda: core.writer.samples > stored + 10)
        await wait_for(lambda: "did not answer within" in caplog.text, limit=30)
    finally:
        redis_server.resume()
    await wait_for(lambda: "is back after" in caplog.text, limit=30)


async def test_two_cores_one_fleet_listing_and_exec_through_either(
    start_core: StartCore, start_node: StartNode, redis_server: RedisServer, tmp_path: Path
) -> None:
    a = (await start_core(redis_config(tmp_path, redis_server.url))).core
    b = (await start_core(redis_config(tmp_path, redis_server.url))).core
    await start_node(a, "node-a")
    await start_node(b, "node-b")

    async def listed(core: Core) -> set[str]:
        return {n for n, doc in (await nodes(core)).items() if doc["status"] == "online"}

    for core in (a, b):
        with trio.fail_after(30):
            while await listed(core) != {"node-a", "node-b"}:  # noqa: ASYNC110
                await trio.sleep(0.1)
    for core in (a, b):
        doc = await run_job(core, "echo hello")
        assert {n["node"]: n["stdout"] for n in doc["nodes"]} == {
            "node-a": "hello\n",
            "node-b": "hello\n",
        }


async def test_the_live_stream_of_either_core_follows_the_whole_fleet(
    start_core: StartCore, start_node: StartNode, redis_server: RedisServer, tmp_path: Path
) -> None:
    """What ``ctl top`` reads through Core B shows and follows a node connected to A."""
    a = (await start_core(redis_config(tmp_path, redis_server.url))).core
    b = (await start_core(redis_config(tmp_path, redis_server.url))).core
    await start_node(a, "node-a")
    await start_node(b, "node-b")

    async def both_online() -> bool:
        return {n: d["status"] for n, d in (await nodes(b)).items()} == {
            "node-a": "online",
            "node-b": "online",
        }

    await wait_for(both_online, limit=30)
    with trio.fail_after(30):
        async with connect(b.url, events_path(history=60, interval=1), b.key.value) as ws:
            snapshot = json.loads(await ws.get_message())
            assert snapshot["type"] == "snapshot"
            assert {n["name"]: n["status"] for n in snapshot["nodes"]} == {
                "node-a": "online",
                "node-b": "online",
            }
            beats: dict[str, dict[str, Any]] = {}
            while "node-a" not in beats or "node-b" not in beats:
                msg = json.loads(await ws.get_message())
                if msg["type"] == "heartbeats":
                    beats.update({n["name"]: n for n in msg["nodes"]})
            assert beats["node-a"]["status"] == "online"
            assert beats["node-a"]["cpu_percent"] is not None


async def stream_to_done(core: Core, job_id: str) -> dict[str, dict[str, Any]]:
    """Read the job's NDJSON stream, as ctl exec does, to its end: each node's
    final state and output."""
    out: dict[str, dict[str, Any]] = {}
    seen: list[str] = []
    async with api(core) as client:
        async with client.stream("GET", f"/api/v1/jobs/{job_id}/stream", timeout=60) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                event = json.loads(line)
                node = out.setdefault(event.get("node", ""), {"stdout": ""})
                if event["type"] == "job.output":
                    node["stdout"] += base64.b64decode(event["data"]).decode()
                elif event["type"] == "job.state":
                    node["state"] = event["state"]
                seen.append(event["type"])
    assert seen[-1] == "job.done"  # the stream ends after it
    out.pop("", None)
    return out


async def test_jobs_through_both_cores_during_a_redis_outage_reach_every_node(
    start_core: StartCore, start_node: StartNode, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Submitted through either Core while Redis is down (--wait): the other Core's
    node runs its part when Redis is back, and each caller's stream gets every result."""
    a = (await start_core(redis_config(tmp_path, redis_server.url))).core
    b = (await start_core(redis_config(tmp_path, redis_server.url))).core
    await start_node(a, "node-a")
    await start_node(b, "node-b")
    both = {"node-a": "online", "node-b": "online"}

    async def whole_fleet() -> bool:
        return all([{n: d["status"] for n, d in (await nodes(c)).items()} == both for c in (a, b)])

    await wait_for(whole_fleet, limit=30)
    redis_server.kill()
    jobs = []
    for core in (a, b):
        async with api(core) as client:
            body = {"target": "all", "command": "echo during", "wait": 60}
            resp = await client.post("/api/v1/jobs", json=body)
            assert resp.status_code == 201, resp.text
            jobs.append((core, resp.json()["id"]))
    async with api(a) as client:  # without --wait: refused at once, saying why
        resp = await client.post("/api/v1/jobs", json={"target": "node-b", "command": "true"})
        assert resp.status_code == 201, resp.text
        doc = (await client.get(f"/api/v1/jobs/{resp.json()['id']}")).json()
    assert doc["nodes"][0]["state"] == "expired"
    assert "Redis, through which the other Cores are reached, is down" in doc["nodes"][0]["error"]
    redis_server.start()  # empty: nothing was persisted
    for core, job_id in jobs:
        with trio.fail_after(45):
            got = await stream_to_done(core, job_id)
        assert got == {
            "node-a": {"state": "succeeded", "stdout": "during\n"},
            "node-b": {"state": "succeeded", "stdout": "during\n"},
        }


async def test_a_dead_cores_whole_fleet_going_offline_at_once_does_not_stop_core(
    start_core: StartCore, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Another Core taken for dead: its thousands of nodes go offline here at
    # once; the follower of those events overflowed at 1,024 and stopped Core.
    core = (await start_core(redis_config(tmp_path, redis_server.url))).core
    for i in range(3000):
        core.bus.publish(
            {
                "type": "node.offline",
                "node_id": f"n{i}",
                "name": None,
                "ts": 1.0,
                "reason": CORE_STOPPED,
            }
        )
    await trio.sleep(0.5)
    assert (await nodes(core)) == {}  # Core still answers
