"""Private files and directories: what servermgr writes is its owner's alone.

Databases hold job env, output and credential hashes; data dirs hold keys
and credentials. Directories are 0700 and files 0600, whatever the umask,
and ones left more open by an older version are tightened when opened.
SQLite creates a database's ``-wal`` and ``-shm`` files with the mode of the
database itself, so a database created 0600 keeps its companions private.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700; tighten it if it is group- or world-accessible.

    Parents that already exist are left as they are (``/var/lib`` is not
    ours); parents created here get 0700 as well.
    """
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _tighten(path, DIR_MODE)


def private_file(path: Path) -> bool:
    """Make sure ``path`` exists as 0600 before anyone writes to it.

    Returns True when it was created here (empty), False when it existed
    (then its mode is tightened to 0600).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
        return False
    os.close(fd)
    return True


def private_sqlite(path: Path) -> None:
    """Tighten a database's companion files (WAL, shared memory, journal) that exist."""
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        try:
            _tighten(companion, FILE_MODE)
        except FileNotFoundError:
            pass


def write_atomic(path: Path, data: bytes, *, replace: bool, mode: int = FILE_MODE) -> bool:
    """Write ``path`` whole or not at all, private from its first byte.

    The data goes to a temp file beside ``path`` (created with ``mode``) and
    is fsynced; then it is renamed over ``path`` (``replace``), or hard-linked
    into place only if ``path`` does not exist yet, so that of two processes
    creating it at once the first one's file stays. The directory is fsynced
    so the name survives a crash. Returns False when ``replace`` is off and
    ``path`` already existed (nothing was changed). OSError on failure.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    """Make the names in ``directory`` durable (after a create, link or rename)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tighten(path: Path, mode: int) -> None:
    """Take group and world bits away (the owner's are left as they are)."""
    current = stat.S_IMODE(os.stat(path).st_mode)
    if current & ~mode & 0o077:
        os.chmod(path, current & ~0o077)
