"""End to end: Core's database file through faults, with the real CLI as subprocesses.

A damaged file refuses start, a deleted one stops Core and is saved, and
``core backup`` while Core runs gives a file that Core starts from again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.e2e.fleet import Fleet, cap, one_line_error, start_core
from tests.support import free_port, make_database

pytestmark = pytest.mark.e2e


def damage(path: Path, how: str) -> None:
    if how == "empty":
        os.truncate(path, 0)
    elif how == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    else:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.seek(size // 3)
            f.write(b"\xab" * (size // 3))


@cap(30)
@pytest.mark.parametrize(
    ("how", "says"),
    [("empty", "is empty (0 bytes)"), ("truncated", "is truncated"), ("damaged", "is damaged")],
)
def test_core_refuses_to_start_on_a_bad_database(fleet: Fleet, how: str, says: str) -> None:
    cfg = fleet.core_config(free_port())
    assert fleet.run("key", "show", "--config", str(cfg)).returncode == 0
    db = fleet.tmp / "core-data" / "server_manager.db"
    make_database(db)
    damage(db, how)
    before = db.read_bytes()
    res = fleet.run("core", "serve", "--config", str(cfg))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    # One line says why (Core's INFO log lines, e.g. a garbage collection at exit, may come too).
    (line,) = [ln for ln in res.stderr.splitlines() if " INFO " not in ln]
    assert line.startswith("servermgr: ")
    assert says in line
    assert "restore a backup" in line
    assert db.read_bytes() == before  # left as it was, for whoever investigates


def rows(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        n: int = conn.execute(sql).fetchone()[0]
        return n
    finally:
        conn.close()


@cap(60)
def test_backup_while_running_then_deleted_database_then_restore(fleet: Fleet) -> None:
    port = free_port()
    core, key = start_core(fleet, port)
    cfg = str(fleet.tmp / "core.toml")
    node = fleet.spawn("node", "node", "run", "--config", str(fleet.node_config("n1", port, key)))
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}
    fleet.poll(
        "stored samples",
        lambda: len(fleet.ctl_items("metrics", "n1", "--since", "5m", env=env) or []) >= 3,
        15,
    )
    (node_id,) = [n["id"] for n in fleet.ctl_items("nodes", env=env)]

    backup = fleet.tmp / "backups" / "core.db"
    backup.parent.mkdir()
    res = fleet.run("core", "backup", "--config", cfg, str(backup))  # Core keeps running
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"backed up {fleet.tmp / 'core-data' / 'server_manager.db'}")
    assert "1 nodes" in res.stdout
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert rows(backup, "SELECT count(*) FROM nodes") == 1
    assert rows(backup, "SELECT count(*) FROM metrics") >= 3
    assert "exists" in one_line_error(fleet.run("core", "backup", "--config", cfg, str(backup)))

    data = fleet.tmp / "core-data"
    for f in data.glob("server_manager.db*"):
        f.unlink()  # rm server_manager.db*
    code = core.popen.wait(timeout=min(fleet.left(), 15))
    assert code == 1, core.text()
    log = core.text()
    assert "was deleted while Core ran" in log
    assert "its last state is saved in" in log
    assert "Traceback" not in log
    (rescued,) = data.glob("server_manager.db.rescued-*")

    # Restore as docs/howto.md says: the backup into place (the rescued copy away), start.
    rescued.rename(fleet.tmp / "rescued.db")
    (data / "server_manager.db").write_bytes(backup.read_bytes())
    os.chmod(data / "server_manager.db", 0o600)
    core = fleet.spawn("core-again", "core", "serve", "--config", cfg)
    fleet.poll(
        "n1 online again, same id",
        lambda: (
            [n["id"] for n in fleet.ctl_items("nodes", env=env) or [] if n["status"] == "online"]
            == [node_id]
        ),
        20,
    )
    assert "registering again" not in node.text()
    assert fleet.stop(core, signal.SIGTERM) == 0, core.text()
    assert fleet.stop(node, signal.SIGTERM) == 0, node.text()
