"""Files and shells tried as a new user would (issue 18's "done when"): the real
``servermgr ctl cp`` and ``ctl shell`` against a real Core and real agents.

node-01 (``role=web``) allows writes under its ``www`` directory and shells;
node-02 (``role=web`` too) allows writes elsewhere only and no shell.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.fleet import Fleet, cap, start_core
from tests.support import SERVERMGR, free_port

pytestmark = pytest.mark.e2e


def start_fleet(fleet: Fleet) -> list[str]:
    """Core and two nodes; the ctl arguments that reach Core."""
    port = free_port()
    _, key = start_core(fleet, port)
    for name, writable, shell in (("node-01", "www", "true"), ("node-02", "elsewhere", "false")):
        cfg = fleet.node_config(name, port, key)
        (fleet.tmp / f"{name}-{writable}").mkdir()
        with cfg.open("a") as f:
            f.write('labels = { role = "web" }\n')
            f.write(f'[exec]\nshell = {shell}\nshell_command = "/bin/sh"\n')
            f.write(f'[files]\nwrite = ["{fleet.tmp}/{name}-{writable}/**"]\nread = []\n')
        fleet.spawn(name, "node", "run", "--config", str(cfg))
    ctl = ["ctl", "--core", f"http://127.0.0.1:{port}", "--key", key]

    def both_online() -> bool:
        res = fleet.run(*ctl, "nodes", "--json")
        return res.returncode == 0 and res.stdout.count('"online"') == 2

    fleet.poll("two nodes online", both_online, 15)
    return ctl


@cap(40)
def test_cp_to_a_label_lands_where_allowed_and_shell_exit_code(fleet: Fleet) -> None:
    ctl = start_fleet(fleet)
    conf = fleet.tmp / "nginx.conf"
    conf.write_text("worker_processes 2;\n" * 1000)
    want = hashlib.sha256(conf.read_bytes()).hexdigest()
    target = f"{fleet.tmp}/node-01-www/nginx.conf"
    # Both nodes run role=web; each places the file under its own path rule.
    # --label SELECTOR:PATH is TARGET:PATH spelt as the users write it.
    both = fleet.run(*ctl, "cp", "./nginx.conf", f"role=web:{target}", "--label", "a=b:/x")
    assert both.returncode == 2, both.stderr
    assert "one of them" in both.stderr
    res = fleet.run(*ctl, "cp", "./nginx.conf", "--label", f"role=web:{target}", "--mode", "0640")
    assert res.returncode == 1, res.stderr  # node-02 refuses the path
    lines = dict(line.split(None, 1) for line in res.stdout.splitlines())
    assert want in lines["node-01"]
    assert "refused" in lines["node-02"]
    assert "[files] write" in lines["node-02"]
    assert Path(target).read_bytes() == conf.read_bytes()
    assert Path(target).stat().st_mode & 0o777 == 0o640
    audit = fleet.run(*ctl, "audit", "--json")
    assert want in audit.stdout

    # A shell on node-01 in a real pseudo-terminal: prompt, echo, exit 3.
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes ctl
        os.chdir(fleet.tmp)
        os.execvpe(SERVERMGR[0], [*SERVERMGR, *ctl, "shell", "node-01"], fleet.env)
    try:
        screen = expect(master, b"", b"$ ", b"# ")
        os.write(master, b"echo h''i\r")
        screen = expect(master, screen, b"hi\r\n")
        os.write(master, b"exit 3\r")
        _, status = wait_exit(pid, 15)
        assert os.waitstatus_to_exitcode(status) == 3, screen
    finally:
        os.close(master)
        with_kill(pid)

    # Commands piped in, as with ssh: the shell ends at the end of its input.
    piped = subprocess.run(
        [*SERVERMGR, *ctl, "shell", "node-01"],
        input=b"echo piped-$((6*7))\nexit 4\n",
        capture_output=True,
        cwd=fleet.tmp,
        env=fleet.env,
        timeout=20,
    )
    assert piped.returncode == 4, piped.stderr
    assert b"piped-42" in piped.stdout

    # node-02's policy has no shell: ctl says so in one line and exits 255.
    res = fleet.run(*ctl, "shell", "node-02")
    assert res.returncode == 255
    assert "[exec] shell" in res.stderr


def expect(fd: int, screen: bytes, *markers: bytes, limit: float = 15) -> bytes:
    """Read the terminal until one of ``markers`` appears after what was seen."""
    start = len(screen)
    end = time.monotonic() + limit
    while not any(m in screen[start:] for m in markers if m):
        left = end - time.monotonic()
        assert left > 0, f"no {markers!r} on the screen: {screen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                screen += os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
    return screen


def wait_exit(pid: int, limit: float) -> tuple[int, int]:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return done, status
        time.sleep(0.05)
    raise AssertionError("ctl shell did not exit")


def with_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
