"""RFC 6455 frames, the server's side: a client's frames read and checked, Core's built.

Core's node lane (``core/wslane.py``) reads a frame per heartbeat from every
node, and wsproto's general-purpose reader (a generator per buffer, an
incremental UTF-8 decoder, an object per frame and per event) was the
largest single cost left per heartbeat (17 % of Core's CPU at 4,000 nodes,
docs/performance.md). This reader does only what a server without
extensions needs, in a loop over one buffer:

- every frame must be masked, with no RSV bit (no extension is agreed),
  a known opcode, and a 64-bit length that fits in 63 bits (else 1002);
- control frames (close, ping, pong) are whole (FIN) and at most 125 bytes;
  they may come between the fragments of a message;
- a continuation needs a message begun, a new message needs none open;
- a message past ``max_message`` bytes is refused from its frame header,
  before its payload is buffered (1009);
- a text message must be valid UTF-8 (1007), checked when it is whole;
- a close frame's code must be one a peer may send, its reason UTF-8.

A violation raises ``FrameError`` with the close code to answer with.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_KNOWN = {OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG}

CLOSE_NO_STATUS = 1005  # a close frame without a code (never sent)
CLOSE_PROTOCOL = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_token(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


def valid_close_code(code: int) -> bool:
    """A code a peer may send in a close frame (RFC 6455 7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999


class FrameError(Exception):
    """What the client sent breaks the protocol: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Received:
    """One thing read: a whole message (``text`` or ``data``), a ping, a pong, or a close."""

    opcode: int  # OP_TEXT, OP_BINARY, OP_PING, OP_PONG or OP_CLOSE
    data: bytes = b""  # a binary message, or a ping's/pong's payload
    text: str = ""  # a text message, or a close's reason
    code: int = 0  # a close's code (CLOSE_NO_STATUS when it had none)


def _unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        n, "little"
    )


class FrameReader:
    """Frames from a client's bytes, fed as they come; a message once it is whole."""

    __slots__ = ("_buffer", "_message", "_opcode", "_size", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._opcode: int | None = None  # the open (fragmented) message's opcode
        self._message = bytearray()
        self._size = 0

    def feed(self, data: bytes | bytearray) -> list[Received]:
        """What ``data`` (with what came before it) completes; raises FrameError."""
        buf = self._buffer
        buf += data
        out: list[Received] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise FrameError(CLOSE_PROTOCOL, "reserved bits set (no extension agreed)")
            if opcode not in _KNOWN:
                raise FrameError(CLOSE_PROTOCOL, f"unknown opcode {opcode:#x}")
            if not b1 & 0x80:
                raise FrameError(CLOSE_PROTOCOL, "a client's frame must be masked")
            length = b1 & 0x7F
            head = 6
            if length == 126:
                head = 8
                if end - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length == 127:
                head = 14
                if end - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise FrameError(CLOSE_PROTOCOL, "frame length over 63 bits")
            fin = bool(b0 & 0x80)
            if opcode >= OP_CLOSE:
                if not fin or length > 125:
                    raise FrameError(CLOSE_PROTOCOL, "a control frame must be whole and short")
            elif opcode == OP_CONTINUATION:
                if self._opcode is None:
                    raise FrameError(CLOSE_PROTOCOL, "a continuation with no message begun")
            elif self._opcode is not None:
                raise FrameError(CLOSE_PROTOCOL, "a new message inside a fragmented one")
            if opcode < OP_CLOSE and self._size + length > self.max_message:
                raise FrameError(CLOSE_TOO_BIG, f"message over {self.max_message} bytes")
            if end - pos < head + length:
                break
            key = bytes(buf[pos + head - 4 : pos + head])
            payload = _unmask(bytes(buf[pos + head : pos + head + length]), key)
            pos += head + length
            if opcode >= OP_CLOSE:
                out.append(_control(opcode, payload))
                continue
            if fin and opcode != OP_CONTINUATION:  # a message in one frame: the usual
                out.append(_message(opcode, payload))
                continue
            if opcode != OP_CONTINUATION:
                self._opcode = opcode
            # One buffer, however many fragments: memory is the message's size.
            self._message += payload
            self._size += length
            if fin:
                whole, first = bytes(self._message), self._opcode
                self._opcode, self._message, self._size = None, bytearray(), 0
                out.append(_message(first, whole))
        del buf[:pos]
        return out


def _message(opcode: int | None, data: bytes) -> Received:
    if opcode == OP_BINARY:
        return Received(OP_BINARY, data=data)
    try:
        return Received(OP_TEXT, text=data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_DATA, "a text message that is not UTF-8") from None


def _control(opcode: int, payload: bytes) -> Received:
    if opcode != OP_CLOSE:
        return Received(opcode, data=payload)
    if not payload:
        return Received(OP_CLOSE, code=CLOSE_NO_STATUS)
    if len(payload) < 2:
        raise FrameError(CLOSE_PROTOCOL, "a close frame with a 1-byte code")
    code = int.from_bytes(payload[:2], "big")
    if not valid_close_code(code):
        raise FrameError(CLOSE_PROTOCOL, f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_DATA, "a close reason that is not UTF-8") from None
    return Received(OP_CLOSE, text=reason, code=code)


def frame(opcode: int, payload: bytes) -> bytes:
    """A whole, unmasked frame (a server's)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit (123 bytes), on a character boundary."""
    cut = reason.encode()[:123].decode(errors="ignore").encode()
    return frame(OP_CLOSE, code.to_bytes(2, "big") + cut)
