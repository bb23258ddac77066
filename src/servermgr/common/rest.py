"""One request to Core's REST API over the standard library's ``http.client``.

Shared by ctl (``ctl/client.py``) and the node agent's registration. Not
httpx: importing it costs ctl ~200 ms of start-up, and the node agent ~10 MiB
of RSS for the one request it makes when it registers. Blocking: the agent
calls it from a worker thread.

Callers turn ``OSError`` and ``http.client.HTTPException`` (Core unreachable,
timed out, not speaking HTTP) into their own typed errors.
"""

from __future__ import annotations

import http.client
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from servermgr.common.errors import TlsError
    from servermgr.common.tls import Trust


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


def connect(
    base_url: str, timeout: float, trust: Trust | None = None
) -> http.client.HTTPConnection:
    """A connection (not opened yet) to ``http://`` or ``https://`` ``base_url``.

    https verifies Core's certificate as ``trust`` says (a pin, a CA file, or
    the system's CAs), as the WebSocket (``common/ws.py``) does; a pin is
    checked before the request (and its key) is sent.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        from servermgr.common import tls

        trust = trust or tls.Trust()
        return _HTTPSConnection(
            host,
            parts.port or 443,
            timeout=timeout,
            context=tls.client_context(trust),
            trust=trust,
            where=base_url,
        )
    return http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)


class _HTTPSConnection(http.client.HTTPSConnection):
    """https that checks the pinned fingerprint right after the handshake."""

    def __init__(self, host: str, port: int, *, trust: Trust, where: str, **kw: Any) -> None:
        super().__init__(host, port, **kw)
        self.trust = trust
        self.where = where

    def connect(self) -> None:
        from servermgr.common import tls

        super().connect()
        try:
            tls.check_pin(self.trust, self.sock.getpeercert(binary_form=True), self.where)
        except BaseException:
            self.close()
            raise


def tls_failure(exc: BaseException, base_url: str, trust: Trust | None = None) -> TlsError | None:
    """The TlsError behind a failed request, if TLS is why: an untrusted
    certificate, https to a plain Core, or plain http to a Core that speaks TLS."""
    from servermgr.common import tls

    parts = urlsplit(base_url)
    if parts.scheme == "https":
        return tls.explain(exc, base_url, trust or tls.Trust())
    if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError)):
        if tls.probe(parts.hostname or "127.0.0.1", parts.port or 80):
            return tls.speaks_tls(base_url)
    return None


def exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str],
    max_body: int | None = None,
) -> Response:
    """Send one request on ``conn`` and read the whole answer (at most ``max_body`` bytes)."""
    conn.request(method, path, body=body, headers=headers)
    raw = conn.getresponse()
    if max_body is None:
        return Response(raw.status, raw.read())
    data = raw.read(max_body + 1)
    if len(data) > max_body:
        raise http.client.HTTPException(f"answer over {max_body} bytes")
    return Response(raw.status, data)


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
            headers={**headers, "Content-Type": "application/json"},
            max_body=max_body,
        )
    finally:
        conn.close()
