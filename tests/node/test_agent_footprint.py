"""The node agent stays small: what it imports, what it keeps, how it registers."""

from __future__ import annotations

import contextlib
import functools
import gc
import subprocess
import sys
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from trio_websocket import CloseReason, ConnectionClosed

from servermgr.common import heap, proto
from servermgr.common.config import parse_config
from servermgr.common.errors import CoreUnreachableError, single_error
from servermgr.core.app import Core
from servermgr.node import transport
from servermgr.node.agent import Agent
from servermgr.node.identity import Identity
from tests.support import StartNode, finished, free_port, online, submit, wait_for

# Each is a measured cost for the agent, needed by other roles or rare paths only.
NOT_IN_AGENT = (
    "httpx",  # ~10 MiB; registration uses http.client
    "http.client",  # only when registering
    "json",  # identity and spool use msgspec
    "servermgr.node.executor",  # at the first job
    "typer",
    "click",
    "pydantic",
    "rich",
    "servermgr.ctl.client",
    "servermgr.core",
)


def test_the_agent_imports_only_what_a_reporting_node_needs() -> None:
    code = (
        "import os, sys, servermgr.main, servermgr.node.run, servermgr.cli.admin\n"
        "from servermgr.cli import spec, commands\n"
        "spec.parse(commands.ROOT, ['node', 'run', '-c', 'x.toml'], os.environ)\n"
        f"print(' '.join(m for m in {NOT_IN_AGENT!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == []


async def test_registering_with_no_core_listening_is_core_unreachable() -> None:
    port = free_port()
    with pytest.raises(CoreUnreachableError) as info:
        await transport.register(f"ws://127.0.0.1:{port}", "token", "node-01", {})
    assert str(info.value) == (
        f"cannot reach Core at http://127.0.0.1:{port}/api/v1/register: Connection refused"
    )


async def register_against(
    fake_core: Callable[[trio.SocketStream], Awaitable[None]], refusal: str
) -> None:
    """Register with a fake Core on 127.0.0.1; it must fail as unreachable, matching ``refusal``."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, fake_core, 0, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        port = listener.socket.getsockname()[1]
        with pytest.raises(CoreUnreachableError, match=refusal):
            await transport.register(f"ws://127.0.0.1:{port}", "token", "node-01", {})
        nursery.cancel_scope.cancel()


async def test_registering_with_something_that_is_not_http_is_core_unreachable() -> None:
    async def not_http(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n")
        await stream.aclose()

    await register_against(not_http, "cannot reach Core at http://127.0.0.1")


async def test_a_registration_answer_too_large_is_refused_unread() -> None:
    async def flood(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        body = b"x" * (transport.REGISTER_MAX_ANSWER * 4)
        head = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(body)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(head + body)
        await stream.aclose()

    await register_against(flood, "answer over 65536 bytes")


async def test_a_job_is_not_kept_in_memory_once_core_has_its_result(
    core: Core, start_node: StartNode
) -> None:
    node = await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    job = await submit(core, target="node-01", command="seq 1 20000; sleep 0.3")
    await wait_for(lambda: job["id"] in node.agent.jobs)
    kept = weakref.ref(node.agent.jobs[job["id"]])
    await finished(core, job["id"])
    await wait_for(lambda: not node.agent.jobs)
    gc.collect()
    assert kept() is None


def test_trim_can_be_called_at_any_time() -> None:
    heap.trim()
    heap.trim()


class _ClosingWebSocket:
    """Welcomes the agent; once ``closed`` is set, every call raises ConnectionClosed."""

    def __init__(self) -> None:
        self.closed = trio.Event()
        welcome = proto.Welcome(node_id="n1", heartbeat_interval=5.0, server_time=0.0)
        self.replies = [proto.encode(welcome)]
        self.reason = CloseReason(1001, "going away")

    async def send_message(self, text: str) -> None:
        if self.closed.is_set():
            raise ConnectionClosed(self.reason)

    async def get_message(self) -> str:
        if self.replies:
            return self.replies.pop(0)
        await self.closed.wait()
        raise ConnectionClosed(self.reason)


async def test_core_closing_while_a_heartbeat_goes_out_is_one_lost_connection(
    tmp_path: Path,
) -> None:
    cfg = parse_config(
        '[node]\ncore_addr = "ws://127.0.0.1:1"\nregister_token = "t"\n',
        source=None,
        base_dir=tmp_path,
    )
    agent = Agent(cfg)
    ws = _ClosingWebSocket()
    raised: list[BaseException] = []

    async def session() -> None:
        try:
            await agent._session(ws, Identity("n1", "n1", "secret"))  # type: ignore[arg-type]
        except BaseException as exc:
            raised.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session)
            await trio.testing.wait_all_tasks_blocked()
            # Sender and reader wake together: one to send a heartbeat, one to see the close.
            agent.backlog.add(agent.collector.sample())
            ws.closed.set()
            agent._wake.set()
    (exc,) = raised
    assert isinstance(single_error(exc), ConnectionClosed)
