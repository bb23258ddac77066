"""The web client's side of Core: the page and its files, whoami, and WebSockets
that authenticate by their first message (what a browser can do)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from servermgr.core import auth
from servermgr.core.app import Core
from servermgr.core.webpage import package_assets
from tests.support import StartCore, api, core_config, make_token, ws_handshake

PROTOCOL = "servermgr.auth-message"


@asynccontextmanager
async def by_message(core: Core, path: str) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket as the page opens it: no Authorization header, the auth subprotocol."""
    stream = await trio.open_tcp_stream("127.0.0.1", core.port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(5):
                ws = await wrap_client_stream(
                    nursery, stream, f"127.0.0.1:{core.port}", path, subprotocols=[PROTOCOL]
                )
            try:
                yield ws
            finally:
                with trio.move_on_after(5):
                    await ws.aclose()
    except BaseExceptionGroup as group:  # the handshake's rejection, as itself
        (exc,) = group.exceptions
        raise exc from None
    finally:
        await trio.aclose_forcefully(stream)


async def refusal(ws: WebSocketConnection) -> tuple[dict[str, Any], int | None]:
    """The error message Core sends, then the close code."""
    with trio.fail_after(10):
        doc = json.loads(await ws.get_message())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    return doc, closed.value.reason.code


async def test_the_page_and_its_files_are_served_with_strict_headers(core: Core) -> None:
    async with httpx.AsyncClient(base_url=core.url, timeout=10) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        # No inline script the policy would have to allow: every script has a src.
        scripts = re.findall(r"<script\b[^>]*>", page.text)
        assert scripts
        assert all(" src=" in s for s in scripts)
        for src in re.findall(r'(?:src|href)="(/web/[^"]+)"', page.text):
            res = await client.get(src)
            assert res.status_code == 200, src
            assert res.headers["content-security-policy"] == csp
        js = await client.get("/web/app.js")
        assert js.headers["content-type"].startswith("text/javascript")
        again = await client.get("/web/app.js", headers={"If-None-Match": js.headers["etag"]})
        assert again.status_code == 304
        assert not again.content
        missing = await client.get("/web/no-such-file.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


def test_vendored_uplot_carries_its_licence_and_version() -> None:
    assets = package_assets()
    assert b"MIT License" in assets["LICENSE"].body
    vendored = assets["VENDORED.md"].body.decode()
    version = re.search(r"\| uPlot \| ([0-9.]+) \|", vendored)
    assert version, "VENDORED.md must name uPlot's version"
    static = Path(__file__).resolve().parents[2] / "src/servermgr/web/static"
    assert (static / f"vendor/uPlot-{version.group(1)}/uPlot.iife.min.js").is_file()


async def test_whoami_tells_the_page_what_the_token_may_do(core: Core) -> None:
    read = await make_token(core, "viewer", "read")
    enroll = await make_token(core, "enroller", "enroll")
    async with httpx.AsyncClient(base_url=core.url, timeout=10) as client:

        async def whoami(credential: str) -> httpx.Response:
            return await client.get(
                "/api/v1/whoami", headers={"Authorization": f"Bearer {credential}"}
            )

        admin = (await whoami(core.key.value)).json()
        assert admin["role"] == "admin"
        assert admin["may"]["operate"]
        assert admin["may"]["admin"]
        viewer = (await whoami(read)).json()
        assert viewer == {
            "name": "viewer",
            "role": "read",
            "may": {"read": True, "operate": False, "admin": False},
        }
        assert (await whoami(enroll)).status_code == 403
        wrong = await whoami("0" * 64)
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"


async def test_the_event_stream_takes_the_token_as_its_first_message(core: Core) -> None:
    read = await make_token(core, "viewer", "read")
    async with by_message(core, "/api/v1/events?types=node") as ws:
        assert ws.subprotocol == PROTOCOL
        await ws.send_message(json.dumps({"type": "auth", "token": read}))
        with trio.fail_after(10):
            first = json.loads(await ws.get_message())
        assert first["type"] == "snapshot"

    # A bad query after the accept: the error document as a message, then 1008.
    async with by_message(core, "/api/v1/events?types=bogus") as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": read}))
        doc, code = await refusal(ws)
    assert doc["error"]["code"] == "bad_request"
    assert code == 1008

    # Without the subprotocol and without a header: refused at the handshake, as before.
    with pytest.raises(ConnectionRejected) as rejected:
        await ws_handshake(core, core.url + "/api/v1/events", [])
    assert rejected.value.status_code == 401


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "auth", "token": "0" * 64}, "unauthorized"),
        ({"type": "auth", "token": "t0123456789abcdef.nope"}, "unauthorized"),
        ({"type": "hello", "token": "x"}, "unauthorized"),
        ({"type": "auth", "token": "x" * 5000}, "unauthorized"),
    ],
)
async def test_a_wrong_first_message_is_refused_with_4401(
    core: Core, message: dict[str, Any], code: str
) -> None:
    async with by_message(core, "/api/v1/events") as ws:
        await ws.send_message(json.dumps(message))
        doc, close = await refusal(ws)
    assert doc["type"] == "error"
    assert doc["error"]["code"] == code
    assert close == auth.CLOSE_UNAUTHORIZED


async def test_a_token_without_the_role_is_refused_with_4403(core: Core) -> None:
    enroll = await make_token(core, "enroller", "enroll")
    async with by_message(core, "/api/v1/events") as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": enroll}))
        doc, close = await refusal(ws)
    assert doc["error"]["code"] == "forbidden"
    assert "role read" in doc["error"]["message"]
    assert close == auth.CLOSE_FORBIDDEN


async def test_no_first_message_in_time_is_refused(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "FIRST_MESSAGE_TIMEOUT", 0.3)
    async with by_message(core, "/api/v1/events") as ws:
        doc, close = await refusal(ws)
    assert "no auth message within" in doc["error"]["message"]
    assert close == auth.CLOSE_UNAUTHORIZED


async def test_wrong_first_messages_count_as_failed_authentications(
    start_core: StartCore, tmp_path: Path
) -> None:
    cfg = core_config(tmp_path, limits="auth_failures = 2\nauth_window = 60\n")
    core = (await start_core(cfg)).core
    for _ in range(2):
        async with by_message(core, "/api/v1/events") as ws:
            await ws.send_message(json.dumps({"type": "auth", "token": "0" * 64}))
            await refusal(ws)
    with pytest.raises(ConnectionRejected) as rejected:
        async with by_message(core, "/api/v1/events"):
            pass
    assert rejected.value.status_code == 429


async def test_over_tls_the_page_and_its_stream_are_served_on_the_same_port(
    start_core: StartCore, tmp_path: Path
) -> None:
    core = (await start_core(core_config(tmp_path, extra='tls = "auto"\n'))).core
    assert core.tls is not None
    assert core.url.startswith("https://")
    async with api(core) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert "content-security-policy" in page.headers
        assert (await client.get("/api/v1/whoami")).json()["role"] == "admin"
