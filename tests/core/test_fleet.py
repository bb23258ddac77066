"""Core and nodes in one process: registration, heartbeats, liveness, reconnects."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from servermgr.common import proto
from servermgr.common.errors import BadTokenError, NameTakenError
from servermgr.core.app import Core
from servermgr.node import identity as ident
from servermgr.node.transport import connect
from tests.support import (
    INTERVAL,
    StartCore,
    StartNode,
    core_config,
    make_sample,
    node_config,
    stored_stamps,
    wait_for,
)


async def online(core: Core, name: str) -> bool:
    row = core.registry.by_ref(name)
    st = await core.status.get(row.id) if row else None
    return bool(st and st.online)


async def offline(core: Core, name: str) -> bool:
    return not await online(core, name)


async def all_online(core: Core, names: list[str]) -> bool:
    return all([await online(core, name) for name in names])


async def has_sample(core: Core, name: str) -> bool:
    row = core.registry.by_ref(name)
    st = await core.status.get(row.id) if row else None
    return bool(st and st.online and st.latest is not None)


def db_count(core: Core, name: str) -> int:
    row = core.registry.by_ref(name)
    if row is None:
        return 0
    with sqlite3.connect(core.config.storage.sqlite_path) as conn:
        (n,) = conn.execute("SELECT count(*) FROM metrics WHERE node = ?", (row.seq,)).fetchone()
    return int(n)


async def test_node_is_online_with_metrics_and_samples_land_in_sqlite(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "node-01", role="web")
    # First sample comes min(interval, 1 s) after start; allow two intervals more.
    await wait_for(lambda: has_sample(core, "node-01"), limit=3)
    st = await core.status.get(core.registry.by_ref("node-01").id)  # type: ignore[union-attr]
    assert st is not None
    assert st.latest is not None
    assert st.latest.cpu_percent is not None
    assert 0 <= st.latest.cpu_percent <= 100
    assert st.latest.mem_percent is not None
    row = core.registry.by_ref("node-01")
    assert row is not None
    assert row.labels == {"role": "web"}
    assert row.info is not None
    assert row.info["cpu_count"] >= 1
    await wait_for(lambda: db_count(core, "node-01") >= 3, limit=5)


async def test_restarted_node_keeps_its_id(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    node = await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    first = core.registry.by_ref("node-01")
    assert first is not None
    saved = ident.load(tmp_path / "nodes" / "node-01")
    assert saved is not None
    assert saved.node_id == first.id
    assert (tmp_path / "nodes" / "node-01" / "identity.json").stat().st_mode & 0o777 == 0o600
    node.kill()
    await node.done.wait()
    await wait_for(lambda: offline(core, "node-01"))
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    assert len(core.registry) == 1
    assert core.registry.by_ref("node-01").id == first.id  # type: ignore[union-attr]


async def test_two_nodes_on_one_host_are_two_nodes(core: Core, start_node: StartNode) -> None:
    await start_node(core, "node-a")
    await start_node(core, "node-b")
    await wait_for(lambda: all_online(core, ["node-a", "node-b"]))
    a, b = core.registry.by_ref("node-a"), core.registry.by_ref("node-b")
    assert a is not None
    assert b is not None
    assert a.id != b.id


async def test_wrong_register_token_stops_the_node(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    cfg = node_config(core, tmp_path, "node-01")
    bad = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, register_token="0" * 64))
    node = await start_node(core, "node-01", config=bad)
    with trio.fail_after(5):
        await node.done.wait()
    assert isinstance(node.error, BadTokenError)
    assert "register token" in str(node.error)
    assert len(core.registry) == 0


async def test_hostname_held_by_another_node_is_refused(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    other = node_config(core, tmp_path / "other-host", "node-01")
    node = await start_node(core, "node-01", config=other)
    with trio.fail_after(5):
        await node.done.wait()
    assert isinstance(node.error, NameTakenError)
    assert "servermgr ctl node remove node-01" in str(node.error)
    assert len(core.registry) == 1


async def test_core_restart_nodes_come_back_and_no_sample_is_lost(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    first = await start_core()
    node = await start_node(first.core, "node-01")
    await wait_for(lambda: db_count(first.core, "node-01") >= 2, limit=5)
    port = first.core.port
    first.stop.set()
    await first.done.wait()
    # Core is down while the node makes three samples more.
    made_before = len(node.collector.made)
    await wait_for(lambda: len(node.collector.made) >= made_before + 3, limit=10)
    cfg = core_config(tmp_path)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, listen_port=port))
    second = await start_core(cfg)
    core = second.core
    row = core.registry.by_ref("node-01")
    assert row is not None
    assert not await online(core, "node-01")  # offline until it connects again
    await wait_for(lambda: online(core, "node-01"), limit=10)
    # Every sample made until now (before, during and after the outage) is stored, once.
    made = list(node.collector.made)
    path = core.config.storage.sqlite_path
    await wait_for(lambda: set(made) <= set(stored_stamps(path, row.seq)), limit=10)
    stored = stored_stamps(path, row.seq)
    assert len(stored) == len(set(stored))
    assert stored[: len(made)] == made


async def test_wiped_database_node_registers_again(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    first = await start_core()
    node = await start_node(first.core, "node-01")
    await wait_for(lambda: online(first.core, "node-01"))
    node.kill()
    first.stop.set()
    await first.done.wait()
    db = first.core.config.storage.sqlite_path
    for suffix in ("", "-wal", "-shm"):
        await trio.Path(str(db) + suffix).unlink(missing_ok=True)
    second = await start_core()
    await start_node(second.core, "node-01")
    await wait_for(lambda: online(second.core, "node-01"), limit=10)
    saved = ident.load(tmp_path / "nodes" / "node-01")
    assert saved is not None
    assert second.core.registry.by_ref("node-01").id == saved.node_id  # type: ignore[union-attr]


# --- hostile and broken peers ---------------------------------------------------


async def _register(core: Core, name: str) -> tuple[str, str]:
    from servermgr.node import transport

    doc = await transport.register(core.url, core.key.value, name, {})
    return doc["node_id"], doc["credential"]


def _hello(node_id: str, name: str) -> str:
    info = proto.SystemInfo(
        os=None,
        kernel=None,
        arch=None,
        cpu_model=None,
        cpu_count=None,
        mem_total=None,
        boot_time=None,
    )
    return proto.encode(
        proto.Hello(protocol=1, node_id=node_id, hostname=name, agent_version="test", info=info)
    )


async def test_unauthenticated_websocket_gets_401(core: Core) -> None:
    # The core key is an operator's credential: it cannot speak as a node (403).
    for credential, status, code in (
        (None, 401, "unauthorized"),
        ("nx.bogus", 401, "unauthorized"),
        (core.key.value, 403, "forbidden"),
    ):
        with pytest.raises(ConnectionRejected) as info:
            async with connect(core.url, credential):
                pass
        assert info.value.status_code == status
        assert info.value.body is not None
        assert json.loads(info.value.body)["error"]["code"] == code


async def test_bad_traffic_is_refused_while_other_nodes_keep_working(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "good")
    await wait_for(lambda: has_sample(core, "good"), limit=3)
    node_id, cred = await _register(core, "evil")

    # Malformed messages get an error reply and the connection stays up.
    async with connect(core.url, cred) as ws:
        await ws.send_message(_hello(node_id, "evil"))
        assert isinstance(proto.decode(await ws.get_message()), proto.Welcome)
        await ws.send_message("{not json")
        reply = proto.decode(await ws.get_message())
        assert isinstance(reply, proto.Error)
        assert reply.code == "bad_message"
        await ws.send_message('{"type": "heartbeat", "seq": 1, "samples": "x"}')
        reply = proto.decode(await ws.get_message())
        assert isinstance(reply, proto.Error)
        assert "samples" in reply.message
        assert await online(core, "evil")

    # A first message that is not hello ends the handshake, saying why.
    async with connect(core.url, cred) as ws:
        await ws.send_message(proto.encode(proto.HeartbeatAck(seq=1)))
        refusal = proto.decode(await ws.get_message())
        assert isinstance(refusal, proto.Error)
        assert refusal.code == "bad_hello"
        assert "heartbeat.ack" in refusal.message
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1008

    # A frame over 1 MiB closes that connection (1009) and only that one.
    async with connect(core.url, cred) as ws:
        await ws.send_message(_hello(node_id, "evil"))
        await ws.get_message()
        await ws.send_message("x" * (proto.MAX_FRAME_BYTES + 10))
        with pytest.raises(ConnectionClosed) as closed:
            await _read_until_closed(ws)
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1009

    before = db_count(core, "good")
    await wait_for(lambda: db_count(core, "good") > before, limit=3)
    assert await online(core, "good")


async def _read_until_closed(ws: WebSocketConnection) -> None:
    while True:
        await ws.get_message()


async def test_silent_node_goes_offline(core: Core) -> None:
    node_id, cred = await _register(core, "quiet")
    async with connect(core.url, cred) as ws:
        await ws.send_message(_hello(node_id, "quiet"))
        await ws.get_message()
        assert await online(core, "quiet")
        # 3 missed intervals (+1 s slack) later Core gives up on it.
        await wait_for(lambda: offline(core, "quiet"), limit=INTERVAL * 3 + 3)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 4000


async def test_a_node_logs_each_state_once_not_every_retry(
    start_core: StartCore, start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    first = await start_core()
    node = await start_node(first.core, "node-01")
    await wait_for(lambda: online(first.core, "node-01"))
    caplog.set_level("INFO", logger="servermgr.node")
    first.stop.set()
    await first.done.wait()
    # Three failed retries (0.5 s, 1 s, 2 s with jitter): each one logged before the next.
    await wait_for(lambda: node.agent.backoff.attempt >= 3, limit=15)
    lines = [r.getMessage() for r in caplog.records if r.name == "servermgr.node"]
    unreachable = [m for m in lines if "Core unreachable" in m]
    assert len(unreachable) == 1, lines


async def test_heartbeats_are_acked_once_stored_at_most_once_per_ack_interval(
    core: Core,
) -> None:
    node_id, cred = await _register(core, "acker")
    acks: list[tuple[float, int]] = []
    async with connect(core.url, cred) as ws:
        await ws.send_message(_hello(node_id, "acker"))
        welcome = proto.decode(await ws.get_message())
        assert isinstance(welcome, proto.Welcome)
        assert welcome.ack_interval == pytest.approx(INTERVAL * 6)

        async def read_acks() -> None:
            while True:
                msg = proto.decode(await ws.get_message())
                if isinstance(msg, proto.HeartbeatAck):
                    acks.append((trio.current_time(), msg.seq))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_acks)
            first_sent = trio.current_time()
            # 15 heartbeats an interval apart: at least 2.5 ack intervals.
            for sent in range(1, 16):
                hb = proto.Heartbeat(seq=sent, samples=[make_sample(time.time())])
                await ws.send_message(proto.encode(hb))
                await trio.sleep(INTERVAL)
            await wait_for(lambda: db_count(core, "acker") == sent, limit=10)
            await wait_for(lambda: len(acks) >= 2, limit=10)
            nursery.cancel_scope.cancel()
    assert acks[0][1] == 1  # the first heartbeat is acked as soon as it is stored
    seqs = [seq for _, seq in acks]
    assert seqs == sorted(set(seqs))
    # Core sent its acks at least an ack interval apart, all between the first
    # heartbeat's send and the last ack's arrival: that bounds their number,
    # however slowly this test ran.
    span = acks[-1][0] - first_sent
    assert len(acks) <= 1 + span / welcome.ack_interval


async def test_a_connect_storm_is_welcomed_with_every_hello_stored(core: Core) -> None:
    creds = [await _register(core, f"storm-{i:02d}") for i in range(40)]
    welcomed: list[str] = []

    async def one(node_id: str, cred: str, i: int) -> None:
        async with connect(core.url, cred) as ws:
            await ws.send_message(_hello(node_id, f"storm-{i:02d}-renamed"))
            msg = proto.decode(await ws.get_message())
            assert isinstance(msg, proto.Welcome)
            welcomed.append(node_id)

    async with trio.open_nursery() as nursery:
        for i, (node_id, cred) in enumerate(creds):
            nursery.start_soon(one, node_id, cred, i)
    assert len(welcomed) == 40
    for i, (node_id, _) in enumerate(creds):
        row = core.registry.by_id(node_id)
        assert row is not None
        # A hello cannot rename a node: the reported hostname is only recorded.
        assert row.name == f"storm-{i:02d}"
        stored = core.db.storage.node_by_id(node_id)
        assert stored is not None
        assert stored.name == row.name
        assert stored.info is not None
        assert stored.info["hostname"] == f"storm-{i:02d}-renamed"
