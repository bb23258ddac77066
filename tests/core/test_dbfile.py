"""Core's database as a file, on real SQLite files: bad files refused at start,
a deleted or replaced file noticed, disk full a typed error, online backup."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from servermgr.common.errors import StorageError, StorageUnavailableError
from servermgr.core import dbfile
from servermgr.core.storage import Storage
from tests.support import cap_database, make_database, make_sample


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "core.db"
    make_database(path)
    return path


def test_empty_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "core.db"
    path.touch()
    with pytest.raises(StorageError, match=r"is empty \(0 bytes\).*restore a backup"):
        Storage.open(path)
    assert path.stat().st_size == 0


def test_truncated_file_is_refused_untouched(db_path: Path) -> None:
    size = db_path.stat().st_size
    os.truncate(db_path, size // 2)
    with pytest.raises(StorageError, match=r"is truncated: its header counts \d+ bytes"):
        Storage.open(db_path)
    assert db_path.stat().st_size == size // 2


def test_damaged_pages_are_refused(db_path: Path) -> None:
    size = db_path.stat().st_size
    with open(db_path, "r+b") as f:  # the header stays intact, pages in the middle do not
        f.seek(size // 3)
        f.write(b"\xab" * (size // 3))
    before = db_path.read_bytes()
    with pytest.raises(StorageError, match=r"is damaged"):
        Storage.open(db_path)
    assert db_path.read_bytes() == before


def test_a_sound_file_opens_and_keeps_its_rows(db_path: Path) -> None:
    storage = Storage.open(db_path)
    try:
        assert [n.name for n in storage.list_nodes()] == ["web-0", "web-1", "web-2"]
    finally:
        storage.close()


def test_replaced_file_is_noticed(db_path: Path, tmp_path: Path) -> None:
    storage = Storage.open(db_path)
    try:
        storage.check_file()  # still the same file: nothing to say
        other = tmp_path / "other.db"
        make_database(other, nodes=1, samples=1)
        os.replace(other, db_path)
        with pytest.raises(StorageError, match="was replaced by another file"):
            storage.check_file()
    finally:
        storage.close()
    assert not list(db_path.parent.glob("*.rescued-*"))


def test_deleted_file_is_noticed_saved_and_not_replaced_by_an_empty_one(db_path: Path) -> None:
    storage = Storage.open(db_path)
    try:
        seq = storage.node("web-0").seq  # type: ignore[union-attr]
        storage.write_batch([(seq, make_sample(9000.0))], {})  # in the WAL only
        for companion in db_path.parent.glob("core.db*"):
            companion.unlink()  # rm core.db*: the file, its WAL and its shared memory
        with pytest.raises(StorageError, match="was deleted while Core ran") as info:
            storage.check_file()
        # No write after the copy: it would be acked and missing from the saved copy.
        with pytest.raises(StorageUnavailableError, match="was deleted"):
            storage.write_batch([(seq, make_sample(9001.0))], {})
    finally:
        storage.close()
    (rescued,) = db_path.parent.glob("core.db.rescued-*")
    assert f"its last state is saved in {rescued}" in str(info.value)
    assert stat.S_IMODE(rescued.stat().st_mode) == 0o600
    assert not db_path.exists()
    with pytest.raises(StorageError, match=r"is missing, but .*\.rescued-.* holds the database"):
        Storage.open(db_path)  # a restart does not start afresh beside the saved copy
    assert not db_path.exists()
    rescued.rename(db_path)  # what the message says to do
    storage = Storage.open(db_path)
    try:
        assert [n.name for n in storage.list_nodes()] == ["web-0", "web-1", "web-2"]
        assert storage.count_metrics(seq) == 2001
    finally:
        storage.close()


def test_full_database_refuses_writes_with_a_typed_error_and_still_reads(db_path: Path) -> None:
    storage = Storage.open(db_path)
    try:
        cap_database(storage, grow=False)
        seq = storage.node("web-0").seq  # type: ignore[union-attr]
        with pytest.raises(StorageUnavailableError, match="the disk is full") as info:
            storage.write_batch([(seq, make_sample(5000.0 + t)) for t in range(2000)], {})
        assert info.value.reason == "the disk is full"
        assert isinstance(info.value, sqlite3.OperationalError)  # old `except sqlite3.Error` holds
        assert storage.count_metrics(seq) == 2000  # reads work, nothing half-written
        cap_database(storage, grow=True)
        storage.write_batch([(seq, make_sample(5000.0 + t)) for t in range(2000)], {})
        assert storage.count_metrics(seq) == 4000
    finally:
        storage.close()


def test_backup_while_writing_is_consistent_private_and_one_file(
    db_path: Path, tmp_path: Path
) -> None:
    storage = Storage.open(db_path)
    seq = storage.node("web-0").seq  # type: ignore[union-attr]
    stop = threading.Event()
    batches = 0

    def write() -> None:  # Core's writer, busy all through the backup
        nonlocal batches
        while not stop.is_set() and batches < 2000:
            first = 10_000.0 + batches * 10
            storage.write_batch([(seq, make_sample(first + t)) for t in range(10)], {})
            batches += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(1000):  # the writer is under way before the backup starts
            if batches >= 5:
                break
            time.sleep(0.005)
        dest = tmp_path / "backups" / "core-backup.db"
        dest.parent.mkdir()
        report = dbfile.backup(db_path, dest)
    finally:
        stop.set()
        writer.join()
        storage.close()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["core-backup.db"]
    assert (report.nodes, report.jobs) == (3, 0)
    conn = sqlite3.connect(dest)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        (count,) = conn.execute("SELECT count(*) FROM metrics WHERE node = ?", (seq,)).fetchone()
        # One snapshot: whole batches of 10 on top of the 2000 there before.
        assert count == report.samples - 4000
        assert count >= 2050
        assert (count - 2000) % 10 == 0
    finally:
        conn.close()
    restored = Storage.open(dest)  # the backup is a database Core opens as it is
    try:
        assert [n.name for n in restored.list_nodes()] == ["web-0", "web-1", "web-2"]
    finally:
        restored.close()


def test_backup_refuses_to_overwrite_unless_told(db_path: Path, tmp_path: Path) -> None:
    dest = tmp_path / "b.db"
    dest.write_text("keep me")
    with pytest.raises(StorageError, match="exists; choose another name or pass --force"):
        dbfile.backup(db_path, dest)
    assert dest.read_text() == "keep me"
    assert dbfile.backup(db_path, dest, overwrite=True).nodes == 3


def test_backup_of_a_missing_database_says_so(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        dbfile.backup(tmp_path / "nope.db", tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists()
