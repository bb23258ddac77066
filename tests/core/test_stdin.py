"""A job's stdin as a stream, at Core: what the node is sent (fake node, real Core)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec
import trio

from servermgr.common import proto
from servermgr.core.app import Core
from servermgr.node import transport
from tests.support import StartCore, api

INFO = proto.SystemInfo(
    os=None, kernel=None, arch=None, cpu_model=None, cpu_count=None, mem_total=None, boot_time=None
)


def _hello(node_id: str, name: str) -> proto.Hello:
    """What a node of today's protocol says first."""
    return proto.Hello(
        protocol=proto.PROTOCOL_VERSION,
        node_id=node_id,
        hostname=name,
        agent_version="0.1.0",
        info=INFO,
        min_protocol=msgspec.UNSET,
    )


async def test_a_job_that_waited_for_its_node_still_streams_its_stdin(core: Core) -> None:
    doc = await transport.register(core.url, core.key.value, "back-01", {})
    async with api(core) as client:  # the node is away: the job waits for it
        body = {"target": "back-01", "command": "cat", "stdin_stream": True, "wait": 60}
        resp = await client.post("/api/v1/jobs", json=body)
    assert resp.is_success, resp.text
    hello = _hello(doc["node_id"], "back-01")
    async with transport.connect(core.url, doc["credential"]) as ws:
        await ws.send_message(proto.encode(hello))
        with trio.fail_after(20):
            while True:
                msg = proto.decode_from_core(await ws.get_message())
                if isinstance(msg, proto.JobRun):
                    break
    # Read back from SQLite when the node came back: the flag is not lost (the
    # process would read /dev/null and the input go nowhere).
    assert msg.job_id == resp.json()["id"]
    assert msg.stdin_stream is True


async def test_only_whoever_made_the_job_feeds_its_stdin(
    start_core: StartCore, tmp_path: Path
) -> None:
    from trio_websocket import ConnectionClosed

    from servermgr.common import relay
    from servermgr.ctl.wsclient import connect
    from tests.support import core_config, make_token

    # A fake node that sends no heartbeat: Core must not drop it as silent
    # (8 intervals) before the test is done, however slow the machine.
    core = (await start_core(core_config(tmp_path, interval=60))).core

    doc = await transport.register(core.url, core.key.value, "feed-01", {})
    other = await make_token(core, "mallory", "operate")
    hello = _hello(doc["node_id"], "feed-01")
    async with transport.connect(core.url, doc["credential"]) as node:
        await node.send_message(proto.encode(hello))
        with trio.fail_after(20):  # online: the job goes out at once
            while not isinstance(proto.decode_from_core(await node.get_message()), proto.Welcome):
                pass
        async with api(core) as client:  # made with the core key
            body = {"target": "feed-01", "command": "cat", "stdin_stream": True}
            resp = await client.post("/api/v1/jobs", json=body)
        assert resp.is_success, resp.text
        job_id = resp.json()["id"]
        with trio.fail_after(20):
            while not isinstance(proto.decode_from_core(await node.get_message()), proto.JobRun):
                pass
        await node.send_message(proto.encode(proto.JobAccepted(job_id=job_id)))
        async with connect(core.url, relay.STDIN_PATH, other) as ws:
            opening = {"type": "open", "job": job_id, "node": "feed-01"}
            await ws.send_message(msgspec.json.encode(opening).decode())
            with trio.fail_after(20):
                answer = msgspec.json.decode(await ws.get_message())
            assert answer["type"] == "error", answer
            assert answer["error"]["code"] == "forbidden"
            with trio.fail_after(20), contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.get_message()
        # The node was told nothing: no stdin opened, and the job not cancelled.
        with trio.move_on_after(1):
            while True:
                msg = proto.decode_from_core(await node.get_message())
                assert not isinstance(msg, proto.StdinOpen | proto.StdinEnd | proto.JobCancel), msg
