"""The single writer: GroupCommit coalesces concurrent calls; MetricsWriter
acks only what is stored, through a full disk."""

from __future__ import annotations

import sqlite3
from functools import partial

import pytest
import trio

from servermgr.common.errors import StorageUnavailableError
from servermgr.core.storage import Storage
from servermgr.core.writer import (
    Database,
    GroupCommit,
    Ingest,
    MetricsWriter,
    spawn_past_outages,
)
from servermgr.node.agent import Backlog
from tests.support import cap_database, make_sample, wait_for


@pytest.fixture
def db(storage: Storage) -> Database:
    with storage.transaction() as conn:
        conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    return Database(storage)


def inserter(db: Database, batches: list[int]) -> GroupCommit[int, int]:
    def insert(items: list[int]) -> list[int]:
        batches.append(len(items))
        with db.storage.transaction() as conn:
            for v in items:
                conn.execute("INSERT INTO t (v) VALUES (?)", (v,))
        return [v * 10 for v in items]

    return GroupCommit(db, insert)


def stored(db: Database) -> list[int]:
    with db.storage.reader() as conn:
        return [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")]


async def test_concurrent_calls_share_transactions_and_get_their_own_result(
    db: Database,
) -> None:
    batches: list[int] = []
    commit = inserter(db, batches)
    results: dict[int, int] = {}

    async def one(v: int) -> None:
        results[v] = await commit(v)

    async with trio.open_nursery() as nursery:
        for v in range(200):
            nursery.start_soon(one, v)
    assert results == {v: v * 10 for v in range(200)}
    assert stored(db) == list(range(200))
    assert sum(batches) == 200
    assert len(batches) < 20  # 200 calls, a handful of transactions


async def test_a_failed_transaction_raises_in_every_caller_of_that_round(db: Database) -> None:
    batches: list[int] = []
    commit = inserter(db, batches)
    await commit(1)
    errors: list[BaseException] = []

    async def one(v: int) -> None:
        try:
            await commit(v)
        except sqlite3.IntegrityError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for v in (2, 1, 3):  # 1 is a duplicate: its whole round rolls back
            nursery.start_soon(one, v)
    assert errors  # the callers in the round with the duplicate
    assert 1 in stored(db)
    assert await commit(4) == 40  # and the next round works


async def test_a_cancelled_first_caller_still_commits_the_others(db: Database) -> None:
    batches: list[int] = []
    commit = inserter(db, batches)
    results: list[int] = []

    async def later(v: int) -> None:
        results.append(await commit(v))

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as leader:
            leader.cancel()  # cancelled before it even starts waiting
            nursery.start_soon(later, 2)
            nursery.start_soon(later, 3)
            await commit(1)  # runs the rounds shielded, then sees the cancel
    assert sorted(results) == [20, 30]
    assert stored(db) == [1, 2, 3]


def test_age_histogram_quantiles_are_bucket_upper_bounds() -> None:
    from servermgr.core.writer import AgeHistogram

    age = AgeHistogram()
    assert age.quantile(0.99) is None
    for _ in range(98):
        age.add(0.010)  # 10 ms
    age.add(0.5)
    age.add(0.9)
    assert 10 <= age.quantile(0.5) < 11  # type: ignore[operator]
    assert 500 <= age.quantile(0.99) < 550  # type: ignore[operator]
    assert 900 <= age.quantile(1.0) < 990  # type: ignore[operator]
    age.add(1000.0)  # beyond the last bound: counted, no bound to name
    assert age.counts[-1] == 1
    assert age.quantile(1.0) is None


# --- disk full: nothing acked that is not stored ------------------------------
# Real clock: the writer works in a thread, which trio's autojump clock does
# not wait for (it would jump past wait_for's limit while a transaction runs).


@pytest.fixture
def metrics_db(storage: Storage) -> tuple[Database, int]:
    """A real database with one registered node; it and the node's seq."""
    row = storage.insert_node("n-1", "web-1", {}, "hash", 100.0)
    return Database(storage), row.seq


def heartbeat(backlog: Backlog, node_seq: int, first_ts: float, n: int) -> Ingest:
    """``n`` samples into the node's real backlog, taken as one heartbeat whose ack
    (as the gateway sends it once stored) makes the node drop them."""
    for i in range(n):
        backlog.add(make_sample(first_ts + i))
    hb = backlog.take(most=n)
    assert hb is not None
    return Ingest(node_seq, hb.samples, 0.0, partial(backlog.ack, hb.seq))


def stored_ts(db: Database, node_seq: int) -> list[float]:
    with db.storage.reader() as conn:
        rows = conn.execute("SELECT ts FROM metrics WHERE node = ? ORDER BY ts", (node_seq,))
        return [ts for (ts,) in rows]


async def test_disk_full_acks_nothing_unstored_and_stores_all_once_space_is_back(
    metrics_db: tuple[Database, int],
) -> None:
    db, node = metrics_db
    backlog = Backlog()
    writer = MetricsWriter(db, retry=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.serve)
        for k in range(3):
            await writer.submit(heartbeat(backlog, node, 1000.0 + 100 * k, 20))
        await wait_for(lambda: not backlog.inflight)
        assert len(stored_ts(db, node)) == 60

        await db.write(cap_database, db.storage, False)  # the disk is full
        for k in range(3, 8):
            await writer.submit(heartbeat(backlog, node, 1000.0 + 100 * k, 20))
        await wait_for(lambda: writer.failed_batches >= 2)  # tried, and tried again
        for k in range(8, 10):  # heartbeats keep coming while it is full
            await writer.submit(heartbeat(backlog, node, 1000.0 + 100 * k, 20))
        await wait_for(lambda: writer.failed_batches >= 3)
        # No ack covered a sample that is not stored: the node still holds all 140.
        assert len(backlog.inflight) == 140
        assert min(seq for seq, _ in backlog.inflight) == 4
        assert len(stored_ts(db, node)) == 60
        assert db.outage.down

        await db.write(cap_database, db.storage, True)  # space is back
        await wait_for(lambda: not backlog.inflight)
        writer.close()
    assert stored_ts(db, node) == [1000.0 + 100 * k + i for k in range(10) for i in range(20)]
    assert not db.outage.down


async def test_shutdown_while_full_acks_nothing_and_a_resend_fills_the_gap(
    metrics_db: tuple[Database, int],
) -> None:
    db, node = metrics_db
    backlog = Backlog()
    await db.write(cap_database, db.storage, False)
    writer = MetricsWriter(db, retry=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.serve)
        for k in range(5):
            await writer.submit(heartbeat(backlog, node, 2000.0 + 100 * k, 20))
        await wait_for(lambda: writer.failed_batches >= 1)
        writer.close()  # Core stops while the disk is full: serve gives up, acks nothing
    assert len(backlog.inflight) == 100
    assert stored_ts(db, node) == []

    await db.write(cap_database, db.storage, True)
    backlog.requeue()  # the node reconnects to the next Core and sends everything again
    writer = MetricsWriter(db)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.serve)
        while (hb := backlog.take()) is not None:
            await writer.submit(Ingest(node, hb.samples, 0.0, partial(backlog.ack, hb.seq)))
        await wait_for(lambda: not backlog.inflight)
        writer.close()
    assert stored_ts(db, node) == [2000.0 + 100 * k + i for k in range(5) for i in range(20)]


async def test_a_short_task_failing_on_storage_does_not_end_its_nursery() -> None:
    """Out of descriptors or disk, one node's catch-up fails; Core goes on."""
    ran: list[str] = []

    async def fails() -> None:
        ran.append("fails")
        raise StorageUnavailableError("database x: the file cannot be opened", "cannot open")

    async def works() -> None:
        ran.append("works")

    async with trio.open_nursery() as nursery:
        spawn_past_outages(nursery, fails)
        spawn_past_outages(nursery, works)
    assert sorted(ran) == ["fails", "works"]

    async def bug() -> None:
        raise ValueError("a bug is not an outage")

    with pytest.RaisesGroup(ValueError):
        async with trio.open_nursery() as nursery:
            spawn_past_outages(nursery, bug)
