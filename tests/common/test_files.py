"""Private files: databases, keys and data dirs are their owner's alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from servermgr.common import files
from servermgr.common.keyfile import load_or_create_key
from servermgr.core.storage import Storage
from servermgr.node import identity


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("loose_umask")
def test_database_wal_and_shm_are_0600_in_a_0700_dir(tmp_path: Path) -> None:
    db = tmp_path / "data" / "server_manager.db"
    storage = Storage.open(db)
    try:
        storage.insert_node("n0123456789abcdef", "web-1", {}, "0" * 64, 1.0)
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert path.exists(), path
            assert mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(db.parent) == 0o700
    finally:
        storage.close()


@pytest.mark.usefixtures("loose_umask")
def test_files_left_open_by_an_older_version_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "server_manager.db"
    Storage.open(db).close()
    os.chmod(data, 0o755)
    os.chmod(db, 0o644)
    Storage.open(db).close()
    assert mode(db) == 0o600
    assert mode(data) == 0o700


@pytest.mark.usefixtures("loose_umask")
def test_core_key_and_node_identity_dirs_are_0700(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "core" / "core.key")
    assert mode(key.path) == 0o600
    assert mode(key.path.parent) == 0o700
    node_dir = tmp_path / "node"
    identity.save(node_dir, identity.Identity("n0123456789abcdef", "web-1", "n0.secret"))
    assert mode(node_dir) == 0o700
    assert mode(node_dir / identity.FILE_NAME) == 0o600


def test_private_file_reports_whether_it_created_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert files.private_file(path) is True
    assert path.stat().st_size == 0
    path.write_text("kept")
    os.chmod(path, 0o664)
    assert files.private_file(path) is False
    assert path.read_text() == "kept"
    assert mode(path) == 0o600
