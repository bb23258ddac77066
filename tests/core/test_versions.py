"""Protocol versions in hello/welcome: a Core talks to agents one version older and
newer, and says clearly when an agent is too old for what is asked of it.

Fake nodes are raw WebSocket clients that speak an older or newer version.
"""

from __future__ import annotations

import json

import msgspec
import pytest
from trio_websocket import ConnectionClosed

from servermgr.common import proto
from servermgr.common.errors import ProtocolError
from servermgr.core.app import Core
from servermgr.ctl import cp
from servermgr.node import transport
from tests.support import api, online, wait_for

INFO = proto.SystemInfo(
    os=None, kernel=None, arch=None, cpu_model=None, cpu_count=None, mem_total=None, boot_time=None
)


def hello(node_id: str, protocol: int, min_protocol: int | None = None) -> proto.Hello:
    return proto.Hello(
        protocol=protocol,
        node_id=node_id,
        hostname="old-01",
        agent_version="0.0.9",
        info=INFO,
        min_protocol=msgspec.UNSET if min_protocol is None else min_protocol,
    )


def test_negotiation_picks_the_newest_version_both_speak() -> None:
    assert proto.negotiate(hello("n1", 1)) == 1
    assert proto.negotiate(hello("n1", 2, 1)) == 2
    assert proto.negotiate(hello("n1", 3, 2)) == 3
    assert proto.negotiate(hello("n1", 4, 3)) == 3  # one version newer, still speaks 3
    assert proto.negotiate(hello("n1", 5, 4)) is None
    with pytest.raises(ProtocolError, match="too new"):
        proto.decode(proto.encode(hello("n1", 5, 4)))
    with pytest.raises(ProtocolError, match="too old"):
        proto.decode(proto.encode(hello("n1", 0)))


async def test_an_agent_one_version_older_works_but_gets_no_streams(core: Core) -> None:
    doc = await transport.register(core.url, core.key.value, "old-01", {})
    async with transport.connect(core.url, doc["credential"]) as ws:
        await ws.send_message(proto.encode(hello(doc["node_id"], 1)))
        welcome = json.loads(await ws.get_message())
        # A version 1 agent forbids unknown fields: welcome has no "protocol" for it.
        assert welcome["type"] == "welcome"
        assert "protocol" not in welcome
        await wait_for(lambda: online(core, "old-01"))
        conn = cp.Connection(core.url, core.key.value, None)
        out = await cp.pull(conn, "old-01", "/etc/hostname", core.config.storage.data_dir / "x")
        assert out.code == "too_old"
        assert "0.0.9" in (out.error or "")
        async with api(core) as client:
            resp = await client.post("/api/v1/nodes/old-01/upgrade", json={})
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] in ("too_old", "no_agent")


async def test_an_agent_one_version_newer_is_told_which_version_to_speak(core: Core) -> None:
    doc = await transport.register(core.url, core.key.value, "new-01", {})
    async with transport.connect(core.url, doc["credential"]) as ws:
        await ws.send_message(proto.encode(hello(doc["node_id"], 4, 3)))
        welcome = proto.decode(await ws.get_message())
        assert isinstance(welcome, proto.Welcome)
        assert welcome.protocol == 3


async def test_an_agent_of_version_2_is_sent_no_stdin_stream(core: Core) -> None:
    doc = await transport.register(core.url, core.key.value, "two-01", {})
    async with transport.connect(core.url, doc["credential"]) as ws:
        await ws.send_message(proto.encode(hello(doc["node_id"], 2, 1)))
        await ws.get_message()  # welcome
        await wait_for(lambda: online(core, "two-01"))
        async with api(core) as client:
            body = {"target": "two-01", "command": "cat", "stdin_stream": True}
            resp = await client.post("/api/v1/jobs", json=body)
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "too_old"
        assert "-n / --no-stdin" in resp.json()["error"]["message"]


async def test_an_agent_too_new_is_refused_with_the_reason(core: Core) -> None:
    doc = await transport.register(core.url, core.key.value, "future-01", {})
    async with transport.connect(core.url, doc["credential"]) as ws:
        await ws.send_message(proto.encode(hello(doc["node_id"], 6, 5)))
        error = proto.decode(await ws.get_message())
        assert isinstance(error, proto.Error)
        assert error.code == "bad_hello"
        assert "too new" in error.message
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
