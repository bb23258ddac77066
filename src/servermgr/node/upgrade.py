"""Agent upgrades on the node: take a new zipapp from Core, check it, switch, restart.

Core sends ``agent.upgrade`` (version, SHA-256, size, timeout) and then the
file as in a push (``file.data`` within credit, ``file.end``). The agent
writes it beside the zipapp it runs from (``sys.argv[0]``), checks its size
and SHA-256, and runs ``NEW --version``, which must name the announced
version: a build that does not even start is refused here and nothing
changes. Then the switch, each step atomic:

    1. the running zipapp is kept as ``NAME.prev`` (hard link, renamed);
    2. ``<data_dir>/upgrade.json`` records both versions and a deadline;
    3. a watchdog process of the *old* version starts (its own session):
       ``servermgr node upgrade-watch MARKER``;
    4. the new file is renamed over ``NAME``; the agent answers
       ``file.result`` and re-executes itself (same pid, same arguments,
       same identity: systemd sees the same main process).

The new agent removes the marker once Core welcomed it. If the marker is
still there at the deadline (the new version crashed, hangs, or cannot
reach Core), the watchdog stops whatever runs as the agent, renames
``NAME.prev`` back and starts the old version again: under systemd by
letting the unit restart it, else by becoming it (exec).

Allowed by the node's policy (``policy.check_upgrade``); only an agent that
runs from a zipapp can replace itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from servermgr import __version__
from servermgr.common import flow, proto
from servermgr.common.config import ExecConfig
from servermgr.common.files import write_atomic
from servermgr.node import policy
from servermgr.node.files import Placement, TransferFailed, receive_into

log = logging.getLogger("servermgr.node.upgrade")

Send = Callable[[proto.NodeMessage], Awaitable[None]]
MARKER = "upgrade.json"
PROBE_TIMEOUT = 60.0
WATCH_EVERY = 0.5
STOP_GRACE = 5.0


@dataclass(frozen=True)
class Marker:
    """What the watchdog needs to roll back (``<data_dir>/upgrade.json``)."""

    old: str
    new: str
    current: str
    prev: str
    deadline: float  # wall clock
    pid: int
    argv: list[str]
    cwd: str
    systemd: bool


def running_zipapp(argv0: str) -> Path | None:
    """The zipapp this process runs from (``sys.argv[0]``), or None."""
    path = Path(argv0).resolve()
    return path if path.is_file() and zipfile.is_zipfile(path) else None


class Upgrades:
    """The agent upgrade of one connection to Core (one at a time)."""

    def __init__(
        self,
        exec_policy: ExecConfig,
        data_dir: Path,
        zipapp: Path | None,
        send: Send,
        nursery: trio.Nursery,
        switched: Callable[[list[str]], None],
    ) -> None:
        self._policy = exec_policy
        self._data_dir = data_dir
        self._zipapp = zipapp
        self._send = send
        self._nursery = nursery
        self._switched = switched
        self._inbox: dict[str, tuple[trio.MemorySendChannel[proto.CoreMessage], flow.Budget]] = {}

    def handle(self, msg: proto.CoreMessage) -> None:
        if isinstance(msg, proto.AgentUpgrade):
            if self._inbox:
                return  # one at a time; Core sends no second one
            send_ch, recv_ch = trio.open_memory_channel[proto.CoreMessage](1024)
            budget = flow.Budget()
            self._inbox[msg.transfer_id] = (send_ch, budget)
            self._nursery.start_soon(self._run, msg, recv_ch, budget)
            return
        assert isinstance(msg, (proto.FileData, proto.FileEnd, proto.FileCancel))
        entry = self._inbox.get(msg.transfer_id)
        if entry is None:
            return
        if isinstance(msg, proto.FileData) and not entry[1].spend(len(msg.chunk)):
            msg = proto.FileCancel(transfer_id=msg.transfer_id, reason="sent past its credit")
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
            entry[0].send_nowait(msg)

    async def _run(
        self,
        msg: proto.AgentUpgrade,
        inbox: trio.MemoryReceiveChannel[proto.CoreMessage],
        budget: flow.Budget,
    ) -> None:
        tid = msg.transfer_id
        try:
            argv = await self._stage(msg, inbox, budget)
        except TransferFailed as exc:
            log.warning("upgrade to %s refused: %s", msg.version, exc)
            await self._send(proto.FileResult(transfer_id=tid, error=str(exc)[:4000]))
            return
        finally:
            self._inbox.pop(tid, None)
        log.warning("upgrading from %s to %s: restarting", __version__, msg.version)
        await self._send(
            proto.FileResult(transfer_id=tid, error=None, sha256=msg.sha256, size=msg.size)
        )
        self._switched(argv)

    async def _stage(
        self,
        msg: proto.AgentUpgrade,
        inbox: trio.MemoryReceiveChannel[proto.CoreMessage],
        budget: flow.Budget,
    ) -> list[str]:
        why = policy.check_upgrade(self._policy)
        if why is not None:
            raise TransferFailed(why)
        if self._zipapp is None:
            raise TransferFailed(
                f"this agent does not run from a zipapp ({sys.argv[0]}), so it cannot replace "
                "itself: upgrade it the way it was installed"
            )
        zipapp = self._zipapp
        tid = msg.transfer_id
        place = await trio.to_thread.run_sync(
            Placement.open, str(zipapp), tid, msg.size, lambda access, path: None
        )
        try:
            end = await receive_into(place, inbox, budget, self._send, tid, "the new agent")
            return await self._switch(msg, end, place, zipapp)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(place.discard)

    async def _switch(
        self, msg: proto.AgentUpgrade, end: proto.FileEnd, place: Placement, zipapp: Path
    ) -> list[str]:
        if end.sha256 != msg.sha256 or end.size != msg.size:
            raise TransferFailed("the file that came is not the one announced")
        await trio.to_thread.run_sync(place.verify, end)
        staged = zipapp.parent / place.tmp
        await trio.to_thread.run_sync(_seal, place)
        version = await trio.to_thread.run_sync(_probe, staged)
        if version != msg.version:
            raise TransferFailed(
                f"the new agent says it is version {version}, not {msg.version} as announced"
            )
        argv = [sys.executable, str(zipapp), *sys.argv[1:]]
        marker = Marker(
            old=__version__,
            new=msg.version,
            current=str(zipapp),
            prev=str(zipapp) + ".prev",
            deadline=time.time() + msg.timeout,
            pid=os.getpid(),
            argv=sys.argv[1:],
            cwd=os.getcwd(),
            systemd="INVOCATION_ID" in os.environ,
        )
        await trio.to_thread.run_sync(self._commit_switch, place, marker)
        return argv

    def _commit_switch(self, place: Placement, marker: Marker) -> None:
        """Keep the old agent, arm the watchdog, put the new one in place."""
        d = place.dir_fd
        with contextlib.suppress(FileNotFoundError):
            os.unlink(place.name + ".prev.tmp", dir_fd=d)
        os.link(place.name, place.name + ".prev.tmp", src_dir_fd=d, dst_dir_fd=d)
        os.replace(place.name + ".prev.tmp", place.name + ".prev", src_dir_fd=d, dst_dir_fd=d)
        path = self._data_dir / MARKER
        write_atomic(path, json.dumps(asdict(marker)).encode(), replace=True)
        watchdog = subprocess.Popen(
            [sys.executable, marker.prev, "node", "upgrade-watch", str(path)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        watchdog.wait(10)  # it forks into the background and returns at once
        os.replace(place.tmp, place.name, src_dir_fd=d, dst_dir_fd=d)
        place.placed = True
        os.fsync(d)


def _seal(place: Placement) -> None:
    os.fchmod(place.fd, 0o755)
    os.fsync(place.fd)
    os.close(place.fd)
    place.fd = -1


def _probe(path: Path) -> str:
    """The version ``python NEW --version`` names; TransferFailed when it does not start."""
    try:
        done = subprocess.run(
            [sys.executable, str(path), "--version"],
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TransferFailed(f"the new agent does not start: {exc}") from None
    words = done.stdout.decode(errors="replace").split()
    if done.returncode != 0 or len(words) != 2 or words[0] != "servermgr":
        err = done.stderr.decode(errors="replace").strip().splitlines()
        why = err[-1] if err else f"exit {done.returncode}"
        raise TransferFailed(f"the new agent does not start: {why[:300]}")
    return words[1]


def committed(data_dir: Path) -> str | None:
    """After Core welcomed this agent: end a pending upgrade to this version.

    The old version it replaced, or None when no upgrade was pending.
    """
    path = data_dir / MARKER
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("new") != __version__ and time.time() < float(doc.get("deadline", 0)):
        return None  # not ours: the watchdog decides
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return str(doc.get("old")) if doc.get("new") == __version__ else None


def watch(marker_path: Path) -> None:
    """``node upgrade-watch``: roll back unless the new agent commits in time.

    Forks into the background first (the agent waits for the parent only).
    """
    if os.fork():
        os._exit(0)
    while True:
        try:
            marker = Marker(**json.loads(marker_path.read_text()))
        except (OSError, ValueError, TypeError):
            return  # committed (removed) or unreadable: nothing to do
        if time.time() >= marker.deadline:
            break
        time.sleep(WATCH_EVERY)
    # The old file first: under systemd, stopping the agent makes the unit stop
    # every process in it (this one too) before it restarts.
    os.replace(marker.prev, marker.current)
    with contextlib.suppress(FileNotFoundError):
        marker_path.unlink()
    _stop(marker.pid, signal.SIGKILL if marker.systemd else signal.SIGTERM)
    sys.stderr.write(
        f"servermgr: agent {marker.new} was not welcomed by Core in time; "
        f"rolled back to {marker.old}\n"
    )
    if marker.systemd:
        return  # the unit restarts the agent (Restart=always): from the old file now
    os.chdir(marker.cwd)
    os.execv(sys.executable, [sys.executable, marker.current, *marker.argv])


def _stop(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    end = time.monotonic() + STOP_GRACE
    while time.monotonic() < end and _alive(pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
