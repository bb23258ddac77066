"""The scheduler driving its own deadlines, on trio's autojump clock.

Real SQLite, a fake gateway (no sockets): each fake node answers a job.run
as told (answers, says nothing, never takes it, floods output).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, ParamSpec, TypeVar

import pytest
import trio

from servermgr.common import proto
from servermgr.common.selector import parse_target
from servermgr.core.bus import MemoryBus
from servermgr.core.entries import Delivery, JobSpec
from servermgr.core.jobqueue import MemoryJobQueue
from servermgr.core.registry import NodeRegistry
from servermgr.core.scheduler import ACCEPT_AFTER, Scheduler
from servermgr.core.status import MemoryStatus
from servermgr.core.storage import Storage
from servermgr.core.writer import Database

P = ParamSpec("P")
T = TypeVar("T")


class InlineDatabase(Database):
    """SQLite calls made in the trio thread: on the autojump clock no virtual
    time passes while a worker thread writes (the timeline is deterministic)."""

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args, **kwargs)

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args, **kwargs)


class FakeNodes:
    """The gateway as the scheduler sees it; ``how[node_id]`` says how a node behaves."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.online: set[str] = set()
        self.how: dict[str, str] = {}
        self.runs: list[str] = []
        self.cancels: list[str] = []
        self.stalled: list[str] = []
        self.scheduler: Scheduler | None = None

    def is_online(self, node_id: str) -> bool:
        return node_id in self.online

    async def deliver(self, node_id: str, msg: proto.CoreMessage) -> Delivery:
        if node_id not in self.online:
            return "offline"
        assert self.scheduler is not None
        how = self.how.get(node_id, "answer")
        if isinstance(msg, proto.JobCancel):
            self.cancels.append(node_id)
            return "sent"
        assert isinstance(msg, proto.JobRun)
        self.runs.append(node_id)
        if how == "slot":  # takes it, runs it 20 s later (waiting for a free slot)
            await self.scheduler.on_accepted(node_id, proto.JobAccepted(msg.job_id))
            self.nursery.start_soon(self.later, node_id, msg.job_id)
            return "sent"
        if how == "stuck":  # the connection never takes it: the gateway's bound
            await trio.sleep(5)
            self.online.discard(node_id)
            return "stalled"
        if how in ("answer", "output", "flood"):
            job = msg.job_id
            await self.scheduler.on_output(node_id, proto.JobOutput(job, "stdout", 0, b""))
            chunk = b"x" * proto.MAX_CHUNK_BYTES if how == "flood" else b"hello\n"
            for i in range(3 if how == "flood" else 1):
                out = proto.JobOutput(job, "stdout", i * len(chunk), chunk)
                await self.scheduler.on_output(node_id, out)
            if how != "output":
                self.nursery.start_soon(self.result, node_id, job, "succeeded")
        return "sent"

    async def later(self, node_id: str, job_id: str) -> None:
        assert self.scheduler is not None
        await trio.sleep(20)
        await self.scheduler.on_output(node_id, proto.JobOutput(job_id, "stdout", 0, b""))
        await self.result(node_id, job_id, "succeeded")

    async def result(self, node_id: str, job_id: str, outcome: str) -> None:
        assert self.scheduler is not None
        msg = proto.JobResult(job_id, outcome, 0, None, None, 0.1, 0, 0, False, False)

        async def ack() -> None:
            pass

        await self.scheduler.on_result(node_id, msg, ack)

    def disconnect_stalled(self, node_id: str, reason: str) -> None:
        self.stalled.append(node_id)
        self.online.discard(node_id)


class World:
    def __init__(self, scheduler: Scheduler, nodes: FakeNodes, registry: NodeRegistry) -> None:
        self.jobs = scheduler
        self.nodes = nodes
        self.registry = registry

    async def node(self, name: str, how: str = "answer", *, online: bool = True) -> str:
        row, _ = await self.registry.register(name, {})
        self.nodes.how[row.id] = how
        if online:
            self.nodes.online.add(row.id)
        return row.id

    async def submit(self, target: str, **kw: Any) -> str:
        spec = JobSpec(
            parse_target(target),
            kw.get("command", "echo hello"),
            None,
            kw.get("timeout", 60.0),
            kw.get("output_cap", 1 << 20),
            {},
            None,
            kw.get("wait", 0.0),
        )
        return await self.jobs.submit(spec, principal="test")

    async def done(self, job_id: str) -> dict[str, dict[str, Any]]:
        doc = await self.jobs.job_doc(job_id, output=False)
        while doc is not None and doc["state"] != "done":  # noqa: ASYNC110 (virtual time)
            await trio.sleep(0.1)
            doc = await self.jobs.job_doc(job_id, output=False)
        return await self.states(job_id)

    async def states(self, job_id: str) -> dict[str, dict[str, Any]]:
        doc = await self.jobs.job_doc(job_id)
        assert doc is not None
        return {n["node"]: n for n in doc["nodes"]}


@pytest.fixture
async def world(storage: Storage, nursery: trio.Nursery) -> AsyncIterator[World]:
    db = InlineDatabase(storage)
    registry = NodeRegistry(db, clock=trio.current_time)
    nodes = FakeNodes(nursery)
    scheduler = Scheduler(
        db,
        registry,
        nodes,
        MemoryBus(),
        MemoryJobQueue(),
        MemoryStatus("core-1"),
        core_id="core-1",
        clock=trio.current_time,
    )
    nodes.scheduler = scheduler
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await scheduler.serve(task_status=task_status)

    await nursery.start(run)
    yield World(scheduler, nodes, registry)
    scope.cancel()


async def test_a_silent_node_is_stalled_while_the_others_finish(
    world: World, autojump_clock: trio.abc.Clock
) -> None:
    await world.node("fast-1")
    silent = await world.node("silent", "silent")
    await world.node("fast-2")
    job = await world.submit("all")
    while (s := await world.states(job))["fast-2"]["state"] != "succeeded":  # noqa: ASYNC110
        await trio.sleep(0.1)
    # Both others are done while the silent one still has its job.run unanswered.
    assert s["fast-1"]["state"] == "succeeded"
    assert s["silent"]["state"] == "sent"
    start = trio.current_time()
    states = await world.done(job)
    assert trio.current_time() - start <= ACCEPT_AFTER + 1  # virtual time, deterministic
    assert states["silent"]["state"] == "stalled"
    assert "stalled" in states["silent"]["error"]
    assert world.nodes.stalled == [silent]
    assert states["fast-1"]["stdout"] == "hello\n"


async def test_a_node_that_took_the_job_is_not_stalled_however_long_it_waits_to_run_it(
    world: World, autojump_clock: trio.abc.Clock
) -> None:
    await world.node("busy", "slot")
    job = await world.submit("busy")
    assert (await world.done(job))["busy"]["state"] == "succeeded"
    assert world.nodes.stalled == []


async def test_a_connection_that_never_takes_the_job_run_is_stalled(
    world: World, autojump_clock: trio.abc.Clock
) -> None:
    stuck = await world.node("stuck", "stuck")
    await world.node("fast")
    job = await world.submit("all")
    states = await world.done(job)
    assert states["stuck"]["state"] == "stalled"
    assert states["fast"]["state"] == "succeeded"
    assert stuck not in world.nodes.online  # the gateway closed it (its send bound)


async def test_a_stalled_job_that_may_wait_is_not_sent_twice(
    world: World, autojump_clock: trio.abc.Clock
) -> None:
    silent = await world.node("silent", "silent")
    job = await world.submit("silent", wait=60)
    while world.nodes.stalled != [silent]:  # noqa: ASYNC110
        await trio.sleep(0.1)
    assert (await world.states(job))["silent"]["state"] == "queued"
    # It comes back holding the job (it read it late): no second job.run.
    world.nodes.online.add(silent)
    await world.jobs.node_online(silent, {job})
    assert (await world.states(job))["silent"]["state"] == "sent"
    await world.nodes.result(silent, job, "succeeded")
    assert (await world.done(job))["silent"]["state"] == "succeeded"
    assert world.nodes.runs == [silent]


async def test_lost_keeps_the_output_that_arrived_and_a_late_result_keeps_it_too(
    world: World, autojump_clock: trio.abc.Clock
) -> None:
    node = await world.node("quiet", "output")
    job = await world.submit("quiet", timeout=10)
    start = trio.current_time()
    lost = (await world.done(job))["quiet"]
    assert trio.current_time() - start >= 10 + 30
    assert lost["state"] == "lost"
    assert lost["stdout"] == "hello\n"
    await world.nodes.result(node, job, "succeeded")  # it came back after all
    late = (await world.states(job))["quiet"]
    assert late["state"] == "succeeded"
    assert late["stdout"] == "hello\n"


async def test_core_keeps_at_most_the_output_cap_whatever_the_node_sends(
    world: World, autojump_clock: trio.abc.Clock
) -> None:
    await world.node("flood", "flood")
    job = await world.submit("flood", output_cap=1024)
    n = (await world.done(job))["flood"]
    assert n["state"] == "succeeded"
    assert n["stdout_bytes"] == 1024
    assert n["stdout_truncated"] is True  # though the node said it was not


async def test_queued_expires_when_the_node_stays_away_and_runs_when_it_is_back(
    world: World, autojump_clock: trio.abc.Clock
) -> None:
    away = await world.node("away", online=False)
    back = await world.node("back", online=False)
    job = await world.submit("away,back", wait=20)
    await trio.sleep(5)
    world.nodes.online.add(back)
    await world.jobs.node_online(back, set())
    states = await world.done(job)
    assert states["back"]["state"] == "succeeded"
    assert states["away"]["state"] == "expired"
    assert world.nodes.runs == [back]
    assert away not in world.nodes.runs


async def test_cancel_ends_queued_entries_and_tells_nodes_running_it(
    world: World, autojump_clock: trio.abc.Clock
) -> None:
    await world.node("away", online=False)
    busy = await world.node("busy", "output")
    job = await world.submit("away,busy", wait=60)
    while (await world.states(job))["busy"]["state"] != "running":  # noqa: ASYNC110
        await trio.sleep(0.1)
    assert await world.jobs.cancel(job)
    assert (await world.states(job))["away"]["state"] == "cancelled"
    while world.nodes.cancels != [busy]:  # noqa: ASYNC110
        await trio.sleep(0.1)
    assert not await world.jobs.cancel("no-such-job")
