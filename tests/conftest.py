"""Shared fixtures: Core and node agents in-process on 127.0.0.1 port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from servermgr.common.config import Config
from servermgr.core.app import Core, serve
from servermgr.core.storage import Storage
from servermgr.node.agent import Agent
from tests.support import (
    RecordingCollector,
    RunningCore,
    RunningNode,
    StartCore,
    StartNode,
    core_config,
    node_config,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the ``storage`` fixture's database lives (its directory does not exist yet)."""
    return tmp_path / "data" / "core.db"


@pytest.fixture
def storage(db_path: Path) -> Iterator[Storage]:
    """A real SQLite database, migrated, closed after the test."""
    st = Storage.open(db_path)
    yield st
    st.close()


@pytest.fixture
async def start_core(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartCore]:
    """Start a Core (several may run one after another on the same data dir)."""
    running: list[RunningCore] = []

    async def start(config: Config | None = None) -> RunningCore:
        cfg = config or core_config(tmp_path)
        stop, done = trio.Event(), trio.Event()

        async def run(task_status: trio.TaskStatus[Core] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve(cfg, stop, task_status=task_status)
            finally:
                done.set()

        core = await nursery.start(run)
        rc = RunningCore(core, stop, done)
        running.append(rc)
        return rc

    yield start
    for rc in running:
        rc.stop.set()
    with trio.move_on_after(10):
        for rc in running:
            await rc.done.wait()


@pytest.fixture
async def core(start_core: StartCore) -> Core:
    return (await start_core()).core


@pytest.fixture
def start_node(nursery: trio.Nursery, tmp_path: Path) -> StartNode:
    async def start(
        core: Core, name: str, *, config: Config | None = None, **labels: str
    ) -> RunningNode:
        collector = RecordingCollector()
        agent = Agent(config or node_config(core, tmp_path, name, **labels), collector=collector)
        node = RunningNode(agent, collector, trio.CancelScope(), trio.Event())

        async def run() -> None:
            try:
                with node.scope:
                    await agent.run()
            except Exception as exc:  # surfaced to the test through node.error
                node.error = exc
            finally:
                node.done.set()

        nursery.start_soon(run)
        return node

    return start
