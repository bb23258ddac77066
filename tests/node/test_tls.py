"""A node reaching a Core that serves TLS: pinned, with a CA file, or refused."""

from __future__ import annotations

import dataclasses
import ssl
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from servermgr.common import tls
from servermgr.common.errors import TlsError
from servermgr.core.app import Core
from servermgr.node import transport
from tests.support import (
    StartCore,
    StartNode,
    by_node,
    core_config,
    finished,
    node_config,
    online,
    submit,
    wait_for,
)

WRONG_PIN = "sha256:" + "ab" * 32


def tls_node_config(
    core: Core, tmp_path: Path, name: str, *, pin: str | None = None, ca: Path | None = None
):  # type: ignore[no-untyped-def]
    cfg = node_config(core, tmp_path, name)
    addr = core.url.replace("https://", "wss://")
    return dataclasses.replace(
        cfg,
        node=dataclasses.replace(cfg.node, core_addr=(addr,), tls_fingerprint=pin, ca_file=ca),
    )


async def tls_core(start_core: StartCore, tmp_path: Path) -> Core:
    return (await start_core(core_config(tmp_path, extra='tls = "auto"\n'))).core


async def test_a_pinned_node_connects_over_wss_and_runs_a_job(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    core = await tls_core(start_core, tmp_path)
    assert core.url.startswith("https://")
    assert core.tls is not None
    cfg = tls_node_config(core, tmp_path, "node-01", pin=core.tls.fingerprint)
    await start_node(core, "node-01", config=cfg)
    await wait_for(lambda: online(core, "node-01"))
    job = await submit(core, target="node-01", command="echo over-tls")
    doc = by_node(await finished(core, job["id"]))["node-01"]
    assert doc["exit_code"] == 0
    assert doc["stdout"] == "over-tls\n"


async def test_a_node_with_the_certificate_as_ca_file_connects(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    core = await tls_core(start_core, tmp_path)
    assert core.tls is not None
    cfg = tls_node_config(core, tmp_path, "node-ca", ca=core.tls.cert)
    await start_node(core, "node-ca", config=cfg)
    await wait_for(lambda: online(core, "node-ca"))


async def test_a_node_pinned_to_another_fingerprint_refuses_and_says_so(
    start_core: StartCore,
    start_node: StartNode,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="servermgr.node")
    core = await tls_core(start_core, tmp_path)
    assert core.tls is not None
    node = await start_node(
        core, "node-bad", config=tls_node_config(core, tmp_path, "node-bad", pin=WRONG_PIN)
    )

    def refused() -> list[str]:
        return [r.getMessage() for r in caplog.records if "does not match" in r.getMessage()]

    await wait_for(lambda: bool(refused()))
    line = refused()[0]
    assert f"certificate fingerprint {core.tls.fingerprint}" in line
    assert f"does not match the pinned {WRONG_PIN}" in line
    assert "retrying" in line  # the agent keeps going (backoff), it does not exit
    assert not node.done.is_set()
    assert core.registry.by_ref("node-bad") is None  # it never registered


async def test_a_node_sends_nothing_to_a_server_with_another_certificate(
    start_core: StartCore, tmp_path: Path
) -> None:
    """Register token and credential never reach a server that fails the pin."""
    core = await tls_core(start_core, tmp_path)
    assert core.tls is not None
    received = bytearray()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(core.tls.cert), str(core.tls.key))

    async def impostor(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            while data := await stream.receive_some():
                received.extend(data)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, impostor, 0, ctx, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        url = f"wss://127.0.0.1:{port}"
        trust = tls.Trust(fingerprint=WRONG_PIN)
        with pytest.raises(TlsError, match="does not match the pinned"):
            await transport.register(url, "secret-token", "n1", {}, trust=trust)
        with pytest.raises(TlsError, match="does not match the pinned"):
            async with transport.connect(url, "n1.secret-credential", trust=trust):
                pass
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert received == b""


async def test_plain_ws_against_a_tls_core_is_refused_clearly(
    start_core: StartCore, tmp_path: Path
) -> None:
    core = await tls_core(start_core, tmp_path)
    plain = core.url.replace("https://", "ws://")
    with pytest.raises(TlsError, match=r"speaks TLS: use wss://"):
        async with transport.connect(plain, "n1.x"):
            pass
    with pytest.raises(TlsError, match=r"speaks TLS: use https://"):
        await transport.register(plain, "token", "n1", {})


async def test_wss_against_a_plain_core_is_refused_clearly(core: Core) -> None:
    secure = core.url.replace("http://", "wss://")
    trust = tls.Trust(fingerprint=WRONG_PIN)
    with pytest.raises(TlsError, match=r"does not speak TLS: use ws://"):
        async with transport.connect(secure, "n1.x", trust=trust):
            pass
    with pytest.raises(TlsError, match=r"does not speak TLS: use http://"):
        await transport.register(secure, "token", "n1", {}, trust=trust)


def test_an_unusable_ca_file_is_a_config_error_at_start(tmp_path: Path) -> None:
    from servermgr.common.errors import ConfigError
    from servermgr.node.run import run_agent

    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    cfg = tmp_path / "node.toml"
    for ca in ("missing.pem", "not-a-ca.pem"):
        cfg.write_text(
            f'[node]\ncore_addr = "wss://127.0.0.1:1"\nregister_token = "t"\nca_file = "{ca}"\n'
        )
        with pytest.raises(ConfigError) as err:
            run_agent(cfg)
        assert err.value.key == "node.ca_file"
        assert f"cannot use the CA file {tmp_path / ca}" in err.value.reason


async def test_an_unknown_ca_is_refused_on_both_paths(
    start_core: StartCore, tmp_path: Path
) -> None:
    core = await tls_core(start_core, tmp_path)
    url = core.url.replace("https://", "wss://")
    system = tls.Trust()  # the system's CAs do not know Core's self-signed certificate
    with pytest.raises(TlsError, match="is not trusted by the system's CAs"):
        async with transport.connect(url, "n1.x", trust=system):
            pass
    with pytest.raises(TlsError, match="is not trusted by the system's CAs"):
        await transport.register(url, "token", "n1", {}, trust=system)
