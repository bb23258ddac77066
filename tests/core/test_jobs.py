"""Jobs end to end in one process: real Core, real agents, real child processes."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from servermgr.common.config import ExecConfig
from servermgr.core import jobs_api
from servermgr.core.app import Core
from tests.support import (
    StartNode,
    api,
    by_node,
    finished,
    job_doc,
    live_processes,
    node_config,
    online,
    submit,
    wait_for,
)


@pytest.fixture
async def fleet(core: Core, start_node: StartNode) -> Core:
    await start_node(core, "node-01", role="web")
    await start_node(core, "node-02", role="web")
    await start_node(core, "node-03", role="db")
    await wait_for(lambda: online(core, "node-01", "node-02", "node-03"))
    return core


async def test_output_and_exit_codes_propagate(fleet: Core) -> None:
    job = await submit(fleet, target="node-01", command="echo hi; echo err >&2; exit 3")
    done = await finished(fleet, job["id"])
    n = by_node(done)["node-01"]
    assert n["state"] == "failed"
    assert n["exit_code"] == 3, n
    assert base64.b64decode(n["stdout_b64"]) == b"hi\n"
    assert base64.b64decode(n["stderr_b64"]) == b"err\n"
    assert n["duration"] is not None
    assert n["duration"] >= 0


async def test_fan_out_by_label_and_to_all(fleet: Core) -> None:
    job = await submit(fleet, target="role=web", command="hostname")
    assert sorted(n["node"] for n in job["nodes"]) == ["node-01", "node-02"]
    done = await finished(fleet, job["id"])
    assert {n["state"] for n in done["nodes"]} == {"succeeded"}
    job = await submit(fleet, target="*", command='test "$(hostname)" != nothing')
    done = await finished(fleet, job["id"])
    assert len(done["nodes"]) == 3


async def test_binary_and_markup_output_unchanged(fleet: Core) -> None:
    job = await submit(fleet, target="node-02", command=r"printf '[bold]x\377\000y\n'")
    n = by_node(await finished(fleet, job["id"]))["node-02"]
    assert base64.b64decode(n["stdout_b64"]) == b"[bold]x\xff\x00y\n"


async def test_timeout_kills_the_process_group(fleet: Core) -> None:
    marker = "sleep 97.5"
    job = await submit(fleet, target="node-01", command=f"{marker}; echo never", timeout=1)
    n = by_node(await finished(fleet, job["id"]))["node-01"]
    assert n["state"] == "timed_out"
    assert b"never" not in base64.b64decode(n["stdout_b64"])
    await wait_for(lambda: not live_processes(marker), limit=5)


async def test_backgrounded_grandchild_does_not_hang_the_job(fleet: Core) -> None:
    job = await submit(fleet, target="node-01", command="sleep 96.5 & echo started")
    n = by_node(await finished(fleet, job["id"], limit=10))["node-01"]
    assert n["state"] == "succeeded"
    assert base64.b64decode(n["stdout_b64"]) == b"started\n"
    await wait_for(lambda: not live_processes("sleep 96.5"), limit=5)


async def test_cancel_a_running_job(fleet: Core) -> None:
    job = await submit(fleet, target="node-03", command="echo go; sleep 95.5")
    await wait_for(lambda: bool(live_processes("sleep 95.5")), limit=5)
    async with api(fleet) as client:
        resp = await client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 200
    n = by_node(await finished(fleet, job["id"]))["node-03"]
    assert n["state"] == "cancelled"
    assert base64.b64decode(n["stdout_b64"]) == b"go\n"
    await wait_for(lambda: not live_processes("sleep 95.5"), limit=5)


async def test_large_output_is_capped_and_flagged(fleet: Core) -> None:
    job = await submit(
        fleet, target="node-01", command="head -c 5242880 /dev/zero; echo e >&2", output_cap=1 << 20
    )
    n = by_node(await finished(fleet, job["id"], limit=30))["node-01"]
    assert n["state"] == "succeeded"
    assert n["stdout_bytes"] == 1 << 20
    assert n["stdout_truncated"] is True
    assert n["stderr_truncated"] is False
    assert base64.b64decode(n["stderr_b64"]) == b"e\n"


async def test_offline_node_fails_at_once_unless_the_job_waits(
    fleet: Core, start_node: StartNode, tmp_path: Path
) -> None:
    # node-04 registers, then goes away.
    node = await start_node(fleet, "node-04")
    await wait_for(lambda: online(fleet, "node-04"))
    node.kill()
    await wait_for(lambda: not online(fleet, "node-04"))

    job = await submit(fleet, target="node-04", command="true")
    assert by_node(job)["node-04"]["state"] == "expired"
    assert "offline" in by_node(job)["node-04"]["error"]

    waiting = await submit(fleet, target="node-04", command="echo back", wait=30)
    assert by_node(waiting)["node-04"]["state"] == "queued"
    expiring = await submit(fleet, target="node-04", command="echo late", wait=0.5)
    # Its wait is over (Core marked it) before the node comes back.
    with trio.fail_after(10):
        while by_node(await job_doc(fleet, expiring["id"]))["node-04"]["state"] != "expired":  # noqa: ASYNC110 -- polling Core over HTTP
            await trio.sleep(0.05)
    await start_node(fleet, "node-04")
    done = await finished(fleet, waiting["id"])
    assert by_node(done)["node-04"]["state"] == "succeeded"
    assert base64.b64decode(by_node(done)["node-04"]["stdout_b64"]) == b"back\n"
    late = by_node(await finished(fleet, expiring["id"]))["node-04"]
    assert late["state"] == "expired"


async def test_node_policy_refuses(core: Core, start_node: StartNode, tmp_path: Path) -> None:
    cfg = node_config(core, tmp_path, "locked")
    cfg = dataclasses.replace(cfg, exec=ExecConfig(enabled=False))
    await start_node(core, "locked", config=cfg)
    cfg2 = dataclasses.replace(
        node_config(core, tmp_path, "picky"), exec=ExecConfig(allow=("uptime", "echo *"))
    )
    await start_node(core, "picky", config=cfg2)
    await wait_for(lambda: online(core, "locked", "picky"))

    n = by_node(await finished(core, (await submit(core, target="locked", command="id"))["id"]))
    assert n["locked"]["state"] == "refused"
    assert "disabled" in n["locked"]["error"]

    ok = await submit(core, target="picky", command="echo allowed")
    assert by_node(await finished(core, ok["id"]))["picky"]["state"] == "succeeded"
    no = await submit(core, target="picky", command="rm -rf /tmp/nothing")
    assert by_node(await finished(core, no["id"]))["picky"]["state"] == "refused"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"service": {"action": "status", "unit": "nginx; rm -rf /"}}, "unit name"),
        ({"service": {"action": "status", "unit": "../x"}}, "unit name"),
        ({"service": {"action": "status", "unit": "nginx\n"}}, "unit name"),
        ({"command": "echo a\x00b"}, "command"),
        ({"command": " \t\n"}, "command"),
        ({"command": "true", "env": {"A=B": "x"}}, "env"),
        ({"command": "true", "env": {"": "x"}}, "env"),
        ({"command": "true", "env": {"A\x00": "x"}}, "env"),
        ({"command": "true", "env": {"A": "x\x00y"}}, "env"),
        ({"command": "true", "timeout": 1e-320}, "timeout"),
        ({"command": "true", "timeout": -1}, "timeout"),
        ({"command": "true", "timeout": 1e9}, "timeout"),
        ({"command": "true", "cwd": "relative/dir"}, "cwd"),
        ({"command": "true", "service": {"action": "status", "unit": "nginx"}}, "exactly one"),
    ],
)
async def test_core_refuses_what_no_node_may_run(
    fleet: Core, change: dict[str, Any], field: str
) -> None:
    """Refused by Core with 400 naming the field: nothing reaches a node."""
    async with api(fleet) as client:
        r = await client.post("/api/v1/jobs", json={"target": "node-01", **change})
        assert r.status_code == 400, r.text
        assert field in r.json()["error"]["message"]
        assert (await client.get("/api/v1/jobs")).json()["jobs"] == []


async def test_unknown_target_and_bad_requests(fleet: Core) -> None:
    async with api(fleet) as client:
        r = await client.post("/api/v1/jobs", json={"target": "nope", "command": "true"})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        assert "nope" in r.json()["error"]["message"]
        r = await client.post("/api/v1/jobs", json={"target": "role=none", "command": "true"})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "no_nodes"
        r = await client.post("/api/v1/jobs", json={"target": "a=1,a=2", "command": "true"})
        assert r.status_code == 404  # well formed, and no node has two values for a
        assert r.json()["error"]["code"] == "no_nodes"
        r = await client.post("/api/v1/jobs", json={"target": "node-01"})
        assert r.status_code == 400
        r = await client.post(
            "/api/v1/jobs", json={"target": "node-01", "command": "x", "timeout": -1}
        )
        assert r.status_code == 400
        r = await client.get("/api/v1/jobs/nope")
        assert r.status_code == 404


async def test_jobs_are_listed_and_audited(fleet: Core) -> None:
    first = await submit(fleet, target="node-01", command="true")
    second = await submit(fleet, target="role=web", command="false")
    await finished(fleet, first["id"])
    await finished(fleet, second["id"])
    async with api(fleet) as client:
        listing = (await client.get("/api/v1/jobs", params={"limit": 1})).json()
        assert [j["id"] for j in listing["jobs"]] == [second["id"]]
        page2 = (
            await client.get("/api/v1/jobs", params={"limit": 1, "before": listing["next_before"]})
        ).json()
        assert [j["id"] for j in page2["jobs"]] == [first["id"]]
        failed = (await client.get("/api/v1/jobs", params={"state": "failed"})).json()
        assert [j["id"] for j in failed["jobs"]] == [second["id"]]
        audit = (await client.get("/api/v1/audit")).json()
    rows = {r["job_id"]: r for r in audit}
    assert rows[first["id"]]["detail"] == "true"
    assert rows[first["id"]]["principal"] == "core-key"
    assert rows[first["id"]]["outcome"] == "1 succeeded"
    assert rows[second["id"]]["outcome"] == "2 failed"


async def test_result_sent_twice_is_stored_once(fleet: Core) -> None:
    job = await submit(fleet, target="node-01", command="echo once")
    done = await finished(fleet, job["id"])
    row = fleet.registry.by_ref("node-01")
    assert row is not None
    from servermgr.common import proto

    again = proto.JobResult(
        job_id=job["id"],
        outcome="failed",
        exit_code=9,
        signal=None,
        error=None,
        duration=1.0,
        stdout_bytes=0,
        stderr_bytes=0,
        stdout_truncated=False,
        stderr_truncated=False,
    )
    acks: list[str] = []

    async def ack() -> None:
        acks.append(job["id"])

    await fleet.jobs.on_result(row.id, again, ack)
    after = await finished(fleet, job["id"])
    assert acks == [job["id"]]  # acked, so the node forgets it
    assert by_node(after)["node-01"]["exit_code"] == 0
    assert by_node(after) == by_node(done)


async def test_an_entry_being_dispatched_to_an_online_node_does_not_expire(fleet: Core) -> None:
    # A big fan-out dispatches node after node; a deadline check in between
    # must not expire the ones still waiting their turn (wait = 0).
    from servermgr.core.entries import Entry
    from servermgr.core.jobstate import State, Status
    from servermgr.core.jobstore import JobRecord, NodeResult

    row = fleet.registry.by_ref("node-02")
    assert row is not None
    now = fleet.jobs.clock()
    record = JobRecord(
        id="fanout-turn",
        created=now - 5,
        command="echo turn",
        service=None,
        target="node-02",
        timeout=10,
        output_cap=1024,
        deadline=now - 5,
    )
    await fleet.db.write(
        fleet.jobs.store.create, record, [NodeResult(row.id, "node-02", "queued")], "echo turn"
    )
    entry = Entry(record, row.id, "node-02", Status(State.QUEUED))
    fleet.jobs.live.add(entry)
    await fleet.jobs.tick()
    assert entry.state == "queued"
    assert fleet.jobs.live.get(*entry.key) is entry
    await fleet.jobs.node_online(row.id)
    n = by_node(await finished(fleet, record.id))["node-02"]
    assert n["state"] == "succeeded"


async def test_stdin_reaches_every_node_and_a_big_body_is_accepted(fleet: Core) -> None:
    data = b"".join(b"%06d\n" % i for i in range(50000))  # 350 KiB: over the 64 KiB body limit
    job = await submit(
        fleet, target="role=web", command="sha256sum", stdin=base64.b64encode(data).decode()
    )
    doc = await finished(fleet, job["id"])
    want = hashlib.sha256(data).hexdigest()
    assert [n["stdout"].split()[0] for n in doc["nodes"]] == [want, want]
    assert "stdin" not in doc  # input is not part of the job document


@pytest.mark.parametrize(
    "extra",
    [{"wait": 5}, {"service": {"action": "status", "unit": "x"}, "command": None}],
)
async def test_stdin_is_refused_with_wait_or_a_service(fleet: Core, extra: dict[str, Any]) -> None:
    async with api(fleet) as client:
        body = {"target": "node-01", "command": "cat", "stdin": "aGkK", **extra}
        resp = await client.post("/api/v1/jobs", json=body)
    assert resp.status_code == 400, resp.text
    assert "stdin" in resp.json()["error"]["message"]


async def test_job_answers_are_exactly_the_documented_shapes(fleet: Core) -> None:
    """What the job routes answer decodes into the Structs /openapi.json renders
    (which refuse unknown keys), output fields included."""
    job = await submit(fleet, target="node-01", command="echo hi")
    await finished(fleet, job["id"])
    msgspec.convert(job, jobs_api.JobDoc)
    async with api(fleet) as client:
        full = (await client.get(f"/api/v1/jobs/{job['id']}")).json()
        assert msgspec.convert(full, jobs_api.JobDoc).nodes[0].stdout == "hi\n"
        sizes = (await client.get(f"/api/v1/jobs/{job['id']}", params={"output": "false"})).json()
        assert msgspec.convert(sizes, jobs_api.JobDoc).nodes[0].stdout is msgspec.UNSET
        listed = msgspec.convert((await client.get("/api/v1/jobs")).json(), jobs_api.JobList)
        assert [j.id for j in listed.jobs] == [job["id"]]
        audit = (await client.get("/api/v1/audit")).json()
        assert len(msgspec.convert(audit, list[jobs_api.AuditEntry])) == 1


async def test_the_job_stream_is_ndjson_as_documented(fleet: Core) -> None:
    job = await submit(fleet, target="node-01", command="true")
    await finished(fleet, job["id"])
    async with api(fleet) as client:
        doc = (await client.get("/openapi.json")).json()
        ok = doc["paths"]["/api/v1/jobs/{job_id}/stream"]["get"]["responses"]["200"]
        assert list(ok["content"]) == ["application/x-ndjson"]
        resp = await client.get(f"/api/v1/jobs/{job['id']}/stream")
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in resp.text.splitlines()]
        assert lines[0]["type"] == "job"
        assert lines[-1]["type"] == "job.done"


async def test_the_stream_of_a_quiet_open_job_ends_after_follow_seconds(fleet: Core) -> None:
    """A reader is never held longer than it asked without an event (FOLLOW_MAX s at
    most): the stream of a job still running ends with job.open; opening it again
    goes on."""
    job = await submit(fleet, target="node-01", command="echo early; sleep 7; echo late")
    url = f"/api/v1/jobs/{job['id']}/stream"
    async with api(fleet) as client:
        with trio.fail_after(20):
            first = (await client.get(url, params={"follow": "0"})).text.splitlines()
            assert [json.loads(line)["type"] for line in first][-1] == "job.open"
            lines = (await client.get(url, params={"follow": "5.5"})).text.splitlines()
            events = [json.loads(line) for line in lines]
            assert events[0]["type"] == "job"
            assert "keepalive" in [e["type"] for e in events]  # 5 s without an event
            assert events[-1] == {"type": "job.open", "job_id": job["id"]}
            assert (await client.get(url, params={"follow": "10.5"})).status_code == 400
            again = (await client.get(url, params={"follow": "10"})).text.splitlines()
    events = [json.loads(line) for line in again]
    assert events[-1]["type"] == "job.done"
    out = b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "job.output")
    assert out == b"early\nlate\n"
