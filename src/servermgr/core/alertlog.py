"""What alerting writes to the database, collected and written in batches.

Alert transitions happen on the heartbeat path and delivery attempts in the
receivers' tasks; neither may wait for SQLite. Both add what they have to
an ``AlertLog`` (no I/O, no waiting) and one task writes it, one
transaction at a time, through Core's writer lock. While the database
refuses writes the log keeps what it holds, up to ``MAX_HELD`` entries;
past that the oldest history is dropped (counted and logged), never the
current state of an alert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from servermgr.common.errors import StorageUnavailableError
from servermgr.core import alertstore
from servermgr.core.alertstate import Alert, Key, Transition
from servermgr.core.alertstore import Delivery
from servermgr.core.writer import Database

log = logging.getLogger("servermgr.core.alerts")

MAX_HELD = 100_000
RETRY = 2.0
PRUNE_EVERY = 3600.0


class AlertLog:
    def __init__(self, db: Database, *, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock
        self._transitions: list[tuple[Transition, str]] = []
        self._changed: dict[Key, Alert | None] = {}
        self._deliveries: list[Delivery] = []
        self._wake = trio.Event()
        self.dropped = 0
        self.written = 0

    def transition(self, transition: Transition, node: str) -> None:
        self._transitions.append((transition, node))
        self._trim(self._transitions)
        self._wake.set()

    def alert(self, key: Key, alert: Alert | None) -> None:
        """The alert as it is now (None: it is over)."""
        self._changed[key] = alert
        self._wake.set()

    def delivery(self, delivery: Delivery) -> None:
        self._deliveries.append(delivery)
        self._trim(self._deliveries)
        self._wake.set()

    def _trim(self, entries: list[Any]) -> None:
        if len(entries) > MAX_HELD:
            drop = len(entries) - MAX_HELD
            del entries[:drop]
            if self.dropped == 0:
                log.warning("alert history not written (database unavailable): dropping the oldest")
            self.dropped += drop

    @property
    def held(self) -> int:
        return len(self._transitions) + len(self._changed) + len(self._deliveries)

    async def flush(self) -> None:
        """Write what is held now (raises StorageUnavailableError; nothing is lost then)."""
        transitions, changed, deliveries = self._transitions, self._changed, self._deliveries
        if not (transitions or changed or deliveries):
            return
        self._transitions, self._changed, self._deliveries = [], {}, []
        try:
            await self._db.write(
                alertstore.record, self._db.storage, transitions, list(changed.items()), deliveries
            )
        except BaseException:
            # Put back in front of what came meanwhile; newer states win.
            self._transitions[:0] = transitions
            self._deliveries[:0] = deliveries
            self._changed = {**changed, **self._changed}
            raise
        self.written += len(transitions) + len(deliveries)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_prune = trio.current_time()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.flush()
                if trio.current_time() >= next_prune:
                    next_prune = trio.current_time() + PRUNE_EVERY
                    before = self._clock() - alertstore.KEEP
                    await self._db.write(alertstore.prune, self._db.storage, before)
            except StorageUnavailableError:
                self._wake.set()
                await trio.sleep(RETRY)  # Database logs the outage
