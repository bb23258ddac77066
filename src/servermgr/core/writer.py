"""The single SQLite writer and the thread plumbing around Storage.

``Database`` runs Storage calls in worker threads: writes one at a time
(one writer connection, ``CapacityLimiter(1)``), reads concurrently.
``MetricsWriter`` batches heartbeats: whatever arrives while one transaction
commits goes into the next, so the write rate is bounded by batches, not by
heartbeats. After a batch commits it calls each item's ``on_stored`` (the
gateway acks the node then, so a node only drops samples that are on disk).
A batch that fails (disk full) is kept and tried again, with what arrived
since, until it commits: acks are cumulative per node, so no later sample may
be acked before an earlier one is stored. ``Outage`` says in the log, at most
once a minute, that writes fail, and once that they work again.
``GroupCommit`` does the same for calls that wait for their own outcome
(job results: a fan-out's 1,000 results in a few transactions, not 1,000).
"""

from __future__ import annotations

import bisect
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, ParamSpec, TypeVar

import trio

from servermgr.common import proto
from servermgr.common.errors import StorageError, StorageUnavailableError
from servermgr.core.storage import Storage

log = logging.getLogger("servermgr.core.writer")

P = ParamSpec("P")
T = TypeVar("T")
Item = TypeVar("Item")
R = TypeVar("R")


REPORT_EVERY = 60.0  # seconds between two log lines about the same outage


class Outage:
    """Whether the database refuses writes now, told in the log without flooding it.

    A failure is logged at most once per ``every`` seconds, even when writes
    flap between failing and working (a nearly full disk); the first write
    that works after a logged failure says so.
    """

    def __init__(self, every: float = REPORT_EVERY) -> None:
        self.every = every
        self.since: float | None = None  # trio time of the first failure of this outage
        self.refused = 0
        self._next_report = float("-inf")
        self._reported = False

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        now = trio.current_time()
        self.refused += 1
        if self.since is None:
            self.since = now
        if now < self._next_report:
            return
        self._next_report = now + self.every
        self._reported = True
        if self.refused == 1:
            log.error(
                "%s; Core keeps serving reads, answers writes with 503 and keeps nodes' "
                "samples unacked until they are stored (repeated at most once a minute)",
                exc,
            )
        else:
            log.error(
                "database still failing after %.0f s (%d writes refused): %s",
                now - self.since,
                self.refused,
                exc,
            )

    def doc(self) -> dict[str, object]:
        """For /api/v1/status: whether writes work now, else since when and how many failed."""
        return {
            "writable": self.since is None,
            "failing_for_s": None
            if self.since is None
            else round(trio.current_time() - self.since, 1),
            "refused": self.refused,
        }

    def recovered(self) -> None:
        if self.since is None:
            return
        if self._reported:
            log.warning(
                "database writable again after %.0f s (%d writes were refused meanwhile)",
                trio.current_time() - self.since,
                self.refused,
            )
            self._reported = False
        self.since = None
        self.refused = 0


class Database:
    """Storage reached from trio: serialized writes, concurrent reads.

    A StorageUnavailableError (disk full, I/O error) is reported to ``outage``
    and raised to the caller: the API answers 503, nothing is acked.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.outage = Outage()
        self._write_limiter = trio.CapacityLimiter(1)

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        def call() -> T:
            return fn(*args, **kwargs)

        try:
            result = await trio.to_thread.run_sync(call, limiter=self._write_limiter)
        except StorageUnavailableError as exc:
            self.outage.failed(exc)
            raise
        self.outage.recovered()
        return result

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        def call() -> T:
            return fn(*args, **kwargs)

        try:
            return await trio.to_thread.run_sync(call)
        except StorageUnavailableError as exc:
            self.outage.failed(exc)
            raise


def spawn_past_outages(
    nursery: trio.Nursery | None, fn: Callable[..., Awaitable[object]], *args: object
) -> None:
    """Start a short task (an ack, a node's catch-up) that a storage outage must not end Core for.

    Such a task is one node's business: when the database fails under it
    (disk full, out of file descriptors), the Database has told the outage
    (logged at most once a minute) and the node will try again (it re-sends
    unacked samples and results, and its next hello asks for its jobs
    again). Letting the error out would take the whole nursery, so Core.
    """

    async def run() -> None:
        try:
            await fn(*args)
        except StorageUnavailableError as exc:
            log.debug("%s dropped: %s", getattr(fn, "__qualname__", fn), exc)

    if nursery is not None:
        nursery.start_soon(run)


class _Round(Generic[R]):
    def __init__(self) -> None:
        self.done = trio.Event()
        self.results: list[R] = []
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, R]):
    """Concurrent calls of ``fn(items) -> results``, coalesced into few transactions.

    ``await commit(item)`` returns ``item``'s result once its transaction has
    committed. The first caller runs a transaction at once; items that come
    while it runs wait and go into the next one, run by the same caller
    (shielded, so a caller's cancellation never strands the others' items).
    """

    def __init__(self, db: Database, fn: Callable[[list[Item]], list[R]]) -> None:
        self._db = db
        self._fn = fn
        self._pending: list[Item] = []
        self._round: _Round[R] = _Round()
        self._running = False

    async def __call__(self, item: Item) -> R:
        slot = len(self._pending)
        self._pending.append(item)
        mine = self._round
        if not self._running:
            self._running = True
            try:
                with trio.CancelScope(shield=True):
                    while self._pending:
                        items, self._pending = self._pending, []
                        this, self._round = self._round, _Round()
                        try:
                            this.results = await self._db.write(self._fn, items)
                        except Exception as exc:  # each waiter raises it
                            this.error = exc
                        finally:
                            this.done.set()
            finally:
                self._running = False
        await mine.done.wait()
        if mine.error is not None:
            raise mine.error
        return mine.results[slot]


@dataclass(frozen=True)
class Ingest:
    """Samples of one heartbeat; ``on_stored`` runs after they are committed,
    ``on_failed`` after each attempt that failed (they are tried again)."""

    node_seq: int
    samples: Sequence[proto.Sample]
    seen: float
    on_stored: Callable[[], None] | None = None
    on_failed: Callable[[], None] | None = None


# Upper bounds (ms) of the sample-age histogram: 1 ms to 2 min, 10 % apart.
AGE_BOUNDS_MS: tuple[float, ...] = tuple(round(1.1**k, 1) for k in range(123))


class AgeHistogram:
    """How old samples were when stored: sample ``ts`` (node clock) to commit.

    Counts are cumulative since start, so two readings can be subtracted
    to get a window. The last count is for samples older than the last bound.
    """

    def __init__(self) -> None:
        self.counts = [0] * (len(AGE_BOUNDS_MS) + 1)
        self.sum = 0.0  # seconds, of every age added (a Prometheus histogram's _sum)

    def add(self, age_s: float) -> None:
        self.counts[bisect.bisect_left(AGE_BOUNDS_MS, age_s * 1000)] += 1
        self.sum += age_s

    def quantile(self, q: float) -> float | None:
        """Upper bound (ms) of the bucket holding quantile ``q``; None if empty or beyond."""
        return quantile(self.counts, q)


def quantile(counts: Sequence[int], q: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for bound, n in zip(AGE_BOUNDS_MS, counts, strict=False):
        seen += n
        if seen >= rank:
            return bound
    return None


class MetricsWriter:
    """One task that turns a stream of heartbeats into few transactions.

    After the first heartbeat of a batch it waits ``linger`` seconds for
    more: at thousands of nodes that makes one transaction (and one hop to
    the writer thread) per 50 ms rather than per heartbeat.

    A batch that fails is held and tried again every ``retry`` seconds,
    together with what arrived since (up to ``max_batch`` items; beyond,
    ``submit`` waits). Nothing is acked meanwhile, and nothing in the batch
    is dropped: acks are cumulative, so acking a later heartbeat of a node
    would tell it to drop the earlier, unstored one.
    """

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 20000,
        buffer: int = 50000,
        linger: float = 0.05,
        retry: float = 2.0,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._linger = linger
        self._retry = retry
        self._send, self._recv = trio.open_memory_channel[Ingest](buffer)
        self._closing = trio.Event()
        self.batches = 0
        self.samples = 0
        self.received = 0  # heartbeats submitted
        self.stored = 0  # heartbeats committed
        self.failed_batches = 0
        self.held = 0  # heartbeats in a failed batch, waiting to be stored
        self.age = AgeHistogram()

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def submit(self, item: Ingest) -> None:
        """Queue ``item``; waits (backpressure) when the writer is far behind.

        Without a yield to the scheduler when there is room (the usual case):
        ``send`` always yields, one more task switch per heartbeat.
        """
        self.received += 1
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            await self._send.send(item)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until ``close()``; then flush what is queued and return.

        At shutdown a batch that still fails is given up: it was never
        acked, so the nodes send it again to the next Core.
        """
        task_status.started()
        held: list[Ingest] = []
        async with self._recv:
            while True:
                if held:
                    batch = held
                else:
                    try:
                        first = await self._recv.receive()
                    except trio.EndOfChannel:
                        return
                    await trio.sleep(self._linger)
                    batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                if await self._commit(batch):
                    held = []
                elif self._closing.is_set():
                    log.error(
                        "shutting down with %d heartbeats not stored; their nodes keep "
                        "them and send them again",
                        len(batch),
                    )
                    return
                else:
                    held = batch
                    with trio.move_on_after(self._retry):
                        await self._closing.wait()
                self.held = len(held)

    async def _commit(self, batch: list[Ingest]) -> bool:
        """Store ``batch`` in one transaction and ack it; False (nothing acked) if it failed."""
        rows = [(item.node_seq, s) for item in batch for s in item.samples]
        seen: dict[int, float] = {}
        for item in batch:
            seen[item.node_seq] = max(item.seen, seen.get(item.node_seq, 0.0))
        # Shielded: a batch that began committing finishes, even at shutdown.
        stored_ok = False
        with trio.CancelScope(shield=True):
            try:
                await self._db.write(self._db.storage.write_batch, rows, seen)
                stored_ok = True
            except StorageUnavailableError:
                pass  # Database.write has told the log
            except (sqlite3.Error, StorageError) as exc:
                self._db.outage.failed(StorageError(f"could not store {len(rows)} samples: {exc}"))
        if not stored_ok:
            self.failed_batches += 1
            for item in batch:
                if item.on_failed is not None:
                    item.on_failed()
            return False
        self.batches += 1
        self.samples += len(rows)
        self.stored += len(batch)
        stored = time.time()
        for item in batch:
            if item.samples:  # the newest: older ones are a backlog re-sent
                self.age.add(max(0.0, stored - item.samples[-1].ts))
            if item.on_stored is not None:
                item.on_stored()
        return True

    def close(self) -> None:
        """Stop accepting; ``serve`` returns once everything queued is written (or fails)."""
        self._closing.set()
        self._send.close()
