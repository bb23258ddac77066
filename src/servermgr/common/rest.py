"""A small HTTP/1.1 client for Core's REST API, on the standard library's sockets.

Shared by ctl (``ctl/client.py``) and the node agent's registration. Not
httpx, and not even ``http.client``: importing http.client (it pulls in the
``email`` package to parse headers) costs ``ctl exec`` more start-up time
than everything else it imports (docs/decisions.md). Core is the only
server this talks to, so the subset is small: one request at a time on a
kept-alive connection; bodies by ``Content-Length``, ``chunked`` or until
close; answers read whole or line by line (NDJSON streams). Blocking: the
agent calls it from a worker thread.

Callers turn ``OSError`` (Core unreachable, timed out, not speaking HTTP:
``HttpError`` is an OSError) into their own typed errors.
"""

from __future__ import annotations

import _socket  # not socket: its import (an enum for every constant) is ~3.5 ms of ctl exec
import io
import json

from servermgr.common.addr import split_url

TYPE_CHECKING = False  # not typing's: it costs ctl's start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

    from _typeshed import WriteableBuffer

    from servermgr.common.errors import TlsError
    from servermgr.common.tls import Trust

MAX_HEADER_LINE = 64 * 1024
MAX_HEADERS = 100
CHUNK = 64 * 1024


class HttpError(OSError):
    """An answer that is not HTTP we can read: malformed, truncated or too large."""


class Disconnected(HttpError):
    """The server closed the connection without answering (a kept-alive one it dropped)."""


class Response:
    """What a caller needs of an HTTP answer: its status and body."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def reason(exc: BaseException) -> str:
    """Why a request failed, in a few words ("Connection refused", "timed out")."""
    return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__


def dial(host: str, port: int, timeout: float) -> _socket.socket:
    """``socket.create_connection((host, port), timeout)`` on the ``_socket``
    module; an ASCII host goes to getaddrinfo as bytes: the same lookup, without
    the ``idna`` codec a str is encoded with (its import is ~1.5 ms of ``ctl exec``)."""
    name: str | bytes = host.encode() if host.isascii() else host
    error: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"no address for {host}")


class _Receiver(io.RawIOBase):
    """The receiving side of a connected socket as a raw stream, for
    ``io.BufferedReader`` (what ``socket.makefile("rb")`` builds)."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        return self._sock.recv_into(buffer)


class Connection:
    """One connection to ``http://`` or ``https://`` ``base_url``, opened on first use.

    https verifies Core's certificate as ``trust`` says (a pin, a CA file, or
    the system's CAs), as the WebSocket (``common/ws.py``) does; a pin is
    checked before the request (and its key) is sent.
    """

    def __init__(self, base_url: str, timeout: float, trust: Trust | None = None) -> None:
        scheme, host, port = split_url(base_url)
        self.where = base_url
        self.host = host or "127.0.0.1"
        self.tls = scheme == "https"
        self.port = port or (443 if self.tls else 80)
        self.timeout = timeout
        self.trust = trust
        self.sock: _socket.socket | None = None
        self.file: io.BufferedReader | None = None

    def _open(self) -> tuple[_socket.socket, io.BufferedReader]:
        if self.sock is None or self.file is None:
            raw = dial(self.host, self.port, self.timeout)
            try:
                raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                sock = self._wrap(raw) if self.tls else raw
            except BaseException:
                raw.close()  # nothing, once _wrap has taken it over
                raise
            self.sock, self.file = sock, io.BufferedReader(_Receiver(sock))
        return self.sock, self.file

    def _wrap(self, raw: _socket.socket) -> _socket.socket:
        import socket  # ssl imports it anyway, and wraps only its sockets

        from servermgr.common import tls

        sock = socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        try:
            sock.settimeout(self.timeout)
            trust = self.trust or tls.Trust()
            wrapped = tls.client_context(trust).wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        try:
            tls.check_pin(trust, wrapped.getpeercert(binary_form=True), self.where)
        except BaseException:
            wrapped.close()
            raise
        return wrapped

    def request(
        self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str]
    ) -> Answer:
        """Send one request and read the answer's head; its body is the caller's to read."""
        sock, file = self._open()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sock.sendall(head + body if body else head)
        return Answer.read_head(file, method)

    def close(self) -> None:
        file, sock, self.file, self.sock = self.file, self.sock, None, None
        if file is not None:
            file.close()
        if sock is not None:
            sock.close()


class Answer:
    """An answer whose head has been read: status, headers, then its body."""

    def __init__(
        self, file: io.BufferedReader, status: int, headers: dict[str, str], method: str
    ) -> None:
        self.file = file
        self.status = status
        self.headers = headers
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self.left: int | None = None
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self.left = 0
        elif not self.chunked and length is not None:
            try:
                self.left = int(length)
            except ValueError:
                raise HttpError(f"bad Content-Length {length[:40]!r}") from None
        self.keep_alive = headers.get("connection", "").lower() != "close" and (
            self.chunked or self.left is not None
        )
        self.buf = bytearray()
        self.done = False

    @classmethod
    def read_head(cls, file: io.BufferedReader, method: str) -> Answer:
        line = file.readline(MAX_HEADER_LINE + 1)
        if not line:
            raise Disconnected("the server closed the connection without answering")
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP answer: {line[:60]!r}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = file.readline(MAX_HEADER_LINE + 1)
            if raw in (b"\r\n", b"\n"):
                return cls(file, int(parts[1]), headers, method)
            if not raw or len(raw) > MAX_HEADER_LINE:
                raise HttpError("truncated or oversized answer head")
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raise HttpError(f"more than {MAX_HEADERS} header lines")

    def _fill(self) -> bool:
        """Add body bytes to ``buf``; False once the body has ended."""
        if self.done:
            return False
        if self.chunked:
            line = self.file.readline(1024)
            if not line.endswith(b"\n"):
                raise HttpError("truncated chunked body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HttpError("bad chunk size") from None
            if size == 0:
                for _ in range(MAX_HEADERS + 1):  # trailers, up to the blank line
                    if self.file.readline(MAX_HEADER_LINE) in (b"\r\n", b"\n", b""):
                        break
                self.done = True
                return False
            data = self.file.read(size)
            if len(data) < size or self.file.readline(8) not in (b"\r\n", b"\n"):
                raise HttpError("truncated chunked body")
            self.buf += data
            return True
        if self.left is not None:
            if self.left == 0:
                self.done = True
                return False
            data = self.file.read1(min(self.left, CHUNK))
            if not data:
                raise HttpError("truncated body")
            self.left -= len(data)
            self.buf += data
            return True
        data = self.file.read1(CHUNK)
        if not data:
            self.done = True
            return False
        self.buf += data
        return True

    def read(self, limit: int | None = None) -> bytes:
        """The whole body; HttpError past ``limit`` bytes."""
        while self._fill():
            if limit is not None and len(self.buf) > limit:
                raise HttpError(f"answer over {limit} bytes")
        data, self.buf = bytes(self.buf), bytearray()
        return data

    def readline(self, limit: int) -> bytes:
        """The next line with its newline (more than ``limit`` bytes: ``limit + 1`` of
        them, for the caller to refuse); b"" at the end of the body."""
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0 or len(self.buf) > limit:
                end = min(i + 1 if i >= 0 else len(self.buf), limit + 1)
                line, self.buf = bytes(self.buf[:end]), self.buf[end:]
                return line
            start = len(self.buf)
            if not self._fill():
                line, self.buf = bytes(self.buf), bytearray()
                return line


def connect(base_url: str, timeout: float, trust: Trust | None = None) -> Connection:
    """A connection (not opened yet) to ``base_url``."""
    return Connection(base_url, timeout, trust)


def tls_failure(exc: BaseException, base_url: str, trust: Trust | None = None) -> TlsError | None:
    """The TlsError behind a failed request, if TLS is why: an untrusted
    certificate, https to a plain Core, or plain http to a Core that speaks TLS."""
    from servermgr.common import tls

    scheme, host, port = split_url(base_url)
    if scheme == "https":
        return tls.explain(exc, base_url, trust or tls.Trust())
    if isinstance(exc, (Disconnected, ConnectionResetError)):
        if tls.probe(host or "127.0.0.1", port or 80):
            return tls.speaks_tls(base_url)
    return None


def exchange(
    conn: Connection,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str],
    max_body: int | None = None,
) -> Response:
    """Send one request on ``conn`` and read the whole answer (at most ``max_body`` bytes).

    The connection stays open for the next request when the answer allows it.
    """
    answer = conn.request(method, path, body=body, headers=headers)
    data = answer.read(max_body)
    if not answer.keep_alive:
        conn.close()
    return Response(answer.status, data)


def post_json(
    base_url: str,
    path: str,
    doc: Any,
    *,
    headers: dict[str, str],
    timeout: float,
    max_body: int | None = None,
    trust: Trust | None = None,
) -> Response:
    """POST ``doc`` as JSON on a connection of its own, closed afterwards."""
    conn = connect(base_url, timeout, trust)
    try:
        return exchange(
            conn,
            "POST",
            path,
            body=json.dumps(doc).encode(),
            headers={**headers, "Content-Type": "application/json", "Connection": "close"},
            max_body=max_body,
        )
    finally:
        conn.close()
