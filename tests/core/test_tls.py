"""Core's TLS material: the self-signed certificate it makes, or the operator's files."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from servermgr.common import tls
from servermgr.common.errors import ConfigError
from servermgr.core import tls as core_tls
from tests.support import StartCore, core_config


def sans(cert: Path) -> set[str]:
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    ext = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(ext.get_values_for_type(x509.DNSName))
    return names | {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


async def test_tls_auto_makes_a_certificate_once_and_serves_https(
    start_core: StartCore, tmp_path: Path
) -> None:
    cfg = core_config(tmp_path, extra='tls = "auto"\n')
    first = await start_core(cfg)
    files = first.core.tls
    assert files is not None
    assert files.created
    assert files.cert == cfg.storage.data_dir / "tls.crt"
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert {"127.0.0.1", "localhost", "::1"} <= sans(files.cert)
    assert files.fingerprint == tls.fingerprint_of_file(files.cert)
    ctx = ssl.create_default_context(cafile=str(files.cert))
    async with httpx.AsyncClient(verify=ctx, timeout=5) as client:
        resp = await client.get(first.core.url + "/healthz")
    assert resp.status_code == 200
    first.stop.set()
    await first.done.wait()

    again = await start_core(cfg)
    assert again.core.tls is not None
    assert not again.core.tls.created
    assert again.core.tls.fingerprint == files.fingerprint  # reused, not remade


def test_the_certificate_names_the_listen_host(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert core_tls.ensure_self_signed(cert, key, core_tls.hosts_for("10.1.2.3"))
    assert {"10.1.2.3", "127.0.0.1", "localhost"} <= sans(cert)
    assert not core_tls.ensure_self_signed(cert, key, ["other"])  # kept as it is
    every = core_tls.hosts_for("0.0.0.0")
    assert "0.0.0.0" not in every
    assert every[0]


def test_a_key_left_without_its_certificate_gets_one(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    core_tls.ensure_self_signed(cert, key, ["127.0.0.1"])
    pem = key.read_bytes()
    cert.unlink()
    assert core_tls.ensure_self_signed(cert, key, ["127.0.0.1"])
    assert key.read_bytes() == pem
    assert cert.exists()


def _files_config(tmp_path: Path, cert: Path, key: Path):  # type: ignore[no-untyped-def]
    return core_config(tmp_path, extra=f'tls_cert = "{cert}"\ntls_key = "{key}"\n')


async def test_operator_files_are_served(start_core: StartCore, tmp_path: Path) -> None:
    cert, key = tmp_path / "mine.crt", tmp_path / "mine.key"
    core_tls.ensure_self_signed(cert, key, ["127.0.0.1"])
    core = (await start_core(_files_config(tmp_path, cert, key))).core
    assert core.tls is not None
    assert core.tls.cert == cert
    assert core.tls.fingerprint == tls.fingerprint_of_file(cert)
    assert not (core.config.storage.data_dir / "tls.crt").exists()


@pytest.mark.parametrize(
    ("problem", "key_named", "reason"),
    [
        ("missing cert", "server.tls_cert", "no such file"),
        ("missing key", "server.tls_key", "no such file"),
        ("not pem", "server.tls_cert", "no PEM certificate"),
        ("other key", "server.tls_key", "is not the private key of"),
        ("key is a directory", "server.tls_key", "cannot read"),
    ],
)
def test_bad_tls_files_are_one_config_error_before_anything_starts(
    tmp_path: Path, problem: str, key_named: str, reason: str
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    core_tls.ensure_self_signed(cert, key, ["127.0.0.1"])
    if problem == "missing cert":
        cert.unlink()
    elif problem == "missing key":
        key.unlink()
    elif problem == "not pem":
        cert.write_text("hello\n")
    elif problem == "other key":
        core_tls.ensure_self_signed(tmp_path / "c2.pem", tmp_path / "k2.pem", ["x"])
        key = tmp_path / "k2.pem"
    elif problem == "key is a directory":
        key = tmp_path
    cfg = _files_config(tmp_path, cert, key)
    with pytest.raises(ConfigError) as err:
        core_tls.load(cfg)
    assert err.value.key == key_named
    assert reason in err.value.reason
    assert not cfg.storage.sqlite_path.exists()


async def test_core_does_not_start_with_a_bad_certificate(
    start_core: StartCore, tmp_path: Path
) -> None:
    cert = tmp_path / "missing.crt"
    cfg = _files_config(tmp_path, cert, tmp_path / "missing.key")
    with pytest.raises(ConfigError, match=r"server.tls_cert: .*missing.crt: no such file"):
        await start_core(cfg)
    assert not cfg.storage.sqlite_path.exists()
    assert not cfg.storage.key_path.exists()


def test_key_show_with_a_data_dir_shows_the_certificate_there(tmp_path: Path) -> None:
    assert core_tls.fingerprint_for(None, tmp_path) is None  # no TLS there: no line 2
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    core_tls.ensure_self_signed(cert, key, ["127.0.0.1"])
    shown = core_tls.fingerprint_for(None, tmp_path)
    assert shown is not None
    assert shown.fingerprint == tls.fingerprint_of_file(cert)
