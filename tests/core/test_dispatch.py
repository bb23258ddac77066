"""Dispatch over real sockets: no node delays another, Core enforces its own limits.

Fake nodes are raw WebSocket clients speaking the protocol: one completes its
hello and then never reads its socket; one ignores the output cap it is sent.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from servermgr.common import proto
from servermgr.core.app import Core
from servermgr.core.sessions import CLOSE_STALLED, SEND_TIMEOUT, NodeSession
from servermgr.core.storage import NodeRow
from servermgr.node import transport
from tests.support import (
    INTERVAL,
    StartNode,
    api,
    by_node,
    finished,
    make_sample,
    online,
    submit,
    wait_for,
)

INFO = proto.SystemInfo(
    os=None, kernel=None, arch=None, cpu_model=None, cpu_count=None, mem_total=None, boot_time=None
)


@asynccontextmanager
async def fake_node(core: Core, name: str) -> AsyncIterator[tuple[str, WebSocketConnection]]:
    """A registered node's connection, past hello/welcome; heartbeats are the caller's."""
    doc = await transport.register(core.url, core.key.value, name, {})
    async with transport.connect(core.url, doc["credential"]) as ws:
        hello = proto.Hello(
            protocol=proto.PROTOCOL_VERSION,
            node_id=doc["node_id"],
            hostname=name,
            agent_version="fake",
            info=INFO,
        )
        await ws.send_message(proto.encode(hello))
        assert isinstance(proto.decode(await ws.get_message()), proto.Welcome)
        yield doc["node_id"], ws


async def beat(ws: WebSocketConnection, acked: int | None = None) -> None:
    """Heartbeats forever (so the silence watchdog is not what catches the node)."""
    seq = 0
    while True:
        seq += 1
        hb = proto.Heartbeat(seq=seq, samples=[make_sample(trio.current_time())], acked=acked)
        try:
            await ws.send_message(proto.encode(hb))
        except ConnectionClosed:
            return
        await trio.sleep(INTERVAL)


async def job_state(core: Core, job_id: str) -> dict[str, Any]:
    async with api(core) as client:
        doc: dict[str, Any] = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    return doc


async def test_a_node_that_stops_reading_delays_nobody(
    core: Core, start_node: StartNode, nursery: trio.Nursery
) -> None:
    await start_node(core, "node-01")
    await start_node(core, "node-03")
    async with fake_node(core, "node-02") as (stalled_id, ws):
        nursery.start_soon(beat, ws)
        await wait_for(lambda: online(core, "node-01", "node-02", "node-03"))
        job = await submit(core, target="all", command="echo hi")  # answers at once
        assert {n["node"]: n["state"] for n in job["nodes"]}.keys() == {
            "node-01",
            "node-02",
            "node-03",
        }

        # The others' results are in while node-02 still has not answered.
        async def others_done() -> dict[str, Any]:
            while True:
                nodes = by_node(await job_state(core, job["id"]))
                if all(nodes[n]["state"] == "succeeded" for n in ("node-01", "node-03")):
                    return nodes
                await trio.sleep(0.05)

        with trio.fail_after(10):
            nodes = await others_done()
        assert nodes["node-02"]["state"] == "sent"
        assert base64.b64decode(nodes["node-01"]["stdout_b64"]) == b"hi\n"

        done = by_node(await finished(core, job["id"]))
        assert done["node-02"]["state"] == "stalled"
        assert "disconnected" in done["node-02"]["error"]
        assert stalled_id not in core.sessions  # disconnected, not waited for
        assert done["node-01"]["state"] == done["node-03"]["state"] == "succeeded"


async def test_core_enforces_the_output_cap_and_message_sizes(core: Core) -> None:
    async with fake_node(core, "greedy") as (_, ws):
        job = await submit(core, target="greedy", command="yes", output_cap=1024)
        run = proto.decode(await ws.get_message())
        assert isinstance(run, proto.JobRun)
        assert run.output_cap == 1024
        # This node ignores the cap: 3 full chunks.
        chunk = b"y" * proto.MAX_CHUNK_BYTES
        for i in range(3):
            out = proto.JobOutput(run.job_id, "stdout", i * len(chunk), chunk)
            await ws.send_message(proto.encode(out))
        # A chunk over the per-message limit is refused, not stored.
        big = proto.encode(proto.JobOutput(run.job_id, "stderr", 0, b"e" * 1000))
        big = big.replace(
            base64.b64encode(b"e" * 1000).decode(),
            base64.b64encode(b"e" * (proto.MAX_CHUNK_BYTES + 1)).decode(),
        )
        await ws.send_message(big)
        reply = proto.decode(await ws.get_message())
        assert isinstance(reply, proto.Error)
        assert reply.code == "bad_message"
        result = proto.JobResult(
            run.job_id, "succeeded", 0, None, None, 0.5, 3 << 16, 0, False, False
        )
        await ws.send_message(proto.encode(result))
        ack = proto.decode(await ws.get_message())
        assert isinstance(ack, proto.JobAck)
        n = by_node(await finished(core, job["id"]))["greedy"]
        assert n["stdout_bytes"] == 1024
        assert len(base64.b64decode(n["stdout_b64"])) == 1024
        assert n["stdout_truncated"] is True
        assert n["stderr_bytes"] == 0

        # A frame over MAX_FRAME_BYTES ends the connection.
        await ws.send_message("x" * (proto.MAX_FRAME_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1009


async def test_a_node_that_sends_but_never_reads_is_disconnected(
    core: Core, start_node: StartNode, nursery: trio.Nursery
) -> None:
    await start_node(core, "reader")  # echoes every ack it reads: never stalled
    async with core.bus.subscribe(match=lambda e: e["type"] == "node.offline") as offline:
        async with fake_node(core, "deaf") as (deaf_id, ws):
            nursery.start_soon(beat, ws, 0)  # its heartbeats never echo an ack
            with trio.fail_after(core.gateway.config.ack_interval + 30):
                event = await offline.receive()
    assert event["node_id"] == deaf_id
    assert event["reason"].startswith("stalled: heartbeat.ack not read")
    assert online(core, "reader")


class NeverTakes:
    """A WebSocket whose peer never reads: every send waits forever."""

    scope: dict[str, object] = {}  # served without Core's lane: no send_nowait

    async def send_text(self, text: str) -> None:
        await trio.sleep_forever()


async def test_a_send_the_connection_does_not_take_is_bounded(
    autojump_clock: trio.abc.Clock,
) -> None:
    row = NodeRow(1, "n1", "node-01", {}, "", 0.0, None, None, None)
    session = NodeSession(row, NeverTakes())  # type: ignore[arg-type]
    start = trio.current_time()
    assert await session.deliver(proto.JobCancel(job_id="j")) == "stalled"
    assert trio.current_time() - start == pytest.approx(SEND_TIMEOUT)
    assert session.close_code == CLOSE_STALLED
    assert session.cancel_scope.cancel_called
    # Nothing more is written to a stream cut mid-frame.
    assert await session.deliver(proto.JobCancel(job_id="j")) == "offline"
