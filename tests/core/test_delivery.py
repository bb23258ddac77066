"""Job results are never lost and never recorded twice, across restarts of either side."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

from servermgr.node.spool import AGENT_DIED
from tests.support import (
    StartCore,
    StartNode,
    by_node,
    core_config,
    finished,
    live_processes,
    online,
    submit,
    wait_for,
)


async def test_core_restart_mid_job_records_the_result_once(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    first = await start_core()
    await start_node(first.core, "node-01")
    await wait_for(lambda: online(first.core, "node-01"))
    job = await submit(first.core, target="node-01", command="echo start; sleep 1; echo done")
    await wait_for(lambda: bool(live_processes("sleep 1; echo done")), limit=5)
    port = first.core.port
    first.stop.set()
    await first.done.wait()
    # The job finishes on the node while Core is down.
    await wait_for(lambda: not live_processes("sleep 1; echo done"), limit=5)

    cfg = core_config(tmp_path)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, listen_port=port))
    second = (await start_core(cfg)).core
    n = by_node(await finished(second, job["id"]))["node-01"]
    assert n["state"] == "succeeded"
    assert base64.b64decode(n["stdout_b64"]) == b"start\ndone\n"
    audit = [r for r in await second.db.read(second.jobs.store.audit) if r["job_id"] == job["id"]]
    assert len(audit) == 1
    assert audit[0]["outcome"] == "1 succeeded"
    # Acked: the node's spool is empty again.
    spool = tmp_path / "nodes" / "node-01" / "jobs"
    await wait_for(lambda: not list(spool.glob("*.json")), limit=5)


async def test_node_restart_mid_job_reports_instead_of_hanging(
    core: object, start_node: StartNode, tmp_path: Path
) -> None:
    from servermgr.core.app import Core

    assert isinstance(core, Core)
    node = await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    job = await submit(core, target="node-01", command="sleep 94.5; echo never")
    await wait_for(lambda: bool(live_processes("sleep 94.5")), limit=5)
    spool = tmp_path / "nodes" / "node-01" / "jobs"
    (spooled,) = spool.glob("*.json")
    # The process group is on disk, for the next agent to clean up.
    await wait_for(lambda: json.loads(spooled.read_text())["pgid"] is not None, limit=5)
    node.kill()
    await node.done.wait()
    await start_node(core, "node-01")
    n = by_node(await finished(core, job["id"]))["node-01"]
    assert n["state"] == "failed"
    assert n["error"] == AGENT_DIED
    assert not live_processes("sleep 94.5")
    await wait_for(lambda: not list(spool.glob("*.json")), limit=5)


async def test_a_job_the_node_never_received_is_sent_again(
    core: object, start_node: StartNode
) -> None:
    from servermgr.core.app import Core

    assert isinstance(core, Core)
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    row = core.registry.by_ref("node-01")
    assert row is not None
    # Simulate a job.run lost in a dying connection: Core thinks it was sent.
    job = await submit(core, target="node-01", command="echo arrived", wait=30)
    await finished(core, job["id"])
    entry_job = job["id"]
    from servermgr.core.entries import Entry
    from servermgr.core.jobstate import State, Status
    from servermgr.core.jobstore import NodeResult

    stored = await core.db.read(core.jobs.store.get, entry_job)
    assert stored is not None
    record = dataclasses.replace(stored[0], id=entry_job + "-lost")
    await core.db.write(
        core.jobs.store.create, record, [NodeResult(row.id, "node-01", "sent")], "echo arrived"
    )
    # Never heard from: the node did not answer it (had it arrived, the node
    # would have answered job.accepted, and a node that then comes back
    # without it lost its spool: that job is lost, never sent twice).
    core.jobs.live.add(
        Entry(record, row.id, "node-01", Status(State.SENT, sent_at=core.jobs.clock()))
    )
    core.sessions.disconnect(row.id, 4001, "test: drop the connection")
    n = by_node(await finished(core, record.id))["node-01"]
    assert n["state"] == "succeeded"
    assert base64.b64decode(n["stdout_b64"]) == b"arrived\n"


async def test_a_queued_job_survives_a_core_restart(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    first = await start_core()
    node = await start_node(first.core, "node-01")
    await wait_for(lambda: online(first.core, "node-01"))
    node.kill()
    await wait_for(lambda: not online(first.core, "node-01"))
    job = await submit(first.core, target="node-01", command="echo queued", wait=60)
    assert by_node(job)["node-01"]["state"] == "queued"
    port = first.core.port
    first.stop.set()
    await first.done.wait()

    cfg = core_config(tmp_path)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, listen_port=port))
    second = (await start_core(cfg)).core
    await start_node(second, "node-01")
    n = by_node(await finished(second, job["id"]))["node-01"]
    assert n["state"] == "succeeded"
    assert base64.b64decode(n["stdout_b64"]) == b"queued\n"
