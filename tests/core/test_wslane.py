"""The node WebSocket's own lane (core/wslane.py), spoken to byte by byte on a real socket."""

from __future__ import annotations

import base64
import logging
import os
import socket
import struct
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from servermgr.common import proto
from servermgr.core.app import Core
from servermgr.core.gateway import NODE_WS_PATH
from servermgr.core.wslane import SEND_NOWAIT, WebSocketLane, may_be_upgrade, upgrade_path
from tests.support import hello_text, register_node

LANES = frozenset({NODE_WS_PATH.encode()})


def _head(path: str = NODE_WS_PATH, *, key: bool = True, credential: str = "x") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        f"Authorization: Bearer {credential}",
    ]
    if key:
        lines.append("Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_only_a_websocket_upgrade_on_a_lane_path_takes_the_lane() -> None:
    assert upgrade_path(_head(), LANES)
    assert upgrade_path(_head(NODE_WS_PATH + "?x=1"), LANES)
    assert not upgrade_path(_head("/api/v1/events/ws"), LANES)
    assert not upgrade_path(b"GET /api/v1/node/ws HTTP/1.1\r\nHost: a\r\n\r\n", LANES)  # plain GET
    assert not upgrade_path(b"POST /api/v1/node/ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", LANES)
    # While the head is incomplete: read on only while it may still be one.
    assert may_be_upgrade(b"GE", LANES)
    assert may_be_upgrade(b"GET /api/v1/no", LANES)
    assert not may_be_upgrade(b"\x16\x03\x01\x02\x00", LANES)  # a TLS hello
    assert not may_be_upgrade(b"GET /api/v1/nodes", LANES)


class Raw:
    """A WebSocket client on a raw stream: wsproto for what is valid, bytes for what is not."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    async def events(self) -> list[Event]:
        with trio.fail_after(10):
            while True:
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(data or None)
                got = list(self.ws.events())
                if got or not data:
                    return got

    async def open(self, core: Core, credential: str) -> None:
        await self.stream.send_all(
            self.ws.send(
                Request(
                    host="127.0.0.1",
                    target=NODE_WS_PATH,
                    extra_headers=[(b"authorization", f"Bearer {credential}".encode())],
                )
            )
        )
        (accepted,) = await self.events()
        assert isinstance(accepted, AcceptConnection)

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))


async def _connect(core: Core) -> Raw:
    return Raw(await trio.open_tcp_stream("127.0.0.1", core.port))


async def test_a_node_may_fragment_its_messages_and_gets_its_pings_answered(core: Core) -> None:
    node_id, cred = await register_node(core, "frag")
    raw = await _connect(core)
    async with raw.stream:
        await raw.open(core, cred)
        hello = hello_text(node_id, "frag")
        third = len(hello) // 3
        await raw.send(TextMessage(data=hello[:third], message_finished=False))
        await raw.send(TextMessage(data=hello[third : 2 * third], message_finished=False))
        await raw.send(Ping(payload=b"still there?"))  # between fragments, as RFC 6455 allows
        await raw.send(TextMessage(data=hello[2 * third :], message_finished=True))
        got: list[Event] = []
        while not any(isinstance(e, TextMessage) for e in got):
            got += await raw.events()
        assert any(isinstance(e, Pong) and e.payload == b"still there?" for e in got)
        welcome = proto.decode(next(e.data for e in got if isinstance(e, TextMessage)))
        assert isinstance(welcome, proto.Welcome)
        assert welcome.node_id == node_id
        await raw.send(CloseConnection(code=1000))
        closing = await raw.events()
        assert any(isinstance(e, CloseConnection) for e in closing)


async def test_a_bad_credential_gets_a_real_401_in_the_error_shape(core: Core) -> None:
    raw = await _connect(core)
    async with raw.stream:
        await raw.stream.send_all(
            raw.ws.send(
                Request(
                    host="127.0.0.1",
                    target=NODE_WS_PATH,
                    extra_headers=[(b"authorization", b"Bearer " + b"0" * 64)],
                )
            )
        )
        got: list[Event] = []
        while not any(isinstance(e, RejectData) and e.body_finished for e in got):
            got += await raw.events()
        (refused,) = [e for e in got if isinstance(e, RejectConnection)]
        assert refused.status_code == 401
        body = b"".join(e.data for e in got if isinstance(e, RejectData))
        assert b'"error"' in body


async def test_an_upgrade_without_a_key_is_refused_with_400(core: Core) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", core.port) as stream:
        await stream.send_all(_head(key=False))
        with trio.fail_after(10):
            reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 400 ")


async def test_an_unmasked_frame_closes_the_connection_with_1002(core: Core) -> None:
    node_id, cred = await register_node(core, "unmasked")
    raw = await _connect(core)
    async with raw.stream:
        await raw.open(core, cred)
        await raw.stream.send_all(b"\x81\x05hello")  # a client's frame must be masked
        got = await raw.events()
        (closed,) = [e for e in got if isinstance(e, CloseConnection)]
        assert closed.code == 1002
    # Core goes on serving nodes.
    node_id, cred = await register_node(core, "after")
    raw = await _connect(core)
    async with raw.stream:
        await raw.open(core, cred)


async def test_a_head_sent_in_pieces_is_served_and_one_never_finished_is_closed(
    core: Core,
) -> None:
    node_id, cred = await register_node(core, "slow")
    head = _head(credential=cred)
    async with await trio.open_tcp_stream("127.0.0.1", core.port) as stream:
        for piece in (head[:3], head[3:40], head[40:]):
            await stream.send_all(piece)
            await trio.sleep(0.05)
        with trio.fail_after(10):
            reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 101 ")
    gate = core.config.limits.handshake_timeout
    async with await trio.open_tcp_stream("127.0.0.1", core.port) as stream:
        await stream.send_all(head[:60])  # and nothing more
        with trio.fail_after(gate + 10):
            assert await stream.receive_some(4096) == b""  # closed by Core


async def test_a_node_gone_before_its_upgrade_is_answered_is_no_error(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    node_id, cred = await register_node(core, "gone")
    for _ in range(5):
        stream = await trio.open_tcp_stream("127.0.0.1", core.port)
        # Reset, not closed: Core's 101 (or its close) then fails to be written.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.send_all(_head(credential=cred))
        await stream.aclose()
    raw = await _connect(core)  # Core serves the next one
    async with raw.stream:
        await raw.open(core, cred)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_frame_written_at_once_that_the_kernel_takes_in_part_is_finished_first() -> None:
    """send_nowait (acks from synchronous code) on a socket whose buffer fills: every
    frame arrives whole and in order, the async send after it included."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        node_side = socket.create_connection(listener.getsockname())
        core_side, _ = listener.accept()
    core_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    node_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    core_side.setblocking(False)
    node_side.setblocking(False)
    lane_stream = trio.SocketStream(trio.socket.from_stdlib_socket(core_side))
    lane = WebSocketLane(lane_stream, max_message=1 << 20)
    texts: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        nowait = scope["extensions"][SEND_NOWAIT]["send"]
        while nowait(text := f"ack {len(texts)} " + "x" * 200):
            texts.append(text)
            if lane._rest:  # noqa: SLF001  (the state under test: a frame begun)
                break
        assert lane._rest, "the kernel took every frame whole"  # noqa: SLF001
        assert not nowait("never: a frame is half sent")
        texts.append("after")
        await send({"type": "websocket.send", "text": "after"})
        await send({"type": "websocket.close", "code": 1000})

    client = WSConnection(ConnectionType.CLIENT)
    node_stream = trio.SocketStream(trio.socket.from_stdlib_socket(node_side))
    got: list[str] = []

    async def node() -> None:
        await node_stream.send_all(client.send(Request(host="x", target=NODE_WS_PATH)))
        with trio.fail_after(10):
            while True:
                data = await node_stream.receive_some(65536)
                client.receive_data(data or None)
                for event in client.events():
                    if isinstance(event, TextMessage):
                        got.append(event.data)
                    elif isinstance(event, CloseConnection):
                        return

    async with node_stream, lane_stream:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node)
            await trio.sleep(0.2)  # the request is in the socket; the node reads only later
            head = await lane_stream.receive_some(65536)
            await lane.serve(app, head, None, None)
    assert got == texts
