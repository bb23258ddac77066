"""A job's live output (core/job_streams.py): real Core, real agent, real sockets."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any, cast

import psutil
import pytest
import trio
from trio_websocket import ConnectionClosed

from servermgr.core.app import Core
from servermgr.core.bus import MemoryBus, Subscription
from servermgr.core.entries import OpenEntries
from servermgr.core.job_streams import CHUNK, MAX_BYTES, JobStreams
from servermgr.ctl.wsclient import connect
from tests.support import (
    NO_AUTH_LIMIT,
    StartCore,
    StartNode,
    api,
    core_config,
    finished,
    online,
    submit,
    wait_for,
)

BIG = 16 * 1024 * 1024  # twice what may wait for one reader


@pytest.fixture
async def node(core: Core, start_node: StartNode) -> Core:
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    return core


def stalled_reader(core: Core, path: str) -> socket.socket:
    """A client that sends its request and never reads (a tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", core.port))
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    sock.sendall(f"{head}Authorization: Bearer {core.key.value}\r\n\r\n".encode())
    return sock


async def read_all(sock: socket.socket) -> bytes:
    def read() -> bytes:
        sock.settimeout(30)
        out = bytearray()
        while chunk := sock.recv(1 << 20):
            out += chunk
        return bytes(out)

    return await trio.to_thread.run_sync(read)


async def test_a_reader_that_never_reads_is_cut_off_and_others_get_everything(
    node: Core, caplog: Any
) -> None:
    core = node
    job = await submit(
        core,
        target="node-01",
        command=f"sleep 0.5; head -c {BIG} /dev/zero | tr '\\0' x",
        output_cap=BIG,
    )
    path = f"/api/v1/jobs/{job['id']}/stream"
    sock = stalled_reader(core, path)
    try:
        await wait_for(lambda: len(core.bus.subscriptions()) == 1)
        (slow,) = core.bus.subscriptions()
        got = bytearray()
        async with api(core) as client, client.stream("GET", path) as resp:
            async for line in resp.aiter_lines():
                event = json.loads(line)
                if event["type"] == "job.output":
                    assert event["offset"] == len(got)
                    got += base64.b64decode(event["data"])
        # The other reader got every byte, in order; the stalled one was cut
        # off with what waited for it bounded, and freed.
        assert len(got) == BIG
        assert got == b"x" * BIG
        assert isinstance(slow, Subscription)
        assert slow.too_slow is not None
        assert slow.peak_bytes <= MAX_BYTES
        assert slow.queued_bytes == 0
        assert core.bus.subscriptions() == []
        warnings = [r for r in caplog.records if "read too slowly" in r.getMessage()]
        assert len(warnings) == 1
        # Once it reads again, its stream ends with the reason, not "done".
        tail = await read_all(sock)
        assert b'"too_slow"' in tail
        assert b'"type": "job.done"' not in tail
    finally:
        sock.close()


def server_side_open(core: Core, client: socket.socket) -> bool:
    """Whether Core (this process) still holds its end of ``client``'s connection."""
    port = client.getsockname()[1]
    return any(
        c.laddr and c.laddr.port == core.port and c.raddr and c.raddr.port == port
        for c in psutil.Process().net_connections(kind="tcp")
    )


async def test_a_reader_that_never_reads_loses_its_connection_too(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    """Cut off, it also stops holding a task and a descriptor: once what Core
    sent has sat unread for [limits] send_timeout, the kernel drops it."""
    core = (
        await start_core(core_config(tmp_path, limits=f"{NO_AUTH_LIMIT}\nsend_timeout = 1\n"))
    ).core
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    job = await submit(
        core,
        target="node-01",
        command=f"sleep 0.5; head -c {BIG} /dev/zero | tr '\\0' x",
        output_cap=BIG,
    )
    sock = stalled_reader(core, f"/api/v1/jobs/{job['id']}/stream")
    try:
        await wait_for(lambda: server_side_open(core, sock))
        await finished(core, job["id"], limit=60)
        await wait_for(lambda: not core.bus.subscriptions(), limit=30)
        await wait_for(lambda: not server_side_open(core, sock), limit=30)
    finally:
        sock.close()


async def test_output_so_far_comes_in_bounded_chunks_and_by_range(node: Core) -> None:
    core = node
    size = 3 * CHUNK + 123
    job = await submit(core, target="node-01", command=f"head -c {size} /dev/urandom")
    done = await finished(core, job["id"])
    n = done["nodes"][0]
    whole = base64.b64decode(n["stdout_b64"])
    assert len(whole) == size
    async with api(core) as client:
        async with client.stream("GET", f"/api/v1/jobs/{job['id']}/stream") as resp:
            events = [json.loads(line) async for line in resp.aiter_lines()]
        chunks = [base64.b64decode(e["data"]) for e in events if e["type"] == "job.output"]
        assert max(map(len, chunks)) == CHUNK
        assert b"".join(chunks) == whole
        assert events[-1]["type"] == "job.done"

        base = f"/api/v1/jobs/{job['id']}/output/node-01/stdout"
        part = await client.get(base, params={"offset": 1000, "limit": 5000})
        assert part.status_code == 200
        assert part.content == whole[1000:6000]
        assert part.headers["x-total-bytes"] == str(size)
        past = await client.get(base, params={"offset": size + 10})
        assert past.content == b""
        sizes = (await client.get(f"/api/v1/jobs/{job['id']}", params={"output": "false"})).json()
        assert sizes["nodes"][0]["stdout_bytes"] == size
        assert "stdout_b64" not in sizes["nodes"][0]
        bad = await client.get(base.replace("stdout", "stdin"))
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "bad_request"
        missing = await client.get(base.replace("node-01", "node-99"))
        assert missing.status_code == 404


async def test_a_websocket_reader_that_stalls_is_closed_with_1008(node: Core, caplog: Any) -> None:
    core = node
    job = await submit(
        core,
        target="node-01",
        command=f"sleep 0.5; head -c {BIG} /dev/zero | tr '\\0' x",
        output_cap=BIG,
    )
    path = f"/api/v1/jobs/{job['id']}/ws"
    async with connect(core.url, path, core.key.value) as ws:
        # trio-websocket stops reading the socket while a message waits unread.
        await wait_for(
            lambda: any("read too slowly" in r.getMessage() for r in caplog.records), limit=30
        )

        async def read_to_the_end() -> None:
            with trio.fail_after(30):
                while True:
                    await ws.get_message()

        with pytest.raises(ConnectionClosed) as closed:
            await read_to_the_end()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1008
    assert (closed.value.reason.reason or "").startswith("too slow")
    async with api(core) as client:  # the job itself is unaffected
        with trio.fail_after(30):
            while True:
                doc = (await client.get(f"/api/v1/jobs/{job['id']}?output=false")).json()
                if doc["state"] == "done":
                    break
                await trio.sleep(0.1)
    assert doc["nodes"][0]["state"] == "succeeded"
    assert doc["nodes"][0]["stdout_bytes"] == BIG


class _OneJob:
    """What a job stream reads of the scheduler and the API, for one job whose
    events stop coming (another Core's, published while Redis was down)."""

    shared = True

    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.live = OpenEntries()
        self.store = self
        self.db = self
        self.out = b""
        self.state = "running"

    async def job_doc(self, job_id: str, *, output: bool = True) -> dict[str, Any]:
        node = {"node_id": "n1", "node": "node-01", "state": self.state, "exit_code": 0}
        node |= {"signal": None, "error": None, "duration": 0.1}
        node |= {"stdout_bytes": len(self.out), "stderr_bytes": 0}
        done = self.state == "succeeded"
        return {"id": job_id, "state": "done" if done else "running", "nodes": [node]}

    def output_range(self, job_id: str, node_id: str, stream: str, offset: int, n: int) -> bytes:
        return self.out[offset : offset + n] if stream == "stdout" else b""

    async def read(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


async def test_a_stream_whose_events_never_come_ends_from_the_stored_job(
    autojump_clock: trio.abc.Clock,
) -> None:
    job = _OneJob()
    streams = JobStreams(cast(Any, job), cast(Any, job))
    got: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in streams.events("j1"):
            got.append(event)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await wait_for(lambda: len(got) == 1)  # the job so far
            job.out = b"hel"
            data = base64.b64encode(b"hel").decode()
            output = {"type": "job.output", "job_id": "j1", "node_id": "n1", "node": "node-01"}
            job.bus.publish(output | {"stream": "stdout", "offset": 0, "data": data})
            await wait_for(lambda: len(got) == 2)
            # The rest happens on another Core; its events are lost, SQLite has it all.
            job.out, job.state = b"hello\n", "succeeded"
    assert [e["type"] for e in got] == ["job", "job.output", "job.output", "job.state", "job.done"]
    assert (got[2]["offset"], base64.b64decode(got[2]["data"])) == (3, b"lo\n")
    assert got[3]["state"] == "succeeded"
