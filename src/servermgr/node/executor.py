"""Run jobs on this node: shell commands and systemd service actions.

A job runs in a process group of its own (``start_new_session``), and the
job *is* that group: when the job ends for any reason -- its shell exited,
it timed out, it was cancelled, or the agent is shutting down -- whatever is
left of the group gets SIGTERM, then SIGKILL after ``grace`` seconds. So
``sh -c 'sleep 100 &'`` finishes as soon as the shell exits (after a short
drain of the output pipes) and leaves no orphan behind. Something meant to
outlive the job belongs in a service (a service action, or ``systemd-run``);
a process that moves itself to another process group (``setsid``) escapes
this cleanup, and the job stops reading its pipes after the drain period.

Output is passed on as raw bytes through the ``emit`` callback: chunks of at
most ``proto.MAX_CHUNK_BYTES``, small reads coalesced for ``chunk_interval``
seconds, each chunk tagged with its byte offset in its stream.
"""

from __future__ import annotations

import math
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from servermgr.common import proto
from servermgr.common.config import ExecConfig
from servermgr.common.text import printable
from servermgr.node import policy as exec_policy
from servermgr.node.stdin import Feed

Emit = Callable[[proto.JobOutput], Awaitable[None]]
Stream = Literal["stdout", "stderr"]

NO_SYSTEMD = "systemd is not available on this node (systemctl not found)"
SYSTEMD_NOT_RUNNING = (
    "systemd is not running on this node (systemctl is installed, but /run/systemd/system "
    "is missing)"
)
_MAX_ERROR = 4096
STDIN_CHUNK = 64 * 1024  # bytes written to a job's stdin at a time
_POLL = 0.02  # how often to look whether a signalled process group is gone


@dataclass(eq=False)
class _JobState:
    """What ``cancel`` needs to reach a queued or running job."""

    job_id: str
    cancelled: bool = False
    scope: trio.CancelScope | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


@dataclass(eq=False)
class _Pump:
    """Reads one output stream to EOF, keeps ``cap`` bytes and emits them in chunks."""

    job_id: str
    name: Stream
    stream: trio.abc.ReceiveStream
    cap: int
    emit: Emit
    interval: float
    emitted: int = 0
    truncated: bool = False
    eof: trio.Event = field(default_factory=trio.Event)
    _stopping: bool = field(default=False, init=False)
    _scope: trio.CancelScope | None = field(default=None, init=False)

    def stop(self) -> None:
        """Stop reading (the pipe may be held open by an escaped process)."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        buf = bytearray()
        first = 0.0  # when the oldest byte in ``buf`` was read
        while not self._stopping:
            data: bytes | bytearray | None = None
            deadline = first + self.interval if buf else math.inf
            with trio.CancelScope(deadline=deadline) as self._scope:
                data = await self.stream.receive_some(proto.MAX_CHUNK_BYTES)
            self._scope = None
            if data == b"":
                break
            if data:
                keep = data[: max(0, self.cap - self.emitted - len(buf))]
                self.truncated |= len(keep) < len(data)
                if keep and not buf:
                    first = trio.current_time()
                buf += keep
            while len(buf) >= proto.MAX_CHUNK_BYTES:
                await self._send(buf, proto.MAX_CHUNK_BYTES)
            if buf and trio.current_time() >= first + self.interval:
                await self._send(buf, len(buf))
        self.eof.set()
        if buf:
            await self._send(buf, len(buf))

    async def _send(self, buf: bytearray, size: int) -> None:
        chunk = bytes(buf[:size])
        del buf[:size]
        offset = self.emitted
        self.emitted += len(chunk)
        await self.emit(proto.JobOutput(self.job_id, self.name, offset, chunk))


class Executor:
    """Runs jobs under the node's ``[exec]`` policy, at most ``max_concurrent`` at once.

    ``grace`` is how long a process group has between SIGTERM and SIGKILL;
    ``drain`` how long output is still read after the job's shell exited
    while something else holds its pipes. Jobs past the limit wait for a slot
    in arrival order.
    """

    def __init__(
        self,
        policy: ExecConfig,
        *,
        grace: float = 5.0,
        chunk_interval: float = 0.05,
        systemctl: str = "systemctl",
        drain: float = 0.25,
        systemd_run_dir: str = "/run/systemd/system",
    ) -> None:
        self._systemd_run_dir = systemd_run_dir
        self._policy = policy
        self._grace = grace
        self._chunk_interval = chunk_interval
        self._systemctl = systemctl
        self._drain = drain
        self._slots = trio.CapacityLimiter(max(1, policy.max_concurrent))
        self._jobs: dict[str, _JobState] = {}
        self._feeds: dict[str, Feed] = {}  # jobs whose stdin comes on a stream

    def stdin_feed(self, job_id: str) -> Feed | None:
        """Where a queued or running job with ``stdin_stream`` takes its input (None: no
        such job here, or its input is over)."""
        return self._feeds.get(job_id)

    def is_active(self, job_id: str) -> bool:
        """True while the job is queued or running here."""
        return job_id in self._jobs

    def cancel(self, job_id: str) -> bool:
        """Stop a queued or running job; False if there is no such job here.

        A queued job returns "cancelled" without starting; a running one gets
        SIGTERM then SIGKILL, like a timeout, and returns "cancelled".
        """
        state = self._jobs.get(job_id)
        if state is None:
            return False
        state.cancel()
        return True

    async def run(
        self, job: proto.JobRun, emit: Emit, *, on_start: Callable[[int], None] | None = None
    ) -> proto.JobResult:
        """Run ``job`` to the end, passing its output to ``emit``, and say how it went.

        Refusals and failures to start are results, not exceptions. Each
        stream keeps at most ``job.output_cap`` bytes (0 keeps none); the rest
        is read and dropped, and flagged as truncated. ``duration`` counts
        from the start of the process (0 for a job that never started). ``emit``
        should not raise (buffer or drop while disconnected): if it does, the
        job's processes are killed and the exception propagates. If the
        calling task is cancelled, the processes are killed before ``run``
        returns. A ``job_id`` already queued or running here is a
        ``ValueError``: callers de-duplicate re-sent jobs with ``is_active``.
        """
        reason = exec_policy.check(job, self._policy)
        if reason is not None:
            return _result(job, "refused", error=reason)
        if job.job_id in self._jobs:
            raise ValueError(f"job {job.job_id} is already queued or running on this node")
        state = _JobState(job.job_id)
        self._jobs[job.job_id] = state
        feed = None
        if job.stdin_stream is True:
            feed = self._feeds[job.job_id] = Feed(job.job_id, state.cancel)
        try:
            acquired = False
            with trio.CancelScope() as state.scope:
                await self._slots.acquire_on_behalf_of(state)
                acquired = True
            state.scope = None
            if not acquired:
                return _result(job, "cancelled", error="cancelled while waiting for a slot")
            try:
                if state.cancelled:
                    return _result(job, "cancelled", error="cancelled while waiting for a slot")
                return await self._start(job, emit, state, on_start, feed)
            finally:
                self._slots.release_on_behalf_of(state)
        finally:
            del self._jobs[job.job_id]
            if feed is not None:
                del self._feeds[job.job_id]
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await feed.close()  # never started, or a pump cut short

    async def _start(
        self,
        job: proto.JobRun,
        emit: Emit,
        state: _JobState,
        on_start: Callable[[int], None] | None,
        feed: Feed | None,
    ) -> proto.JobResult:
        if job.service is not None:  # the unit name passed exec_policy.check
            systemctl = shutil.which(self._systemctl)
            if systemctl is None:
                return _result(job, "error", error=NO_SYSTEMD)
            if not os.path.isdir(self._systemd_run_dir):  # noqa: ASYNC240  # sd_booted(3), a stat
                return _result(job, "error", error=SYSTEMD_NOT_RUNNING)
            argv = [systemctl, job.service.action, job.service.unit]
        else:
            assert job.command is not None
            argv = ["/bin/sh", "-c", job.command]
        env = dict(os.environ)
        options: dict[str, Any] = {}
        if self._policy.run_as is not None:
            problem = run_as(self._policy.run_as, env, options)
            if problem is not None:
                return _result(job, "error", error=problem)
        env |= job.env
        started = trio.current_time()
        try:
            proc = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.DEVNULL if job.stdin is None and feed is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=env,
                cwd=job.cwd,
                **options,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return _result(job, "error", error=_start_error(exc, job))
        if on_start is not None:
            on_start(proc.pid)  # the process group id, for cleanup after an agent crash
        return await self._supervise(job, emit, state, proc, started, feed)

    async def _supervise(
        self,
        job: proto.JobRun,
        emit: Emit,
        state: _JobState,
        proc: trio.Process,
        started: float,
        feed: Feed | None = None,
    ) -> proto.JobResult:
        pgid = proc.pid  # start_new_session: the child leads its own group
        assert proc.stdout is not None
        assert proc.stderr is not None
        pumps = [
            _Pump(job.job_id, "stdout", proc.stdout, job.output_cap, emit, self._chunk_interval),
            _Pump(job.job_id, "stderr", proc.stderr, job.output_cap, emit, self._chunk_interval),
        ]
        stopped_by: Literal["timed_out", "cancelled"] | None = None
        try:
            async with trio.open_nursery() as nursery:
                for pump in pumps:
                    nursery.start_soon(pump.run)
                feeding = trio.CancelScope()
                if proc.stdin is not None and feed is not None:
                    nursery.start_soon(feed.pump, proc.stdin, feeding)
                elif proc.stdin is not None and job.stdin is not None:
                    nursery.start_soon(_feed, proc.stdin, job.stdin, feeding)
                with trio.CancelScope(deadline=started + job.timeout) as state.scope:
                    if state.cancelled:
                        state.scope.cancel()
                    await proc.wait()
                if state.scope.cancelled_caught:
                    stopped_by = "cancelled" if state.cancelled else "timed_out"
                    await self._terminate(proc, pgid)
                # The shell is gone; whatever still holds its pipes is left over.
                await self._drain_output(pumps, state)
                await self._terminate(proc, pgid)
                await self._drain_output(pumps, None)
                for pump in pumps:
                    pump.stop()
                feeding.cancel()  # whatever still holds the pipe will not read it now
        finally:
            state.scope = None
            with trio.CancelScope(shield=True):
                if proc.returncode is None or _group_alive(pgid):
                    await self._terminate(proc, pgid)
                for stream in (proc.stdout, proc.stderr):
                    await stream.aclose()
        duration = trio.current_time() - started
        code = proc.returncode
        assert code is not None
        errors = {"timed_out": f"timed out after {job.timeout:g} s", "cancelled": "cancelled"}
        return _result(
            job,
            stopped_by or ("succeeded" if code == 0 else "failed"),
            error=errors[stopped_by] if stopped_by else None,
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            duration=duration,
            stdout=pumps[0],
            stderr=pumps[1],
        )

    async def _drain_output(self, pumps: list[_Pump], state: _JobState | None) -> None:
        """Wait up to ``drain`` seconds for EOF on every pump (cut short by ``cancel``)."""
        with trio.move_on_after(self._drain) as scope:
            if state is not None:
                state.scope = scope
                if state.cancelled:
                    scope.cancel()
            for pump in pumps:
                await pump.eof.wait()
        if state is not None:
            state.scope = None

    async def _terminate(self, proc: trio.Process, pgid: int) -> None:
        """SIGTERM the job's process group, then SIGKILL it after ``grace``.

        Returns once the group leader is reaped and no live member is left
        (or, after SIGKILL, once the leader is reaped).
        """
        if proc.returncode is not None and not _group_alive(pgid):
            return
        _killpg(pgid, signal.SIGTERM)
        with trio.move_on_after(self._grace):
            await proc.wait()
            await _group_gone(pgid)
            return
        _killpg(pgid, signal.SIGKILL)
        await proc.wait()


async def _group_gone(pgid: int) -> None:
    """Return once group ``pgid`` has no live process (no event exists for that: poll)."""
    while True:
        if not _group_alive(pgid):
            return
        await trio.sleep(_POLL)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """True if a process of group ``pgid`` is still running (zombies do not count).

    Zombies matter where PID 1 does not reap orphans (many containers): a
    group of zombies still answers ``killpg(pgid, 0)``.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True  # no procfs: assume alive, SIGKILL follows after the grace
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def run_as(user: str, env: dict[str, str], options: dict[str, Any]) -> str | None:
    """Fill ``options`` and ``env`` to run as ``user``; or why that is impossible."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"[exec] run_as user {user!r} does not exist on this node"
    env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        return (
            f"cannot run jobs as {user!r} ([exec] run_as): the agent runs as uid "
            f"{os.geteuid()}, and only root can switch users"
        )
    options.update(
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=os.getgrouplist(entry.pw_name, entry.pw_gid),
    )
    return None


async def _feed(stdin: trio.abc.SendStream, data: bytes, scope: trio.CancelScope) -> None:
    """Write the job's standard input, then close it (end of file). A process that
    exits or closes its stdin without reading it all is not an error (as with a pipe)."""
    with scope:
        try:
            async with stdin:
                for i in range(0, len(data), STDIN_CHUNK):
                    await stdin.send_all(data[i : i + STDIN_CHUNK])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _start_error(exc: BaseException, job: proto.JobRun) -> str:
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        if job.cwd is not None and exc.filename == job.cwd:
            return f"could not start: working directory {job.cwd!r}: {what}"
        if exc.filename is not None:
            return f"could not start: {exc.filename!s}: {what}"
        return f"could not start: {what}"
    return f"could not start: {exc}"


def _result(
    job: proto.JobRun,
    outcome: proto.JobOutcome,
    *,
    error: str | None = None,
    exit_code: int | None = None,
    signal: int | None = None,
    duration: float = 0.0,
    stdout: _Pump | None = None,
    stderr: _Pump | None = None,
) -> proto.JobResult:
    if error is not None:
        # Core refuses control characters in error texts (it may quote the command).
        error = printable(error, lines=True)
        if len(error) > _MAX_ERROR:
            error = error[:_MAX_ERROR] + "..."
    return proto.JobResult(
        job_id=job.job_id,
        outcome=outcome,
        exit_code=exit_code,
        signal=signal,
        error=error,
        duration=max(0.0, duration),
        stdout_bytes=stdout.emitted if stdout else 0,
        stderr_bytes=stderr.emitted if stderr else 0,
        stdout_truncated=stdout.truncated if stdout else False,
        stderr_truncated=stderr.truncated if stderr else False,
    )
