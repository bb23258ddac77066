"""File transfers on the node: write a pushed file into place, read a pulled one.

One ``FileTransfers`` per connection to Core: each transfer is a task in the
connection's nursery, so a dropped connection cancels it and a push leaves
nothing behind (its temporary file is removed). The reader task hands
messages over without waiting (``handle``); each transfer holds at most the
credit it granted (``common/flow.py``).

A push is written beside its target as ``.NAME.servermgr-ID.tmp`` (created
with O_EXCL|O_NOFOLLOW in the target's directory, opened once and used by
descriptor), checked against the size and SHA-256 Core sends at the end,
given its mode and owner, fsynced and renamed over the target; then the
directory is fsynced. The path is judged by the node's policy
(``policy.check_file``) as asked and again with every symbolic link
resolved, and once more from the opened descriptor (``/proc/self/fd``), so
a link swapped in between cannot lead a transfer outside what is allowed.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import logging
import os
import pwd
import stat
from collections.abc import Awaitable, Callable

import trio

from servermgr.common import flow, proto
from servermgr.common.config import ExecConfig, FilesConfig
from servermgr.node import policy

log = logging.getLogger("servermgr.node.files")

Send = Callable[[proto.NodeMessage], Awaitable[None]]
MAX_QUEUED = 1024  # messages one push may have waiting (bytes are bounded by its credit)
DEFAULT_MODE = 0o644


class TransferFailed(Exception):
    """A transfer cannot go on; the message is what Core and the operator see."""


class FileTransfers:
    """The file transfers of one connection to Core."""

    def __init__(
        self, files: FilesConfig, exec_policy: ExecConfig, send: Send, nursery: trio.Nursery
    ) -> None:
        self._files = files
        self._policy = exec_policy
        self._send = send
        self._nursery = nursery
        self._pushes: dict[str, tuple[trio.MemorySendChannel[proto.CoreMessage], flow.Budget]] = {}
        self._pulls: dict[str, tuple[flow.Credit, trio.CancelScope]] = {}

    def handle(self, msg: proto.CoreMessage) -> None:
        """Take one file message from Core (never waits)."""
        if isinstance(msg, proto.FileOpen):
            tid = msg.transfer_id
            if tid in self._pushes or tid in self._pulls:
                return  # a repeated open: the first one answers
            if msg.direction == "push":
                send_ch, recv_ch = trio.open_memory_channel[proto.CoreMessage](MAX_QUEUED)
                budget = flow.Budget()
                self._pushes[tid] = (send_ch, budget)
                self._nursery.start_soon(self._run, tid, self._push(msg, recv_ch, budget))
            else:
                credit, scope = flow.Credit(), trio.CancelScope()
                self._pulls[tid] = (credit, scope)
                self._nursery.start_soon(self._run, tid, self._pull(msg, credit, scope))
            return
        if isinstance(msg, proto.StreamCredit):
            pull = self._pulls.get(msg.stream_id)
            if pull is not None and not pull[0].grant(msg.bytes):
                pull[0].close()
            return
        if isinstance(msg, proto.FileCancel) and msg.transfer_id in self._pulls:
            self._pulls[msg.transfer_id][1].cancel()
            return
        assert isinstance(msg, (proto.FileData, proto.FileEnd, proto.FileCancel))
        push = self._pushes.get(msg.transfer_id)
        if push is None:
            return  # over already (failed, or cancelled): Core has its result
        send_ch, budget = push
        if isinstance(msg, proto.FileData) and not budget.spend(len(msg.chunk)):
            msg = proto.FileCancel(transfer_id=msg.transfer_id, reason="sent past its credit")
        try:
            send_ch.send_nowait(msg)
        except trio.WouldBlock:
            with contextlib.suppress(trio.WouldBlock):
                send_ch.send_nowait(
                    proto.FileCancel(transfer_id=msg.transfer_id, reason="too many messages")
                )
        except trio.BrokenResourceError:
            pass

    async def _run(self, tid: str, work: Awaitable[proto.FileResult]) -> None:
        try:
            result = await work
        except TransferFailed as exc:
            result = proto.FileResult(transfer_id=tid, error=str(exc)[:4000])
        finally:
            self._pushes.pop(tid, None)
            self._pulls.pop(tid, None)
        if result.error:
            log.info("transfer %s failed: %s", tid, result.error)
        await self._send(result)

    # --- push -------------------------------------------------------------

    def _check(self, access: str, path: str) -> None:
        why = policy.check_file(access, path, self._files, self._policy)
        if why is not None:
            raise TransferFailed(why)

    def _resolve(self, access: str, path: str) -> str:
        """``path`` with every link resolved, checked again by the policy."""
        self._check(access, path)
        real = os.path.realpath(path)
        if real != path:
            why = policy.check_file(access, real, self._files, self._policy)
            if why is not None:
                raise TransferFailed(f"{path} resolves to {real}: {why}")
        return real

    async def _push(
        self,
        msg: proto.FileOpen,
        inbox: trio.MemoryReceiveChannel[proto.CoreMessage],
        budget: flow.Budget,
    ) -> proto.FileResult:
        tid = msg.transfer_id
        size = msg.size if msg.size is not None else 0
        if size > self._files.max_size:
            raise TransferFailed(
                f"{size} bytes is over this node's limit of {self._files.max_size} "
                "([files] max_size)"
            )
        target = await trio.to_thread.run_sync(self._resolve, "write", msg.path)
        place = await trio.to_thread.run_sync(Placement.open, target, tid, size, self._check)
        try:
            uid, gid, mode = await trio.to_thread.run_sync(place.attributes, msg)
            end = await receive_into(place, inbox, budget, self._send, tid, "it")
            digest = await trio.to_thread.run_sync(place.finish, end, uid, gid, mode)
            log.info("placed %s (%d bytes, sha256 %s)", target, end.size, digest)
            return proto.FileResult(transfer_id=tid, error=None, sha256=digest, size=end.size)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(place.discard)

    # --- pull -------------------------------------------------------------

    async def _pull(
        self, msg: proto.FileOpen, credit: flow.Credit, scope: trio.CancelScope
    ) -> proto.FileResult:
        tid = msg.transfer_id
        fd = await trio.to_thread.run_sync(self._open_read, msg.path)
        try:
            st = os.fstat(fd)
            await self._send(
                proto.FileReady(transfer_id=tid, size=st.st_size, mode=stat.S_IMODE(st.st_mode))
            )
            digest = hashlib.sha256()
            offset = 0
            with scope:
                while True:
                    n = await credit.take(flow.CHUNK)
                    if n == 0:
                        raise TransferFailed("Core granted more credit than a window")
                    chunk = await trio.to_thread.run_sync(os.read, fd, n)
                    if not chunk:
                        break
                    digest.update(chunk)
                    await self._send(proto.FileData(transfer_id=tid, offset=offset, chunk=chunk))
                    offset += len(chunk)
                    if len(chunk) < n:
                        credit.grant(n - len(chunk))
            if scope.cancelled_caught:
                raise TransferFailed("cancelled by Core")
            return proto.FileResult(
                transfer_id=tid, error=None, sha256=digest.hexdigest(), size=offset
            )
        finally:
            os.close(fd)

    def _open_read(self, path: str) -> int:
        real = self._resolve("read", path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise TransferFailed(f"cannot read {path}: {_reason(exc)}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TransferFailed(f"{path} is not a regular file")
            opened = _fd_path(fd)
            if opened is not None and opened != real:
                self._check("read", opened)
        except BaseException:
            os.close(fd)
            raise
        return fd


class Placement:
    """A pushed file being written beside its target (blocking calls: run in a thread)."""

    def __init__(self, dir_fd: int, name: str, tmp: str, fd: int, target: str, size: int) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.tmp = tmp
        self.fd = fd
        self.target = target
        self.size = size
        self.written = 0
        self.digest = hashlib.sha256()
        self.placed = False

    @classmethod
    def open(cls, target: str, tid: str, size: int, check: Callable[[str, str], None]) -> Placement:
        directory, name = os.path.split(target)
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise TransferFailed(f"cannot write into {directory}: {_reason(exc)}") from None
        try:
            opened = _fd_path(dir_fd)
            if opened is not None and opened != directory:
                check("write", os.path.join(opened, name))
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise TransferFailed(f"{target} exists and is not a regular file")
            vfs = os.fstatvfs(dir_fd)
            if vfs.f_bavail * vfs.f_frsize < size:
                raise TransferFailed(
                    f"not enough space in {directory}: {size} bytes needed, "
                    f"{vfs.f_bavail * vfs.f_frsize} free"
                )
            tmp = f".{name[:200]}.servermgr-{tid}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                raise TransferFailed(f"cannot write into {directory}: {_reason(exc)}") from None
        except BaseException:
            os.close(dir_fd)
            raise
        return cls(dir_fd, name, tmp, fd, target, size)

    def attributes(self, msg: proto.FileOpen) -> tuple[int, int, int]:
        """Owner, group and mode the placed file gets: asked, else the replaced file's."""
        try:
            old: os.stat_result | None = os.stat(self.name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            old = None
        uid = gid = -1
        if msg.owner is not None:
            try:
                uid = pwd.getpwnam(msg.owner).pw_uid
            except KeyError:
                raise TransferFailed(f"no user {msg.owner!r} on this node") from None
        elif old is not None and os.geteuid() == 0:
            uid = old.st_uid
        if msg.group is not None:
            try:
                gid = grp.getgrnam(msg.group).gr_gid
            except KeyError:
                raise TransferFailed(f"no group {msg.group!r} on this node") from None
        elif old is not None and os.geteuid() == 0:
            gid = old.st_gid
        if msg.mode is not None:
            mode = msg.mode
        else:
            mode = stat.S_IMODE(old.st_mode) if old is not None else DEFAULT_MODE
        return uid, gid, mode

    def write(self, data: proto.FileData) -> None:
        if data.offset != self.written:
            raise TransferFailed(f"data at offset {data.offset}, expected {self.written}")
        if self.written + len(data.chunk) > self.size:
            raise TransferFailed(f"more data than the {self.size} bytes announced")
        view = memoryview(data.chunk)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            raise TransferFailed(f"cannot write {self.target}: {_reason(exc)}") from None
        self.digest.update(data.chunk)
        self.written += len(data.chunk)

    def finish(self, end: proto.FileEnd, uid: int, gid: int, mode: int) -> str:
        digest = self.verify(end)
        try:
            if uid != -1 or gid != -1:
                os.fchown(self.fd, uid, gid)
            os.fchmod(self.fd, mode)
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.rename(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            self.placed = True
            os.fsync(self.dir_fd)
        except OSError as exc:
            raise TransferFailed(f"cannot place {self.target}: {_reason(exc)}") from None
        return digest

    def verify(self, end: proto.FileEnd) -> str:
        """The SHA-256 of what was written; TransferFailed unless it is all of what was sent."""
        digest = self.digest.hexdigest()
        if end.size != self.written or end.size != self.size:
            raise TransferFailed(f"got {self.written} bytes of {end.size}")
        if end.sha256 != digest:
            raise TransferFailed(f"checksum mismatch: sent {end.sha256}, received {digest}")
        return digest

    def discard(self) -> None:
        """Remove the temporary file unless placed; close what is open."""
        if self.fd != -1:
            os.close(self.fd)
            self.fd = -1
        if not self.placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp, dir_fd=self.dir_fd)
        os.close(self.dir_fd)


def _fd_path(fd: int) -> str | None:
    """The path the kernel has for an open descriptor (None where /proc does not say)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return path if path.startswith("/") and not path.endswith(" (deleted)") else None


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link is in the way (not followed)"
    return exc.strerror or str(exc)


async def receive_into(
    place: Placement,
    inbox: trio.MemoryReceiveChannel[proto.CoreMessage],
    budget: flow.Budget,
    send: Send,
    tid: str,
    what: str,
) -> proto.FileEnd:
    """Say ready and grant a window, then write each chunk into ``place``, granting
    credit back as it is written, until the end; TransferFailed when cancelled or
    when the stream ends before the end (``what`` names the file in that message)."""
    budget.granted(flow.WINDOW)
    await send(proto.FileReady(transfer_id=tid))
    await send(proto.StreamCredit(stream_id=tid, bytes=flow.WINDOW))
    async with inbox:
        async for item in inbox:
            if isinstance(item, proto.FileCancel):
                raise TransferFailed(f"cancelled: {item.reason}")
            if isinstance(item, proto.FileEnd):
                return item
            assert isinstance(item, proto.FileData)
            await trio.to_thread.run_sync(place.write, item)
            back = budget.consumed(len(item.chunk))
            if back:
                await send(proto.StreamCredit(stream_id=tid, bytes=back))
    raise TransferFailed(f"the transfer ended before all of {what} came")
