"""Node agent lifecycle: register, connect, hello, heartbeats, reconnect.

    Agent.run()
    ├── sampler        one sample per interval, connected or not
    └── connection loop (forever, with backoff)
        ├── sender     sends unsent samples as heartbeats
        └── reader     acks, jobs, errors; notices a silent Core

Samples stay in memory until Core acks them (it acks after they are on
disk), so a Core outage or a dropped connection loses none: they are sent
again, oldest first, after the next ``welcome``. The buffer is bounded; when
it overflows the oldest samples go first and are counted.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection

from servermgr import __version__
from servermgr.common import heap, proto
from servermgr.common.config import Config
from servermgr.common.errors import (
    CoreUnreachableError,
    NodeRemovedError,
    ProtocolError,
    RegistrationError,
)
from servermgr.node import identity as ident
from servermgr.node import transport
from servermgr.node.collector import Collector, system_info
from servermgr.node.spool import Spool, SpoolEntry

if TYPE_CHECKING:
    from servermgr.node.executor import Executor
    from servermgr.node.files import FileTransfers
    from servermgr.node.shell import Shells
    from servermgr.node.stdin import Feed, Stdins
    from servermgr.node.upgrade import Upgrades

FILE_MESSAGES = (proto.FileOpen, proto.FileData, proto.FileEnd, proto.FileCancel)
TRANSFER_MESSAGES = (proto.FileData, proto.FileEnd, proto.FileCancel)
SHELL_MESSAGES = (proto.ShellOpen, proto.ShellInput, proto.ShellResize, proto.ShellClose)
STDIN_MESSAGES = (proto.StdinOpen, proto.StdinData, proto.StdinEnd)

log = logging.getLogger("servermgr.node")

WELCOME_TIMEOUT = 10.0
MISSED_INTERVALS = 3
MAX_BUFFERED = 2000
FIRST_SAMPLE_AFTER = 1.0
CLOSE_REMOVED = 4004  # Core's close code: an operator removed this node
BACKOFF_NOTE = f"{transport.BACKOFF_BASE:g} s at first, at most {transport.BACKOFF_CAP:g} s"


class Rejected(Exception):
    """Core refused our credential (it no longer knows this node)."""


@dataclass
class Backlog:
    """Samples not yet acked: ``inflight`` were sent under a seq, ``unsent`` not yet."""

    limit: int = MAX_BUFFERED
    inflight: deque[tuple[int, proto.Sample]] = field(default_factory=deque)
    unsent: deque[proto.Sample] = field(default_factory=deque)
    seq: int = 0
    acked: int = 0  # the highest heartbeat.ack read, echoed in heartbeats
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.inflight) + len(self.unsent)

    def add(self, sample: proto.Sample) -> None:
        self.unsent.append(sample)
        while len(self) > self.limit:
            if self.inflight:
                self.inflight.popleft()
            else:
                self.unsent.popleft()
            self.dropped += 1

    def take(self, most: int = proto.MAX_SAMPLES_PER_HEARTBEAT) -> proto.Heartbeat | None:
        """The next heartbeat to send (samples move to ``inflight``), or None."""
        if not self.unsent:
            return None
        self.seq += 1
        batch = [self.unsent.popleft() for _ in range(min(most, len(self.unsent)))]
        self.inflight.extend((self.seq, s) for s in batch)
        return proto.Heartbeat(seq=self.seq, samples=batch, acked=self.acked)

    def ack(self, seq: int) -> None:
        self.acked = max(self.acked, seq)
        while self.inflight and self.inflight[0][0] <= seq:
            self.inflight.popleft()

    def requeue(self) -> None:
        """After a lost connection: what was in flight is sent again, first."""
        self.unsent.extendleft(s for _, s in reversed(self.inflight))
        self.inflight.clear()


@dataclass
class JobSpool:
    """A job's output and result (on disk in ``entry``) and how much this connection sent."""

    entry: SpoolEntry
    sent: int = 0

    @property
    def messages(self) -> list[proto.JobOutput | proto.JobResult]:
        return self.entry.messages

    @property
    def finished(self) -> bool:
        return self.entry.finished

    def rewind(self) -> None:
        self.sent = 0

    def next_unsent(self) -> proto.JobOutput | proto.JobResult | None:
        if self.sent >= len(self.messages):
            return None
        self.sent += 1
        return self.messages[self.sent - 1]


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        collector: Collector | None = None,
        clock: Callable[[], float] = time.time,
        backoff: transport.Backoff | None = None,
        zipapp: Path | None = None,
    ) -> None:
        self.core_addrs = config.require_node()
        self._addr = 0  # the address in use (or tried next)
        self.token = config.node.register_token  # needed only to enrol
        self.trust = config.node.trust  # how Core's certificate is checked on wss://
        self.config = config
        self.hostname = config.node.hostname or socket.gethostname()
        self.labels = dict(config.node.labels)
        self.data_dir = config.node.data_dir
        self.collector = collector or Collector(clock=clock)
        self.clock = clock
        self.backoff = backoff or transport.Backoff()
        self.backlog = Backlog()
        self.interval = config.server.heartbeat_interval
        self.ack_interval = 0.0  # Core acks at most this often (from welcome)
        self.identity: ident.Identity | None = None
        self.connected = False
        self._wake = trio.Event()
        self.jobs: dict[str, JobSpool] = {}
        self._accepted: list[str] = []  # job.runs taken, to answer with job.accepted
        self._executor: Executor | None = None
        self.spool = Spool(self.data_dir / "jobs")
        self._nursery: trio.Nursery | None = None
        self._state = ""
        # The zipapp this agent runs from, when its process may re-execute itself
        # (``node run``): only then can Core upgrade it (node/upgrade.py).
        self.zipapp = zipapp
        self.restart_argv: list[str] | None = None  # set: run this once ``run`` returns

    @property
    def executor(self) -> Executor:
        """Made (and imported) at the first job: an agent that only reports never loads it."""
        if self._executor is None:
            from servermgr.node.executor import Executor

            self._executor = Executor(self.config.exec)
        return self._executor

    def _state_change(self, state: str, level: int = logging.INFO) -> None:
        """Log a state once, not on every retry."""
        if state != self._state:
            self._state = state
            log.log(level, "%s", state)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; raises RegistrationError when Core refuses this node."""
        self.identity = ident.load(self.data_dir)
        for job_id, entry in self.spool.load().items():
            self.jobs[job_id] = JobSpool(entry)
        if self.jobs:
            log.info("%d job result(s) from before the restart wait for Core", len(self.jobs))
        self.collector.prime()
        refused: RegistrationError | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sampler)
            task_status.started()
            try:
                await self._connection_loop()
            except RegistrationError as exc:
                refused = exc
            nursery.cancel_scope.cancel()
        if refused is not None:
            raise refused

    async def _sampler(self) -> None:
        # The collector was primed at start: the first sample (with CPU %)
        # comes after at most a second, the rest at Core's interval.
        await trio.sleep(min(self.interval, FIRST_SAMPLE_AFTER))
        while True:
            self.backlog.add(self.collector.sample())
            self._wake.set()
            await trio.sleep(self.interval)

    async def _ensure_identity(self) -> ident.Identity:
        if self.identity is None:
            if not self.token:
                raise RegistrationError(
                    f"this node is not enrolled yet (no {self.data_dir / ident.FILE_NAME}): set "
                    "[node] register_token to an enroll token (on Core: servermgr key create "
                    "--role enroll --name NAME)"
                )
            doc = await transport.register(
                self.core_addr, self.token, self.hostname, self.labels, trust=self.trust
            )
            self.identity = ident.Identity(doc["node_id"], doc["name"], doc["credential"])
            await trio.to_thread.run_sync(ident.save, self.data_dir, self.identity)
            log.info("registered with Core as %s (%s)", self.identity.name, self.identity.node_id)
        return self.identity

    @property
    def core_addr(self) -> str:
        """The Core address in use, or tried next."""
        return self.core_addrs[self._addr]

    def _next_addr(self) -> bool:
        """Move on to the next Core address; False after the last (a round is over)."""
        self._addr = (self._addr + 1) % len(self.core_addrs)
        return self._addr != 0

    async def _connection_loop(self) -> None:
        """Connect, and reconnect: to the next Core address at once (several Core
        processes share the fleet), with backoff once every address failed."""
        while True:
            was_connected = False
            try:
                identity = await self._ensure_identity()
                async with transport.connect(
                    self.core_addr, identity.credential, trust=self.trust
                ) as ws:
                    await self._session(ws, identity)
                reason = "Core closed the connection"
            except RegistrationError:
                raise
            except ConnectionRejected as exc:
                code, message = transport.rejection(exc.body)
                if exc.status_code == 401 and code == "node_removed":
                    raise self._removed() from None
                if exc.status_code == 409 and code == "credential_in_use":
                    reason = f"Core refused the connection: {message}"
                elif exc.status_code == 401:
                    log.warning("Core no longer knows this node's credential; registering again")
                    self.identity = None
                    await trio.to_thread.run_sync(ident.forget, self.data_dir)
                    continue
                else:
                    why = f": {message}" if message else ""
                    reason = f"Core refused the connection (HTTP {exc.status_code}{why})"
            except (CoreUnreachableError, HandshakeError, OSError) as exc:
                reason = f"Core unreachable at {self.core_addr} ({_why(exc)})"
            except ConnectionClosed as exc:
                if exc.reason is not None and exc.reason.code == CLOSE_REMOVED:
                    raise self._removed() from None
                reason = f"connection lost ({_close_reason(exc)})"
            except trio.TooSlowError:
                reason = "Core did not answer in time"
            except HelloRefused as exc:
                reason = f"Core refused this node's hello: {exc.reason}"
            except ProtocolError as exc:
                reason = f"Core sent a bad message: {exc.reason}"
            finally:
                if self.connected:
                    was_connected = True
                    self.connected = False
                    self.backlog.requeue()
            if len(self.core_addrs) > 1:
                failed = self.core_addr
                if self._next_addr() or was_connected:
                    self._state_change(
                        f"disconnected from {failed}: {reason}; trying {self.core_addr}",
                        logging.WARNING,
                    )
                    continue
            delay = self.backoff.next()
            self._state_change(
                f"disconnected: {reason}; retrying with backoff (every {BACKOFF_NOTE})",
                logging.WARNING,
            )
            await trio.sleep(delay)

    def _removed(self) -> NodeRemovedError:
        name = self.identity.name if self.identity is not None else self.hostname
        return NodeRemovedError(
            f"Core removed this node ({name}) and revoked its credential, so it stops here. "
            f"To enrol it again: delete {self.data_dir / ident.FILE_NAME} and start the agent "
            "with an enroll token as [node] register_token"
        )

    async def _session(self, ws: WebSocketConnection, identity: ident.Identity) -> None:
        hello = proto.Hello(
            protocol=proto.PROTOCOL_VERSION,
            min_protocol=proto.OLDEST_PROTOCOL,
            node_id=identity.node_id,
            hostname=self.hostname,
            agent_version=__version__,
            info=system_info(),
            labels=self.labels,
            jobs=list(self.jobs),
        )
        await ws.send_message(proto.encode(hello))
        with trio.fail_after(WELCOME_TIMEOUT):
            while True:
                msg = proto.decode_from_core(await ws.get_message())
                if isinstance(msg, proto.Welcome):
                    break
                if isinstance(msg, proto.Error):
                    raise HelloRefused(f"{msg.code}: {msg.message}")
        self.interval = msg.heartbeat_interval
        self.ack_interval = msg.ack_interval
        self.connected = True
        self.backoff.reset()
        self._state_change(f"connected to Core at {self.core_addr} as {identity.name}")
        heap.trim()  # what start-up (or the outage) freed
        if (self.data_dir / "upgrade.json").exists():
            from servermgr.node.upgrade import committed

            old = await trio.to_thread.run_sync(committed, self.data_dir)
            if old is not None:
                log.warning("upgraded from %s to %s", old, __version__)
        if self.backlog.dropped:
            log.warning(
                "%d samples were dropped while disconnected (buffer full)", self.backlog.dropped
            )
            self.backlog.dropped = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender, ws)
            streams = _Streams(
                self.config,
                self.data_dir,
                ws,
                nursery,
                self.zipapp,
                self._switched,
                self._stdin_feed,
            )
            await self._reader(ws, streams)
            nursery.cancel_scope.cancel()

    async def _sender(self, ws: WebSocketConnection) -> None:
        """The one writer of this connection: heartbeats, then job output and results.

        Every spooled job message is sent again on a new connection (Core
        keeps each byte and each result once), in order, before newer ones.
        """
        for job in self.jobs.values():
            job.rewind()
        try:
            while True:
                while (hb := self.backlog.take()) is not None:
                    await ws.send_message(proto.encode(hb))
                await self._send_jobs(ws)
                self._wake = trio.Event()
                await self._wake.wait()
        except ConnectionClosed:
            # The reader sees the same close and reports it: two ConnectionClosed
            # would leave the session as an exception group the connection loop
            # does not catch, and the agent would exit instead of reconnecting.
            return

    async def _send_jobs(self, ws: WebSocketConnection) -> None:
        # A function of its own so that no local variable keeps the last job
        # (up to 1 MiB of output per stream) alive while the sender waits.
        while self._accepted:  # first: Core counts a job.run unanswered as a stall
            await ws.send_message(proto.encode(proto.JobAccepted(job_id=self._accepted.pop(0))))
        for spool in list(self.jobs.values()):
            while (msg := spool.next_unsent()) is not None:
                await ws.send_message(proto.encode(msg))

    def _switched(self, argv: list[str]) -> None:
        """The new agent is in place: stop, so that ``node run`` executes ``argv``."""
        self.restart_argv = argv
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def _stdin_feed(self, job_id: str) -> Feed | None:
        """Where a job here takes its streamed stdin (node/stdin.py)."""
        return None if self._executor is None else self._executor.stdin_feed(job_id)

    def _start_job(self, job: proto.JobRun) -> None:
        self._accepted.append(job.job_id)
        self._wake.set()
        spool = self.jobs.get(job.job_id)
        if spool is not None:
            # Core sent it again (it did not see our result yet): resend, never rerun.
            spool.rewind()
            self._wake.set()
            return
        # On disk before anything runs: a job this node has is never run twice.
        spool = self.jobs[job.job_id] = JobSpool(self.spool.received(job.job_id))
        assert self._nursery is not None
        self._nursery.start_soon(self._run_job, job, spool)

    async def _run_job(self, job: proto.JobRun, spool: JobSpool) -> None:
        async def emit(out: proto.JobOutput) -> None:
            spool.messages.append(out)
            self._wake.set()

        what = job.command if job.command is not None else f"service {job.service}"
        log.info("job %s: running %r", job.job_id, what[:200])

        def started(pgid: int) -> None:
            self.spool.started(spool.entry, pgid)
            # An empty chunk tells Core the job is running (not just sent).
            spool.messages.append(
                proto.JobOutput(job_id=job.job_id, stream="stdout", offset=0, chunk=b"")
            )
            self._wake.set()

        result = await self.executor.run(job, emit, on_start=started)
        log.info(
            "job %s: %s (exit %s) in %.2f s",
            job.job_id,
            result.outcome,
            result.exit_code,
            result.duration,
        )
        spool.messages.append(result)
        # Written at once (an agent that dies now still has it) and sent at
        # once; on disk right after, in a thread. The result does not wait for
        # the disk (an fsync took ~7 ms here while other work shared it): only
        # a power cut within those ms, before Core has it, turns it into
        # "the node agent stopped" (as a cut just before it would).
        self.spool.finished(spool.entry, sync=False)
        self._wake.set()
        await trio.to_thread.run_sync(self.spool.sync, job.job_id)

    def _job_acked(self, job_id: str) -> None:
        """Core stored the job's result: forget it, and give its output's memory back."""
        spool = self.jobs.get(job_id)
        if spool is None or not spool.finished:
            return
        del self.jobs[job_id], spool
        self.spool.acked(job_id)
        heap.trim()

    async def _reader(self, ws: WebSocketConnection, streams: _Streams) -> None:
        while True:
            # Core may send nothing between two acks: allow for that gap too.
            silent_after = (
                max(self.interval * MISSED_INTERVALS, self.ack_interval + 2 * self.interval) + 1.0
            )
            with trio.move_on_after(silent_after) as idle:
                text = await ws.get_message()
            if idle.cancelled_caught:
                self._state_change(
                    f"Core silent for {silent_after:g} s; reconnecting", logging.WARNING
                )
                return
            try:
                msg = proto.decode_from_core(text)
            except ProtocolError as exc:
                log.warning("ignoring a bad message from Core: %s", exc.reason)
                continue
            if isinstance(msg, proto.HeartbeatAck):
                self.backlog.ack(msg.seq)
            elif isinstance(msg, proto.JobRun):
                self._start_job(msg)
            elif isinstance(msg, proto.JobCancel):
                if self._executor is not None:
                    self._executor.cancel(msg.job_id)
            elif isinstance(msg, proto.JobAck):
                self._job_acked(msg.job_id)
            elif isinstance(
                msg,
                (
                    *FILE_MESSAGES,
                    *SHELL_MESSAGES,
                    *STDIN_MESSAGES,
                    proto.StreamCredit,
                    proto.AgentUpgrade,
                ),
            ):
                streams.handle(msg)
            elif isinstance(msg, proto.Error):
                log.warning("Core reports %s: %s", msg.code, msg.message)
            else:
                err = proto.Error(
                    code="unsupported",
                    message=f"{type(msg).__name__} is not supported by this agent",
                )
                await ws.send_message(proto.encode(err))


class _Streams:
    """File transfers, shells and stdin streams of one connection, made at their first message.

    Their tasks live in the connection's nursery: a lost connection ends them
    (a push's temporary file is removed, a shell is hung up).
    """

    def __init__(
        self,
        config: Config,
        data_dir: Path,
        ws: WebSocketConnection,
        nursery: trio.Nursery,
        zipapp: Path | None,
        switched: Callable[[list[str]], None],
        stdin_feed: Callable[[str], Feed | None],
    ) -> None:
        self._config = config
        self._stdin_feed = stdin_feed
        self._stdins: Stdins | None = None
        self._data_dir = data_dir
        self._ws = ws
        self._nursery = nursery
        self._zipapp = zipapp
        self._switched = switched
        self._files: FileTransfers | None = None
        self._shells: Shells | None = None
        self._upgrades: Upgrades | None = None
        self._kinds: dict[str, str] = {}  # stream id -> "file" or "shell", for credit

    async def send(self, msg: proto.NodeMessage) -> None:
        with contextlib.suppress(ConnectionClosed):  # the reader sees the close and ends all
            await self._ws.send_message(proto.encode(msg))

    def handle(self, msg: proto.CoreMessage) -> None:
        if isinstance(msg, STDIN_MESSAGES):
            if self._stdins is None:
                from servermgr.node.stdin import Stdins

                self._stdins = Stdins(self._stdin_feed, self.send, self._nursery)
            self._stdins.handle(msg)
            return
        if isinstance(msg, proto.StreamCredit):
            kind = self._kinds.get(msg.stream_id)
        elif isinstance(msg, TRANSFER_MESSAGES):
            kind = self._kinds.get(msg.transfer_id, "file")
        elif isinstance(msg, proto.FileOpen):
            kind = self._kinds[msg.transfer_id] = "file"
        elif isinstance(msg, proto.AgentUpgrade):
            kind = self._kinds[msg.transfer_id] = "upgrade"
        else:
            kind = "shell"
        if isinstance(msg, proto.ShellOpen):
            self._kinds[msg.session_id] = "shell"
        if kind == "upgrade":
            if self._upgrades is None:
                from servermgr.node.upgrade import Upgrades

                self._upgrades = Upgrades(
                    self._config.exec,
                    self._data_dir,
                    self._zipapp,
                    self.send,
                    self._nursery,
                    self._switched,
                )
            self._upgrades.handle(msg)
            return
        if kind == "file":
            if self._files is None:
                from servermgr.node.files import FileTransfers

                self._files = FileTransfers(
                    self._config.files, self._config.exec, self.send, self._nursery
                )
            self._files.handle(msg)
        elif kind == "shell":
            if self._shells is None:
                from servermgr.node.shell import Shells

                self._shells = Shells(self._config.exec, self._data_dir, self.send, self._nursery)
            self._shells.handle(msg)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class HelloRefused(ProtocolError):
    """Core answered the hello with an error instead of welcome."""


def _close_reason(exc: ConnectionClosed) -> str:
    r = exc.reason
    if r is None:
        return "closed"
    return f"code {r.code}{': ' + r.reason if r.reason else ''}"
