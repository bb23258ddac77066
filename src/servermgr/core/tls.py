"""Core's TLS material: a self-signed certificate it makes itself, or the operator's files.

``[server] tls = "auto"``: on first start Core makes an EC P-256 key
(``<data_dir>/tls.key``, 0600) and a self-signed certificate for it
(``<data_dir>/tls.crt``, 0644: it is public; valid 10 years) naming the listen host, localhost,
127.0.0.1 and ::1 (and this host's name when listening on every address).
Each file is written to a private temp file and hard-linked into place, as
the core key is, so no partial file is ever seen; later starts reuse both.
Nodes and ctl trust it by its fingerprint (``servermgr key show``) or by
using ``tls.crt`` as their CA file.

``tls_cert`` / ``tls_key``: the operator's PEM files, checked (readable, a
certificate and its key) before anything starts.

Uses the ``cryptography`` package, imported only when a certificate is made.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from servermgr.common import tls
from servermgr.common.config import AUTO_TLS_CERT, AUTO_TLS_KEY, Config
from servermgr.common.errors import ConfigError
from servermgr.common.files import private_dir, write_atomic

VALID_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    """What Hypercorn serves, and the fingerprint clients pin."""

    cert: Path
    key: Path
    fingerprint: str
    created: bool = False


def load(config: Config) -> TlsFiles | None:
    """Core's TLS files for ``config`` (made when ``tls = "auto"``), None when TLS is off.

    Raises ConfigError (naming the key) for a file that is missing,
    unreadable, not PEM, or a certificate and key that do not belong together.
    """
    server = config.server
    paths = config.tls_paths
    if paths is None:
        return None
    cert, key = paths
    created = False
    if server.tls == "auto":
        try:
            created = ensure_self_signed(cert, key, hosts_for(server.listen_host))
        except OSError as exc:
            raise ConfigError(
                config.source, "server.tls", f"cannot create {cert}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:  # a corrupt key file
            raise ConfigError(
                config.source,
                "server.tls",
                f"{key}: {exc}; delete {key} and {cert} to make a new pair "
                "(nodes and ctl must then pin the new fingerprint)",
            ) from None
        what = "server.tls"
    else:
        what = "server.tls_cert"
    fingerprint = check_pair(config.source, what, cert, key)
    return TlsFiles(cert, key, fingerprint, created)


def fingerprint_for(config: Config | None, data_dir: Path | None) -> TlsFiles | None:
    """For ``key show``: Core's TLS files from ``config`` (made if ``tls = "auto"``), or
    the self-signed pair in ``data_dir`` if there is one; None without TLS."""
    if config is not None:
        return load(config)
    assert data_dir is not None
    cert, key = data_dir / AUTO_TLS_CERT, data_dir / AUTO_TLS_KEY
    if not cert.exists():
        return None
    return TlsFiles(cert, key, check_pair(str(data_dir), AUTO_TLS_CERT, cert, key))


def check_pair(source: str, what: str, cert: Path, key: Path) -> str:
    """The certificate's fingerprint once ``cert`` and ``key`` load as a pair."""
    key_what = "server.tls_key" if what == "server.tls_cert" else what
    for path, name in ((cert, what), (key, key_what)):
        try:
            with path.open("rb") as f:
                f.read(1)
        except FileNotFoundError:
            raise ConfigError(source, name, f"{path}: no such file") from None
        except PermissionError:
            raise ConfigError(source, name, f"{path}: permission denied") from None
        except OSError as exc:
            raise ConfigError(source, name, f"{path}: cannot read ({exc.strerror})") from None
    try:
        fingerprint = tls.fingerprint_of_file(cert)
    except (OSError, ValueError) as exc:
        raise ConfigError(source, what, f"{cert}: {exc}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key), password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            source,
            key_what,
            f"{key} is not the private key of {cert}, or not an unencrypted PEM key "
            f"({getattr(exc, 'reason', None) or exc})",
        ) from None
    return fingerprint


def _no_password() -> str:
    raise ssl.SSLError("the key is encrypted; servermgr needs it without a passphrase")


def hosts_for(listen_host: str) -> list[str]:
    """The names the certificate holds: the listen host, localhost, loopback, and
    this host's name when Core listens on every address."""
    hosts = [listen_host] if listen_host not in ("0.0.0.0", "::", "") else []
    if not hosts:
        hosts.append(socket.gethostname())
        fqdn = socket.getfqdn()
        if fqdn not in hosts:
            hosts.append(fqdn)
    for name in ("localhost", "127.0.0.1", "::1"):
        if name not in hosts:
            hosts.append(name)
    return hosts


def ensure_self_signed(cert: Path, key: Path, hosts: list[str]) -> bool:
    """Make the key and certificate if missing; True when anything was made.

    A key without its certificate (a start interrupted between the two)
    gets a new certificate; an existing certificate is never replaced.
    """
    if cert.exists() and key.exists():
        return False
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_dir(cert.parent)
    if not key.exists():
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(key, pem, replace=False)
    if cert.exists():
        return True
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise OSError(f"{key} is not an EC key: delete it to make a new one")
    write_atomic(cert, _self_signed(private, hosts), replace=False, mode=0o644)
    return True


def _self_signed(private: object, hosts: list[str]) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    assert isinstance(private, ec.EllipticCurvePrivateKey)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"servermgr core {hosts[0]}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "servermgr"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = private.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # Its own CA, so that clients may also trust it as a CA file.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(private, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
