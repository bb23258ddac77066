"""Core's addresses as a node or ctl derives them from one base URL.

The common forms (``http://127.0.0.1:8080``) are read here directly;
anything else goes through ``urllib.parse``, whose import (it loads
``ipaddress``) is ~3 ms of ``ctl exec``'s start-up.
"""

from __future__ import annotations

NODE_WS_PATH = "/api/v1/node/ws"
_HTTP_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _plain(netloc: str) -> bool:
    """A ``host[:port]`` that ``urlsplit`` takes whole and as it is (no user,
    brackets, zone, path, whitespace or escapes)."""
    return (
        netloc != ""
        and netloc.isascii()
        and netloc.isprintable()
        and not any(c in netloc for c in "/?#@[]%\\ ")
    )


def http_base(addr: str) -> str:
    """``ws://h:p`` or ``http://h:p`` (or a bare ``h:p``) -> ``http://h:p``."""
    if "://" not in addr:
        addr = "http://" + addr
    scheme, _, netloc = addr.partition("://")
    if scheme in _HTTP_SCHEME and _plain(netloc):
        return f"{_HTTP_SCHEME[scheme]}://{netloc}"
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(addr)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", "")).rstrip("/")


def split_url(url: str) -> tuple[str, str | None, int | None]:
    """(scheme, host name, port) as ``urlsplit`` gives them (``.hostname``,
    ``.port``: ValueError for a bad port)."""
    scheme, sep, rest = url.partition("://")
    netloc = rest.partition("/")[0]
    if sep and scheme in _HTTP_SCHEME and _plain(netloc):
        host, colon, port = netloc.rpartition(":")
        if not colon:
            return scheme, netloc.lower(), None
        if host and ":" not in host and port.isdigit() and int(port) <= 65535:
            return scheme, host.lower(), int(port)
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def ws_url(addr: str, path: str = NODE_WS_PATH) -> str:
    base = http_base(addr)
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"


def listen_to_url(host: str, port: int, *, tls: bool = False) -> str:
    """The URL a client on this host uses to reach ``listen`` (https when Core serves TLS)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"
