"""The node's identity on disk: its id and credential, mode 0600.

JSON through msgspec, which the agent has loaded anyway (the stdlib ``json``
would add ~0.2 MiB to its RSS).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from servermgr.common import files
from servermgr.common.errors import ServermgrError

FILE_NAME = "identity.json"


@dataclass(frozen=True)
class Identity:
    node_id: str
    name: str
    credential: str

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id!r}, name={self.name!r})"


class IdentityError(ServermgrError):
    pass


def load(data_dir: Path) -> Identity | None:
    path = data_dir / FILE_NAME
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IdentityError(f"node identity {path}: cannot read: {exc.strerror}") from None
    try:
        doc = msgspec.json.decode(raw)
        return Identity(str(doc["node_id"]), str(doc["name"]), str(doc["credential"]))
    except (msgspec.DecodeError, ValueError, KeyError, TypeError):
        raise IdentityError(
            f"node identity {path} is corrupt; delete it to register this node again"
        ) from None


def save(data_dir: Path, identity: Identity) -> None:
    """Write atomically (temp file, fsync, rename) at mode 0600."""
    files.private_dir(data_dir)
    doc = {"node_id": identity.node_id, "name": identity.name, "credential": identity.credential}
    files.write_atomic(data_dir / FILE_NAME, msgspec.json.encode(doc), replace=True)


def forget(data_dir: Path) -> None:
    try:
        (data_dir / FILE_NAME).unlink()
    except FileNotFoundError:
        pass
