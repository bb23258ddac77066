"""Core's SQLite storage, on real database files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from servermgr.common import proto
from servermgr.common.errors import NameTakenError, StorageError
from servermgr.core import migrations
from servermgr.core.storage import METRIC_FIELDS, NodeRow, Storage, sample_row
from tests.support import make_sample


def add_node(storage: Storage, name: str, now: float = 100.0) -> NodeRow:
    return storage.insert_node(f"n-{name}", name, {"role": "web"}, "hash-" + name, now)


def pragma(path: Path, name: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


# --- opening and migrations ------------------------------------------------


def test_new_file_uses_wal_and_incremental_vacuum(storage: Storage, db_path: Path) -> None:
    assert db_path.exists()
    assert pragma(db_path, "journal_mode") == "wal"
    assert pragma(db_path, "auto_vacuum") == 2  # INCREMENTAL
    assert pragma(db_path, "user_version") == migrations.LATEST_VERSION


def test_reopening_keeps_data_and_schema_version(db_path: Path) -> None:
    st = Storage.open(db_path)
    node = add_node(st, "web-1")
    st.write_batch([(node.seq, make_sample(1.0))], {})
    st.close()

    st = Storage.open(db_path)
    try:
        assert pragma(db_path, "user_version") == migrations.LATEST_VERSION
        assert st.node("web-1") == node
        assert st.count_metrics(node.seq) == 1
    finally:
        st.close()


def test_migrations_apply_once_and_new_ones_are_appended(tmp_path: Path) -> None:
    calls: list[int] = []

    def v2(conn: sqlite3.Connection) -> None:
        calls.append(2)
        conn.execute("CREATE TABLE extra (x INTEGER)")

    latest = migrations.LATEST_VERSION
    nxt = latest + 1
    extended = (*migrations.MIGRATIONS, migrations.Migration(nxt, "extra table", v2))
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        assert migrations.migrate(conn, "m.db") == list(range(1, latest + 1))
        assert migrations.migrate(conn, "m.db", extended) == [nxt]
        assert migrations.migrate(conn, "m.db", extended) == []
        assert calls == [2]
        assert migrations.user_version(conn) == nxt
    finally:
        conn.close()


def test_failed_migration_leaves_previous_version(tmp_path: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x INTEGER)")
        conn.execute("THIS IS NOT SQL")

    latest = migrations.LATEST_VERSION
    extended = (*migrations.MIGRATIONS, migrations.Migration(latest + 1, "broken", broken))
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        with pytest.raises(StorageError, match=rf"m\.db: migration {latest + 1} \(broken\) failed"):
            migrations.migrate(conn, "m.db", extended)
        assert migrations.user_version(conn) == latest
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "half" not in tables
    finally:
        conn.close()


def test_newer_schema_is_refused_untouched(db_path: Path) -> None:
    Storage.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {migrations.LATEST_VERSION + 1}")
    conn.close()
    before = db_path.read_bytes()

    with pytest.raises(StorageError) as info:
        Storage.open(db_path)
    message = str(info.value)
    assert str(db_path) in message
    assert "newer" in message
    assert "\n" not in message
    assert db_path.read_bytes() == before


def test_garbage_file_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    garbage = b"this is a config file, not a database\n" * 100
    db_path.write_bytes(garbage)

    with pytest.raises(StorageError) as info:
        Storage.open(db_path)
    assert str(db_path) in str(info.value)
    assert "\n" not in str(info.value)
    assert db_path.read_bytes() == garbage


def test_foreign_database_is_a_storage_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE nodes (something_else TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="migration 1"):
        Storage.open(db_path)


# --- nodes -----------------------------------------------------------------


def test_insert_and_look_up_by_id_and_name(storage: Storage) -> None:
    node = storage.insert_node("n0123abcd", "web-1", {"env": "prod"}, "hash", 100.0)
    assert node.id == "n0123abcd"
    assert node.labels == {"env": "prod"}
    assert node.last_seen is None
    assert node.info is None

    assert storage.node_by_id("n0123abcd") == node
    assert storage.node("n0123abcd") == node
    assert storage.node("web-1") == node
    assert storage.node("nope") is None
    assert storage.node_by_id("web-1") is None


def test_lookup_prefers_id_over_a_name_equal_to_it(storage: Storage) -> None:
    a = storage.insert_node("n-a", "db-1", {}, "h", 1.0)
    b = storage.insert_node("n-b", "n-a", {}, "h", 1.0)
    assert storage.node("n-a") == a
    assert storage.node("n-b") == b


def test_list_nodes_ordered_by_name(storage: Storage) -> None:
    for name in ["web-2", "db-1", "web-10"]:
        add_node(storage, name)
    assert [n.name for n in storage.list_nodes()] == ["db-1", "web-10", "web-2"]


def test_taken_name_is_refused_with_the_fix(storage: Storage) -> None:
    add_node(storage, "web-1")
    with pytest.raises(NameTakenError) as info:
        storage.insert_node("n-other", "web-1", {}, "h", 2.0)
    assert str(info.value) == (
        "hostname 'web-1' is already registered to another node; "
        "free it with: servermgr ctl node remove web-1"
    )
    assert [n.id for n in storage.list_nodes()] == ["n-web-1"]


def test_public_view_hides_credential_and_internal_key(storage: Storage) -> None:
    node = add_node(storage, "web-1")
    public = node.public()
    assert "cred_hash" not in public
    assert "seq" not in public
    assert public["id"] == "n-web-1"
    assert public["labels"] == {"role": "web"}


def test_hello_updates_labels_info_version_and_last_seen(storage: Storage) -> None:
    node = add_node(storage, "web-1")
    info = {"os": "Linux", "cpu_count": 4}
    fresh = storage.update_node_hello(node.id, {"role": "db"}, info, "1.2.3", 500.0)

    assert fresh == storage.node_by_id(node.id)
    assert fresh is not None
    assert fresh.name == "web-1"
    assert fresh.labels == {"role": "db"}
    assert fresh.info == info
    assert fresh.agent_version == "1.2.3"
    assert fresh.last_seen == 500.0
    assert fresh.first_seen == node.first_seen
    assert fresh.cred_hash == node.cred_hash


def test_hellos_in_one_transaction_each_get_their_row(storage: Storage) -> None:
    from servermgr.core.storage import Hello

    a, b = (add_node(storage, n) for n in ("a", "b"))
    results = storage.update_node_hellos(
        [
            Hello(a.id, {"k": "1"}, None, "2.0", 10.0),
            Hello(b.id, {}, {"os": "Linux"}, "2.0", 10.0),
            Hello("n-gone", {}, None, "2.0", 10.0),  # removed meanwhile
        ]
    )
    assert isinstance(results[0], NodeRow)
    assert results[0].labels == {"k": "1"}
    assert isinstance(results[1], NodeRow)
    assert results[1].name == "b"
    assert results[1].info == {"os": "Linux"}
    assert results[2] is None


def test_delete_node_frees_name_and_removes_history(storage: Storage) -> None:
    web1 = add_node(storage, "web-1")
    web2 = add_node(storage, "web-2")
    storage.write_batch(
        [(web1.seq, make_sample(float(t))) for t in range(5)]
        + [(web2.seq, make_sample(float(t))) for t in range(3)],
        {},
    )
    assert storage.delete_node(web1.id) is True
    assert storage.delete_node(web1.id) is False
    assert storage.node("web-1") is None
    assert storage.count_metrics(web1.seq) == 0
    assert storage.count_metrics(web2.seq) == 3

    again = storage.insert_node("n-new", "web-1", {}, "h", 9.0)
    assert again.seq != web1.seq
    assert storage.query_metrics(again.seq, 0, 1e12) == []


# --- metrics ---------------------------------------------------------------


def test_write_batch_stores_samples_and_last_seen(storage: Storage) -> None:
    web1 = add_node(storage, "web-1")
    web2 = add_node(storage, "web-2")
    storage.write_batch(
        [
            (web1.seq, make_sample(10.0)),
            (web1.seq, make_sample(15.0, cpu_percent=99.0)),
            (web2.seq, make_sample(10.0)),
        ],
        {web1.seq: 16.0, web2.seq: 11.0},
    )
    rows = storage.query_metrics(web1.seq, 0, 100)
    assert [r["ts"] for r in rows] == [10.0, 15.0]
    assert rows[1]["cpu_percent"] == 99.0
    assert rows[0]["disk_percent"] == 40.0
    assert rows[0]["procs"] == 123
    assert set(rows[0]) == {"ts", *METRIC_FIELDS}
    assert storage.count_metrics(web2.seq) == 1

    assert [n.last_seen for n in storage.list_nodes()] == [16.0, 11.0]


def test_resent_samples_are_stored_once(storage: Storage) -> None:
    node = add_node(storage, "web-1")
    batch = [(node.seq, make_sample(float(t))) for t in range(10)]
    storage.write_batch(batch, {node.seq: 10.0})
    storage.write_batch(batch[5:] + [(node.seq, make_sample(10.0))], {node.seq: 11.0})
    assert storage.count_metrics(node.seq) == 11


def test_samples_of_a_removed_node_are_dropped_not_the_batch(storage: Storage) -> None:
    gone = add_node(storage, "gone")
    kept = add_node(storage, "kept")
    storage.delete_node(gone.id)
    storage.write_batch(
        [
            (gone.seq, make_sample(1.0)),
            (kept.seq, make_sample(1.0)),
            (gone.seq, make_sample(2.0)),
            (kept.seq, make_sample(2.0)),
        ],
        {gone.seq: 2.0, kept.seq: 2.0},
    )
    assert storage.count_metrics(kept.seq) == 2
    assert storage.count_metrics(gone.seq) == 0
    assert storage.node_by_id(gone.id) is None


def test_query_range_is_inclusive_and_oldest_first(storage: Storage) -> None:
    node = add_node(storage, "web-1")
    other = add_node(storage, "web-2")
    # Written out of order, across two batches.
    storage.write_batch([(node.seq, make_sample(float(t))) for t in (50, 10, 30)], {})
    storage.write_batch(
        [(node.seq, make_sample(float(t))) for t in (20, 40)] + [(other.seq, make_sample(25.0))], {}
    )

    assert [r["ts"] for r in storage.query_metrics(node.seq, 20, 40)] == [20.0, 30.0, 40.0]
    assert [r["ts"] for r in storage.query_metrics(node.seq, 0, 1e9)] == [
        10.0,
        20.0,
        30.0,
        40.0,
        50.0,
    ]
    assert storage.query_metrics(node.seq, 41, 49) == []
    assert storage.query_metrics(node.seq, 40, 20) == []


def test_query_limit_keeps_the_newest_in_order(storage: Storage) -> None:
    node = add_node(storage, "web-1")
    storage.write_batch([(node.seq, make_sample(float(t))) for t in range(100)], {})
    rows = storage.query_metrics(node.seq, 10, 89, limit=5)
    assert [r["ts"] for r in rows] == [85.0, 86.0, 87.0, 88.0, 89.0]
    with pytest.raises(ValueError, match="limit"):
        storage.query_metrics(node.seq, 0, 100, limit=0)


def test_unknown_values_are_stored_as_null(storage: Storage) -> None:
    node = add_node(storage, "web-1")
    sample = make_sample(
        1.0,
        cpu_percent=None,
        load1=None,
        swap_percent=None,
        disks=[],
        net_rx_bps=None,
        procs=None,
    )
    storage.write_batch([(node.seq, sample)], {})
    (row,) = storage.query_metrics(node.seq, 0, 10)
    for field in ("cpu_percent", "load1", "swap_percent", "disk_percent", "net_rx_bps", "procs"):
        assert row[field] is None, field
    assert row["load5"] == 0.4


def test_reader_thread_sees_only_whole_committed_batches(storage: Storage) -> None:
    node = add_node(storage, "web-1")
    batches, per_batch = 40, 50
    seen_counts: list[int] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not done.is_set():
                seen_counts.append(len(storage.query_metrics(node.seq, 0, 1e12, limit=10**6)))
            seen_counts.append(storage.count_metrics(node.seq))
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    def write() -> None:
        try:
            for b in range(batches):
                base = b * per_batch
                storage.write_batch(
                    [(node.seq, make_sample(float(base + i))) for i in range(per_batch)],
                    {node.seq: float(base + per_batch)},
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    readers = [threading.Thread(target=read) for _ in range(3)]
    writer = threading.Thread(target=write)
    for t in [*readers, writer]:
        t.start()
    for t in [writer, *readers]:
        t.join(timeout=30)
        assert not t.is_alive()

    assert errors == []
    assert all(c % per_batch == 0 for c in seen_counts)
    assert seen_counts[-1] == batches * per_batch


def test_reads_do_not_wait_for_an_open_write(storage: Storage, db_path: Path) -> None:
    node = add_node(storage, "web-1")
    storage.write_batch([(node.seq, make_sample(1.0))], {})
    # Another writer holds the write lock with uncommitted rows.
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO metrics (node, ts) VALUES (?, 2.0)", (node.seq,))
    try:
        result: list[int] = []
        reader = threading.Thread(target=lambda: result.append(storage.count_metrics(node.seq)))
        reader.start()
        reader.join(timeout=2)  # well under the busy timeout
        assert not reader.is_alive()
        assert result == [1]
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_closed_storage_refuses_calls(db_path: Path) -> None:
    st = Storage.open(db_path)
    st.close()
    with pytest.raises(StorageError, match="closed"):
        st.list_nodes()
    with pytest.raises(StorageError, match="closed"):
        add_node(st, "web-1")


# --- sample_row ------------------------------------------------------------


def test_sample_row_maps_fields_in_column_order() -> None:
    sample = make_sample(
        7.0,
        disks=[
            proto.DiskUsage(mount="/", fstype="ext4", total=100, used=30, percent=30.0),
            proto.DiskUsage(mount="/var", fstype="xfs", total=100, used=91, percent=91.5),
            proto.DiskUsage(mount="/home", fstype="ext4", total=100, used=60, percent=60.0),
        ],
    )
    row = dict(zip(METRIC_FIELDS, sample_row(sample), strict=True))
    assert row["cpu_percent"] == 12.5
    assert row["disk_percent"] == 91.5
    assert row["mem_used"] == 2_000_000_000
    assert row["mem_total"] == 8_000_000_000
    assert row["net_tx_bps"] == 400.0
    assert row["procs"] == 123
    for name in METRIC_FIELDS:
        if name not in {"cpu_percent", "disk_percent"}:
            assert row[name] == getattr(sample, name), name


def test_sample_row_without_disks_or_values_is_all_null() -> None:
    empty: dict[str, Any] = {
        name: None
        for name in (
            "cpu_percent",
            "load1",
            "load5",
            "load15",
            "mem_total",
            "mem_used",
            "mem_available",
            "mem_percent",
            "swap_total",
            "swap_used",
            "swap_percent",
            "disk_read_bps",
            "disk_write_bps",
            "net_rx_bps",
            "net_tx_bps",
            "uptime",
            "procs",
        )
    }
    row = sample_row(make_sample(1.0, disks=[], **empty))
    assert row == (None,) * len(METRIC_FIELDS)


def test_one_of_two_processes_holds_a_lease_until_it_lapses(db_path: Path) -> None:
    # Two Core processes on one file: two connections, as two processes have.
    first = Storage.open(db_path)
    second = Storage.open(db_path)
    try:
        assert first.hold_lease("history", "core-a", 100.0, 30.0)
        assert not second.hold_lease("history", "core-b", 110.0, 30.0)
        assert first.hold_lease("history", "core-a", 120.0, 30.0)  # renewed: until 150
        assert not second.hold_lease("history", "core-b", 149.0, 30.0)
        assert second.hold_lease("history", "core-b", 151.0, 30.0)  # lapsed: taken over
        assert not first.hold_lease("history", "core-a", 152.0, 30.0)
    finally:
        first.close()
        second.close()


def test_a_write_waits_for_another_process_lock_and_gives_up_after_the_timeout(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Cores share the file: one waits while the other writes (it tries again
    every few ms, not in SQLite's steps of up to 100 ms), and says so past the limit."""
    from servermgr.core import storage as storage_module

    first = Storage.open(db_path)
    second = Storage.open(db_path)
    try:
        holding = threading.Event()
        release = threading.Event()

        def hold(name: str) -> None:
            with first.transaction() as conn:
                conn.execute("INSERT INTO leases (name, holder, until) VALUES (?, 'a', 0)", (name,))
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold, args=("x",))
        holder.start()
        assert holding.wait(10)
        threading.Timer(0.3, release.set).start()
        assert second.hold_lease("history", "b", 100.0, 30.0)  # waited, then got the lock
        holder.join()
        with second.reader() as conn:
            assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 2

        monkeypatch.setattr(storage_module, "BUSY_TIMEOUT_MS", 200)
        release.clear()
        holding.clear()
        holder = threading.Thread(target=hold, args=("y",))
        holder.start()
        assert holding.wait(10)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                second.hold_lease("history", "b", 200.0, 30.0)
        finally:
            release.set()
            holder.join()
    finally:
        first.close()
        second.close()
