"""ctl's side of TLS: where the pin comes from, and what each failure says."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trio

from servermgr.common import tls
from servermgr.common.config import Config, parse_config
from servermgr.common.errors import TlsError, UsageError
from servermgr.core.app import Core
from servermgr.ctl.client import Client, resolve
from tests.support import StartCore, core_config

HEX = "0123456789abcdef" * 4


def local_config(tmp_path: Path, tls_line: str = 'tls = "auto"') -> Config:
    text = f'[server]\nlisten = "0.0.0.0:9443"\n{tls_line}\n[storage]\ndata_dir = "d"\n'
    return parse_config(text, source=None, base_dir=tmp_path)


def test_on_the_core_host_ctl_pins_the_local_certificate(tmp_path: Path) -> None:
    cfg = local_config(tmp_path)
    from servermgr.core import tls as core_tls

    files = core_tls.load(cfg)  # what Core makes on its first start
    assert files is not None
    base, _key, trust = resolve(None, "k", lambda: cfg)
    assert base == "https://127.0.0.1:9443"
    assert trust == tls.Trust(fingerprint=files.fingerprint)
    # The same address given explicitly (any loopback name): still this host's Core.
    assert resolve("https://127.0.0.1:9443", "k", lambda: cfg)[2] == trust
    assert resolve("https://localhost:9443", "k", lambda: cfg)[2] == trust
    assert resolve("https://[::1]:9443", "k", lambda: cfg)[2] == trust
    assert resolve("https://localhost:9444", "k", lambda: cfg)[2] == tls.Trust()
    # Another Core: not this host's pin, the system's CAs (unless told otherwise).
    assert resolve("https://core.example:9443", "k", lambda: cfg)[2] == tls.Trust()
    pinned = resolve("https://core.example:9443", "k", lambda: cfg, fingerprint=HEX)[2]
    assert pinned == tls.Trust(fingerprint=f"sha256:{HEX}")
    ca = resolve("https://core.example:9443", "k", lambda: cfg, ca_file="ca.pem")[2]
    assert ca == tls.Trust(ca_file=Path("ca.pem"))
    # Plain http needs no trust at all (and ssl is not set up for it).
    assert resolve("http://core.example:9999", "k", lambda: cfg)[2] is None


def test_bad_tls_options_are_usage_errors(tmp_path: Path) -> None:
    cfg = local_config(tmp_path, 'tls = "off"')
    with pytest.raises(UsageError, match="not both"):
        resolve("https://c:1", "k", lambda: cfg, fingerprint=HEX, ca_file="ca.pem")
    with pytest.raises(UsageError, match="--fingerprint / SERVERMGR_FINGERPRINT: bad fingerprint"):
        resolve("https://c:1", "k", lambda: cfg, fingerprint="sha256:nope")


async def tls_core(start_core: StartCore, tmp_path: Path) -> Core:
    return (await start_core(core_config(tmp_path, extra='tls = "auto"\n'))).core


async def test_the_client_lists_nodes_over_https_with_the_pin_or_the_ca(
    start_core: StartCore, tmp_path: Path
) -> None:
    core = await tls_core(start_core, tmp_path)
    assert core.tls is not None
    for trust in (tls.Trust(fingerprint=core.tls.fingerprint), tls.Trust(ca_file=core.tls.cert)):
        client = Client(core.url, core.key.value, trust=trust)
        assert await trio.to_thread.run_sync(client.nodes) == []
        client.close()


async def test_an_unknown_ca_is_refused_in_one_line(start_core: StartCore, tmp_path: Path) -> None:
    core = await tls_core(start_core, tmp_path)
    client = Client(core.url, core.key.value, trust=tls.Trust())
    with pytest.raises(TlsError, match="is not trusted by the system's CAs"):
        await trio.to_thread.run_sync(client.nodes)


async def test_https_against_a_plain_core_is_refused_clearly(core: Core) -> None:
    secure = core.url.replace("http://", "https://")
    client = Client(secure, core.key.value, trust=tls.Trust(fingerprint=f"sha256:{HEX}"))
    with pytest.raises(TlsError, match=r"does not speak TLS: use http://"):
        await trio.to_thread.run_sync(client.nodes)


async def test_ctl_top_trusts_exactly_the_pinned_certificate(
    start_core: StartCore, tmp_path: Path
) -> None:
    """httpx (the dashboard's details) gets a context that accepts only the pinned certificate."""
    core = await tls_core(start_core, tmp_path)
    assert core.tls is not None
    trust = tls.Trust(fingerprint=core.tls.fingerprint)
    ctx = await trio.to_thread.run_sync(tls.verifying_context, core.url, trust, 5.0)
    headers = {"Authorization": f"Bearer {core.key.value}"}
    async with httpx.AsyncClient(verify=ctx, headers=headers, timeout=5) as http:
        assert (await http.get(core.url + "/api/v1/nodes")).json() == []
    wrong = tls.Trust(fingerprint=f"sha256:{HEX}")
    with pytest.raises(TlsError, match="does not match the pinned"):
        await trio.to_thread.run_sync(tls.verifying_context, core.url, wrong, 5.0)
    # A server with another certificate fails verification inside httpx itself.
    other = (await start_core(core_config(tmp_path / "other", extra='tls = "auto"\n'))).core
    assert other.tls is not None
    assert other.tls.fingerprint != core.tls.fingerprint
    async with httpx.AsyncClient(verify=ctx, headers=headers, timeout=5) as http:
        with pytest.raises(httpx.ConnectError) as err:
            await http.get(other.url + "/api/v1/nodes")
    causes = []
    exc: BaseException | None = err.value
    while exc is not None:
        causes.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(c, ssl.SSLCertVerificationError) for c in causes), causes
