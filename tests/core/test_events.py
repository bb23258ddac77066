"""The client event stream (/api/v1/events) with a real Core and real node agents."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pty
import re
import signal
import sqlite3
import struct
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from servermgr.core.app import Core
from servermgr.core.events_api import MAX_EVENTS
from servermgr.ctl.wsclient import connect
from tests.support import SERVERMGR, StartCore, StartNode, core_config, wait_for

Msg = dict[str, Any]


@asynccontextmanager
async def events(core: Core, query: str = "", key: str | None = "core") -> AsyncIterator[Stream]:
    path = "/api/v1/events" + (f"?{query}" if query else "")
    async with connect(core.url, path, core.key.value if key == "core" else key) as ws:
        yield Stream(ws)


@dataclasses.dataclass
class Stream:
    ws: WebSocketConnection
    seen: list[Msg] = dataclasses.field(default_factory=list)

    async def next(self, limit: float = 5) -> Msg:
        with trio.fail_after(limit):
            msg: Msg = json.loads(await self.ws.get_message())
        self.seen.append(msg)
        return msg

    async def until(self, pred: Any, limit: float = 10) -> Msg:
        """The first message for which ``pred`` is true; fails after ``limit`` seconds."""
        with trio.fail_after(limit):
            while True:
                msg = await self.next(limit)
                if pred(msg):
                    return msg


async def online(core: Core, name: str) -> bool:
    row = core.registry.by_ref(name)
    st = await core.status.get(row.id) if row else None
    return bool(st and st.online and st.latest is not None)


async def offline(core: Core, name: str) -> bool:
    return not await online(core, name)


async def all_online(core: Core, names: list[str]) -> bool:
    return all([await online(core, name) for name in names])


def heartbeat_of(name: str) -> Any:
    return lambda m: m["type"] == "heartbeats" and any(n["name"] == name for n in m["nodes"])


async def test_without_the_core_key_the_stream_is_refused(core: Core) -> None:
    for key in (None, "0" * 64):
        with pytest.raises(ConnectionRejected) as info:
            async with events(core, key=key):
                pass
        assert info.value.status_code == 401
        assert info.value.body is not None
        assert json.loads(info.value.body)["error"]["code"] == "unauthorized"
    with pytest.raises(ConnectionRejected) as info:
        async with events(core, "types=node,bogus"):
            pass
    assert info.value.status_code == 400
    assert info.value.body is not None
    assert "bogus" in json.loads(info.value.body)["error"]["message"]


async def test_snapshot_then_online_heartbeats_and_offline(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "node-a", role="web")
    await wait_for(lambda: online(core, "node-a"))
    async with events(core, "interval=0.1") as stream:
        snap = await stream.next()
        assert snap["type"] == "snapshot"
        assert [n["name"] for n in snap["nodes"]] == ["node-a"]
        async with httpx.AsyncClient(
            base_url=core.url, headers={"Authorization": f"Bearer {core.key.value}"}
        ) as http:
            listed = (await http.get("/api/v1/nodes")).json()
        assert snap["nodes"][0].keys() == listed[0].keys()
        assert snap["nodes"][0]["status"] == "online"
        assert snap["nodes"][0]["labels"] == {"role": "web"}

        beat = await stream.until(heartbeat_of("node-a"))
        node = next(n for n in beat["nodes"] if n["name"] == "node-a")
        assert 0 <= node["cpu_percent"] <= 100
        assert node["mem_percent"] is not None
        later = await stream.until(heartbeat_of("node-a"))
        assert (
            next(n for n in later["nodes"] if n["name"] == "node-a")["sample_ts"]
            > node["sample_ts"]
        )

        b = await start_node(core, "node-b", role="db")
        up = await stream.until(lambda m: m["type"] == "node.online")
        assert up["name"] == "node-b"
        assert up["node"]["labels"] == {"role": "db"}
        assert up["node"]["status"] == "online"
        await stream.until(heartbeat_of("node-b"))

        b.kill()
        down = await stream.until(lambda m: m["type"] == "node.offline")
        assert down["name"] == "node-b"
        assert down["node_id"] == up["node_id"]
        assert down["reason"]


async def test_snapshot_has_recent_history_from_the_database(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "node-a")
    row_id = ""

    def stored() -> int:
        nonlocal row_id
        row = core.registry.by_ref("node-a")
        if row is None:
            return 0
        row_id = row.id
        with sqlite3.connect(core.config.storage.sqlite_path) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM metrics WHERE node = ?", (row.seq,)
            ).fetchone()
        return int(n)

    await wait_for(lambda: stored() >= 4, limit=10)
    async with events(core, "history=3") as stream:
        snap = await stream.next()
    hist = snap["history"][row_id]
    assert len(hist["cpu_percent"]) == 3
    assert len(hist["ts"]) == 3
    assert hist["ts"] == sorted(hist["ts"])
    assert all(0 <= v <= 100 for v in hist["cpu_percent"])
    async with events(core, "history=0") as stream:
        assert (await stream.next())["history"] == {}


async def test_filters_by_type_and_node(core: Core, start_node: StartNode) -> None:
    await start_node(core, "node-a")
    await start_node(core, "node-b")
    await wait_for(lambda: all_online(core, ["node-a", "node-b"]))
    async with (
        events(core, "types=node&nodes=node-b") as only_b,
        events(core, "types=heartbeat&nodes=node-a&interval=0") as beats_a,
    ):
        snap = await only_b.next()
        assert [n["name"] for n in snap["nodes"]] == ["node-b"]
        assert (await beats_a.next())["type"] == "snapshot"
        assert core.gateway.heartbeat_watchers.count == 1  # only the stream that asked
        for _ in range(5):
            msg = await beats_a.next()
            assert msg["type"] == "heartbeats"
            assert [n["name"] for n in msg["nodes"]] == ["node-a"]
        c = await start_node(core, "node-c")
        await wait_for(lambda: online(core, "node-c"))
        c.kill()
        await wait_for(lambda: offline(core, "node-c"))
        # node-b's stream saw nothing of node-c and no heartbeats: only silence.
        with trio.move_on_after(0.5):
            msg = await only_b.next()
            pytest.fail(f"unexpected event for the node-b stream: {msg}")
    await wait_for(lambda: core.gateway.heartbeat_watchers.count == 0, limit=5)


async def test_job_state_changes(core: Core, start_node: StartNode) -> None:
    await start_node(core, "node-a")
    await start_node(core, "node-b")
    await wait_for(lambda: all_online(core, ["node-a", "node-b"]))
    async with events(core, "types=job&nodes=node-a") as stream:
        assert (await stream.next())["jobs_open"] == []
        async with httpx.AsyncClient(
            base_url=core.url, headers={"Authorization": f"Bearer {core.key.value}"}
        ) as http:
            other = await http.post("/api/v1/jobs", json={"target": "node-b", "command": "true"})
            resp = await http.post("/api/v1/jobs", json={"target": "node-a", "command": "exit 3"})
        assert other.status_code == resp.status_code == 201
        job_id = resp.json()["id"]
        done = await stream.until(lambda m: m["type"] == "job.done")
    assert done["job_id"] == job_id
    states = [m["state"] for m in stream.seen if m["type"] == "job.state"]
    assert states[-1] == "failed"
    assert "sent" in states
    final = [m for m in stream.seen if m["type"] == "job.state"][-1]
    assert final["exit_code"] == 3
    assert final["node"] == "node-a"
    assert {m.get("job_id") for m in stream.seen[1:]} == {job_id}  # node-b's job filtered out


async def test_core_shutdown_ends_the_stream_promptly(
    start_core: StartCore, start_node: StartNode
) -> None:
    running = await start_core()
    async with events(running.core) as stream:
        await stream.next()
        running.stop.set()
        msg = await stream.until(lambda m: m["type"] == "shutdown", limit=3)
        assert msg["reason"]
        with pytest.raises(ConnectionClosed) as closed:
            await stream.next(limit=3)
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1001
    with trio.fail_after(3):
        await running.done.wait()


async def test_a_client_that_stops_reading_is_disconnected_not_core(
    start_core: StartCore, start_node: StartNode, tmp_path: Any, caplog: Any
) -> None:
    cfg = core_config(tmp_path, interval=0.05)
    running = await start_core(cfg)
    core = running.core
    for i in range(3):
        await start_node(core, f"n{i}")
    await wait_for(lambda: all_online(core, [f"n{i}" for i in range(3)]))
    async with events(core, "interval=0") as stalled, events(core, "types=node") as other:
        await stalled.next()
        await other.next()
        await wait_for(lambda: len(core.bus.subscriptions()) == 2)
        # Flood the bus well past a stream's queue: publish() never waits.
        for i in range(MAX_EVENTS + 100):
            core.bus.publish(
                {"type": "node.offline", "node_id": "x", "name": "x", "reason": str(i)}
            )
        # Both overflowed at once (neither could run meanwhile) and were cut off,
        # with their queues freed at once; Core and its nodes carry on.
        assert core.bus.subscriptions() == []
        assert len(await core.status.all()) == 3
        with pytest.raises(ConnectionClosed) as closed:
            await stalled.until(lambda m: False, limit=10)
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1008
        assert (closed.value.reason.reason or "").startswith("too slow")
    warnings = [r for r in caplog.records if "read too slowly" in r.getMessage()]
    assert len(warnings) == 2  # once per stream, not once per event


# --- end to end: `servermgr ctl top` in a pseudo-terminal ---------------------------

ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>78])")


@dataclasses.dataclass
class Terminal:
    """``servermgr ctl top`` on an 80x24 pseudo-terminal; ``raw`` is all it wrote."""

    proc: trio.Process
    master: int
    raw: bytearray = dataclasses.field(default_factory=bytearray)

    def text(self, since: int = 0) -> str:
        return ANSI.sub(b"", bytes(self.raw[since:])).decode("utf-8", "replace")

    async def until(self, pattern: str, *, since: int = 0, limit: float = 15) -> re.Match[str]:
        """Read the screen until ``pattern`` shows up after byte ``since``."""
        with trio.move_on_after(limit):
            while not (found := re.search(pattern, self.text(since))):
                await self.read()
            return found
        raise AssertionError(f"{pattern!r} not on the screen; it shows:\n{self.text()[-3000:]}")

    async def read(self) -> bool:
        await trio.lowlevel.wait_readable(self.master)
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        self.raw += data
        return bool(data)

    async def exit_code(self, limit: float = 10) -> int:
        with trio.fail_after(limit):
            while await self.read():
                pass
            return await self.proc.wait()

    def modes(self) -> int:
        return termios.tcgetattr(self.master)[3]  # type: ignore[no-any-return]


@asynccontextmanager
async def ctl_top(core: Core) -> AsyncIterator[Terminal]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVERMGR_")}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    env.update(TERM="xterm-256color", SERVERMGR_CORE=core.url, SERVERMGR_KEY=core.key.value)
    try:
        proc = await trio.lowlevel.open_process(
            [*SERVERMGR, "ctl", "top"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    term = Terminal(proc, master)
    try:
        yield term
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5):
                await proc.wait()
        os.close(master)


def cpu_row(name: str) -> str:
    return rf"{re.escape(name)}\s+(\d+)%"


@pytest.mark.e2e
async def test_ctl_top_shows_nodes_live_marks_offline_and_quits(
    core: Core, start_node: StartNode
) -> None:
    names = ("web-1", "web-2", "db-1")
    nodes = {name: await start_node(core, name) for name in names}
    await wait_for(lambda: all_online(core, names))
    with trio.fail_after(45):
        async with ctl_top(core) as term:
            echo_and_lines = termios.ECHO | termios.ICANON
            for name in names:
                await term.until(cpu_row(name))
            assert "● live" in term.text()
            assert term.modes() & echo_and_lines == 0  # keys one by one, no echo
            mark = len(term.raw)
            await term.until(cpu_row("web-1"), since=mark)  # repainted with live data
            nodes["db-1"].kill()
            mark = len(term.raw)
            await term.until(r"db-1\s+(\d+%|-)\s+offline", since=mark)
            assert "1 job" not in term.text()
            os.write(term.master, b"q")
            assert await term.exit_code() == 0
            assert term.modes() & echo_and_lines == echo_and_lines  # terminal restored
            assert b"\x1b[?1049l" in term.raw  # left the alternate screen


@pytest.mark.e2e
async def test_ctl_top_rides_out_a_core_restart_and_stops_on_sigterm(
    start_core: StartCore, start_node: StartNode, tmp_path: Any
) -> None:
    first = await start_core()
    await start_node(first.core, "node-1")
    await wait_for(lambda: online(first.core, "node-1"))
    with trio.fail_after(60):
        async with ctl_top(first.core) as term:
            await term.until(cpu_row("node-1"))
            os.write(term.master, b"\r")  # the detail panel, with its jobs
            await term.until(r"no jobs on this node yet")
            os.write(term.master, b"\x1b")
            mark = len(term.raw)
            await term.until(cpu_row("node-1"), since=mark)
            first.stop.set()
            await first.done.wait()
            await term.until("reconnecting…", since=mark)
            cfg = core_config(tmp_path)
            port = first.core.port
            cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, listen_port=port))
            second = await start_core(cfg)
            await wait_for(lambda: online(second.core, "node-1"), limit=15)
            mark = len(term.raw)
            await term.until("● live", since=mark, limit=20)
            await term.until(cpu_row("node-1"), since=mark)
            term.proc.send_signal(signal.SIGTERM)
            assert await term.exit_code() == 128 + signal.SIGTERM
            assert term.modes() & termios.ECHO
