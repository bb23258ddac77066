"""Retries never run a command twice: POST /jobs with an idempotency key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio

from servermgr.core.app import Core
from tests.support import StartCore, StartNode, api, core_config, finished, online, wait_for


async def post(core: Core, body: dict[str, object], key: str | None = None) -> tuple[int, dict]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    async with api(core) as client:
        resp = await client.post("/api/v1/jobs", json=body, headers=headers)
    return resp.status_code, resp.json() | {"_replayed": resp.headers.get("idempotent-replayed")}


async def jobs(core: Core) -> list[dict]:
    async with api(core) as client:
        listed: list[dict] = (await client.get("/api/v1/jobs")).json()["jobs"]
    return listed


async def test_the_same_key_and_body_is_the_same_job_and_runs_once(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    ran = tmp_path / "ran"
    body = {"target": "node-01", "command": f"echo once >> {ran}"}
    status, first = await post(core, body, key="retry-1")
    assert status == 201
    await finished(core, first["id"])
    # Retries: the header, and the body field, both say the same key.
    status, again = await post(core, body, key="retry-1")
    assert (status, again["id"], again["_replayed"]) == (200, first["id"], "true")
    status, field = await post(core, body | {"idempotency_key": "retry-1"})
    assert (status, field["id"]) == (200, first["id"])
    assert ran.read_text() == "once\n"
    assert [j["id"] for j in await jobs(core)] == [first["id"]]
    # A new key is a new job.
    status, other = await post(core, body, key="retry-2")
    assert status == 201
    assert other["id"] != first["id"]


async def test_a_key_reused_for_another_request_is_refused(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    status, _ = await post(core, {"target": "node-01", "command": "true"}, key="k")
    assert status == 201
    status, doc = await post(core, {"target": "node-01", "command": "rm -rf /tmp/x"}, key="k")
    assert status == 409
    assert doc["error"]["code"] == "idempotency_conflict"
    status, doc = await post(
        core, {"target": "node-01", "command": "true", "idempotency_key": "j"}, key="k"
    )
    assert status == 409
    assert doc["error"]["code"] == "idempotency_conflict"
    assert "differ" in doc["error"]["message"]
    status, doc = await post(core, {"target": "node-01", "command": "true"}, key="bad key\x7f")
    assert status == 400
    assert len(await jobs(core)) == 1


async def test_concurrent_submissions_with_one_key_make_one_job(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    answers: list[tuple[int, dict]] = []

    async def one() -> None:
        answers.append(await post(core, {"target": "node-01", "command": "true"}, key="burst"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert sorted(status for status, _ in answers) == [200, 200, 200, 200, 201]
    assert len({doc["id"] for _, doc in answers}) == 1
    assert len(await jobs(core)) == 1


async def test_keys_outlive_a_core_restart(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    first = await start_core()
    await start_node(first.core, "node-01")
    await wait_for(lambda: online(first.core, "node-01"))
    status, job = await post(first.core, {"target": "node-01", "command": "true"}, key="keep")
    assert status == 201
    await finished(first.core, job["id"])
    port = first.core.port
    first.stop.set()
    await first.done.wait()
    cfg = core_config(tmp_path)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, listen_port=port))
    second = (await start_core(cfg)).core
    status, again = await post(second, {"target": "node-01", "command": "true"}, key="keep")
    assert (status, again["id"]) == (200, job["id"])
