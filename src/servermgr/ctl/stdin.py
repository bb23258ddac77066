"""``ctl exec``'s standard input, streamed to the job on one node (core/stdin_api.py).

``ctl exec`` follows the job's output on its main thread; ``Forwarder``
sends our stdin beside it on a thread of its own (a trio loop with the
stdin WebSocket): one chunk read at a time, within the credit the node
grants, then ``eof``. So ctl holds at most one chunk whatever the size, and
a command that never reads its stdin (or exits first) does not wait for it.
If the stream fails before the end, the job is cancelled (the node cancels
it too): the output then says so. Imported only when there is stdin to send.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed

from servermgr.common import flow, relay
from servermgr.common.errors import ApiError, ClientError, single_error
from servermgr.ctl import streamclient

if TYPE_CHECKING:
    from servermgr.common.tls import Trust

JOIN = 5.0  # seconds to let the forwarder finish once the job is done
RETRY = 1.0  # seconds between tries while the job waits for its node to come back


class Forwarder(threading.Thread):
    """Streams ``fd`` to the job's stdin on ``node``; ``error`` says why it stopped early."""

    def __init__(
        self,
        base_url: str,
        key: str,
        trust: Trust | None,
        job_id: str,
        node: str,
        *,
        patience: float = 0.0,
        fd: int = 0,
    ) -> None:
        super().__init__(name="stdin", daemon=True)  # an unread pipe never holds ctl's exit
        self.base_url = base_url
        self.key = key
        self.trust = trust
        self.job_id = job_id
        self.node = node
        self.fd = fd
        self.patience = patience  # the job's --wait: its node may come back meanwhile
        self.size: int | None = None  # what the process took, once done
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.patience
        while True:
            try:
                self.size = trio.run(self._stream)
                return
            except (ClientError, ConnectionClosed, OSError, BaseExceptionGroup) as exc:
                err = single_error(exc)
                offline = isinstance(err, ApiError) and err.code == "node_offline"
                if offline and time.monotonic() < deadline:
                    time.sleep(RETRY)  # the job waits for its node (--wait): so do we
                    continue
                self.error = _message(exc)
                self._cancel()
                return

    def finish(self) -> str | None:
        """Wait a moment for the stream's end; the error to report, if any."""
        self.join(JOIN)
        return self.error

    def _cancel(self) -> None:
        """The input did not get through whole: the job must not run on part of it."""
        from servermgr.ctl.client import Client

        try:
            Client(self.base_url, self.key, trust=self.trust).cancel_job(self.job_id)
        except ClientError:
            pass  # the main thread reports what it sees of the job

    async def _stream(self) -> int:
        async with streamclient.open_stream(
            self.base_url, self.key, self.trust, relay.STDIN_PATH
        ) as ws:
            await streamclient.send(ws, relay.StdinRequest(job=self.job_id, node=self.node))
            ready = await streamclient.receive(ws)
            if not isinstance(ready, relay.Ready):
                raise ClientError("Core answered the open with something else than ready")
            credit = flow.Credit()

            async def sender() -> None:
                while True:
                    n = await credit.take(flow.CHUNK)
                    if n == 0:
                        return
                    # A pipe may never end: leave its read behind when the stream is done.
                    chunk = await trio.to_thread.run_sync(
                        os.read, self.fd, n, abandon_on_cancel=True
                    )
                    if not chunk:
                        break
                    await ws.send_message(chunk)
                    if len(chunk) < n:
                        credit.grant(n - len(chunk))
                await streamclient.send(ws, relay.Eof())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(_quietly, sender)
                while True:
                    msg = await streamclient.receive(ws)
                    if isinstance(msg, relay.Credit):
                        credit.grant(msg.bytes)
                    elif isinstance(msg, relay.Done):
                        nursery.cancel_scope.cancel()
                        return msg.size
        raise AssertionError("unreachable")  # pragma: no cover


async def _quietly(sender: Callable[[], Awaitable[None]]) -> None:
    """Run the sender; a stream Core closed is reported by the reader."""
    try:
        await sender()
    except ConnectionClosed:
        pass


def _message(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, ConnectionClosed):
        return "the connection to Core was lost"
    return str(exc) or type(exc).__name__
