"""Named API tokens and revoked node credentials, as stored in Core's database.

A token is ``t<16 hex>.<secret>`` (the secret has 256 random bits): the id
before the dot finds the row, and only a SHA-256 of the secret is stored,
compared in constant time (``security.credential_matches``). The secret is
shown once, when the token is made, and never again.

The functions take a ``Storage`` and run synchronously: Core calls them
through its ``Database`` (worker threads), ``servermgr key`` commands
directly on the same file. A running Core reloads the table every second
(``core/auth.py``), so a token made or revoked by the CLI takes effect there
within about a second.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from servermgr.common.errors import ServermgrError, UsageError
from servermgr.core import security
from servermgr.core.storage import Storage

TOKEN_PREFIX = "t"
ADMIN_NAME = "core-key"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


class Role(StrEnum):
    """What a named token may do (the core key is admin, a node credential is its node)."""

    READ = "read"
    OPERATE = "operate"
    ENROLL = "enroll"


@dataclass(frozen=True)
class Token:
    """A stored token: never the secret, only its hash."""

    id: str
    name: str
    role: Role
    secret_hash: str
    created: float
    expires: float | None
    last_used: float | None

    def __repr__(self) -> str:
        return f"Token(name={self.name!r}, role={self.role.value!r})"

    def public(self) -> dict[str, Any]:
        """What ``key list`` shows: everything but the hash."""
        return {
            "name": self.name,
            "role": self.role.value,
            "created": self.created,
            "expires": self.expires,
            "last_used": self.last_used,
        }


def check_name(name: str) -> str:
    """``name`` if it can name a token, else a UsageError saying which names can."""
    if not _NAME.fullmatch(name) or name == ADMIN_NAME:
        raise UsageError(
            f"bad token name {name[:80]!r}: use 1-63 of a-z 0-9 . _ - starting with a letter "
            f"or digit (not {ADMIN_NAME!r})"
        )
    return name


def new_token(role: Role) -> tuple[str, str, str]:
    """``(id, token, hash)`` of a fresh token: the token is shown once, the hash stored."""
    token_id = TOKEN_PREFIX + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{token_id}.{secret}", security.hash_secret(secret)


_COLUMNS = "id, name, role, secret_hash, created, expires, last_used"


def _row(row: tuple[Any, ...]) -> Token:
    id_, name, role, secret_hash, created, expires, last_used = row
    return Token(id_, name, Role(role), secret_hash, created, expires, last_used)


def create(
    storage: Storage, name: str, role: Role, *, now: float, expires: float | None
) -> tuple[Token, str]:
    """Store a new token; returns it and its secret form (UsageError if the name is used)."""
    check_name(name)
    token_id, token, secret_hash = new_token(role)
    with storage.transaction() as conn:
        if conn.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
            raise ServermgrError(
                f"a token named {name!r} exists already; revoke it first "
                f"(servermgr key revoke {name}) or pick another name"
            )
        conn.execute(
            f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (token_id, name, role.value, secret_hash, now, expires),
        )
    return Token(token_id, name, role, secret_hash, now, expires, None), token


def load(storage: Storage) -> list[Token]:
    """Every token, by name."""
    with storage.reader() as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM tokens ORDER BY name").fetchall()
    return [_row(r) for r in rows]


def by_id(storage: Storage, token_id: str) -> Token | None:
    with storage.reader() as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
    return _row(row) if row is not None else None


def revoke(storage: Storage, name: str) -> bool:
    """Delete the token named ``name``; False if there is none."""
    with storage.transaction() as conn:
        cur = conn.execute("DELETE FROM tokens WHERE name = ?", (name,))
    return cur.rowcount > 0


def record_use(storage: Storage, used: dict[str, float]) -> None:
    """Store when tokens (by id) were last used."""
    if not used:
        return
    with storage.transaction() as conn:
        conn.executemany(
            "UPDATE tokens SET last_used = max(coalesce(last_used, ?1), ?1) WHERE id = ?2",
            [(ts, token_id) for token_id, ts in used.items()],
        )


# --- revoked node credentials ----------------------------------------------------


@dataclass(frozen=True)
class RevokedNode:
    node_id: str
    name: str
    cred_hash: str
    removed: float


def revoke_node(storage: Storage, node_id: str, name: str, cred_hash: str, now: float) -> None:
    """Remember a removed node's credential so its agent is told, not re-registered."""
    with storage.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO revoked_nodes (node_id, name, cred_hash, removed) "
            "VALUES (?, ?, ?, ?)",
            (node_id, name, cred_hash, now),
        )


def revoked_nodes(storage: Storage) -> list[RevokedNode]:
    with storage.reader() as conn:
        rows = conn.execute(
            "SELECT node_id, name, cred_hash, removed FROM revoked_nodes"
        ).fetchall()
    return [RevokedNode(*r) for r in rows]
