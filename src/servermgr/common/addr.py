"""Core's addresses as a node or ctl derives them from one base URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

NODE_WS_PATH = "/api/v1/node/ws"


def http_base(addr: str) -> str:
    """``ws://h:p`` or ``http://h:p`` (or a bare ``h:p``) -> ``http://h:p``."""
    if "://" not in addr:
        addr = "http://" + addr
    parts = urlsplit(addr)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", "")).rstrip("/")


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
