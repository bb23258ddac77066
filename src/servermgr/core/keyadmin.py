"""``servermgr key create/list/revoke/rotate``: credentials managed on the Core host.

These work on Core's data directory directly (the token table in its SQLite
file, the core key file), as ``key show`` does, whether Core runs or not: a
running Core re-reads both every second (``core/auth.py``). Managing
credentials thus needs what reading the core key needs, access to the data
directory, and no network API has to offer it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servermgr.common.errors import ServermgrError, UsageError
from servermgr.common.keyfile import CoreKey, rotate_key
from servermgr.common.timespec import parse_duration
from servermgr.core import tokens
from servermgr.core.storage import Storage


@contextmanager
def _storage(db_path: Path, *, create: bool) -> Iterator[Storage]:
    if not create and not db_path.exists():
        raise ServermgrError(
            f"no Core database at {db_path}: start Core once, or point --config / "
            "--data-dir at Core's data"
        )
    storage = Storage.open(db_path)
    try:
        yield storage
    finally:
        storage.close()


def parse_role(text: str) -> tokens.Role:
    try:
        return tokens.Role(text)
    except ValueError:
        roles = ", ".join(r.value for r in tokens.Role)
        raise UsageError(f"bad role {text!r}: use one of {roles}") from None


def create(db_path: Path, name: str, role: str, expires: str | None) -> tuple[dict[str, Any], str]:
    """A new token: its public record and the secret (to print once)."""
    kind = parse_role(role)
    tokens.check_name(name)
    now = time.time()
    until = None
    if expires is not None:
        try:
            span = parse_duration(expires)
        except ValueError as exc:
            raise UsageError(f"--expires: {exc}") from None
        if span <= 0:
            raise UsageError("--expires must be more than 0 (e.g. 30d)")
        until = now + span
    with _storage(db_path, create=True) as storage:
        token, secret = tokens.create(storage, name, kind, now=now, expires=until)
    return token.public(), secret


def listing(db_path: Path) -> list[dict[str, Any]]:
    with _storage(db_path, create=False) as storage:
        return [t.public() for t in tokens.load(storage)]


def revoke(db_path: Path, name: str) -> None:
    with _storage(db_path, create=False) as storage:
        if not tokens.revoke(storage, name):
            known = ", ".join(t.name for t in tokens.load(storage)) or "none"
            raise ServermgrError(f"no token named {name!r} (tokens: {known})")


def rotate(key_path: Path) -> CoreKey:
    return rotate_key(key_path)
