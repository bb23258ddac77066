"""Fingerprints and the TLS keys of the config (pure: no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servermgr.common.config import parse_config
from servermgr.common.errors import ConfigError, TlsError
from servermgr.common.tls import Trust, check_pin, fingerprint_of_der, parse_fingerprint

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "text",
    [
        f"sha256:{HEX}",
        f"SHA256:{HEX.upper()}",
        HEX,
        ":".join(HEX[i : i + 2] for i in range(0, 64, 2)),
        "sha256 Fingerprint=" + ":".join(HEX[i : i + 2].upper() for i in range(0, 64, 2)),
        f"  sha256:{HEX}\n",
    ],
)
def test_fingerprints_are_read_in_every_common_spelling(text: str) -> None:
    assert parse_fingerprint(text) == f"sha256:{HEX}"


@pytest.mark.parametrize(
    "text", ["", "sha256:", "sha256:abc", f"sha1:{HEX}", HEX + "00", "zz" * 32]
)
def test_a_bad_fingerprint_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected sha256: and 64 hex digits"):
        parse_fingerprint(text)


def test_the_pin_is_the_sha256_of_the_certificate() -> None:
    der = b"certificate bytes"
    pin = fingerprint_of_der(der)
    assert pin.startswith("sha256:")
    assert len(pin) == 7 + 64
    check_pin(Trust(fingerprint=pin), der, "wss://core:9999")
    check_pin(Trust(), b"anything", "wss://core:9999")  # no pin: nothing to check here
    with pytest.raises(TlsError) as err:
        check_pin(Trust(fingerprint=f"sha256:{HEX}"), der, "wss://core:9999")
    assert str(err.value).startswith(
        f"certificate fingerprint {pin} does not match the pinned sha256:{HEX} "
        "(Core at wss://core:9999)"
    )


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, source=Path("/etc/s.toml"), base_dir=Path("/etc"))


def test_server_tls_keys() -> None:
    assert parse("").server.tls == "off"
    assert parse("").tls_paths is None
    auto = parse('[server]\ntls = "auto"\n[storage]\ndata_dir = "/d"\n')
    assert auto.server.tls == "auto"
    assert auto.tls_paths == (Path("/d/tls.crt"), Path("/d/tls.key"))
    files = parse('[server]\ntls_cert = "c.pem"\ntls_key = "/k.pem"\n')
    assert files.server.tls == "files"
    assert files.tls_paths == (Path("/etc/c.pem"), Path("/k.pem"))


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[server]\ntls = "on"', "server.tls", "must be one of off, auto"),
        ('[server]\ntls_cert = "c.pem"', "server.tls_key", "give tls_cert and tls_key together"),
        (
            '[server]\ntls = "auto"\ntls_cert = "c"\ntls_key = "k"',
            "server.tls",
            "use one or the other",
        ),
        (
            '[node]\ncore_addr = "wss://c:1"\ntls_fingerprint = "abc"',
            "node.tls_fingerprint",
            "expected sha256:",
        ),
        (
            f'[node]\ncore_addr = "ws://c:1"\ntls_fingerprint = "{HEX}"',
            "node.tls_fingerprint",
            "only used with a wss:// core_addr",
        ),
        (
            f'[node]\ncore_addr = "wss://c:1"\ntls_fingerprint = "{HEX}"\nca_file = "ca.pem"',
            "node.ca_file",
            "not both",
        ),
    ],
)
def test_bad_tls_config_names_the_key(text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert err.value.key == key
    assert reason in err.value.reason


def test_node_tls_keys() -> None:
    pinned = parse(f'[node]\ncore_addr = "wss://core.example:9999"\ntls_fingerprint = "{HEX}"\n')
    assert pinned.node.core_addr == ("wss://core.example:9999",)
    assert pinned.node.trust == Trust(fingerprint=f"sha256:{HEX}")
    ca = parse('[node]\ncore_addr = "wss://core.example:9999"\nca_file = "ca.pem"\n')
    assert ca.node.trust == Trust(ca_file=Path("/etc/ca.pem"))
    assert parse('[node]\ncore_addr = "wss://c:1"\n').node.trust == Trust()
