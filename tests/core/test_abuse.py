"""Abuse limits on a real Core (127.0.0.1, port 0): failed-auth rate limit, slow clients."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import httpx
import pytest
import trio

from servermgr.common import addr
from servermgr.core.app import Core
from tests.support import StartCore, StartNode, core_config, online, wait_for

TIME_CAP = 30.0
WRONG = "f" * 64  # shaped like a core key, so it counts as a guess


@pytest.fixture(autouse=True)
def time_cap(nursery: trio.Nursery) -> None:
    async def watchdog() -> None:
        await trio.sleep(TIME_CAP)
        raise TimeoutError(f"test took over {TIME_CAP:g} s")

    nursery.start_soon(watchdog)


@pytest.fixture
async def limited(start_core: StartCore, tmp_path: Path) -> Core:
    cfg = core_config(tmp_path, limits="auth_failures = 10\nauth_window = 60\n")
    return (await start_core(cfg)).core


def client(core: Core, key: str, source: str = "127.0.0.1") -> httpx.AsyncClient:
    verify = ssl.create_default_context(cafile=str(core.tls.cert)) if core.tls else True
    return httpx.AsyncClient(
        base_url=core.url,
        headers={"Authorization": f"Bearer {key}"},
        transport=httpx.AsyncHTTPTransport(local_address=source, verify=verify),
        trust_env=False,
        timeout=5,
    )


def refusal(resp: httpx.Response) -> int:
    """The 429 in the one error shape; returns Retry-After (whole seconds)."""
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "rate_limited"
    assert set(resp.json()["error"]) == {"code", "message"}
    return int(resp.headers["retry-after"])


async def test_wrong_keys_are_refused_with_429_before_any_key_is_checked(
    limited: Core, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="servermgr.core.abuse")
    async with client(limited, WRONG) as wrong:
        statuses = [(await wrong.get("/api/v1/nodes")).status_code for _ in range(20)]
        assert statuses == [401] * 10 + [429] * 10
        assert 1 <= refusal(await wrong.get("/api/v1/nodes")) <= 60
    # The right key from the same address is refused too while it is limited.
    async with client(limited, limited.key.value) as right:
        refusal(await right.get("/api/v1/nodes"))
    # Another address is not affected.
    async with client(limited, limited.key.value, source="127.0.0.2") as other:
        assert (await other.get("/api/v1/nodes")).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "servermgr.core.abuse"]
    assert len(lines) == 1, lines
    assert "127.0.0.1" in lines[0]
    assert WRONG not in caplog.text


async def test_requests_without_a_credential_get_401_and_never_429(limited: Core) -> None:
    """A client probing routes without its key (a fuzzer, a script missing its
    header) guesses nothing: it is told 401 every time and not locked out."""
    async with httpx.AsyncClient(base_url=limited.url, trust_env=False, timeout=5) as anon:
        statuses = [(await anon.get("/api/v1/nodes")).status_code for _ in range(15)]
        junk = {"Authorization": "Bearer not-a-credential"}
        statuses += [(await anon.get("/api/v1/jobs", headers=junk)).status_code for _ in range(15)]
    assert statuses == [401] * 30
    async with client(limited, limited.key.value) as right:
        assert (await right.get("/api/v1/nodes")).status_code == 200


async def test_a_limited_address_gets_a_real_429_on_websockets(limited: Core) -> None:
    async with client(limited, WRONG) as wrong:
        for _ in range(10):
            assert (await wrong.get("/api/v1/nodes")).status_code == 401
    for path in (addr.NODE_WS_PATH, "/api/v1/events"):
        status, headers, body = await upgrade(limited, path, WRONG)
        assert status == 429
        assert int(headers["retry-after"]) >= 1
        assert json.loads(body)["error"]["code"] == "rate_limited"


async def test_websocket_401s_count_too(limited: Core) -> None:
    statuses = [
        (await upgrade(limited, addr.NODE_WS_PATH, "n0123456789abcdef.nope"))[0] for _ in range(12)
    ]
    assert statuses == [401] * 10 + [429] * 2


async def test_the_limit_lifts_after_the_refill(start_core: StartCore, tmp_path: Path) -> None:
    cfg = core_config(tmp_path, limits="auth_failures = 2\nauth_window = 1\n")
    core = (await start_core(cfg)).core
    async with client(core, WRONG) as wrong, client(core, core.key.value) as right:
        assert [(await wrong.get("/api/v1/nodes")).status_code for _ in range(3)] == [401, 401, 429]
        for _ in range(100):  # polling Core over HTTP: no event to wait on
            resp = await right.get("/api/v1/nodes")
            if resp.status_code != 429:
                break
            await trio.sleep(0.1)
        assert resp.status_code == 200


async def upgrade(core: Core, path: str, key: str) -> tuple[int, dict[str, str], bytes]:
    """A WebSocket upgrade request by hand: the status, headers and body of the refusal."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", core.port)
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some()
                assert chunk, f"closed without an answer: {data!r}"
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            while len(body) < int(headers.get("content-length", 0)):
                chunk = await stream.receive_some()
                assert chunk
                body += chunk
    return int(lines[0].split()[1]), headers, body


# --- slow clients ----------------------------------------------------------------


async def closed_by_core(sock: trio.socket.SocketType, trickle: bool) -> bytes:
    """Wait (bounded) until Core closes ``sock``; send one byte every 0.1 s if ``trickle``."""
    got = b""
    with trio.fail_after(10):
        while True:
            if trickle:
                try:
                    await sock.send(b"G")
                except OSError:
                    return got
            with trio.move_on_after(0.1):
                try:
                    chunk = await sock.recv(4096)
                except OSError:
                    return got
                if not chunk:
                    return got
                got += chunk


@pytest.fixture(params=["http", "tls"])
async def quick(request: pytest.FixtureRequest, start_core: StartCore, tmp_path: Path) -> Core:
    tls = 'tls = "auto"\n' if request.param == "tls" else ""
    cfg = core_config(tmp_path, extra=tls, limits="handshake_timeout = 0.5\n")
    return (await start_core(cfg)).core


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "one-byte-at-a-time"])
async def test_slow_clients_are_dropped_after_the_handshake_timeout(
    quick: Core, trickle: bool
) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        await sock.connect(("127.0.0.1", quick.port))
        assert await closed_by_core(sock, trickle) == b""
    # Core still answers.
    async with client(quick, quick.key.value) as right:
        assert (await right.get("/api/v1/nodes")).status_code == 200


async def test_a_node_on_a_limited_address_keeps_trying_and_gets_in(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    cfg = core_config(tmp_path, limits="auth_failures = 1\nauth_window = 2\n")
    core = (await start_core(cfg)).core
    async with client(core, WRONG) as wrong:
        assert (await wrong.get("/api/v1/nodes")).status_code == 401
        refusal(await wrong.get("/api/v1/nodes"))
    node = await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"), limit=20)
    assert node.error is None


# --- unauthenticated connections per address -----------------------------------------


async def silent(port: int, source: str = "127.0.0.1") -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return sock


def closed(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (without blocking)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def test_unauthenticated_connections_are_capped_per_address(
    start_core: StartCore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="servermgr.core.listen")
    cfg = core_config(tmp_path, limits="unauthenticated_connections = 4\nhandshake_timeout = 60\n")
    core = (await start_core(cfg)).core
    held = [socket.create_connection(("127.0.0.1", core.port)) for _ in range(4)]
    try:
        # Over the cap: closed at once (long before the 60 s handshake timeout).
        for _ in range(3):
            with await silent(core.port) as extra:
                assert await closed_by_core(extra, trickle=False) == b""
        # Another address is not affected; nor are the four held (still open).
        async with client(core, core.key.value, source="127.0.0.2") as other:
            assert (await other.get("/api/v1/nodes")).status_code == 200
        await trio.sleep(0.1)  # time to close them, had Core meant to
        assert not any(closed(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()
    # Closed by the client: they no longer count.
    async with client(core, core.key.value) as right:
        for _ in range(100):  # Core sees the closes on its own schedule
            try:
                if (await right.get("/api/v1/nodes")).status_code == 200:
                    break
            except httpx.TransportError:
                await trio.sleep(0.05)
        else:
            pytest.fail("127.0.0.1 still refused after closing its connections")
    lines = [r.getMessage() for r in caplog.records if r.name == "servermgr.core.listen"]
    assert len(lines) == 1, lines
    assert "127.0.0.1" in lines[0]


async def test_slow_clients_do_not_stop_a_connected_node_and_new_nodes_get_in_after(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    cfg = core_config(tmp_path, limits="unauthenticated_connections = 4\nhandshake_timeout = 1\n")
    core = (await start_core(cfg)).core
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    (session,) = core.sessions.values()
    held = [socket.create_connection(("127.0.0.1", core.port)) for _ in range(12)]
    try:
        # node-01 keeps heartbeating over the connection it had.
        stored = core.writer.samples
        await wait_for(lambda: core.writer.samples >= stored + 10, limit=20)
        assert list(core.sessions.values()) == [session]
        # A new node (registration, then its WebSocket) from the same address
        # gets in once the slow clients have been dropped.
        await start_node(core, "node-02")
        await wait_for(lambda: online(core, "node-02"), limit=20)
        # All closed by Core: eight at accept, four after the handshake timeout.
        await wait_for(lambda: all(closed(sock) for sock in held))
    finally:
        for sock in held:
            sock.close()
    assert session in core.sessions.values()
