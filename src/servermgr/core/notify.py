"""Notices to receivers: one bounded queue and one task per receiver.

``Notifier.send`` never waits: it puts the notice in the queue of each
receiver the rule names (every receiver when it names none). A receiver's
task delivers its notices one after another, each with up to ``retries``
attempts and a backoff between them (1 s, 2 s, 4 s ... at most
``MAX_BACKOFF``), so a slow or dead receiver delays only its own queue:
never ingest, never another receiver. A full queue drops the notice.
Every attempt and its outcome (sent, failed, gave_up, dropped) goes to the
``AlertLog``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio

from servermgr.common.alertconfig import AlertsConfig, Receiver, WebhookReceiver
from servermgr.core import notify_send
from servermgr.core.alertlog import AlertLog
from servermgr.core.alertstate import Key
from servermgr.core.alertstore import Delivery

log = logging.getLogger("servermgr.core.notify")

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0

Notice = Mapping[str, Any]
Sender = Callable[[Receiver, Notice, Any], Any]


class Notifier:
    def __init__(
        self,
        config: AlertsConfig,
        alert_log: AlertLog,
        *,
        clock: Callable[[], float],
        sender: Sender = notify_send.send,
        first_backoff: float = FIRST_BACKOFF,
    ) -> None:
        self.receivers = {r.name: r for r in config.receivers}
        self.retries = config.retries
        self.log = alert_log
        self.clock = clock
        self._sender = sender
        self._first_backoff = first_backoff
        self._queues: dict[
            str, tuple[trio.MemorySendChannel[Notice], trio.MemoryReceiveChannel[Notice]]
        ] = {name: trio.open_memory_channel[Notice](config.queue) for name in self.receivers}
        self.sent = 0
        self.failed = 0

    def send(self, notice: Notice, receivers: tuple[str, ...] | None) -> None:
        """Queue ``notice`` for ``receivers`` (None: all); never waits."""
        for name in receivers if receivers is not None else tuple(self.receivers):
            queue = self._queues.get(name)
            if queue is None:
                continue  # a run-time rule naming a receiver the config no longer has
            try:
                queue[0].send_nowait(notice)
            except trio.WouldBlock:
                self._record(name, notice, 0, "dropped", "queue full")
                log.warning("receiver %s: queue full, a notice was dropped", name)

    def _record(
        self, receiver: str, notice: Notice, attempt: int, outcome: str, detail: str
    ) -> None:
        key = Key(str(notice["rule"]), str(notice["node_id"]), str(notice["subject"]))
        self.log.delivery(
            Delivery(
                self.clock(),
                receiver,
                str(notice["kind"]),
                key,
                str(notice["node"]),
                attempt,
                outcome,
                detail,
            )
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        client: Any = None
        if any(isinstance(r, WebhookReceiver) for r in self.receivers.values()):
            import httpx

            client = httpx.AsyncClient(follow_redirects=False)
        try:
            async with trio.open_nursery() as nursery:
                for name, receiver in self.receivers.items():
                    nursery.start_soon(self._deliver_all, receiver, self._queues[name][1], client)
                task_status.started()
        finally:
            if client is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await client.aclose()

    async def _deliver_all(
        self, receiver: Receiver, queue: trio.MemoryReceiveChannel[Notice], client: Any
    ) -> None:
        async for notice in queue:
            await self._deliver(receiver, notice, client)

    async def _deliver(self, receiver: Receiver, notice: Notice, client: Any) -> None:
        backoff = self._first_backoff
        for attempt in range(1, self.retries + 1):
            try:
                await self._sender(receiver, notice, client)
            except notify_send.DeliveryFailed as exc:
                last = attempt == self.retries
                self._record(
                    receiver.name, notice, attempt, "gave_up" if last else "failed", exc.reason
                )
                log.warning(
                    "receiver %s: %s notice for %s on %s, attempt %d of %d failed: %s",
                    receiver.name,
                    notice["kind"],
                    notice["rule"],
                    notice["node"],
                    attempt,
                    self.retries,
                    exc.reason,
                )
                if last:
                    self.failed += 1
                    return
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self._record(receiver.name, notice, attempt, "sent", "")
            self.sent += 1
            return
