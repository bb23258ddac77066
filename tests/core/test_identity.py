"""Core owns node names; what a node reports is checked before Core keeps it.

A fake node (a raw WebSocket with a real credential) says what a hostile one
would: another node's id or name as its hostname, escape bytes in its
hostname, OS name, disk names or error texts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from servermgr.common import proto
from servermgr.core.app import Core
from servermgr.core.storage import Storage
from servermgr.node.transport import connect
from tests.support import (
    StartCore,
    StartNode,
    api,
    by_node,
    core_config,
    finished,
    hello_text,
    make_sample,
    online,
    register_node,
    submit,
    wait_for,
)

ESC = "\x1b]0;owned\x07\x1b[2J\rnode-01"


async def _refused(ws: WebSocketConnection) -> proto.Error:
    """The error Core sends before it closes the connection (1008)."""
    reply = proto.decode(await ws.get_message())
    assert isinstance(reply, proto.Error)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1008
    return reply


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("all", "reserved"),
        ("ALL", "reserved"),
        ("n0123456789abcdef", "node id"),
        ("web-1,web-2", "a node name uses"),
        ("role=web", "a node name uses"),
        ("web!", "a node name uses"),
        ("web-*", "a node name uses"),
        ("web-[12]", "a node name uses"),
        ("abc\n", "a node name uses"),
        ("\x1b[31mred", "a node name uses"),
    ],
)
async def test_registration_refuses_reserved_and_unsafe_names(
    core: Core, name: str, why: str
) -> None:
    async with api(core) as client:
        resp = await client.post("/api/v1/register", json={"hostname": name})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "bad_request"
    assert why in error["message"]
    assert "\x1b" not in error["message"]
    assert "\n" not in error["message"]
    assert len(core.registry) == 0


async def test_a_node_cannot_take_another_nodes_id_or_name_nor_its_jobs(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "victim")
    await wait_for(lambda: online(core, "victim"))
    victim = core.registry.by_ref("victim")
    assert victim is not None
    evil_id, cred = await register_node(core, "evil")

    # Its id as hostname: refused, with a reason the agent shows.
    async with connect(core.url, cred) as ws:
        await ws.send_message(hello_text(evil_id, victim.id))
        refusal = await _refused(ws)
    assert refusal.code == "bad_hello"
    assert "node id" in refusal.message
    assert not online(core, "evil")

    # Its name as hostname: welcomed, but the name stays "evil", and a job
    # for the victim (by name or by id) goes to the victim alone.
    async with connect(core.url, cred) as ws:
        await ws.send_message(hello_text(evil_id, "victim"))
        assert isinstance(proto.decode(await ws.get_message()), proto.Welcome)
        row = core.registry.by_id(evil_id)
        assert row is not None
        assert row.name == "evil"
        assert row.info is not None
        assert row.info["hostname"] == "victim"
        got: list[proto.Message] = []

        async def listen() -> None:
            while True:
                got.append(proto.decode(await ws.get_message()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            for target in ("victim", victim.id):
                job = await submit(core, target=target, command="echo hi", env={"SECRET": "s3cret"})
                done = await finished(core, job["id"])
                assert list(by_node(done)) == ["victim"]
                assert by_node(done)["victim"]["state"] == "succeeded"
            nursery.cancel_scope.cancel()
        assert not any(isinstance(m, proto.JobRun) for m in got)
    assert core.registry.by_ref("victim") == core.registry.by_id(victim.id)


async def test_a_hello_with_a_different_hostname_keeps_the_registered_name(core: Core) -> None:
    node_id, cred = await register_node(core, "web-01")
    async with connect(core.url, cred) as ws:
        await ws.send_message(hello_text(node_id, "web-02"))
        assert isinstance(proto.decode(await ws.get_message()), proto.Welcome)
        assert online(core, "web-01")
    async with api(core) as client:
        names = [n["name"] for n in (await client.get("/api/v1/nodes")).json()]
        assert names == ["web-01"]
        assert (await client.get("/api/v1/nodes/web-02")).status_code == 404
    stored = core.db.storage.node_by_id(node_id)
    assert stored is not None
    assert stored.name == "web-01"


@pytest.mark.parametrize(
    "info",
    [
        {"os": "Debian" + ESC},
        {"kernel": "6.1\n2026-11-30 04:00:00 INFO forged log line"},
        {"cpu_model": "x\u202eevil"},
        {"arch": "x" * 257},
    ],
)
async def test_a_hello_with_escape_bytes_is_refused_and_nothing_is_stored(
    core: Core, info: dict[str, str]
) -> None:
    node_id, cred = await register_node(core, "web-01")
    async with connect(core.url, cred) as ws:
        await ws.send_message(hello_text(node_id, "web-01", **info))
        refusal = await _refused(ws)
    assert refusal.code == "bad_hello"
    assert "\x1b" not in refusal.message
    row = core.registry.by_id(node_id)
    assert row is not None
    assert row.info is None
    assert not online(core, "web-01")


async def test_a_hello_with_escape_bytes_in_its_hostname_is_refused(core: Core) -> None:
    node_id, cred = await register_node(core, "web-01")
    async with connect(core.url, cred) as ws:
        await ws.send_message(hello_text(node_id, ESC))
        refusal = await _refused(ws)
    assert "bad hostname" in refusal.message
    assert "\\x1b" in refusal.message  # shown escaped
    assert "\x1b" not in refusal.message
    assert "\r" not in refusal.message


async def test_heartbeats_and_results_with_control_bytes_are_refused(core: Core) -> None:
    node_id, cred = await register_node(core, "web-01")
    async with connect(core.url, cred) as ws:
        await ws.send_message(hello_text(node_id, "web-01"))
        assert isinstance(proto.decode(await ws.get_message()), proto.Welcome)

        bad_disk = make_sample(
            1.0,
            disks=[proto.DiskUsage(mount="/" + ESC, fstype="ext4", total=10, used=1, percent=10.0)],
        )
        bad_nic = make_sample(
            2.0, nets=[proto.NetRate(name="eth0\x1b[1A", rx_bps=None, tx_bps=None)]
        )
        bad_fs = make_sample(
            3.0,
            disks=[proto.DiskUsage(mount="/", fstype="ext4\x7f", total=10, used=1, percent=10.0)],
        )
        bad_result = proto.JobResult(
            job_id="j1",
            outcome="error",
            exit_code=None,
            signal=None,
            error="no such file\r\x1b[2Kforged",
            duration=0.0,
            stdout_bytes=0,
            stderr_bytes=0,
            stdout_truncated=False,
            stderr_truncated=False,
        )
        bad_error = proto.Error(code="oops", message="\x1b]8;;http://evil\x07")
        for msg in (
            proto.Heartbeat(seq=1, samples=[bad_disk]),
            proto.Heartbeat(seq=2, samples=[bad_nic]),
            proto.Heartbeat(seq=3, samples=[bad_fs]),
            bad_result,
            bad_error,
        ):
            await ws.send_message(proto.encode(msg))
            reply = proto.decode(await ws.get_message())
            assert isinstance(reply, proto.Error), msg
            assert reply.code == "bad_message"
            assert "control characters" in reply.message
        # A good one still goes through: the connection stayed up.
        await ws.send_message(proto.encode(proto.Heartbeat(seq=4, samples=[make_sample(4.0)])))
        await wait_for(lambda: _stored(core, node_id) == 1)
        assert online(core, "web-01")


def _stored(core: Core, node_id: str) -> int:
    row = core.registry.by_id(node_id)
    assert row is not None
    with sqlite3.connect(core.config.storage.sqlite_path) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM metrics WHERE node = ?", (row.seq,)
        ).fetchone()
    return int(count)


async def test_an_operator_renames_a_node_which_keeps_its_id_and_connection(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "web-01")
    await start_node(core, "web-02")
    await wait_for(lambda: online(core, "web-01", "web-02"))
    row = core.registry.by_ref("web-01")
    assert row is not None
    async with api(core) as client:
        for bad, status, code in (
            ("all", 400, "bad_request"),
            ("n0123456789abcdef", 400, "bad_request"),
            ("db\n", 400, "bad_request"),
            ("web-02", 409, "name_taken"),
        ):
            resp = await client.patch("/api/v1/nodes/web-01", json={"name": bad})
            assert resp.status_code == status, resp.text
            assert resp.json()["error"]["code"] == code
        assert (await client.patch("/api/v1/nodes/nope", json={"name": "x"})).status_code == 404

        resp = await client.patch("/api/v1/nodes/web-01", json={"name": "db-01"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["id"] == row.id
        assert resp.json()["name"] == "db-01"
        assert (await client.get("/api/v1/nodes/web-01")).status_code == 404
        assert (await client.get("/api/v1/nodes/db-01")).json()["id"] == row.id
    stored = core.db.storage.node_by_id(row.id)
    assert stored is not None
    assert stored.name == "db-01"
    assert online(core, "db-01")
    # Jobs reach it under its new name; its agent, still saying web-01 in a
    # new hello after a reconnect, stays db-01.
    done = await finished(core, (await submit(core, target="db-01", command="echo hi"))["id"])
    assert by_node(done)["db-01"]["state"] == "succeeded"
    before = core.sessions[row.id]
    core.sessions.disconnect(row.id, 1001, "test: reconnect")
    await wait_for(lambda: core.sessions.get(row.id) not in (None, before))
    renamed = core.registry.by_id(row.id)
    assert renamed is not None
    assert renamed.name == "db-01"


async def test_a_name_from_before_the_rule_still_works_and_core_says_how_to_fix_it(
    start_core: StartCore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = core_config(tmp_path)
    storage = Storage.open(config.storage.sqlite_path)
    try:
        storage.insert_node("nabc", "all", {}, "0" * 64, 1.0)
    finally:
        storage.close()
    core = (await start_core(config)).core
    assert "node all has a name that is no longer allowed" in caplog.text
    assert "servermgr ctl node rename nabc NEW_NAME" in caplog.text
    async with api(core) as client:
        resp = await client.patch("/api/v1/nodes/nabc", json={"name": "web-09"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "web-09"
