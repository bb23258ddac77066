"""Shared fixtures: Core and node agents in-process on 127.0.0.1 port 0."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from servermgr.common.config import Config, NodeConfig, parse_config
from servermgr.core.app import Core, serve
from servermgr.node.agent import Agent

INTERVAL = 0.2


def core_config(tmp_path: Path, *, interval: float = INTERVAL, extra: str = "") -> Config:
    text = f'[server]\nlisten = "127.0.0.1:0"\nheartbeat_interval = {interval}\n' + extra
    return parse_config(text, source=None, base_dir=tmp_path / "core")


def node_config(core: Core, tmp_path: Path, name: str, **labels: str) -> Config:
    base = parse_config("", source=None, base_dir=tmp_path)
    return dataclasses.replace(
        base,
        node=NodeConfig(
            core_addr=core.url.replace("http://", "ws://"),
            register_token=core.key.value,
            hostname=name,
            data_dir=tmp_path / "nodes" / name,
            labels=labels,
        ),
    )


@dataclasses.dataclass
class RunningCore:
    core: Core
    stop: trio.Event
    done: trio.Event


StartCore = Callable[..., Awaitable[RunningCore]]


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


@dataclasses.dataclass
class RunningNode:
    agent: Agent
    scope: trio.CancelScope
    done: trio.Event
    error: BaseException | None = None

    def kill(self) -> None:
        self.scope.cancel()


StartNode = Callable[..., Awaitable[RunningNode]]


@pytest.fixture
def start_node(nursery: trio.Nursery, tmp_path: Path) -> StartNode:
    async def start(
        core: Core, name: str, *, config: Config | None = None, **labels: str
    ) -> RunningNode:
        agent = Agent(config or node_config(core, tmp_path, name, **labels))
        node = RunningNode(agent, trio.CancelScope(), trio.Event())

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


async def wait_for(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``predicate`` (cheap, in-memory state of another component) until true.

    Fails after ``limit`` seconds. Polling is deliberate: the components under
    test expose no event for every condition a test waits on.
    """
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)
