"""Streams between a ctl WebSocket and a node: file transfers and shells.

``StreamRouter`` hands each node message that belongs to a stream
(``proto.StreamMessage``) to the relay that opened it, without waiting: the
gateway's read loop for that node never blocks on a slow client. A node may
only speak into its own streams; one that sends more than its credit allows
(or floods a stream with messages) fails that stream. A node that goes
offline fails all of its streams. The relays are in ``core/stream_relay.py``.
"""

from __future__ import annotations

import secrets

import trio

from servermgr.common import proto

MAX_QUEUED = 1024  # node messages one stream may have waiting for its relay
IDLE_TIMEOUT = 300.0  # a side that sends nothing this long while awaited: the stream fails


class StreamFailed(Exception):
    """The stream cannot go on; ``code`` and ``message`` go to ctl and the audit."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NodeStream:
    """The node side of one stream: its messages in order, or why there are no more."""

    def __init__(self, stream_id: str, node_id: str) -> None:
        self.id = stream_id
        self.node_id = node_id
        self._send, self._receive = trio.open_memory_channel[proto.StreamMessage](MAX_QUEUED)
        self.failure: StreamFailed | None = None

    def put(self, msg: proto.StreamMessage) -> None:
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            self.fail("node_misbehaved", "the node sent more than the stream's window")
        except trio.BrokenResourceError:
            pass

    def fail(self, code: str, message: str) -> None:
        if self.failure is None:
            self.failure = StreamFailed(code, message)
        self._send.close()

    async def receive(self, idle: float = IDLE_TIMEOUT) -> proto.StreamMessage:
        try:
            with trio.fail_after(idle):
                return await self._receive.receive()
        except trio.EndOfChannel:
            assert self.failure is not None
            raise self.failure from None
        except trio.TooSlowError:
            raise StreamFailed("timeout", f"the node sent nothing for {idle:g} s") from None


class StreamRouter:
    """Node messages to the stream they belong to (see the module doc)."""

    def __init__(self) -> None:
        self._streams: dict[str, NodeStream] = {}

    def open(self, node_id: str) -> NodeStream:
        stream = NodeStream("s" + secrets.token_hex(8), node_id)
        self._streams[stream.id] = stream
        return stream

    def close(self, stream: NodeStream) -> None:
        self._streams.pop(stream.id, None)

    def from_node(self, node_id: str, msg: proto.StreamMessage) -> None:
        stream = self._streams.get(proto.stream_id(msg))
        if stream is None or stream.node_id != node_id:
            return  # over already, or not this node's: dropped
        stream.put(msg)

    def node_gone(self, node_id: str) -> None:
        for stream in list(self._streams.values()):
            if stream.node_id == node_id:
                stream.fail("node_offline", "the node went offline")
