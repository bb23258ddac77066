"""Core's frame reader (core/wsframes.py) against wsproto's client, the reference encoder."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from servermgr.core.wsframes import (
    CLOSE_NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameReader,
    Received,
    accept_token,
    close_frame,
    frame,
)

MAX = 4096

messages = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.text(max_size=300), st.integers(1, 4)),
        st.tuples(st.just("bytes"), st.binary(max_size=300), st.integers(1, 4)),
        st.tuples(st.just("ping"), st.binary(max_size=125), st.just(1)),
    ),
    max_size=12,
)


def _fragments(value: str | bytes, parts: int) -> list[str | bytes]:
    step = max(1, len(value) // parts)
    cut = [value[i : i + step] for i in range(0, len(value), step)] or [value[:0]]
    return cut


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_what_a_client_sends_in_any_fragments_and_chunks_is_read_back_whole(
    sent: list[tuple[str, str | bytes, int]], chunk_sizes: list[int]
) -> None:
    client = Connection(ConnectionType.CLIENT)
    wire = b""
    expected: list[Received] = []
    for kind, value, parts in sent:
        if kind == "ping":
            assert isinstance(value, bytes)
            wire += client.send(Ping(payload=value))
            expected.append(Received(OP_PING, data=value))
            continue
        pieces = _fragments(value, parts)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if kind == "text":
                assert isinstance(piece, str)
                wire += client.send(TextMessage(data=piece, message_finished=last))
            else:
                assert isinstance(piece, bytes)
                wire += client.send(BytesMessage(data=piece, message_finished=last))
        if kind == "text":
            assert isinstance(value, str)
            expected.append(Received(OP_TEXT, text=value))
        else:
            assert isinstance(value, bytes)
            expected.append(Received(OP_BINARY, data=value))
    wire += client.send(CloseConnection(code=1000, reason="bye"))
    expected.append(Received(OP_CLOSE, text="bye", code=1000))
    reader = FrameReader(MAX)
    got: list[Received] = []
    pos = i = 0
    while pos < len(wire):  # the bytes as the network might cut them
        size = chunk_sizes[i % len(chunk_sizes)]
        got += reader.feed(wire[pos : pos + size])
        pos += size
        i += 1
    assert got == expected


def _masked(b0: int, payload: bytes, *, mask: bool = True, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    key = os.urandom(4)
    if n < 126:
        head = bytes((b0, (0x80 if mask else 0) | n))
    else:
        head = bytes((b0, (0x80 if mask else 0) | 127)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x81\x05hello", 1002),  # not masked
        (_masked(0xC1, b"x"), 1002),  # RSV1 (compression never agreed)
        (_masked(0x83, b"x"), 1002),  # unknown opcode
        (_masked(0x09, b"ping"), 1002),  # a control frame without FIN
        (_masked(0x89, b"x" * 126), 1002),  # a control frame over 125 bytes
        (_masked(0x80, b"x"), 1002),  # a continuation with no message begun
        (_masked(0x01, b"a") + _masked(0x81, b"b"), 1002),  # a new message inside one
        (_masked(0x81, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (_masked(0x88, b"\x03"), 1002),  # a close with a 1-byte code
        (_masked(0x88, (1005).to_bytes(2, "big")), 1002),  # a code no peer may send
        (_masked(0x88, (1000).to_bytes(2, "big") + b"\xff"), 1007),  # a reason not UTF-8
        (_masked(0x82, b"", length=MAX + 1), 1009),  # refused from its header alone
        (_masked(0x02, b"x" * 3000) + _masked(0x80, b"", length=MAX), 1009),  # fragments add up
    ],
)
def test_a_frame_that_breaks_the_protocol_names_its_close_code(wire: bytes, code: int) -> None:
    with pytest.raises(FrameError) as refused:
        FrameReader(MAX).feed(wire)
    assert refused.value.code == code


def test_a_close_without_a_code_and_what_core_sends() -> None:
    assert FrameReader(MAX).feed(_masked(0x88, b"")) == [Received(OP_CLOSE, code=CLOSE_NO_STATUS)]
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(frame(OP_TEXT, "héllo".encode()) + frame(OP_BINARY, b"\x00" * 70000))
    client.receive_data(close_frame(4008, "é" * 100))  # cut to 123 bytes, whole characters
    events = list(client.events())
    assert isinstance(events[0], TextMessage)
    assert events[0].data == "héllo"
    assert isinstance(events[1], BytesMessage)
    assert len(events[1].data) == 70000
    assert isinstance(events[2], CloseConnection)
    assert events[2].code == 4008
    assert events[2].reason == "é" * 61
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    assert accept_token(key) == generate_accept_token(key) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
