"""Node credentials and secret comparison.

Node credentials are ``<node id>.<secret>``; Core stores only a SHA-256 of
the secret (the secret has 256 bits of entropy, so a slow hash adds nothing)
and compares digests in constant time. The core key file is in
``common/keyfile.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from servermgr.common.keyfile import CoreKey, load_or_create_key, read_key

__all__ = ["CoreKey", "load_or_create_key", "read_key"]


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())


def new_node_id() -> str:
    return "n" + secrets.token_hex(8)


def new_credential(node_id: str) -> tuple[str, str]:
    """A fresh credential for ``node_id`` and the hash Core stores."""
    secret = secrets.token_urlsafe(32)
    return f"{node_id}.{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_credential(credential: str) -> tuple[str, str] | None:
    """(node id, secret) of a well-formed credential, else None."""
    node_id, sep, secret = credential.partition(".")
    if not sep or not node_id or not secret or len(credential) > 256:
        return None
    return node_id, secret


def credential_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
