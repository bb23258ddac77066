"""Core's database as a file: start-up checks, identity at run time, online backup.

What SQLite does not check by itself: an empty (0-byte) file is taken for a
new database, a truncated or damaged one answers until a query reaches the
missing pages, and a file deleted or replaced while Core runs goes on taking
writes that nobody will ever read. Core refuses the first three at start
(``check_header``, ``check_pages``) and stops on the last
(``check_same_file``, polled by core/app.py), saving a deleted file's last
state beside it first (it is still open) so that nothing is lost.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from servermgr.common.errors import StorageError, StorageUnavailableError

HEADER_MAGIC = b"SQLite format 3\x00"
RESCUED = ".rescued-"
RESTORE_HINT = (
    "restore a backup (docs/howto.md, 'Back up and restore'), "
    "or move the file away to start with an empty database"
)

# Primary result codes (the low byte of ``sqlite_errorcode``) that mean the
# disk or the file fails now, not that a statement was wrong.
_UNAVAILABLE = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_IOERR: "I/O error",
    sqlite3.SQLITE_READONLY: "the file cannot be written",
    sqlite3.SQLITE_CANTOPEN: "the file cannot be opened",
    sqlite3.SQLITE_CORRUPT: "the file is damaged",
    sqlite3.SQLITE_NOTADB: "the file is not a database",
}


class DatabaseUnavailableError(StorageUnavailableError, sqlite3.OperationalError):
    """What Storage raises for a disk or file error: a StorageUnavailableError
    (503, reported once a minute) that code guarding a write with
    ``except sqlite3.Error`` still catches."""


def unavailable(path: Path, exc: sqlite3.Error) -> DatabaseUnavailableError | None:
    """``exc`` as a DatabaseUnavailableError if it is a disk or file error; else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    what = None if code is None else _UNAVAILABLE.get(code & 0xFF)
    if what is None:
        return None
    err = DatabaseUnavailableError(f"database {path}: {what} ({exc})", what)
    err.sqlite_errorcode = exc.sqlite_errorcode
    err.sqlite_errorname = exc.sqlite_errorname
    return err


class FileId(NamedTuple):
    """Which file a path names: it changes when the file is replaced."""

    dev: int
    ino: int


def file_id(path: Path) -> FileId:
    st = os.stat(path)
    return FileId(st.st_dev, st.st_ino)


def check_header(path: Path) -> bool:
    """Whether a database exists at ``path``; StorageError if it is empty or truncated.

    Reads only the 100-byte header. The size check is skipped while a WAL
    file holds pages: SQLite completes an interrupted checkpoint from it.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"database {path}: cannot read it: {exc}") from exc
    if size == 0:
        raise StorageError(f"database {path} is empty (0 bytes): {RESTORE_HINT}")
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise StorageError(f"database {path}: cannot read it: {exc}") from exc
    if len(header) < 100 or not header.startswith(HEADER_MAGIC):
        raise StorageError(f"database {path} is not a SQLite database (bad header): {RESTORE_HINT}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is valid only when written by the same change as the header.
    counted = header[24:28] == header[92:96] and pages > 0
    if counted and size < pages * page_size and not _wal_has_pages(path):
        raise StorageError(
            f"database {path} is truncated: its header counts {pages * page_size} bytes, "
            f"the file has {size}: {RESTORE_HINT}"
        )
    return True


def _wal_has_pages(path: Path) -> bool:
    try:
        return os.stat(f"{path}-wal").st_size > 0
    except FileNotFoundError:
        return False


def check_pages(conn: sqlite3.Connection, path: Path) -> None:
    """StorageError unless SQLite's ``quick_check`` finds every page and table sound.

    It reads the whole file once (in the page cache or from disk); the time
    it takes is measured by bench/storage.py (docs/performance.md).
    """
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"database {path} is damaged ({exc}): {RESTORE_HINT}") from exc
    if problems != ["ok"]:
        found = "; ".join(" ".join(str(p).split()) for p in problems)  # one line
        raise StorageError(f"database {path} is damaged ({found[:200]}): {RESTORE_HINT}")


def check_same_file(path: Path, expected: FileId, rescue: Callable[[Path], None]) -> None:
    """StorageError if ``path`` was deleted or now names another file than ``expected``.

    A deleted file is still open: ``rescue(dest)`` copies it to a ``.rescued-``
    file beside it first, which also keeps a later start from making an empty
    database in its place (``check_no_rescued``).
    """
    try:
        now = file_id(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"database {path}: cannot check it: {exc}") from exc
    else:
        if now != expected:
            raise StorageError(
                f"database {path} was replaced by another file while Core ran; stopping so "
                "that nothing more is written to the old one: start Core again to use the new file"
            )
        return
    dest = path.with_name(f"{path.name}{RESCUED}{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        rescue(dest)
    except (OSError, sqlite3.Error) as exc:
        saved = f"it could not be saved ({exc}): put a backup in its place"
    else:
        saved = (
            f"its last state is saved in {dest}: move that to {path} (remove any "
            f"{path.name}-wal and {path.name}-shm left beside it)"
        )
    raise StorageError(
        f"database {path} was deleted while Core ran; stopping so that nothing more is "
        f"written to a file nobody can read; {saved} and start Core again "
        "(docs/howto.md, 'Back up and restore')"
    )


def check_no_rescued(path: Path) -> None:
    """StorageError when ``path`` is missing but a rescued copy of it waits beside it."""
    rescued = sorted(path.parent.glob(f"{path.name}{RESCUED}*"))
    if rescued:
        raise StorageError(
            f"database {path} is missing, but {rescued[-1]} holds the database Core saved when "
            f"it was deleted: move it to {path} to go on with it, or remove it to start with "
            "an empty database"
        )


def copy_into(conn: sqlite3.Connection, dest: Path) -> None:
    """One consistent copy of ``conn``'s database into a new file ``dest`` (0600, one file)."""
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    dst = sqlite3.connect(dest, isolation_level=None)
    try:
        conn.backup(dst)  # all pages in one step: one snapshot
        dst.execute("PRAGMA journal_mode = DELETE")
    finally:
        dst.close()


@dataclass(frozen=True)
class BackupReport:
    path: Path
    bytes: int
    nodes: int
    jobs: int
    samples: int


def backup(source: Path, dest: Path, *, overwrite: bool = False) -> BackupReport:
    """Copy the database at ``source`` to ``dest``, consistent even while Core writes.

    SQLite's online backup reads one snapshot (WAL: Core's writer is never
    blocked). The copy is written beside ``dest`` with mode 0600, checked,
    made a single file (rollback journal, no ``-wal``), then renamed into place.
    """
    source, dest = Path(source), Path(dest)
    if not check_header(source):
        raise StorageError(f"database {source} does not exist (is [storage] sqlite_path right?)")
    if dest.exists() and not overwrite:
        raise StorageError(f"{dest} exists; choose another name or pass --force to replace it")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        _copy(source, tmp)
        report = _count(tmp, dest)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"backup of {source} to {dest} failed: {exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
    return report


def _copy(source: Path, dest: Path) -> None:
    src = sqlite3.connect(source)
    try:
        src.execute("PRAGMA query_only = ON")
        copy_into(src, dest)
    finally:
        src.close()


def _count(copy: Path, named: Path) -> BackupReport:
    conn = sqlite3.connect(copy)
    try:
        check_pages(conn, copy)

        def count(table: str) -> int:
            n: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            return n

        return BackupReport(
            named, copy.stat().st_size, count("nodes"), count("jobs"), count("metrics")
        )
    finally:
        conn.close()
