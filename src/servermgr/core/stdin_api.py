"""``ctl exec``'s standard input, streamed to the job's process on one node.

ctl makes the job with ``stdin_stream`` (the node gives its process a pipe),
then opens this WebSocket (operate role, like the job itself) and sends
``open`` naming the job and the node. Once the job's ``job.run`` is on its
way, Core sends ``stdin.open``; the node grants credit, Core passes each
grant on to ctl and each chunk from ctl on to the node (one chunk held here
at a time; ``common/flow.py``), and ctl's ``eof`` becomes ``stdin.end``.
When the node says the input is over (``stdin.closed``: end of file given,
or the process exited or closed its stdin first, which is no error) ctl gets
``done`` with the bytes the process took. A ctl that goes away before its
``eof`` cuts the input short, and the node cancels the job: a script cut in
two never runs as if whole. The job itself is audited when it is made.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from starlette.websockets import WebSocket

from servermgr.common import proto, relay
from servermgr.common.errors import ProtocolError
from servermgr.core.auth import Access
from servermgr.core.jobstate import State
from servermgr.core.openapi import Doc
from servermgr.core.scheduler import Scheduler
from servermgr.core.stream_relay import (
    ANSWER_TIMEOUT,
    Relay,
    StreamDeps,
    accept,
    end,
    refuse,
)
from servermgr.core.streams import StreamFailed

log = logging.getLogger("servermgr.core.stdin")

POLL = 0.02  # how often to look whether a queued job was sent to its node


class StdinApi:
    def __init__(self, deps: StreamDeps, scheduler: Scheduler) -> None:
        self.deps = deps
        self.scheduler = scheduler

    def ws_routes(self) -> list[tuple[str, Callable[[WebSocket], Awaitable[None]], Doc]]:
        doc = Doc(
            "A job's stdin (ctl exec with a pipe or a file): open, then data within credit",
            auth=Access.OPERATE,
            websocket=True,
            messages="JSON text frames tagged by type, binary frames for data (docs/reference/"
            "protocol.md, Standard input): open {job, node} for a job made with stdin_stream, "
            "then ready and credit, data within credit, eof; done {size} once the node's "
            "process has all of it or stopped reading, or an error.",
        )
        return [(relay.STDIN_PATH, self.websocket, doc)]

    async def websocket(self, ws: WebSocket) -> None:
        opened = await accept(self.deps, ws, relay.decode_stdin_client)
        if opened is None:
            return
        request, link = opened
        assert isinstance(request, relay.StdinRequest)
        try:
            size = await self._relay(link, request.job)
        except StreamFailed as exc:
            if exc.code not in ("node_offline", "not_found", "too_old", "forbidden"):
                # Cut short: the node cancels the job rather than run it on part of its input.
                with trio.move_on_after(5):
                    await self.deps.sessions.deliver(
                        link.node.id, proto.StdinEnd(stream_id=link.stream.id, complete=False)
                    )
            log.info("stdin of job %s on %s: %s", request.job, link.node.name, exc.message)
            await refuse(ws, exc.code, exc.message)
            return
        finally:
            self.deps.router.close(link.stream)
        log.info("stdin of job %s on %s: %d bytes taken", request.job, link.node.name, size)
        await end(ws)

    async def _sent(self, link: Relay, job_id: str) -> float | None:
        """Wait until the job's ``job.run`` went to the node: how long either side may
        then be silent (as long as the job may run); None when the job is over."""
        protocol = self.deps.sessions.protocol_of(link.node.id) or 0
        if protocol < proto.STDIN_SINCE:
            raise StreamFailed(
                "too_old",
                f"node {link.node.name} runs agent {link.node.agent_version or '?'}, too old "
                f"to stream standard input (protocol {proto.STDIN_SINCE}): give -n / --no-stdin",
            )
        # None: over already (the command exited without reading), or no such job
        # with stdin_stream on this node: either way no input is taken.
        entry = self.scheduler.stdin_entry(job_id, link.node.id)
        if entry is None:
            return None
        if entry.job.principal != link.who:
            # Only whoever made the job feeds it: another operator who learns the
            # id cannot put words into someone else's command.
            raise StreamFailed("forbidden", f"job {job_id} was made by another principal")
        idle = entry.job.timeout + ANSWER_TIMEOUT
        while entry is not None and entry.state is State.QUEUED:  # --wait: the node was away
            await trio.sleep(POLL)
            entry = self.scheduler.stdin_entry(job_id, link.node.id)
        return None if entry is None else idle

    async def _relay(self, link: Relay, job_id: str) -> int:
        sid = link.stream.id
        idle = await self._sent(link, job_id)
        if idle is None:
            await link.to_ctl(relay.Ready(id=sid, node=link.node.name))
            await link.to_ctl(relay.Done(size=0))
            return 0
        await link.to_node(proto.StdinOpen(stream_id=sid, job_id=job_id))
        await link.to_ctl(relay.Ready(id=sid, node=link.node.name))

        async def forward(chunk: bytes) -> None:
            await link.to_node(proto.StdinData(stream_id=sid, data=chunk))

        async def finish(control: str) -> None:
            try:
                eof = relay.decode_stdin_client(control)
            except ProtocolError as exc:
                raise StreamFailed("bad_request", exc.reason) from None
            if not isinstance(eof, relay.Eof):
                raise StreamFailed("bad_request", "expected data or eof")
            await link.to_node(proto.StdinEnd(stream_id=sid, complete=True))

        # The process may take a while to read the rest, or stop reading early.
        closed = await link.push(proto.StdinClosed, forward, finish, idle)
        if closed.error is not None:
            raise StreamFailed("refused", f"node {link.node.name}: {closed.error}")
        await link.to_ctl(relay.Done(size=closed.size))
        return closed.size
