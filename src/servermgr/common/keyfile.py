"""The core key file, shared by Core (which creates it) and ctl (which reads it).

The core key (256 random bits, 64 hex characters) lives in
``<data_dir>/core.key`` at mode 0600. It is created atomically: the key is
written to a private temp file which is then hard-linked into place, so no
partial file is ever visible and two concurrent first starts end with one key.
An existing key is never changed, except by ``rotate_key`` (``servermgr key
rotate``), which replaces the file atomically (rename over it).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from servermgr.common import files
from servermgr.common.errors import KeyFileError

KEY_BYTES = 32
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CoreKey:
    """The loaded core key; ``warning`` is set when the file is too open."""

    value: str
    path: Path
    created: bool
    warning: str | None = None

    def __repr__(self) -> str:
        return f"CoreKey(path={str(self.path)!r}, created={self.created})"


def load_or_create_key(path: Path) -> CoreKey:
    """Load the key at ``path``, creating it (and its directory, 0700) if missing."""
    try:
        return _load(path, created=False)
    except FileNotFoundError:
        pass
    try:
        files.private_dir(path.parent)
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot create directory: {exc.strerror}") from None
    value = secrets.token_hex(KEY_BYTES)
    try:
        if not files.write_atomic(path, (value + "\n").encode(), replace=False):
            # Another process won the race: its key is the key.
            return _load(path, created=False)
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot write: {exc.strerror}") from None
    return CoreKey(value=value, path=path, created=True)


def rotate_key(path: Path) -> CoreKey:
    """Replace the key at ``path`` with a new one (the file must exist), atomically."""
    read_key(path)  # a missing or unreadable key is an error, not a silent first key
    value = secrets.token_hex(KEY_BYTES)
    try:
        files.write_atomic(path, (value + "\n").encode(), replace=True)
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot write: {exc.strerror}") from None
    return CoreKey(value=value, path=path, created=True)


def read_key(path: Path) -> CoreKey:
    """Load an existing key; a missing file is a KeyFileError."""
    try:
        return _load(path, created=False)
    except FileNotFoundError:
        raise KeyFileError(str(path), "no key file (start Core once to create it)") from None


def _load(path: Path, *, created: bool) -> CoreKey:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except PermissionError:
        raise KeyFileError(str(path), "permission denied (run as the user that owns it)") from None
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(str(path), "not a regular file")
        data = os.read(fd, 4096)
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace").strip()
    if not text:
        raise KeyFileError(
            str(path),
            "file is empty; restore it from a backup, or delete it "
            "to create a new key (every node must then get the new key)",
        )
    if not _KEY_RE.match(text):
        raise KeyFileError(
            str(path),
            "file is corrupt (expected 64 hex characters); restore it "
            "from a backup, or delete it to create a new key",
        )
    warning = None
    if st.st_mode & 0o077:
        warning = (
            f"core key {path} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); fix with: chmod 600 {path}"
        )
    return CoreKey(value=text, path=path, created=created, warning=warning)
