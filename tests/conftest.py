"""Shared fixtures: Core and node agents in-process on 127.0.0.1 port 0."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from servermgr.common.config import Config
from servermgr.core.app import Core, serve
from servermgr.core.storage import Storage
from servermgr.node.agent import Agent
from tests.support import (
    REDIS_INSTALL,
    RecordingCollector,
    RedisServer,
    RunningCore,
    RunningNode,
    SmtpServer,
    StartCore,
    StartNode,
    StartRedis,
    WebhookServer,
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
        core: Core,
        name: str,
        *,
        config: Config | None = None,
        collector: RecordingCollector | None = None,
        **labels: str,
    ) -> RunningNode:
        collector = collector or RecordingCollector()
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


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start redis-servers of the test's own (``start(password=...)``), killed after.

    Without redis-server installed the test is skipped with how to install
    it; in CI (the ``CI`` variable set, as ``.ci/run`` does) it fails instead,
    and a redis-server that cannot start fails it anywhere.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"{REDIS_INSTALL} (CI runs every Redis test)")
        pytest.skip(REDIS_INSTALL)
    servers: list[RedisServer] = []

    def start(password: str | None = None) -> RedisServer:
        server = RedisServer(exe, tmp_path / f"redis{len(servers)}", password=password)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def redis_server(start_redis: StartRedis) -> RedisServer:
    """One redis-server without a password."""
    return start_redis()


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A local HTTP server receiving webhooks (tests/support.py)."""
    server = WebhookServer()
    yield server
    server.close()


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """A local SMTP server (aiosmtpd) with STARTTLS and a login."""
    server = SmtpServer(tmp_path)
    yield server
    server.close()
