"""The single writer's batching: GroupCommit coalesces concurrent calls."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from servermgr.core.storage import Storage
from servermgr.core.writer import Database, GroupCommit


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    storage = Storage.open(tmp_path / "w.db")
    with storage.transaction() as conn:
        conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    yield Database(storage)
    storage.close()


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
