"""``ctl exec``'s standard input, streamed to the job on one node (core/stdin_api.py).

``ctl exec`` follows the job's output on its main thread; ``Forwarder``
sends our stdin beside it on a thread of its own (a trio loop with the
stdin WebSocket, ctl/stdin_stream.py): one chunk read at a time, within the
credit the node grants, then ``eof``. So ctl holds at most one chunk
whatever the size, and a command that never reads its stdin (or exits
first) does not wait for it. The thread starts before the job is made and
loads trio and the WebSocket client meanwhile. If the stream fails before
the end, the job is cancelled (the node cancels it too): the output then
says so. Light to import: ctl exec imports it only when there is stdin.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from servermgr.common.errors import ApiError, ClientError, single_error

if TYPE_CHECKING:
    from servermgr.common.tls import Trust

JOIN = 5.0  # seconds to let the forwarder finish once the job is done
RETRY = 1.0  # seconds between tries while the job waits for its node to come back


class Forwarder(threading.Thread):
    """Streams ``fd`` to a job's stdin once ``begin`` names it; ``error`` says why it
    stopped early."""

    def __init__(
        self,
        base_url: str,
        key: str,
        trust: Trust | None,
        *,
        patience: float = 0.0,
        fd: int = 0,
    ) -> None:
        super().__init__(name="stdin", daemon=True)  # an unread pipe never holds ctl's exit
        self.base_url = base_url
        self.key = key
        self.trust = trust
        self.fd = fd
        self.patience = patience  # the job's --wait: its node may come back meanwhile
        self.job: tuple[str, str] | None = None  # (job id, node id), once made
        self._named = threading.Event()
        self.size: int | None = None  # what the process took, once done
        self.error: str | None = None

    def begin(self, job_id: str, node: str) -> None:
        """The job is made: stream to it."""
        self.job = (job_id, node)
        self._named.set()

    def abandon(self) -> None:
        """No job was made: stop without sending anything."""
        self._named.set()

    def run(self) -> None:
        import trio  # here: loaded while the main thread makes the job

        from servermgr.ctl import stdin_stream

        self._named.wait()
        if self.job is None:
            return
        job_id, node = self.job
        deadline = time.monotonic() + self.patience
        while True:
            try:
                self.size = trio.run(
                    stdin_stream.stream, self.base_url, self.key, self.trust, job_id, node, self.fd
                )
                return
            except stdin_stream.FAILURES as exc:
                err = single_error(exc)
                offline = isinstance(err, ApiError) and err.code == "node_offline"
                if offline and time.monotonic() < deadline:
                    time.sleep(RETRY)  # the job waits for its node (--wait): so do we
                    continue
                self.error = stdin_stream.message(exc)
                self._cancel(job_id)
                return

    def finish(self) -> str | None:
        """Wait a moment for the stream's end; the error to report, if any."""
        self.join(JOIN)
        return self.error

    def _cancel(self, job_id: str) -> None:
        """The input did not get through whole: the job must not run on part of it."""
        from servermgr.ctl.client import Client

        try:
            Client(self.base_url, self.key, trust=self.trust).cancel_job(job_id)
        except ClientError:
            pass  # the main thread reports what it sees of the job
