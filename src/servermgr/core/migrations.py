"""Schema migrations of Core's SQLite database.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS`` is an
ordered list of ``Migration(version, description, apply)``; to change the
schema, append one with the next version number and never edit one that has
shipped. Each migration runs in its own ``BEGIN IMMEDIATE`` transaction
together with the version bump, so a failure leaves the file at the last good
version, and applying twice is a no-op.

Migrations are raw SQL on purpose: a migration is frozen once released, so it
must not depend on how a library happens to render DDL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import NamedTuple

from servermgr.common.errors import StorageError


class Migration(NamedTuple):
    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


def _v1_nodes_and_metrics(conn: sqlite3.Connection) -> None:
    # AUTOINCREMENT: a removed node's seq is never reused, so samples of a
    # removed node still queued in the writer cannot land in a new node's history.
    conn.execute(
        """
        CREATE TABLE nodes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT UNIQUE NOT NULL,
            name TEXT UNIQUE NOT NULL,
            labels TEXT NOT NULL,
            cred_hash TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL,
            info TEXT,
            agent_version TEXT
        )
        """
    )
    # Clustered by (node, ts): one node's time range is a few adjacent pages.
    conn.execute(
        """
        CREATE TABLE metrics (
            node INTEGER NOT NULL REFERENCES nodes(seq) ON DELETE CASCADE,
            ts REAL NOT NULL,
            cpu REAL,
            load1 REAL,
            load5 REAL,
            load15 REAL,
            mem_used INTEGER,
            mem_total INTEGER,
            mem_percent REAL,
            swap_percent REAL,
            disk_percent REAL,
            disk_read_bps REAL,
            disk_write_bps REAL,
            net_rx_bps REAL,
            net_tx_bps REAL,
            uptime REAL,
            procs INTEGER,
            PRIMARY KEY (node, ts)
        ) WITHOUT ROWID
        """
    )


def _v2_jobs_and_audit(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            created REAL NOT NULL,
            command TEXT,
            service TEXT,
            target TEXT NOT NULL,
            timeout REAL NOT NULL,
            output_cap INTEGER NOT NULL,
            env TEXT NOT NULL,
            cwd TEXT,
            deadline REAL NOT NULL,
            principal TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX jobs_created ON jobs (created)")
    conn.execute(
        """
        CREATE TABLE job_nodes (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            node_id TEXT NOT NULL,
            node_name TEXT NOT NULL,
            state TEXT NOT NULL,
            exit_code INTEGER,
            signal INTEGER,
            error TEXT,
            sent_at REAL,
            finished_at REAL,
            duration REAL,
            stdout BLOB NOT NULL DEFAULT x'',
            stderr BLOB NOT NULL DEFAULT x'',
            stdout_truncated INTEGER NOT NULL DEFAULT 0,
            stderr_truncated INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (job_id, node_id)
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX job_nodes_by_node ON job_nodes (node_id, state)")
    conn.execute(
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            principal TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL,
            job_id TEXT,
            outcome TEXT
        )
        """
    )
    conn.execute("CREATE INDEX audit_ts ON audit (ts)")


# Each metric's average under its own name, then its minimum and maximum, as
# scaled integers (see core/rollup.py); n is the number of raw samples.
_ROLLUP_COLUMNS = """
    node INTEGER NOT NULL REFERENCES nodes(seq) ON DELETE CASCADE,
    ts INTEGER NOT NULL,
    n INTEGER NOT NULL,
    cpu INTEGER, cpu_min INTEGER, cpu_max INTEGER,
    load1 INTEGER, load1_min INTEGER, load1_max INTEGER,
    load5 INTEGER, load5_min INTEGER, load5_max INTEGER,
    load15 INTEGER, load15_min INTEGER, load15_max INTEGER,
    mem_used INTEGER, mem_used_min INTEGER, mem_used_max INTEGER,
    mem_total INTEGER, mem_total_min INTEGER, mem_total_max INTEGER,
    mem_percent INTEGER, mem_percent_min INTEGER, mem_percent_max INTEGER,
    swap_percent INTEGER, swap_percent_min INTEGER, swap_percent_max INTEGER,
    disk_percent INTEGER, disk_percent_min INTEGER, disk_percent_max INTEGER,
    disk_read_bps INTEGER, disk_read_bps_min INTEGER, disk_read_bps_max INTEGER,
    disk_write_bps INTEGER, disk_write_bps_min INTEGER, disk_write_bps_max INTEGER,
    net_rx_bps INTEGER, net_rx_bps_min INTEGER, net_rx_bps_max INTEGER,
    net_tx_bps INTEGER, net_tx_bps_min INTEGER, net_tx_bps_max INTEGER,
    uptime INTEGER, uptime_min INTEGER, uptime_max INTEGER,
    procs INTEGER, procs_min INTEGER, procs_max INTEGER,
    PRIMARY KEY (node, ts)
"""


def _v3_rollups(conn: sqlite3.Connection) -> None:
    # Clustered by (node, bucket start) like the raw table.
    conn.execute(f"CREATE TABLE metrics_1m ({_ROLLUP_COLUMNS}) WITHOUT ROWID")
    conn.execute(f"CREATE TABLE metrics_1h ({_ROLLUP_COLUMNS}) WITHOUT ROWID")
    # Buckets to (re)compute: level 60 from raw samples, level 3600 from
    # minutes. mark grows on every re-mark, so a pass clears only what it saw.
    conn.execute(
        """
        CREATE TABLE rollup_dirty (
            level INTEGER NOT NULL,
            node INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            mark INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (level, node, bucket)
        ) WITHOUT ROWID
        """
    )
    # History stored before this version gets its rollups too.
    conn.execute(
        "INSERT INTO rollup_dirty (level, node, bucket) "
        "SELECT DISTINCT 60, node, CAST(ts / 60 AS INTEGER) * 60 FROM metrics"
    )


def _v4_tokens(conn: sqlite3.Connection) -> None:
    # Named API tokens (core/tokens.py): only a hash of the secret is kept.
    conn.execute(
        """
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            name TEXT UNIQUE NOT NULL,
            role TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL,
            last_used REAL
        )
        """
    )
    # Credentials of removed nodes: their agents are told, not registered again.
    conn.execute(
        """
        CREATE TABLE revoked_nodes (
            node_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            cred_hash TEXT NOT NULL,
            removed REAL NOT NULL
        )
        """
    )


def _v5_idempotency_keys(conn: sqlite3.Connection) -> None:
    # A client's key for a submission, and a digest of what it asked: the same
    # key again is the same job (a retry), never a second run.
    conn.execute("ALTER TABLE jobs ADD COLUMN idempotency_key TEXT")
    conn.execute("ALTER TABLE jobs ADD COLUMN request_digest TEXT")
    conn.execute(
        "CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) "
        "WHERE idempotency_key IS NOT NULL"
    )


def _v6_schedules(conn: sqlite3.Connection) -> None:
    # A job Core submits by itself (core/schedules.py). next_run is the due
    # time of the next run; a Core claims a run by moving it on with an UPDATE
    # conditional on the value it read, so one Core wins each due time.
    conn.execute(
        """
        CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            every REAL,
            cron TEXT,
            tz TEXT NOT NULL,
            anchor REAL NOT NULL,
            job TEXT NOT NULL,
            target TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            principal TEXT NOT NULL,
            next_run REAL NOT NULL,
            last_run REAL,
            last_job TEXT,
            runs INTEGER NOT NULL DEFAULT 0,
            missed INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX schedules_due ON schedules (next_run) WHERE paused = 0")


def _v7_alerts(conn: sqlite3.Connection) -> None:
    # Rules made through the API ([[alert]] rules live in the config file).
    conn.execute(
        """
        CREATE TABLE alert_rules (
            name TEXT PRIMARY KEY,
            doc TEXT NOT NULL,
            created REAL NOT NULL,
            created_by TEXT NOT NULL
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE alert_silences (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            scope TEXT NOT NULL,
            ref TEXT NOT NULL,
            label TEXT NOT NULL,
            until REAL NOT NULL,
            created REAL NOT NULL,
            created_by TEXT NOT NULL
        )
        """
    )
    # Alerts that are pending, firing, or resolved with a notice still owed.
    conn.execute(
        """
        CREATE TABLE alert_active (
            rule TEXT NOT NULL,
            node_id TEXT NOT NULL,
            subject TEXT NOT NULL,
            state TEXT NOT NULL,
            since REAL NOT NULL,
            started REAL NOT NULL,
            value REAL,
            notified TEXT,
            notified_at REAL,
            PRIMARY KEY (rule, node_id, subject)
        ) WITHOUT ROWID
        """
    )
    # Every transition, and every delivery attempt with its outcome.
    conn.execute(
        """
        CREATE TABLE alert_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            rule TEXT NOT NULL,
            node_id TEXT NOT NULL,
            node TEXT NOT NULL,
            subject TEXT NOT NULL,
            old TEXT,
            new TEXT NOT NULL,
            value REAL
        )
        """
    )
    conn.execute("CREATE INDEX alert_events_ts ON alert_events (ts)")
    conn.execute(
        """
        CREATE TABLE alert_deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            receiver TEXT NOT NULL,
            kind TEXT NOT NULL,
            rule TEXT NOT NULL,
            node_id TEXT NOT NULL,
            node TEXT NOT NULL,
            subject TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX alert_deliveries_ts ON alert_deliveries (ts)")


def _v8_one_name_per_field(conn: sqlite3.Connection) -> None:
    # The CPU column takes the name of the sample's field (cpu_percent), so
    # no layer renames it; and a partial index finds the open job entries
    # (what a restart reloads, what a live view lists) without a scan.
    conn.execute("ALTER TABLE metrics RENAME COLUMN cpu TO cpu_percent")
    for table in ("metrics_1m", "metrics_1h"):
        for suffix in ("", "_min", "_max"):
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN cpu{suffix} TO cpu_percent{suffix}")
    # Work one Core process of several sharing this file does for all (rollups,
    # retention): whoever holds the lease, renewed each pass, taken over once it lapses.
    conn.execute(
        "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL)"
    )
    # A counter of changes to the node directory (what a peer Core reloads).
    conn.execute("CREATE TABLE versions (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute("INSERT INTO versions VALUES ('nodes', 0)")
    bump = "BEGIN UPDATE versions SET n = n + 1 WHERE name = 'nodes'; END"
    conn.execute(f"CREATE TRIGGER nodes_added AFTER INSERT ON nodes {bump}")
    conn.execute(f"CREATE TRIGGER nodes_deleted AFTER DELETE ON nodes {bump}")
    conn.execute(
        "CREATE TRIGGER nodes_changed AFTER UPDATE OF name, labels, cred_hash ON nodes "
        "WHEN OLD.name IS NOT NEW.name OR OLD.labels IS NOT NEW.labels "
        f"OR OLD.cred_hash IS NOT NEW.cred_hash {bump}"
    )
    conn.execute(f"CREATE TRIGGER revoked_added AFTER INSERT ON revoked_nodes {bump}")
    conn.execute(f"CREATE TRIGGER revoked_deleted AFTER DELETE ON revoked_nodes {bump}")
    conn.execute(
        "CREATE INDEX job_nodes_open ON job_nodes (job_id) "
        "WHERE state IN ('queued', 'running', 'sent')"  # as jobstore's _OPEN, to be used
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "nodes and raw metrics", _v1_nodes_and_metrics),
    Migration(2, "jobs, per-node results and the audit log", _v2_jobs_and_audit),
    Migration(3, "1-minute and 1-hour rollups of metrics", _v3_rollups),
    Migration(4, "API tokens and revoked node credentials", _v4_tokens),
    Migration(5, "idempotency keys of job submissions", _v5_idempotency_keys),
    Migration(6, "schedules", _v6_schedules),
    Migration(7, "alert rules, silences, states, transitions and deliveries", _v7_alerts),
    Migration(
        8,
        "cpu column named cpu_percent; index of open job entries; leases; versions",
        _v8_one_name_per_field,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def _check_registry(migrations: tuple[Migration, ...]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise RuntimeError(f"migration versions must be 1, 2, 3, ... in order, not {versions}")


_check_registry(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(
    conn: sqlite3.Connection, where: str, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[int]:
    """Bring the database on ``conn`` (autocommit mode) up to the latest version.

    Returns the versions applied. ``where`` names the file in error messages.
    A database from a newer servermgr is refused, untouched.
    """
    latest = migrations[-1].version if migrations else 0
    refuse_newer(user_version(conn), latest, where)
    applied: list[int] = []
    for migration in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read under the write lock: another process may have migrated meanwhile.
            current = user_version(conn)
            refuse_newer(current, latest, where)
            if current >= migration.version:
                conn.execute("ROLLBACK")
                continue
            migration.apply(conn)
            conn.execute(f"PRAGMA user_version = {migration.version:d}")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(
                    f"database {where}: migration {migration.version} "
                    f"({migration.description}) failed: {exc}"
                ) from exc
            raise
        applied.append(migration.version)
    return applied


def refuse_newer(current: int, latest: int, where: str) -> None:
    """StorageError if the file's schema ``current`` is newer than ``latest``."""
    if current > latest:
        raise StorageError(
            f"database {where} has schema version {current}, newer than this "
            f"servermgr supports ({latest}); upgrade servermgr to open it"
        )
