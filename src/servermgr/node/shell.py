"""Interactive shells on the node (``ctl shell``): a PTY and a login shell in it.

One ``Shells`` per connection to Core; each session is a task in the
connection's nursery, so a dropped connection hangs the shell up (SIGHUP to
its process group, SIGKILL if it lingers), as a dropped ssh connection does.
The shell runs in its own session with the PTY as its controlling terminal,
so Ctrl-C typed in ctl (raw mode) reaches the foreground job here. Output is
sent within the credit Core grants, input is taken within the credit this
side grants (``common/flow.py``): each direction holds at most one window.

Allowed only by ``[exec] shell = true`` (``policy.check_shell``); with
``[exec] shell_transcript = true`` what the session printed is kept in
``<data_dir>/shell/<session>.log`` (mode 0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from servermgr.common import flow, proto
from servermgr.common.config import ExecConfig
from servermgr.node import policy
from servermgr.node.executor import run_as

log = logging.getLogger("servermgr.node.shell")

Send = Callable[[proto.NodeMessage], Awaitable[None]]
MAX_QUEUED = 1024
HANGUP_GRACE = 2.0  # after SIGHUP, before SIGKILL
DRAIN_AFTER_EXIT = 1.0  # output still read after the shell exited (a child may hold the PTY)
INPUT_WINDOW = 64 * 1024
INPUT_MESSAGES = (proto.ShellInput, proto.ShellResize, proto.ShellClose)


class _Session:
    def __init__(self) -> None:
        self.input, self.inbox = trio.open_memory_channel[proto.CoreMessage](MAX_QUEUED)
        self.budget = flow.Budget()
        self.credit = flow.Credit()
        self.cancel = trio.CancelScope()


class Shells:
    """The shell sessions of one connection to Core."""

    def __init__(
        self, policy_: ExecConfig, data_dir: Path, send: Send, nursery: trio.Nursery
    ) -> None:
        self._policy = policy_
        self._data_dir = data_dir
        self._send = send
        self._nursery = nursery
        self._sessions: dict[str, _Session] = {}

    def handle(self, msg: proto.CoreMessage) -> None:
        """Take one shell message from Core (never waits)."""
        if isinstance(msg, proto.ShellOpen):
            if msg.session_id not in self._sessions:
                new = self._sessions[msg.session_id] = _Session()
                self._nursery.start_soon(self._run, msg, new)
            return
        assert isinstance(msg, (proto.StreamCredit, *INPUT_MESSAGES))
        sid = msg.stream_id if isinstance(msg, proto.StreamCredit) else msg.session_id
        session = self._sessions.get(sid)
        if session is None:
            return
        if isinstance(msg, proto.StreamCredit):
            if not session.credit.grant(msg.bytes):
                session.cancel.cancel()
            return
        if isinstance(msg, proto.ShellInput) and not session.budget.spend(len(msg.data)):
            session.cancel.cancel()  # past its credit: a broken Core; hang up
            return
        try:
            session.input.send_nowait(msg)
        except (trio.WouldBlock, trio.BrokenResourceError):
            session.cancel.cancel()

    async def _run(self, msg: proto.ShellOpen, session: _Session) -> None:
        sid = msg.session_id
        try:
            why = policy.check_shell(self._policy)
            if why is not None:
                await self._send(proto.ShellExit(session_id=sid, exit_code=None, error=why))
                return
            try:
                proc, master = await self._spawn(msg)
            except _StartError as exc:
                await self._send(proto.ShellExit(session_id=sid, exit_code=None, error=str(exc)))
                return
            log.info("shell %s: started (pid %d)", sid, proc.pid)
            try:
                await self._send(proto.ShellStarted(session_id=sid, pid=proc.pid))
                session.budget.granted(INPUT_WINDOW)
                await self._send(proto.StreamCredit(stream_id=sid, bytes=INPUT_WINDOW))
                await self._serve(msg, session, proc, master)
            finally:
                with trio.CancelScope(shield=True):
                    await _hang_up(proc)
                    os.close(master)
            code = proc.returncode or 0
            exit_code, sig = (code, None) if code >= 0 else (None, -code)
            log.info("shell %s: ended (exit %s, signal %s)", sid, exit_code, sig)
            await self._send(proto.ShellExit(session_id=sid, exit_code=exit_code, signal=sig))
        finally:
            del self._sessions[sid]

    async def _spawn(self, msg: proto.ShellOpen) -> tuple[trio.Process, int]:
        shell = self._policy.shell_command or os.environ.get("SHELL") or "/bin/sh"
        env = dict(os.environ, TERM=msg.term)
        options: dict[str, Any] = {}
        if self._policy.run_as is not None:
            problem = run_as(self._policy.run_as, env, options)
            if problem is not None:
                raise _StartError(problem)
        master, slave = os.openpty()
        os.set_blocking(master, False)
        try:
            _set_size(slave, msg.rows, msg.cols)
            proc = await trio.lowlevel.open_process(
                [shell],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=_take_terminal,
                env=env,
                cwd=_home(env),
                **options,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            os.close(master)
            raise _StartError(f"cannot start the shell {shell}: {exc}") from None
        finally:
            os.close(slave)
        return proc, master

    async def _serve(
        self, msg: proto.ShellOpen, session: _Session, proc: trio.Process, master: int
    ) -> None:
        sid = msg.session_id
        transcript = self._open_transcript(sid) if self._policy.shell_transcript else None
        try:
            with session.cancel:
                async with trio.open_nursery() as nursery:
                    output_done = trio.Event()
                    nursery.start_soon(
                        self._pump_output, sid, session, master, transcript, output_done
                    )
                    nursery.start_soon(self._pump_input, session, master, proc)
                    await proc.wait()
                    with trio.move_on_after(DRAIN_AFTER_EXIT):
                        await output_done.wait()
                    nursery.cancel_scope.cancel()
        finally:
            if transcript is not None:
                os.close(transcript)

    async def _pump_output(
        self, sid: str, session: _Session, master: int, transcript: int | None, done: trio.Event
    ) -> None:
        try:
            while True:
                n = await session.credit.take(flow.CHUNK)
                if n == 0:
                    return
                await trio.lowlevel.wait_readable(master)
                try:
                    data = os.read(master, n)
                except BlockingIOError:
                    session.credit.grant(n)
                    continue
                except OSError:  # EIO: every holder of the terminal closed it
                    return
                if not data:
                    return
                if len(data) < n:
                    session.credit.grant(n - len(data))
                if transcript is not None:
                    os.write(transcript, data)
                await self._send(proto.ShellOutput(session_id=sid, data=data))
        finally:
            done.set()

    async def _pump_input(self, session: _Session, master: int, proc: trio.Process) -> None:
        async with session.inbox:
            async for item in session.inbox:
                if isinstance(item, proto.ShellResize):
                    _set_size(master, item.rows, item.cols)
                elif isinstance(item, proto.ShellClose):
                    _signal(proc, signal.SIGHUP)
                elif isinstance(item, proto.ShellInput):
                    view = memoryview(item.data)
                    while view:
                        await trio.lowlevel.wait_writable(master)
                        try:
                            view = view[os.write(master, view) :]
                        except BlockingIOError:
                            continue
                    back = session.budget.consumed(len(item.data))
                    if back:
                        await self._send(proto.StreamCredit(stream_id=item.session_id, bytes=back))

    def _open_transcript(self, sid: str) -> int:
        folder = self._data_dir / "shell"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_APPEND
        return os.open(folder / f"{sid}.log", flags, 0o600)


class _StartError(Exception):
    pass


def _home(env: dict[str, str]) -> str:
    home = env.get("HOME", "/")
    return home if os.path.isdir(home) else "/"


# What a terminal's keys and job control send: the shell starts with them at their
# defaults whatever the agent inherited (an agent started with ``&`` from a script
# ignores SIGINT and SIGQUIT, and a shell keeps what it was started ignoring, so
# Ctrl-C would not stop a command in the session).
_TERMINAL_SIGNALS = (
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGPIPE,
    signal.SIGCHLD,
)


def _take_terminal() -> None:  # pragma: no cover - runs in the child before exec
    """Make the PTY (stdin) the controlling terminal of the new session, with the
    terminal's signals at their defaults and none blocked."""
    for sig in _TERMINAL_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_size(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _signal(proc: trio.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _hang_up(proc: trio.Process) -> None:
    """SIGHUP the shell's process group (as a closed terminal would), then SIGKILL."""
    if proc.returncode is None:
        _signal(proc, signal.SIGHUP)
        with trio.move_on_after(HANGUP_GRACE):
            await proc.wait()
    if proc.returncode is None:
        _signal(proc, signal.SIGKILL)
        await proc.wait()
    _signal(proc, signal.SIGHUP)  # what the shell left running in its group
