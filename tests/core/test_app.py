"""Core as a whole, in-process with a real agent: a full disk and a vanished
database file, as an operator and the nodes live through them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from servermgr.common.errors import StorageError, single_error
from servermgr.core.app import Core, serve
from tests.support import (
    RunningNode,
    StartCore,
    StartNode,
    cap_database,
    core_config,
    fill_up,
    small_tmpfs,
    wait_for,
)


def stored_ts(core: Core, name: str) -> set[float]:
    row = core.registry.by_ref(name)
    assert row is not None
    with core.db.storage.reader() as conn:
        return {ts for (ts,) in conn.execute("SELECT ts FROM metrics WHERE node = ?", (row.seq,))}


def unstored_are_held(node: RunningNode, core: Core) -> int:
    """Every sample the node made and Core did not store is still in the node's
    backlog (no ack covered it); returns how many there are."""
    agent = node.agent
    taken = set(node.collector.made)
    held = {s.ts for s in agent.backlog.unsent} | {s.ts for _, s in agent.backlog.inflight}
    unstored = taken - stored_ts(core, "web-1")
    assert unstored <= held
    return len(unstored)


async def test_disk_full_answers_503_serves_reads_and_loses_no_sample(
    start_core: StartCore,
    start_node: StartNode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = (await start_core()).core
    node = await start_node(core, "web-1")
    agent = node.agent
    await wait_for(lambda: len(stored_ts(core, "web-1")) >= 3 if agent.connected else False)
    headers = {"Authorization": f"Bearer {core.key.value}"}
    async with httpx.AsyncClient(base_url=core.url, headers=headers, trust_env=False) as api:
        await core.db.write(cap_database, core.db.storage, False)  # the disk is full
        await wait_for(lambda: core.writer.failed_batches >= 1)
        unstored = unstored_are_held(node, core)
        await wait_for(lambda: core.writer.failed_batches >= 5)
        assert unstored_are_held(node, core) > unstored

        # Big enough to need new pages, which a full disk cannot give.
        labels = {f"k{i}": "v" * 250 for i in range(60)}
        resp = await api.post("/api/v1/register", json={"hostname": "web-2", "labels": labels})
        assert resp.status_code == 503
        assert resp.json() == {
            "error": {
                "code": "storage_unavailable",
                "message": "Core cannot write to its database now (the disk is full); "
                "try again later",
            }
        }
        assert resp.headers["retry-after"]
        job = await api.post("/api/v1/jobs", json={"target": "all", "command": "x" * 30000})
        assert job.status_code == 503
        assert job.json()["error"]["code"] == "storage_unavailable"
        status = (await api.get("/api/v1/status")).json()
        # (Small writes that fit in a free page may still work: "writable" can flicker.)
        assert set(status["storage"]) == {"writable", "failing_for_s", "refused"}
        assert status["ingest"]["held"] >= 1
        assert status["ingest"]["failed_batches"] >= 5
        nodes = await api.get("/api/v1/nodes")  # reads still work
        assert nodes.status_code == 200
        assert [n["name"] for n in nodes.json()] == ["web-1"]
        assert unstored_are_held(node, core) > unstored

        await core.db.write(cap_database, core.db.storage, True)  # space is back
        taken = list(node.collector.made)
        await wait_for(lambda: set(taken) <= stored_ts(core, "web-1"))
        resp = await api.post("/api/v1/register", json={"hostname": "web-2", "labels": labels})
        assert resp.status_code == 201, resp.text
        status = (await api.get("/api/v1/status")).json()
        assert status["storage"] == {"writable": True, "failing_for_s": None, "refused": 0}
    assert not [r for r in caplog.records if r.exc_info]  # no traceback in the log
    outage_lines = [r for r in caplog.records if "the disk is full" in r.getMessage()]
    assert len(outage_lines) == 1  # at most one a minute
    assert any("writable again" in r.getMessage() for r in caplog.records)
    assert agent.backlog.dropped == 0
    assert not [r for r in caplog.records if "reconnecting" in r.getMessage()]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_core_stops_when_its_database_is_deleted_or_replaced(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = core_config(tmp_path)
    stop = trio.Event()
    failure: list[BaseException] = []

    async def run(task_status: trio.TaskStatus[Core]) -> None:
        try:
            await serve(config, stop, task_status=task_status)
        except (StorageError, BaseExceptionGroup) as exc:
            failure.append(single_error(exc))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            core = await nursery.start(run)
            path = core.db.storage.path
            if how == "deleted":
                path.unlink()
            else:
                path.rename(path.with_name("old.db"))
                path.write_bytes(path.with_name("old.db").read_bytes())
            await wait_for(lambda: bool(failure), limit=15)
    assert isinstance(failure[0], StorageError), failure
    assert f"was {how}" in str(failure[0])
    assert not [r for r in caplog.records if r.exc_info]
    if how == "deleted":  # saved, and a restart does not make an empty database instead
        assert "its last state is saved in" in str(failure[0])
        with pytest.raises(StorageError, match="is missing, but"):
            await serve(config, trio.Event())


async def test_a_real_full_disk_answers_503_and_loses_no_sample(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "core" / "data", "8m") as data:
        running = await start_core()
        core = running.core
        try:
            node = await start_node(core, "web-1")
            await wait_for(lambda: node.agent.connected and len(stored_ts(core, "web-1")) >= 3)
            headers = {"Authorization": f"Bearer {core.key.value}"}
            async with httpx.AsyncClient(
                base_url=core.url, headers=headers, trust_env=False
            ) as api:
                assert fill_up(data) > 0
                try:
                    await wait_for(lambda: core.writer.failed_batches >= 3, limit=30)
                    unstored = unstored_are_held(node, core)
                    labels = {f"k{i}": "v" * 250 for i in range(60)}
                    resp = await api.post(
                        "/api/v1/register", json={"hostname": "web-2", "labels": labels}
                    )
                    assert resp.status_code == 503, resp.text
                    assert resp.json()["error"]["code"] == "storage_unavailable"
                    assert (await api.get("/api/v1/nodes")).status_code == 200
                    await wait_for(lambda: core.writer.failed_batches >= 6, limit=30)
                    assert unstored_are_held(node, core) > unstored
                finally:
                    (data / "filler").unlink()
                made = list(node.collector.made)
                await wait_for(lambda: set(made) <= stored_ts(core, "web-1"), limit=30)
        finally:
            running.stop.set()  # before the file system goes away
            with trio.fail_after(15):
                await running.done.wait()
