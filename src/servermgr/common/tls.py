"""TLS on the client side: how a node or ctl decides it is talking to the real Core.

Three ways to trust Core's certificate (``Trust``):

- a pin (``tls_fingerprint`` / ``--fingerprint``): the SHA-256 of Core's
  leaf certificate, checked right after the TLS handshake and before a
  single byte of the request (so before any key or credential) is sent;
  the CA chain, host name and dates are not looked at;
- a CA file (``ca_file`` / ``--ca-file``): normal verification (chain and
  host name) against that CA only;
- neither: normal verification against the system's CAs.

Fingerprints are written one way everywhere: ``sha256:`` and 64 lowercase
hex digits. Input may also have colons, capitals or no prefix (as
``openssl x509 -fingerprint -sha256`` prints them).

No dependency beyond the standard library, and ``ssl`` is imported only when
a context is made: ``ctl exec`` over plain http never loads it from here.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from servermgr.common.errors import TlsError

if TYPE_CHECKING:
    import ssl

PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Trust:
    """How to verify Core's certificate: a pin, a CA file, or (neither) the system's CAs."""

    fingerprint: str | None = None
    ca_file: Path | None = None


def parse_fingerprint(text: str) -> str:
    """``sha256:<64 hex>`` from any common spelling; ValueError with the accepted form."""
    value = text.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        if value.startswith(prefix):
            value = value[len(prefix) :]
            break
    value = value.replace(":", "")
    if not _HEX.fullmatch(value):
        raise ValueError(
            f"bad fingerprint {text!r}: expected sha256: and 64 hex digits "
            "(as `servermgr key show` prints it; colons are allowed)"
        )
    return PREFIX + value


def fingerprint_of_der(der: bytes) -> str:
    return PREFIX + hashlib.sha256(der).hexdigest()


def fingerprint_of_pem(pem: str) -> str:
    """The fingerprint of the first certificate in PEM text; ValueError if there is none."""
    import ssl

    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError("no PEM certificate in it")
    try:
        der = ssl.PEM_cert_to_DER_cert(pem[start : stop + len(end)])
    except ValueError:
        raise ValueError("the PEM certificate is corrupt") from None
    return fingerprint_of_der(der)


def fingerprint_of_file(path: Path) -> str:
    """The fingerprint of the certificate in ``path``; OSError or ValueError."""
    return fingerprint_of_pem(path.read_text(encoding="ascii", errors="replace"))


def check_pin(trust: Trust, der: bytes | None, where: str) -> None:
    """Raise TlsError unless the peer's certificate ``der`` matches ``trust``'s pin."""
    if trust.fingerprint is None:
        return
    if der is None:
        raise TlsError(f"Core at {where} sent no certificate; cannot check the pinned fingerprint")
    got = fingerprint_of_der(der)
    if got != trust.fingerprint:
        raise TlsError(
            f"certificate fingerprint {got} does not match the pinned {trust.fingerprint} "
            f"(Core at {where}): not connecting; a different server, or Core's certificate "
            "changed (compare with `servermgr key show` on Core)"
        )


@functools.cache
def client_context(trust: Trust) -> ssl.SSLContext:
    """The SSL context for ``trust``, made once per process (loading CAs costs ~20-30 ms).

    For a pin, the handshake itself verifies nothing: the caller runs
    ``check_pin`` on the peer's certificate before sending anything.
    """
    import ssl

    if trust.fingerprint is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if trust.ca_file is not None:
        try:
            return ssl.create_default_context(cafile=str(trust.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot use the CA file {trust.ca_file}: {_why(exc)}") from None
    return ssl.create_default_context()


def verifying_context(base_url: str, trust: Trust, timeout: float) -> ssl.SSLContext:
    """A context that verifies on its own, for a client with no hook between the
    handshake and the request (httpx in ``ctl top``).

    For a pin: Core's certificate is fetched once and checked against the pin,
    then it is the only CA the context trusts (no host name, no chain).
    Blocking; raises TlsError or OSError.
    """
    import socket
    import ssl
    from urllib.parse import urlsplit

    if trust.fingerprint is None:
        return client_context(trust)
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    with socket.create_connection((host, parts.port or 443), timeout=timeout) as sock:
        try:
            with probe_context().wrap_socket(sock, server_hostname=host) as conn:
                der = conn.getpeercert(binary_form=True)
        except ssl.SSLError as exc:
            raise explain(exc, base_url, trust) or TlsError(str(exc)) from None
    check_pin(trust, der, base_url)
    assert der is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cadata=der)
    return ctx


def probe_context() -> ssl.SSLContext:
    """A context that accepts any certificate: only to find out whether a port speaks TLS."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def probe(host: str, port: int, timeout: float = 5.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake (asked after a plain request failed)."""
    import socket
    import ssl

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with probe_context().wrap_socket(sock, server_hostname=host):
                return True
    except (OSError, ssl.SSLError):
        return False


def explain(exc: BaseException, where: str, trust: Trust) -> TlsError | None:
    """The TlsError for an ``ssl`` failure while connecting to ``where``, else None."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        how = f"the CA file {trust.ca_file}" if trust.ca_file else "the system's CAs"
        return TlsError(
            f"Core's certificate at {where} is not trusted by {how} "
            f"({exc.verify_message or _why(exc)}): pin it with --fingerprint / "
            "tls_fingerprint, or give its CA with --ca-file / ca_file"
        )
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            return not_tls(where)
        return TlsError(f"TLS with Core at {where} failed ({_why(exc)})")
    return None


def not_tls(where: str) -> TlsError:
    plain = where.replace("https://", "http://", 1).replace("wss://", "ws://", 1)
    return TlsError(f"Core at {where} does not speak TLS: use {plain} (or turn on [server] tls)")


def speaks_tls(where: str) -> TlsError:
    secure = where.replace("http://", "https://", 1).replace("ws://", "wss://", 1)
    return TlsError(
        f"Core at {where} speaks TLS: use {secure} (with --fingerprint / tls_fingerprint "
        "or --ca-file / ca_file)"
    )


def _why(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
