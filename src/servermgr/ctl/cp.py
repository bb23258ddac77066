"""``ctl cp``: copy a file to nodes (push) or from one node (pull), through Core.

    ctl cp LOCAL TARGET:PATH     push to every node TARGET picks (a name, a list,
                                 a label selector such as role=web, or *)
    ctl cp NODE:PATH LOCAL       pull from one node

The side with a ``:`` is the remote one; node names, ids and label
selectors never hold a ``:``, paths on the node are absolute. Data moves in
chunks within credit (``common/flow.py``): ctl reads or writes one chunk at
a time, so a file of any size costs a bounded amount of memory. The SHA-256
of what was sent or received is checked at the end against what Core and
the node saw, and printed. A pull is written beside its destination and
renamed into place once its checksum matches, like a push on the node.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio
from trio_websocket import ConnectionClosed

from servermgr.common import flow, relay, selector
from servermgr.common.errors import (
    ApiError,
    AuthError,
    ClientError,
    CoreUnreachableError,
    UsageError,
    single_error,
)
from servermgr.common.text import printable
from servermgr.ctl import streamclient
from servermgr.ctl.output import print_items

if TYPE_CHECKING:
    from servermgr.common.tls import Trust

PARALLEL = 4  # nodes a push writes to at once


@dataclass(frozen=True)
class Remote:
    target: str
    path: str


@dataclass
class Outcome:
    """One node's transfer: ``error`` None when it succeeded."""

    node: str
    path: str
    size: int = 0
    sha256: str | None = None
    error: str | None = None
    code: str | None = None

    def doc(self) -> dict[str, object]:
        return {
            "node": self.node,
            "path": self.path,
            "ok": self.error is None,
            "size": self.size,
            "sha256": self.sha256,
            "error": None if self.error is None else {"code": self.code, "message": self.error},
        }


def split_remote(arg: str) -> Remote | None:
    """``TARGET:PATH`` as a Remote; None for a local path (no ``:`` before a ``/``)."""
    target, sep, path = arg.partition(":")
    if not sep or "/" in target or not target:
        return None
    if not path.startswith("/"):
        raise UsageError(f"{arg!r}: the path on the node must be absolute (TARGET:/path)")
    return Remote(target, path)


def parse_mode(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        raise UsageError(f"--mode {text!r}: give octal permissions such as 0644") from None
    if not 0 <= mode <= 0o7777:
        raise UsageError(f"--mode {text!r}: permissions go from 0000 to 7777")
    return mode


def parse_owner(text: str | None) -> tuple[str | None, str | None]:
    """``user``, ``user:group`` or ``:group``."""
    if text is None:
        return None, None
    user, _, group = text.partition(":")
    return user or None, group or None


@dataclass
class Connection:
    base_url: str
    key: str | None
    trust: Trust | None


async def push(
    conn: Connection,
    node: str,
    local: Path,
    path: str,
    *,
    mode: int | None = None,
    owner: str | None = None,
    group: str | None = None,
) -> Outcome:
    """Send ``local`` to ``path`` on ``node``; the outcome says how it went."""
    out = Outcome(node, path)
    try:
        fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read {local}: {exc.strerror or exc}") from None
    try:
        size = os.fstat(fd).st_size
        request = relay.FileRequest(
            node=node, direction="push", path=path, size=size, mode=mode, owner=owner, group=group
        )
        async with streamclient.open_stream(
            conn.base_url, conn.key, conn.trust, relay.FILES_PATH
        ) as ws:
            await streamclient.send(ws, request)
            ready = await streamclient.receive(ws)
            if not isinstance(ready, relay.Ready):
                raise ClientError("Core answered the open with something else than ready")
            out.node = ready.node
            digest = hashlib.sha256()
            sent = 0

            async def read(n: int) -> bytes:
                nonlocal sent
                chunk = await trio.to_thread.run_sync(os.read, fd, n)
                digest.update(chunk)
                sent += len(chunk)
                return chunk

            def end() -> relay.End:
                return relay.End(size=sent, sha256=digest.hexdigest())

            result = await streamclient.push(ws, read, end, relay.Result)
            out.size, out.sha256 = result.size, result.sha256
        if out.sha256 != digest.hexdigest():
            raise ClientError("Core's checksum differs from what was sent")
    except (ClientError, ConnectionClosed, BaseExceptionGroup) as exc:
        _record(out, exc)
    finally:
        os.close(fd)
    return out


def _record(out: Outcome, exc: BaseException) -> None:
    """Put a failure of this one transfer in ``out``.

    What is not about this transfer goes on: Core unreachable, the key or
    its role refused (the same for every node), anything unexpected.
    """
    err = single_error(exc)
    if isinstance(err, ConnectionClosed):
        err = ClientError("the connection to Core was lost")
    if not isinstance(err, ClientError) or isinstance(err, (AuthError, CoreUnreachableError)):
        raise err from None
    if isinstance(err, ApiError) and err.status in (401, 403):
        raise err from None
    out.error, out.code = err.message, getattr(err, "code", "failed")


async def pull(
    conn: Connection, node: str, path: str, dest: Path, *, mode: int | None = None
) -> Outcome:
    """Fetch ``path`` from ``node`` into the file ``dest`` (see ``destination``)."""
    out = Outcome(node, path)
    out_path = dest.parent / f".{dest.name[:200]}.servermgr-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write into {dest.parent}: {exc.strerror or exc}") from None
    placed = False
    try:
        async with streamclient.open_stream(
            conn.base_url, conn.key, conn.trust, relay.FILES_PATH
        ) as ws:
            await streamclient.send(ws, relay.FileRequest(node=node, direction="pull", path=path))
            ready = await streamclient.receive(ws)
            if not isinstance(ready, relay.Ready):
                raise ClientError("Core answered the open with something else than ready")
            out.node = ready.node
            budget = flow.Budget()
            budget.granted(flow.WINDOW)
            await streamclient.send(ws, relay.Credit(bytes=flow.WINDOW))
            digest = hashlib.sha256()
            got = 0
            while True:
                msg = await streamclient.receive(ws)
                if isinstance(msg, bytes):
                    await trio.to_thread.run_sync(_write_all, fd, msg)
                    digest.update(msg)
                    got += len(msg)
                    back = budget.consumed(len(msg))
                    if back:  # Core may have sent the end and closed: the next read says
                        with contextlib.suppress(ConnectionClosed):
                            await streamclient.send(ws, relay.Credit(bytes=back))
                elif isinstance(msg, relay.Result):
                    break
        if msg.sha256 != digest.hexdigest() or msg.size != got:
            raise ClientError(
                f"checksum mismatch: Core says {msg.sha256}, received {digest.hexdigest()}"
            )
        final_mode = mode if mode is not None else (ready.mode or 0o644) & 0o777
        os.fchmod(fd, final_mode)
        os.fsync(fd)
        os.rename(out_path, dest)
        placed = True
        out.size, out.sha256, out.path = got, msg.sha256, f"{path} -> {dest}"
    except (ClientError, ConnectionClosed, BaseExceptionGroup) as exc:
        _record(out, exc)
    finally:
        os.close(fd)
        if not placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out_path)
    return out


def destination(local: Path, path: str) -> Path:
    """Where a pull of ``path`` into ``local`` lands: into it when it is a directory."""
    return local / os.path.basename(path) if local.is_dir() else local


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def push_many(
    conn: Connection,
    nodes: list[str],
    local: Path,
    path: str,
    *,
    mode: int | None = None,
    owner: str | None = None,
    group: str | None = None,
    parallel: int = PARALLEL,
) -> list[Outcome]:
    """``push`` to each node, ``parallel`` at a time; outcomes in the order of ``nodes``."""
    st = os.stat(local)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{local} is not a regular file")
    outcomes: dict[str, Outcome] = {}
    limiter = trio.Semaphore(parallel)

    async def one(node: str) -> None:
        async with limiter:
            outcomes[node] = await push(
                conn, node, local, path, mode=mode, owner=owner, group=group
            )

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(one, node)
    return [outcomes[n] for n in nodes]


def run(
    conn: Connection,
    list_nodes: Callable[[], list[dict[str, Any]]],
    src: str,
    dst: str,
    *,
    mode: str | None = None,
    owner: str | None = None,
    parallel: int = PARALLEL,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """``ctl cp SRC DST``: the exit status (0 all copied, 1 any failed)."""
    out = out or sys.stdout
    remote_src, remote_dst = split_remote(src), split_remote(dst)
    if (remote_src is None) == (remote_dst is None):
        raise UsageError(
            "give one local path and one TARGET:/path (ctl cp LOCAL TARGET:PATH, "
            "or ctl cp NODE:PATH LOCAL)"
        )
    file_mode = parse_mode(mode)
    if parallel < 1:
        raise UsageError("--parallel must be at least 1")
    if remote_dst is not None:
        user, group = parse_owner(owner)
        nodes = pick(remote_dst.target, list_nodes)
        outcomes = trio.run(
            partial(
                push_many,
                conn,
                nodes,
                Path(src),
                remote_dst.path,
                mode=file_mode,
                owner=user,
                group=group,
                parallel=parallel,
            )
        )
    else:
        assert remote_src is not None
        if owner is not None:
            raise UsageError("--owner is for a push; a pulled file belongs to you")
        if not _single(remote_src.target):
            raise UsageError(f"pull from one node, not {remote_src.target!r}")
        dest = destination(Path(dst), remote_src.path)
        outcomes = [
            trio.run(partial(pull, conn, remote_src.target, remote_src.path, dest, mode=file_mode))
        ]
    if as_json:
        print_items([o.doc() for o in outcomes], out)
    else:
        width = max(len(o.node) for o in outcomes)
        for o in outcomes:
            out.write(f"{printable(o.node):<{width}}  {describe(o)}\n")
    out.flush()
    return 0 if all(o.error is None for o in outcomes) else 1


def describe(o: Outcome) -> str:
    if o.error is not None:
        return f"{o.code or 'failed'}: {printable(o.error, lines=False)}"
    return f"{printable(o.path)}  {fmt_size(o.size)}  sha256 {o.sha256}"


def fmt_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _single(target: str) -> bool:
    return not any(c in target for c in ",=*") and target != "all"


def pick(spec: str, list_nodes: Callable[[], list[dict[str, Any]]]) -> list[str]:
    """The node names a target spec picks (one name goes to Core as given)."""
    if _single(spec):
        return [spec]
    try:
        target = selector.parse_target(spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    known = [_Node(n["id"], n["name"], n.get("labels") or {}) for n in list_nodes()]
    picked, unknown = selector.select(target, known)
    if unknown:
        raise UsageError(
            f"no node named {', '.join(map(repr, unknown))} (see: servermgr ctl nodes)"
        )
    if not picked:
        raise UsageError(f"no node matches {spec!r} (see: servermgr ctl nodes)")
    return [n.name for n in picked]


@dataclass(frozen=True)
class _Node:
    id: str
    name: str
    labels: dict[str, str]
