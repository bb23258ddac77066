"""A job's stdin streamed from Core: real processes, Core played by the test."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from servermgr.common import flow, proto
from servermgr.common.config import ExecConfig
from servermgr.node import stdin as stdin_module
from servermgr.node.executor import Executor
from servermgr.node.stdin import Stdins

MiB = 1024 * 1024


class Core:
    """What the node sends; ``credit`` is what it granted and was not used yet."""

    def __init__(self) -> None:
        self.got: list[proto.NodeMessage] = []
        self.changed = trio.Event()
        self.credit = 0
        self.most_outstanding = 0

    async def __call__(self, msg: proto.NodeMessage) -> None:
        self.got.append(msg)
        if isinstance(msg, proto.StreamCredit):
            self.credit += msg.bytes
            self.most_outstanding = max(self.most_outstanding, self.credit)
        self.changed.set()

    async def wait(self, what: Any) -> Any:
        while True:
            found = [m for m in self.got if isinstance(m, what)]
            if found:
                return found[0]
            self.changed = trio.Event()
            await self.changed.wait()

    async def feed(self, stdins: Stdins, sid: str, size: int) -> None:
        """Send ``size`` zero bytes within the node's credit."""
        sent = 0
        while sent < size:
            while self.credit == 0:
                if any(isinstance(m, proto.StdinClosed) for m in self.got):
                    return  # the process stopped reading
                self.changed = trio.Event()
                await self.changed.wait()
            n = min(flow.CHUNK, self.credit, size - sent)
            self.credit -= n
            stdins.handle(proto.StdinData(stream_id=sid, data=bytes(n)))
            sent += n
            await trio.lowlevel.checkpoint()


def streamed(command: str) -> proto.JobRun:
    return proto.JobRun("j1", command, None, 20.0, MiB, stdin_stream=True)


class Output:
    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, out: proto.JobOutput) -> None:
        if out.stream == "stdout":
            self.data += out.chunk


async def run(command: str, script: Any) -> tuple[proto.JobResult, Core, bytes]:
    """Run ``command`` with a streamed stdin; ``script(stdins, core)`` plays Core."""
    ex = Executor(ExecConfig(), grace=0.5, chunk_interval=0.01, drain=0.1)
    core, out, results = Core(), Output(), []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            stdins = Stdins(ex.stdin_feed, core, nursery)

            async def job() -> None:
                results.append(await ex.run(streamed(command), out))

            nursery.start_soon(job)
            await trio.testing.wait_all_tasks_blocked()  # the job took its slot
            assert ex.stdin_feed("j1") is not None
            await script(stdins, core)
    return results[0], core, out.data


async def test_stdin_of_any_size_reaches_the_process_within_one_window() -> None:
    async def script(stdins: Stdins, core: Core) -> None:
        stdins.handle(proto.StdinOpen(stream_id="s1", job_id="j1"))
        await core.feed(stdins, "s1", 8 * MiB)
        stdins.handle(proto.StdinEnd(stream_id="s1", complete=True))

    result, core, out = await run("wc -c", script)
    assert result.outcome == "succeeded", result
    assert out.strip() == str(8 * MiB).encode()
    closed = [m for m in core.got if isinstance(m, proto.StdinClosed)]
    assert closed == [proto.StdinClosed(stream_id="s1", size=8 * MiB)]
    assert core.most_outstanding <= flow.WINDOW


async def test_a_process_that_stops_reading_ends_the_stream_without_error() -> None:
    async def script(stdins: Stdins, core: Core) -> None:
        stdins.handle(proto.StdinOpen(stream_id="s1", job_id="j1"))
        await core.feed(stdins, "s1", 64 * MiB)  # far more than it reads
        await core.wait(proto.StdinClosed)

    result, core, out = await run("head -c 10 | wc -c", script)
    assert result.outcome == "succeeded", result
    assert out.strip() == b"10"
    (closed,) = [m for m in core.got if isinstance(m, proto.StdinClosed)]
    assert closed.error is None
    assert closed.size < 64 * MiB


async def test_a_stream_opened_after_the_job_ended_is_closed_at_once() -> None:
    ex = Executor(ExecConfig(), grace=0.5, chunk_interval=0.01, drain=0.1)
    core = Core()
    with trio.fail_after(30):
        result = await ex.run(streamed("true"), Output())
        async with trio.open_nursery() as nursery:
            Stdins(ex.stdin_feed, core, nursery).handle(
                proto.StdinOpen(stream_id="s2", job_id="j1")
            )
    assert result.outcome == "succeeded"
    assert core.got == [proto.StdinClosed(stream_id="s2", size=0)]


async def test_input_cut_short_cancels_the_job() -> None:
    async def script(stdins: Stdins, core: Core) -> None:
        stdins.handle(proto.StdinOpen(stream_id="s1", job_id="j1"))
        await core.feed(stdins, "s1", 1000)
        stdins.handle(proto.StdinEnd(stream_id="s1", complete=False))

    # A script that would act on end of file: it must not get to.
    result, _, out = await run("cat >/dev/null; echo ran", script)
    assert result.outcome == "cancelled", result
    assert b"ran" not in out


async def test_a_lost_connection_to_core_cancels_the_job() -> None:
    ex = Executor(ExecConfig(), grace=0.5, chunk_interval=0.01, drain=0.1)
    core, out, results = Core(), Output(), []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def job() -> None:
                results.append(await ex.run(streamed("cat >/dev/null; echo ran"), out))

            nursery.start_soon(job)
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as connection:  # ends: the connection is lost
                stdins = Stdins(ex.stdin_feed, core, connection)
                stdins.handle(proto.StdinOpen(stream_id="s1", job_id="j1"))
                await core.feed(stdins, "s1", 1000)
                connection.cancel_scope.cancel()
    assert results[0].outcome == "cancelled"
    assert b"ran" not in out.data


async def test_no_stream_in_time_cancels_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    # ctl made the job and died before it sent any input: the job does not sit
    # on its stdin until its timeout (an hour here).
    monkeypatch.setattr(stdin_module, "ATTACH_WITHIN", 0.2)
    ex = Executor(ExecConfig(), grace=0.5, chunk_interval=0.01, drain=0.1)
    job = proto.JobRun("j1", "cat; echo ran", None, 3600.0, MiB, stdin_stream=True)
    out = Output()
    with trio.fail_after(30):
        result = await ex.run(job, out)
    assert result.outcome == "cancelled", result
    assert b"ran" not in out.data
