"""Core's SQLite storage: nodes and metrics history (synchronous).

One writer connection, used by one thread at a time (``writer.Database``
serializes calls with a ``CapacityLimiter(1)``); every write is one explicit
``BEGIN IMMEDIATE`` transaction. Reads use a small pool of separate
``query_only`` connections, so any number of worker threads can read while
the writer writes (WAL: readers see the last committed batch, never half of
one). A pool rather than one connection per thread, because trio's worker
threads come and go and per-thread connections would pile up.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servermgr.common import files, proto
from servermgr.common.errors import NameTakenError, StorageError
from servermgr.core import dbfile, migrations, rollup

BUSY_TIMEOUT_MS = 5000
BEGIN_RETRY = 0.002  # s between tries for a write lock another process holds
MAX_IDLE_READERS = 8

# Named as in proto.Sample: the columns (raw and rollups) carry these names.
METRIC_FIELDS: tuple[str, ...] = (
    "cpu_percent",
    "load1",
    "load5",
    "load15",
    "mem_used",
    "mem_total",
    "mem_percent",
    "swap_percent",
    "disk_percent",
    "disk_read_bps",
    "disk_write_bps",
    "net_rx_bps",
    "net_tx_bps",
    "uptime",
    "procs",
)
_QUERY_COLUMNS = ("ts", *METRIC_FIELDS)

# The EXISTS guard drops samples of a node removed while they were queued;
# without it the foreign key would fail the whole batch.
_INSERT_METRICS = (
    f"INSERT OR IGNORE INTO metrics (node, ts, {', '.join(METRIC_FIELDS)}) "
    f"SELECT ?1, ?2, {', '.join(f'?{i}' for i in range(3, len(METRIC_FIELDS) + 3))} "
    "WHERE EXISTS (SELECT 1 FROM nodes WHERE seq = ?1)"
)
_UPDATE_SEEN = "UPDATE nodes SET last_seen = max(coalesce(last_seen, ?1), ?1) WHERE seq = ?2"
# The minute of every stored sample is (re)computed by core/history.py.
_MARK_MINUTE = (
    "INSERT INTO rollup_dirty (level, node, bucket) VALUES (60, ?, ?) "
    "ON CONFLICT (level, node, bucket) DO UPDATE SET mark = mark + 1"
)
_SELECT_METRICS = (
    f"SELECT {', '.join(_QUERY_COLUMNS)} FROM metrics "
    "WHERE node = ? AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT ?"
)
_NODE_COLUMNS = "seq, id, name, labels, cred_hash, first_seen, last_seen, info, agent_version"


def sample_row(sample: proto.Sample) -> tuple[float | int | None, ...]:
    """The ``METRIC_FIELDS`` columns of ``sample``; None stays None (NULL)."""
    return (
        sample.cpu_percent,
        sample.load1,
        sample.load5,
        sample.load15,
        sample.mem_used,
        sample.mem_total,
        sample.mem_percent,
        sample.swap_percent,
        sample.disk_percent,
        sample.disk_read_bps,
        sample.disk_write_bps,
        sample.net_rx_bps,
        sample.net_tx_bps,
        sample.uptime,
        sample.procs,
    )


@dataclass(frozen=True)
class NodeRow:
    """A registered node as stored. ``seq`` is the compact key of its metrics."""

    seq: int
    id: str
    name: str
    labels: dict[str, str]
    cred_hash: str
    first_seen: float
    last_seen: float | None
    info: dict[str, Any] | None
    agent_version: str | None

    def public(self) -> dict[str, Any]:
        """JSON-able view for the API: no credential hash, no internal key."""
        return {
            "id": self.id,
            "name": self.name,
            "labels": dict(self.labels),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "info": dict(self.info) if self.info is not None else None,
            "agent_version": self.agent_version,
        }

    @classmethod
    def from_db(cls, row: tuple[Any, ...]) -> NodeRow:
        seq, id_, name, labels, cred_hash, first_seen, last_seen, info, agent_version = row
        return cls(
            seq=seq,
            id=id_,
            name=name,
            labels=json.loads(labels),
            cred_hash=cred_hash,
            first_seen=first_seen,
            last_seen=last_seen,
            info=json.loads(info) if info is not None else None,
            agent_version=agent_version,
        )


@dataclass(frozen=True)
class Hello:
    """What a node's hello changes in its row (never its name: Core owns names)."""

    node_id: str
    labels: dict[str, str]
    info: dict[str, Any] | None
    agent_version: str
    now: float


def _node_by_id(conn: sqlite3.Connection, node_id: str) -> NodeRow | None:
    row = conn.execute(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
    return NodeRow.from_db(row) if row is not None else None


def _name_taken(name: str) -> NameTakenError:
    return NameTakenError(
        f"hostname {name!r} is already registered to another node; "
        f"free it with: servermgr ctl node remove {name}"
    )


class Storage:
    """The database file. Build with ``Storage.open``; ``close()`` when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection, identity: dbfile.FileId) -> None:
        self.path = path
        self.identity = identity  # the file opened: a path that stops naming it is an error
        self._conn = conn
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._gone: str | None = None  # why the file may no longer be written

    # --- lifecycle ------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Storage:
        """Open (creating if needed) and migrate the database at ``path``.

        StorageError if it is not a SQLite database, is empty (0 bytes),
        truncated or corrupt, is from a newer servermgr, or cannot be opened
        or migrated. Only a path with no file at all makes a new database.
        """
        path = Path(path)
        try:
            files.private_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"database {path}: cannot create its directory: {exc}") from exc
        existed = dbfile.check_header(path)
        if not existed:
            dbfile.check_no_rescued(path)
        try:
            # 0600 before SQLite writes a byte (its WAL and SHM files copy this mode).
            files.private_file(path)
            files.private_sqlite(path)
        except OSError as exc:
            raise StorageError(f"database {path}: cannot open: {exc}") from exc
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"database {path}: cannot open: {exc}") from exc
        try:
            identity = dbfile.file_id(path)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            if existed:  # before any pragma below writes to the file
                dbfile.check_pages(conn, path)
            _setup_writer(conn, path)
            migrations.migrate(conn, str(path))
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, identity)

    def check_file(self) -> None:
        """StorageError if the path no longer names the file Core opened (deleted, replaced).

        A deleted database is copied (from the file still open) to a
        ``.rescued-`` file beside it first. Call it as a write (one at a time).
        """
        try:
            dbfile.check_same_file(self.path, self.identity, self._rescue)
        except StorageError as exc:
            # Nothing is written (nor acked) after this: it would miss the saved copy.
            self._gone = str(exc)
            raise

    def _rescue(self, dest: Path) -> None:
        if self._closed:
            raise StorageError(f"database {self.path} is closed")
        dbfile.copy_into(self._conn, dest)

    def close(self) -> None:
        """Close every connection; idempotent. Readers still running finish first."""
        with self._lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._conn.close()

    # --- nodes ----------------------------------------------------------

    def insert_node(
        self, node_id: str, name: str, labels: dict[str, str], cred_hash: str, now: float
    ) -> NodeRow:
        """Register a node, committed at once. NameTakenError if ``name`` is held."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone():
                raise _name_taken(name)
            cur = conn.execute(
                "INSERT INTO nodes (id, name, labels, cred_hash, first_seen) "
                "VALUES (?, ?, ?, ?, ?)",
                (node_id, name, json.dumps(labels), cred_hash, now),
            )
            seq = cur.lastrowid
        assert seq is not None
        return NodeRow(seq, node_id, name, dict(labels), cred_hash, now, None, None, None)

    def update_node_hello(
        self,
        node_id: str,
        labels: dict[str, str],
        info: dict[str, Any] | None,
        agent_version: str,
        now: float,
    ) -> NodeRow | None:
        """Record what a node said in its hello; its fresh row, or None if it is gone."""
        (result,) = self.update_node_hellos([Hello(node_id, labels, info, agent_version, now)])
        return result

    def update_node_hellos(self, items: Sequence[Hello]) -> list[NodeRow | None]:
        """What nodes said in their hellos, many in one transaction.

        Each gets its fresh row, or None if the node is gone. The name stays
        the one the node registered under: a hello cannot rename a node.
        """
        out: list[NodeRow | None] = []
        with self._write() as conn:
            for h in items:
                conn.execute(
                    "UPDATE nodes SET labels = ?, info = ?, agent_version = ?, "
                    "last_seen = ? WHERE id = ?",
                    (
                        json.dumps(h.labels),
                        json.dumps(h.info) if h.info is not None else None,
                        h.agent_version,
                        h.now,
                        h.node_id,
                    ),
                )
                out.append(_node_by_id(conn, h.node_id))
        return out

    def rename_node(self, node_id: str, name: str) -> NodeRow | None:
        """An operator's rename, committed at once; NameTakenError if ``name`` is held.

        None if the node is gone.
        """
        with self._write() as conn:
            holder = conn.execute("SELECT id FROM nodes WHERE name = ?", (name,)).fetchone()
            if holder is not None and holder[0] != node_id:
                raise _name_taken(name)
            conn.execute("UPDATE nodes SET name = ? WHERE id = ?", (name, node_id))
            return _node_by_id(conn, node_id)

    def delete_node(self, node_id: str) -> bool:
        """Remove a node and all its metrics in one transaction; False if unknown."""
        with self._write() as conn:
            row = conn.execute("SELECT seq FROM nodes WHERE id = ?", (node_id,)).fetchone()
            if row is None:
                return False
            # Explicit, though the foreign key cascades too: no reliance on the pragma.
            conn.execute("DELETE FROM metrics WHERE node = ?", (row[0],))
            conn.execute("DELETE FROM metrics_1m WHERE node = ?", (row[0],))
            conn.execute("DELETE FROM metrics_1h WHERE node = ?", (row[0],))
            conn.execute("DELETE FROM rollup_dirty WHERE node = ?", (row[0],))
            conn.execute("DELETE FROM nodes WHERE seq = ?", (row[0],))
        return True

    def node_by_id(self, node_id: str) -> NodeRow | None:
        with self._read() as conn:
            return _node_by_id(conn, node_id)

    def node(self, ref: str) -> NodeRow | None:
        """A node by id, else by name."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?1 OR name = ?1 "
                "ORDER BY id = ?1 DESC LIMIT 1",
                (ref,),
            ).fetchone()
        return NodeRow.from_db(row) if row is not None else None

    def list_nodes(self) -> list[NodeRow]:
        """Every node, ordered by name."""
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY name").fetchall()
        return [NodeRow.from_db(r) for r in rows]

    # --- metrics --------------------------------------------------------

    def write_batch(
        self, samples: Sequence[tuple[int, proto.Sample]], seen: Mapping[int, float]
    ) -> None:
        """Store samples ``(node seq, sample)`` and last-seen times in one transaction.

        A re-sent sample (same node and ts) is stored once; samples of a node
        removed meanwhile are dropped. The minutes they fall in are marked for
        the rollups (late samples included).
        """
        if not samples and not seen:
            return
        rows = [(seq, s.ts, *sample_row(s)) for seq, s in samples]
        with self._write() as conn:
            conn.executemany(_INSERT_METRICS, rows)
            conn.executemany(_UPDATE_SEEN, [(ts, seq) for seq, ts in seen.items()])
            minutes = {(seq, rollup.bucket(s.ts, rollup.MINUTE)) for seq, s in samples}
            conn.executemany(_MARK_MINUTE, sorted(minutes))

    def query_metrics(
        self, node_seq: int, since: float, until: float, limit: int = 10000
    ) -> list[dict[str, float | int | None]]:
        """Samples with ``since <= ts <= until``, oldest first; the newest ``limit`` if more."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        with self._read() as conn:
            rows = conn.execute(_SELECT_METRICS, (node_seq, since, until, limit)).fetchall()
        rows.reverse()
        return [dict(zip(_QUERY_COLUMNS, r, strict=True)) for r in rows]

    def count_metrics(self, node_seq: int) -> int:
        """How many raw samples are stored for a node."""
        with self._read() as conn:
            count: int = conn.execute(
                "SELECT count(*) FROM metrics WHERE node = ?", (node_seq,)
            ).fetchone()[0]
        return count

    # --- file upkeep (core/history.py) ----------------------------------

    def file_size(self) -> tuple[int, int]:
        """``(bytes in the database file, bytes of free pages in it)``; WAL not counted."""
        with self._read() as conn:
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages * size), int(free * size)

    def release_pages(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system; how many were."""
        if self._closed:
            raise StorageError(f"database {self.path} is closed")
        conn = self._conn
        with self._unavailable_on_failure():
            before: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
            # executescript steps the pragma to completion (execute frees one
            # page); it runs as its own transaction on the writer connection.
            conn.executescript(f"PRAGMA incremental_vacuum({pages:d});")
            after: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return before - after

    def nodes_version(self) -> int:
        """A number that changes whenever the node directory does (triggers keep it)."""
        with self._read() as conn:
            row = conn.execute("SELECT n FROM versions WHERE name = 'nodes'").fetchone()
        return int(row[0]) if row is not None else 0

    def hold_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl`` seconds; False while another
        holder's lease runs (several Core processes share this file)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3 + ?4) "
                "ON CONFLICT (name) DO UPDATE SET holder = ?2, until = ?3 + ?4 "
                "WHERE leases.holder = ?2 OR leases.until < ?3",
                (name, holder, now, ttl),
            )
            row = conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
        return row is not None and row[0] == holder

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it to zero bytes."""
        if self._closed:
            raise StorageError(f"database {self.path} is closed")
        with self._unavailable_on_failure():
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # --- connections ----------------------------------------------------

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One immediate write transaction, for other tables' stores (jobs, audit)."""
        return self._write()

    def reader(self) -> AbstractContextManager[sqlite3.Connection]:
        """A pooled read-only connection, for other tables' stores."""
        return self._read()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction on the writer connection."""
        if self._closed:
            raise StorageError(f"database {self.path} is closed")
        if self._gone is not None:
            raise dbfile.DatabaseUnavailableError(self._gone, "the database file is gone")
        conn = self._conn
        with self._unavailable_on_failure():
            _begin_immediate(conn)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on some errors (disk full, I/O).
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the error that brought us here is the one to report
                raise

    @contextmanager
    def _unavailable_on_failure(self) -> Iterator[None]:
        """A disk-full, I/O or corruption error becomes StorageUnavailableError."""
        try:
            yield
        except dbfile.DatabaseUnavailableError:
            raise
        except sqlite3.Error as exc:
            err = dbfile.unavailable(self.path, exc)
            if err is None:
                raise
            raise err from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection from the pool, for the duration of one call."""
        with self._lock:
            if self._closed:
                raise StorageError(f"database {self.path} is closed")
            conn = self._readers.pop() if self._readers else None
        with self._unavailable_on_failure():
            if conn is None:
                conn = self._open_reader()
            try:
                yield conn
            finally:
                with self._lock:
                    keep = not self._closed and len(self._readers) < MAX_IDLE_READERS
                    if keep:
                        self._readers.append(conn)
                if not keep:
                    conn.close()

    def _open_reader(self) -> sqlite3.Connection:
        # mode=rw: a reader never creates the file (a deleted database must stay deleted,
        # for the watcher to notice and rescue it, not become an empty one).
        uri = f"{self.path.absolute().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        conn.execute("PRAGMA query_only = ON")
        return conn


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``; while another process (another Core) holds the write lock,
    tried again every ``BEGIN_RETRY`` s for up to ``BUSY_TIMEOUT_MS``.

    SQLite's own busy handler sleeps in steps that grow to 100 ms, so a Core
    waiting on the other Core's short transactions woke late, again and again:
    with two Cores at 20,000 nodes heartbeats waited up to 1.5 s to be stored.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # and its variants
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(BEGIN_RETRY)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")


def _setup_writer(conn: sqlite3.Connection, path: Path) -> None:
    """Pragmas of the writer connection; refuses a file that is not a database."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        # Read the header first: a garbage file or a newer schema is refused
        # here, before any pragma below writes to the file.
        version = migrations.user_version(conn)
        migrations.refuse_newer(version, migrations.LATEST_VERSION, str(path))
        # Only takes effect before the first table exists, i.e. on a new file.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"database {path}: not a usable SQLite database ({exc})") from exc
    if str(mode).lower() != "wal":
        raise StorageError(f"database {path}: cannot use WAL journal mode (got {mode!r})")
