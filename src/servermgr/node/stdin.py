"""A job's standard input streamed from Core (``ctl exec`` with a pipe or a file).

A ``job.run`` with ``stdin_stream`` gets a pipe as its stdin and a ``Feed``
(made by the executor before the job waits for a slot). Core then opens the
stream with ``stdin.open`` naming the job; this side grants a window of
credit, writes each ``stdin.data`` to the pipe as fast as the process reads
it and grants credit back as it writes (``common/flow.py``), so the node
holds at most one window whatever the size. ``stdin.end`` closes the pipe:
end of file. The process exiting or closing its stdin first ends the stream
too and is not an error, as with a pipe; ``stdin.closed`` tells Core either
way. Input cut short (``stdin.end`` not ``complete``, a sender past its
credit, the connection to Core lost before the end, or no stream within
``ATTACH_WITHIN`` of the start) cancels the job: a script cut in two never
runs as if it were whole.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from servermgr.common import flow, proto

log = logging.getLogger("servermgr.node.stdin")

Send = Callable[[proto.NodeMessage], Awaitable[None]]
MAX_QUEUED = 1024  # messages; credit bounds their bytes to a window
ATTACH_WITHIN = 60.0  # seconds from the start for Core's stdin.open (ctl gone: cancel)
STDIN_MESSAGES = (proto.StdinOpen, proto.StdinData, proto.StdinEnd)


class Feed:
    """One job's streamed stdin: what came from Core, written to the process's pipe."""

    def __init__(self, job_id: str, cancel: Callable[[], None]) -> None:
        self.job_id = job_id
        self._cancel = cancel
        self._put, self._inbox = trio.open_memory_channel[bytes | bool](MAX_QUEUED)
        self.budget = flow.Budget()
        self.stream_id: str | None = None
        self._send: Send | None = None
        self.written = 0
        self.over = trio.Event()  # the pipe is closed; the stream takes no more
        self.attached = trio.Event()

    def attach(self, stream_id: str, send: Send) -> bool:
        """Take Core's stream; False when one was taken already or the input is over."""
        if self.stream_id is not None or self.over.is_set():
            return False
        self.stream_id, self._send = stream_id, send
        self.budget.granted(flow.WINDOW)
        self.attached.set()
        return True

    def put(self, item: bytes | bool) -> None:
        """Data for the pipe, or the end (True: end of file; False: cut short). Never waits."""
        if isinstance(item, bytes) and not self.budget.spend(len(item)):
            self.cut("input past the credit this node granted")
            return
        try:
            self._put.send_nowait(item)
        except trio.WouldBlock:
            self.cut("more input messages than a window holds")
        except trio.BrokenResourceError:
            pass  # over: the process is gone or closed its stdin

    def cut(self, why: str) -> None:
        """The input will not come whole: cancel the job (never waits)."""
        if self.over.is_set():
            return
        log.warning("job %s: stdin cut short (%s); cancelling the job", self.job_id, why)
        self._send = None
        self._cancel()

    async def pump(self, pipe: trio.abc.SendStream, scope: trio.CancelScope) -> None:
        """Write what comes to ``pipe`` until the end, then close it (the executor
        cancels ``scope`` once the process is gone); then tell Core."""
        with scope:
            with trio.move_on_after(ATTACH_WITHIN):
                await self.attached.wait()
            if not self.attached.is_set():
                # ctl made the job and never sent its input: do not wait for the timeout.
                self.cut(f"no stdin stream came within {ATTACH_WITHIN:g} s")
            try:
                async with pipe, self._inbox:
                    async for item in self._inbox:
                        if isinstance(item, bool):
                            if not item:
                                self.cut("the sender was lost")
                            break
                        await pipe.send_all(item)
                        self.written += len(item)
                        back = self.budget.consumed(len(item))
                        if back:
                            await self._tell(proto.StreamCredit(stream_id=self._sid(), bytes=back))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the process exited or closed its stdin: not an error (as a pipe)
        await self.close()

    async def close(self) -> None:
        """The input is over (idempotent): tell Core how much the process took."""
        if self.over.is_set():
            return
        self.over.set()
        self._put.close()
        if self.stream_id is not None:
            await self._tell(proto.StdinClosed(stream_id=self.stream_id, size=self.written))

    def _sid(self) -> str:
        assert self.stream_id is not None  # data comes only on an attached stream
        return self.stream_id

    async def _tell(self, msg: proto.NodeMessage) -> None:
        if self._send is not None:
            await self._send(msg)


class Stdins:
    """The stdin streams of one connection to Core; ``feed_of`` finds a job's Feed.

    A lost connection ends them (the tasks live in the connection's nursery):
    a feed still open is cut, which cancels its job.
    """

    def __init__(
        self, feed_of: Callable[[str], Feed | None], send: Send, nursery: trio.Nursery
    ) -> None:
        self._feed_of = feed_of
        self._send = send
        self._nursery = nursery
        self._feeds: dict[str, Feed] = {}

    def handle(self, msg: proto.CoreMessage) -> None:
        """Take one stdin message from Core (never waits)."""
        if isinstance(msg, proto.StdinOpen):
            feed = self._feed_of(msg.job_id)
            if feed is None or not feed.attach(msg.stream_id, self._send):
                # The job is over (or never took a stream): it reads no more.
                error = None if feed is None or feed.over.is_set() else "stdin taken already"
                closed = proto.StdinClosed(stream_id=msg.stream_id, size=0, error=error)
                self._nursery.start_soon(self._send, closed)
                return
            self._feeds[msg.stream_id] = feed
            self._nursery.start_soon(self._serve, msg.stream_id, feed)
            return
        assert isinstance(msg, (proto.StdinData, proto.StdinEnd))
        feed = self._feeds.get(msg.stream_id)
        if feed is None:
            return  # over already
        feed.put(msg.data if isinstance(msg, proto.StdinData) else msg.complete)

    async def _serve(self, sid: str, feed: Feed) -> None:
        try:
            await self._send(proto.StreamCredit(stream_id=sid, bytes=flow.WINDOW))
            await feed.over.wait()
        finally:
            del self._feeds[sid]
            feed.cut("the connection to Core was lost")  # nothing if the input is over
