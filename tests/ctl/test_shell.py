"""``ctl shell`` through a real Core and a real agent, on a real pseudo-terminal.

ctl's side runs here with a PTY of its own as its terminal (the test types
into the PTY's master, as a user at a keyboard would); the node's side runs
a real shell on its own PTY.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import signal
import struct
import termios
from pathlib import Path

import pytest
import trio

from servermgr.common.config import Config
from servermgr.common.errors import ApiError
from servermgr.core.app import Core
from servermgr.ctl import cp
from servermgr.ctl import shell as ctl_shell
from tests.support import (
    StartNode,
    live_processes,
    make_token,
    node_config,
    online,
    wait_for,
)


def shell_node(
    core: Core, tmp_path: Path, name: str, *, on: bool, transcript: bool = False
) -> Config:
    cfg = node_config(core, tmp_path, name)
    return dataclasses.replace(
        cfg,
        exec=dataclasses.replace(
            cfg.exec, shell=on, shell_transcript=transcript, shell_command="/bin/sh"
        ),
    )


class Keyboard:
    """The user's side of ctl's terminal: what the screen shows, and typing."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        os.set_blocking(self.master, False)
        self.screen = b""

    async def read_until(self, marker: bytes, limit: float = 15) -> None:
        with trio.fail_after(limit):
            while marker not in self.screen:
                await trio.lowlevel.wait_readable(self.master)
                try:
                    self.screen += os.read(self.master, 65536)
                except BlockingIOError:
                    continue

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


async def test_prompt_echo_and_exit_code(core: Core, start_node: StartNode, tmp_path: Path) -> None:
    await start_node(
        core, "node-01", config=shell_node(core, tmp_path, "node-01", on=True, transcript=True)
    )
    await wait_for(lambda: online(core, "node-01"))
    kb = Keyboard()
    # As an agent started with '&' from a script: SIGINT and SIGQUIT ignored, which
    # its shells must not inherit (Ctrl-C below would not stop sleep).
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        async with trio.open_nursery() as nursery:
            codes: list[int] = []
            ended = trio.Event()

            async def ctl() -> None:
                conn = cp.Connection(core.url, core.key.value, None)
                codes.append(await ctl_shell.run(conn, "node-01", stdin=kb.slave, stdout=kb.slave))
                ended.set()

            nursery.start_soon(ctl)
            kb.type(b"echo h''i\r")  # the echo of what was typed is not the output
            await kb.read_until(b"hi\r\n")
            kb.type(b"sleep 37.5\r")
            await wait_for(lambda: bool(live_processes("37.5")))
            kb.type(b"\x03")  # Ctrl-C reaches sleep on the node, not ctl
            # The node's terminal discards input still queued when it handles the
            # Ctrl-C (as any terminal does): type on once sleep has gone.
            await wait_for(lambda: not live_processes("37.5"))
            kb.type(b"echo after-$?\r")
            await kb.read_until(b"after-130")
            # The window follows the local terminal: resized here, seen by stty there.
            fcntl.ioctl(kb.master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
            os.kill(os.getpid(), signal.SIGWINCH)
            for _ in range(20):  # the resize and the keys travel apart: ask until it shows
                kb.type(b"stty size\r")
                with trio.move_on_after(1):
                    await kb.read_until(b"50 132")
                    break
            assert b"50 132" in kb.screen
            kb.type(b"exit 3\r")
            with trio.fail_after(15):
                await ended.wait()
        assert codes == [3]
    finally:
        kb.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    logs = list((tmp_path / "nodes" / "node-01" / "shell").iterdir())
    assert len(logs) == 1
    assert logs[0].stat().st_mode & 0o777 == 0o600
    assert b"after-130" in logs[0].read_bytes()


async def test_refused_when_policy_off_or_read_token(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    await start_node(core, "node-01", config=shell_node(core, tmp_path, "node-01", on=False))
    await wait_for(lambda: online(core, "node-01"))
    conn = cp.Connection(core.url, core.key.value, None)
    kb = Keyboard()
    try:
        with pytest.raises(ApiError) as refused:
            await ctl_shell.run(conn, "node-01", stdin=kb.slave, stdout=kb.slave)
    finally:
        kb.close()
    assert refused.value.code == "refused"
    assert "[exec] shell" in refused.value.message
    reader = await make_token(core, "looker", "read")
    with pytest.raises(ApiError) as forbidden:
        await ctl_shell.run(cp.Connection(core.url, reader, None), "node-01")
    assert forbidden.value.status == 403
