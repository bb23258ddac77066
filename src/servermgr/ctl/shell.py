"""``ctl shell NODE``: an interactive shell on a node, like ssh.

The local terminal goes into raw mode, so every key (Ctrl-C, Ctrl-Z, arrows)
travels to the node's PTY and reaches its foreground process there; the
window size follows the local terminal (SIGWINCH). Input is sent within the
credit the node grants, output is taken within the credit this side grants
(``common/flow.py``). The shell's exit status is ours (128 + N for a shell
killed by signal N); a failure to connect or a refusal exits 255, as ssh does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import termios
import tty
from collections.abc import Iterator

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from servermgr.common import flow, relay
from servermgr.common.errors import ClientError, single_error
from servermgr.ctl import streamclient
from servermgr.ctl.cp import Connection

FAILED = 255
EOF_KEY = b"\x04"  # Ctrl-D: end of file for the PTY's line discipline


def terminal_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal on ``fd``; 24x80 when it is not one."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return max(1, size.lines), max(1, size.columns)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """``fd``'s terminal in raw mode for the block (nothing when it is not a terminal)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)  # keys typed ahead are kept, not flushed
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run(conn: Connection, node: str, *, stdin: int = 0, stdout: int = 1) -> int:
    """Open a shell on ``node`` with this terminal; its exit status."""
    rows, cols = terminal_size(stdin)
    term = os.environ.get("TERM", "xterm")[:64] or "xterm"
    request = relay.ShellRequest(node=node, rows=rows, cols=cols, term=term)
    try:
        async with streamclient.open_stream(
            conn.base_url, conn.key, conn.trust, relay.SHELL_PATH
        ) as ws:
            await streamclient.send(ws, request)
            ready = await streamclient.receive(ws)
            if not isinstance(ready, relay.Ready):
                raise ClientError("Core answered the open with something else than ready")
            with raw_terminal(stdin):
                return await _session(ws, stdin, stdout)
    except BaseExceptionGroup as group:
        raise single_error(group) from None


async def _session(ws: WebSocketConnection, stdin: int, stdout: int) -> int:
    credit = flow.Credit()  # input the node takes
    budget = flow.Budget()  # output we take
    budget.granted(flow.WINDOW)
    await streamclient.send(ws, relay.Credit(bytes=flow.WINDOW))

    async def keys() -> None:
        while True:
            n = await credit.take(flow.CHUNK)
            await trio.lowlevel.wait_readable(stdin)
            data = os.read(stdin, n)
            if not data:
                # End of input (piped, not a terminal): the end-of-file key, so a
                # shell reading commands from it ends when they do, as with ssh.
                await ws.send_message(EOF_KEY)
                return
            if len(data) < n:
                credit.grant(n - len(data))
            await ws.send_message(data)

    async def resizes() -> None:
        with trio.open_signal_receiver(signal.SIGWINCH) as signals:
            async for _ in signals:
                rows, cols = terminal_size(stdin)
                await streamclient.send(ws, relay.Resize(rows=rows, cols=cols))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(streamclient.quietly, keys)
        nursery.start_soon(streamclient.quietly, resizes)
        while True:
            msg = await streamclient.receive(ws)
            if isinstance(msg, bytes):
                _write_all(stdout, msg)
                back = budget.consumed(len(msg))
                if back:
                    with contextlib.suppress(ConnectionClosed):
                        await streamclient.send(ws, relay.Credit(bytes=back))
            elif isinstance(msg, relay.Credit):
                credit.grant(msg.bytes)
            elif isinstance(msg, relay.Exit):
                nursery.cancel_scope.cancel()
                if msg.exit_code is not None:
                    return msg.exit_code
                return 128 + (msg.signal or 0)
    raise AssertionError("unreachable")  # pragma: no cover


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue
