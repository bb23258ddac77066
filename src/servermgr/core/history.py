"""History that lasts: rollups, retention and the size cap of Core's database.

    History.serve()          one pass every ~6 heartbeat intervals
    ├── minutes              marked minutes that have closed, recomputed from raw samples
    ├── hours                marked hours recomputed from their minutes
    ├── retention            rows past their age deleted, 5,000 per transaction
    ├── size cap             oldest raw, then oldest 1-minute rows dropped
    └── upkeep               free pages returned; the WAL truncated now and then

``Storage.write_batch`` marks the minute of every sample it stores in
``rollup_dirty``, so a late sample (backfill after an outage) makes its
minute, then its hour, be recomputed. A pass reads marks and rows on a read
connection and aggregates (SQLite, ``rollup``) without the write lock, then writes
the rollups and clears the marks it read in one short transaction; a mark
bumped meanwhile stays, and its bucket is done again next pass. Raw rows of a
minute still marked (and minutes of an hour still marked) are never deleted,
so retention and the size cap cannot outrun the rollups.

The SQL functions are synchronous and take the Storage: ``History`` runs them
through ``Database.read``/``write``, the benchmark directly.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from servermgr.common.config import StorageConfig
from servermgr.common.errors import StorageError, StorageUnavailableError
from servermgr.core import rollup
from servermgr.core.rollup import HOUR, MINUTE, Retention
from servermgr.core.storage import METRIC_FIELDS, Storage
from servermgr.core.writer import Database

log = logging.getLogger("servermgr.core.history")

TABLES = {"raw": "metrics", "1m": "metrics_1m", "1h": "metrics_1h"}
SCALES = tuple(rollup.SCALE[f] for f in METRIC_FIELDS)  # KeyError here: add a SCALE
ROLLUP_COLUMNS = ("n", *(c for f in METRIC_FIELDS for c in (f, f"{f}_min", f"{f}_max")))
# Rollups as the API shows them: n left out, values scaled back in SQL (C, not Python).
POINT_KEYS = ("ts", *ROLLUP_COLUMNS[1:])
_POINT_SQL = ", ".join(
    c if scale == 1 else f"{c} / {scale:d}.0"
    for f, scale in zip(METRIC_FIELDS, SCALES, strict=True)
    for c in (f, f"{f}_min", f"{f}_max")
)
LEVEL = {"1m": MINUTE, "1h": HOUR}
# Marks that hold back deletion of a table: a minute needs its raw rows, an hour its minutes.
_GUARD = {"raw": MINUTE, "1m": HOUR}
# Marked buckets closer than this share one range read.
_MAX_GAP = {MINUTE: 10 * MINUTE, HOUR: 6 * HOUR}

# Per minute: the bucket start (CAST truncates: the exact floor for ts >= 0), n, then
# avg, min, max of each field; rows of one node's run of marked minutes.
_MINUTE_STATS = (
    "SELECT CAST(ts / 60 AS INTEGER) * 60 AS b, count(*), "
    + ", ".join(f"avg({f}), min({f}), max({f})" for f in METRIC_FIELDS)
    + " FROM metrics WHERE node = ? AND ts >= ? AND ts < ? GROUP BY b"
)
_MINUTES = (
    f"SELECT ts, {', '.join(ROLLUP_COLUMNS)} FROM metrics_1m WHERE node = ? AND ts >= ? AND ts < ?"
)
_UPSERT = {
    level: f"INSERT OR REPLACE INTO {table} (node, ts, {', '.join(ROLLUP_COLUMNS)}) "
    f"SELECT {', '.join(f'?{i}' for i in range(1, len(ROLLUP_COLUMNS) + 3))} "
    "WHERE EXISTS (SELECT 1 FROM nodes WHERE seq = ?1)"
    for level, table in ((MINUTE, "metrics_1m"), (HOUR, "metrics_1h"))
}
_CLEAR = "DELETE FROM rollup_dirty WHERE level = ? AND node = ? AND bucket = ? AND mark = ?"
_MARK_HOUR = (
    "INSERT INTO rollup_dirty (level, node, bucket) VALUES (3600, ?, ?) "
    "ON CONFLICT (level, node, bucket) DO UPDATE SET mark = mark + 1"
)


def retention_of(config: StorageConfig) -> Retention:
    return Retention(
        raw=config.retention_raw,
        minute=config.retention_1m,
        hour=config.retention_1h,
        max_bytes=config.max_db_size,
    )


# --- rollups ----------------------------------------------------------------


@dataclass
class Plan:
    """Rollups computed from what the marks ``seen`` pointed at, ready to write."""

    level: int
    rows: list[tuple[int, int, rollup.Rollup]] = field(default_factory=list)
    seen: list[tuple[int, int, int]] = field(default_factory=list)


def plan(storage: Storage, level: int, limit: int, before: float | None = None) -> Plan:
    """Read up to ``limit`` marks of ``level`` (60 or 3600), of buckets starting
    before ``before`` if given, and compute their buckets."""
    out = Plan(level)
    with storage.reader() as conn:
        if before is None:
            out.seen = conn.execute(
                "SELECT node, bucket, mark FROM rollup_dirty WHERE level = ? "
                "ORDER BY node, bucket LIMIT ?",
                (level, limit),
            ).fetchall()
        else:
            out.seen = conn.execute(
                "SELECT node, bucket, mark FROM rollup_dirty WHERE level = ? AND bucket < ? "
                "ORDER BY node, bucket LIMIT ?",
                (level, before, limit),
            ).fetchall()
        marked: dict[int, set[int]] = {}
        for node, b, _ in out.seen:
            marked.setdefault(node, set()).add(b)
        for node, buckets in marked.items():
            # A bucket without rows (its raw data already gone) keeps its rollup.
            for first, last in rollup.runs(buckets, _MAX_GAP[level]):
                span = (node, first, last + level)
                if level == MINUTE:
                    for b, n, *stats in conn.execute(_MINUTE_STATS, span):
                        if b in buckets:
                            out.rows.append((node, b, rollup.from_stats(n, stats, SCALES)))
                    continue
                groups: dict[int, list[tuple[Any, ...]]] = {}
                for row in conn.execute(_MINUTES, span):
                    groups.setdefault(rollup.bucket(row[0], HOUR), []).append(row[1:])
                for b, minutes in sorted(groups.items()):
                    if b in buckets:
                        out.rows.append((node, b, rollup.merge(minutes)))
    return out


def apply(storage: Storage, work: Plan) -> int:
    """Write a plan's rollups, clear its unchanged marks, mark hours; rows written."""
    with storage.transaction() as conn:
        conn.executemany(_UPSERT[work.level], [(n, b, *v) for n, b, v in work.rows])
        conn.executemany(_CLEAR, [(work.level, *m) for m in work.seen])
        if work.level == MINUTE:
            hours = {(n, rollup.bucket(b, HOUR)) for n, b, _ in work.rows}
            conn.executemany(_MARK_HOUR, sorted(hours))
    return len(work.rows)


def oldest_mark(storage: Storage, level: int) -> int | None:
    with storage.reader() as conn:
        value: int | None = conn.execute(
            "SELECT min(bucket) FROM rollup_dirty WHERE level = ?", (level,)
        ).fetchone()[0]
    return value


# --- deletion -----------------------------------------------------------------


def delete_older(storage: Storage, step: str, cutoff: float, budget: int) -> int:
    """Delete up to ``budget`` rows of ``step`` older than ``cutoff``, oldest first per node."""
    table = TABLES[step]
    deleted = 0
    with storage.transaction() as conn:
        for (node,) in conn.execute("SELECT seq FROM nodes ORDER BY seq").fetchall():
            left = budget - deleted
            if left <= 0:
                break
            edge = conn.execute(
                f"SELECT ts FROM {table} WHERE node = ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?",
                (node, cutoff, left - 1),
            ).fetchone()
            if edge is None:
                cur = conn.execute(f"DELETE FROM {table} WHERE node = ? AND ts < ?", (node, cutoff))
            else:
                cur = conn.execute(
                    f"DELETE FROM {table} WHERE node = ? AND ts <= ?", (node, edge[0])
                )
            deleted += cur.rowcount
    return deleted


def oldest(storage: Storage, step: str) -> float | None:
    """The oldest ``ts`` in ``step``'s table over all nodes (one index seek per node)."""
    table = TABLES[step]
    with storage.reader() as conn:
        value: float | None = conn.execute(
            f"SELECT min((SELECT min(ts) FROM {table} WHERE node = seq)) FROM nodes"
        ).fetchone()[0]
    return value


# --- queries ------------------------------------------------------------------


def query(
    storage: Storage, step: str, node: int, since: float, until: float, limit: int
) -> list[dict[str, float | int | None]]:
    """Points of one node, oldest first, the newest ``limit`` if more.

    Raw samples for ``raw``; for ``1m``/``1h`` every bucket that overlaps
    ``[since, until]``, ``ts`` being its start.
    """
    if step == "raw":
        return storage.query_metrics(node, since, until, limit)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    start = rollup.bucket(since, LEVEL[step])
    with storage.reader() as conn:
        rows = conn.execute(
            f"SELECT ts, {_POINT_SQL} FROM {TABLES[step]} "
            "WHERE node = ? AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT ?",
            (node, start, until, limit),
        ).fetchall()
    rows.reverse()
    return [dict(zip(POINT_KEYS, r, strict=True)) for r in rows]


# --- the background task ----------------------------------------------------


@dataclass
class Report:
    """What one pass did: buckets written, rows deleted by age and by the size cap."""

    minutes: int = 0
    hours: int = 0
    deleted: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


ROLL_PAUSE = 0.05  # s between two rounds of a rollup pass

class History:
    """Keeps rollups current and the database within its retention and size."""

    def __init__(
        self,
        db: Database,
        retention: Retention,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 10.0,
        batch: int = 500,
        delete_batch: int = 5000,
        vacuum_pages: int = 2048,
        hours_every: float = 60.0,
        upkeep_every: float = 60.0,
        checkpoint_every: float = 600.0,
        holder: str = "core",
    ) -> None:
        self._db = db
        self.holder = holder  # this Core process, in the "history" lease
        self._storage = db.storage
        self.retention = retention
        self._clock = clock
        self.interval = interval
        self._batch = batch
        self._delete_batch = delete_batch
        self._vacuum_pages = vacuum_pages
        self._every = {"hours": hours_every, "upkeep": upkeep_every, "wal": checkpoint_every}
        self._due: dict[str, float] = {}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A pass at once (marks left by a previous run), then every ``interval``.

        Of several Core processes sharing the database, the one holding the
        "history" lease does the passes; another takes over when it lapses
        (three intervals without renewal: its holder stopped).
        """
        task_status.started()
        while True:
            try:
                if await self._db.write(
                    self._storage.hold_lease,
                    "history",
                    self.holder,
                    self._clock(),
                    3 * self.interval,
                ):
                    await self.run_once()
            except StorageUnavailableError:
                pass  # Database has logged it (once a minute); the next pass redoes the work
            except (sqlite3.Error, StorageError) as exc:
                # Marks stay until their buckets are written: the next pass redoes them.
                log.error("history pass failed (%s); retrying in %g s", exc, self.interval)
            await trio.sleep(self.interval)

    def _is_due(self, what: str, force: bool) -> bool:
        now = trio.current_time()
        if force or now >= self._due.get(what, now):
            self._due[what] = now + self._every[what]
            return True
        return False

    async def run_once(self, *, force: bool = False) -> Report:
        """One pass; ``force`` runs every part now, to completion."""
        report = Report(minutes=await self.roll(MINUTE, force=force))
        if self._is_due("hours", force):
            report.hours = await self.roll(HOUR, force=force)
        if self._is_due("upkeep", force):
            report.deleted = await self.retain()
            report.dropped = await self.enforce_cap()
            await self.release()
        if self._is_due("wal", force) or report.dropped:
            await self._db.write(self._storage.checkpoint)
        return report

    async def roll(self, level: int, *, force: bool = False, rounds: int = 80) -> int:
        """Recompute marked buckets of ``level`` in batches; how many were written.

        Minutes still open (the clock's current minute, or later) wait until
        they close, unless ``force``: each sample marks its minute, so rolling
        the open minute of every node at each pass did each node's minute
        two or three times (1-minute points serve ranges over 6 h: nobody
        reads the open one). A sample that comes late marks its minute again.
        """
        before = None if force or level != MINUTE else rollup.bucket(self._clock(), MINUTE)
        written = 0
        for _ in range(rounds if not force else 1 << 30):
            work = await self._db.read(plan, self._storage, level, self._batch, before)
            if not work.seen:
                break
            written += await self._db.write(apply, self._storage, work)
            if len(work.seen) < self._batch:
                break
            if not force:
                # Spread out: each minute closes for every node at once, and a pass
                # of back-to-back rounds held the GIL and the write lock for seconds
                # (two Cores at 20,000 nodes: heartbeats stored up to 1.2 s late).
                await trio.sleep(ROLL_PAUSE)
        return written

    async def _delete(self, step: str, cutoff: float) -> int:
        """Everything of ``step`` older than ``cutoff`` (bounded by marks), in batches."""
        if step in _GUARD:
            mark = await self._db.read(oldest_mark, self._storage, _GUARD[step])
            if mark is not None:
                cutoff = min(cutoff, mark)
        total = 0
        while True:
            n = await self._db.write(delete_older, self._storage, step, cutoff, self._delete_batch)
            total += n
            if n < self._delete_batch:
                return total

    async def retain(self) -> dict[str, int]:
        """Delete rows past their retention; counts per step."""
        now = self._clock()
        deleted = {
            step: await self._delete(step, now - self.retention.keeps(step)) for step in TABLES
        }
        if any(deleted.values()):
            log.debug("retention deleted %s", deleted)
        return {k: v for k, v in deleted.items() if v}

    async def release(self) -> int:
        """Return free pages to the file system, a bounded number per transaction."""
        freed = 0
        while True:
            n = await self._db.write(self._storage.release_pages, self._vacuum_pages)
            freed += n
            if n < self._vacuum_pages:
                return freed

    async def enforce_cap(self) -> dict[str, int]:
        """Over ``max_bytes``: drop the oldest raw, then oldest 1-minute rows, until under."""
        cap = self.retention.max_bytes
        if cap is None:
            return {}
        size, free = await self._db.read(self._storage.file_size)
        if size - free <= cap:
            if size > cap:
                await self.release()
            return {}
        dropped: dict[str, int] = {}
        upto: dict[str, float] = {}
        for step, first_slice in (("raw", 600.0), ("1m", 6 * 3600.0)):
            span = first_slice
            while size - free > cap:
                start = await self._db.read(oldest, self._storage, step)
                if start is None:
                    break
                n = await self._delete(step, start + span)
                if n == 0:
                    break  # what is left still waits for its rollups
                dropped[step] = dropped.get(step, 0) + n
                upto[step] = start + span
                span *= 2
                await self.release()
                size, free = await self._db.read(self._storage.file_size)
        await self.release()
        size, free = await self._db.read(self._storage.file_size)
        if dropped:
            what = " and ".join(
                f"{n} {'raw samples' if s == 'raw' else '1-minute rollups'} before {_utc(upto[s])}"
                for s, n in dropped.items()
            )
            log.warning("database over max_db_size (%s): dropped %s", _mib(cap), what)
        if size > cap:
            log.warning(
                "database is %s, still over max_db_size %s: 1-hour rollups and rows "
                "awaiting their rollups are kept; raise storage.max_db_size or shorten "
                "storage.retention_1h",
                _mib(size),
                _mib(cap),
            )
        return dropped


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"
