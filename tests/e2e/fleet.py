"""End-to-end helpers: the real ``servermgr`` CLI as subprocesses, Core and nodes from config files.

Each test has an absolute time cap, waits for conditions by polling the CLI or
the REST API against a deadline, and kills every process it started (checked
with psutil: no process carrying this test's marker outlives it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from tests.support import SERVERMGR

INTERVAL = 0.5
MARKER = "SERVERMGR_E2E_RUN"
T = TypeVar("T")


@dataclass
class Proc:
    """A long-running servermgr process; its stderr (the log) goes to ``log``."""

    popen: subprocess.Popen[bytes]
    log: Path
    pid: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        if self.popen.pid == self.pid:
            return self.popen.poll() is None
        try:  # a background job: the shell reaps it, so no zombie lingers
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


@dataclass
class Fleet:
    """Runs the CLI in ``tmp`` and remembers every process for cleanup."""

    tmp: Path
    cap: float
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    procs: list[Proc] = field(default_factory=list)
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.cap
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SERVERMGR_")}
        self.env[MARKER] = self.run_id

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"test exceeded its cap of {self.cap:g} s")
        return left

    # --- files ------------------------------------------------------------

    def core_config(self, port: int, name: str = "core.toml") -> Path:
        path = self.tmp / name
        path.write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\nheartbeat_interval = {INTERVAL}\n'
            '[storage]\ndata_dir = "core-data"\n'
        )
        return path

    def node_config(self, name: str, port: int, token: str) -> Path:
        path = self.tmp / f"{name}.toml"
        path.write_text(
            f"[server]\nheartbeat_interval = {INTERVAL}\n"
            f'[node]\ncore_addr = "ws://127.0.0.1:{port}"\nregister_token = "{token}"\n'
            f'hostname = "{name}"\ndata_dir = "{name}-data"\n'
        )
        return path

    # --- processes --------------------------------------------------------

    def run(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """One short CLI call, bounded by the test's deadline."""
        return subprocess.run(
            [*SERVERMGR, *args],
            cwd=cwd or self.tmp,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,  # ctl exec would forward a pipe it inherits
            capture_output=True,
            text=True,
            timeout=min(self.left(), 20),
        )

    def spawn(self, name: str, *args: str, open_files: int | None = None) -> Proc:
        """Start the CLI; ``open_files`` sets its open-file limit (soft and hard)."""
        log = self.tmp / f"{name}.log"

        def limit() -> None:  # in the child, before exec
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        with log.open("ab") as out:
            popen = subprocess.Popen(
                [*SERVERMGR, *args],
                cwd=self.tmp,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=limit if open_files is not None else None,
            )
        proc = Proc(popen, log, popen.pid)
        self.procs.append(proc)
        return proc

    def spawn_background(self, name: str, *args: str) -> Proc:
        """Start like ``servermgr … &`` in a script: a non-interactive shell's
        background job, which starts with SIGINT ignored. ``popen`` is the
        shell; it prints the job's pid, waits, then prints ``exit=N``."""
        log = self.tmp / f"{name}.log"
        popen = subprocess.Popen(
            ["sh", "-c", '"$@" >"$LOG" 2>&1 & echo $!; wait $!; echo "exit=$?"', "sh"]
            + [*SERVERMGR, *args],
            cwd=self.tmp,
            env={**self.env, "LOG": str(log)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert popen.stdout is not None
        pid = int(popen.stdout.readline())
        proc = Proc(popen, log, pid)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, sig: int) -> int:
        """Send ``sig`` to the servermgr process; its exit code."""
        os.kill(proc.pid, sig)
        if proc.popen.pid == proc.pid:
            return proc.popen.wait(timeout=min(self.left(), 15))
        out, _ = proc.popen.communicate(timeout=min(self.left(), 15))
        m = re.search(rb"exit=(\d+)", out)
        assert m, out
        return int(m.group(1))

    def cleanup(self) -> list[str]:
        """Kill whatever is left; the command lines of processes that had to be killed late."""
        for proc in self.procs:
            for pid in {proc.pid, proc.popen.pid}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if proc.pid != proc.popen.pid:  # not our child: wait for it to be gone
                with contextlib.suppress(psutil.Error):
                    psutil.Process(proc.pid).wait(timeout=5)
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()
        orphans = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.pid != os.getpid() and p.environ().get(MARKER) == self.run_id:
                    orphans.append(" ".join(p.cmdline()))
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return orphans

    # --- polling ----------------------------------------------------------

    def poll(self, what: str, check: Callable[[], T | None], limit: float) -> T:
        """The first truthy ``check()`` within ``limit`` seconds."""
        end = time.monotonic() + min(limit, self.left())
        last: T | None = None
        while time.monotonic() < end:
            last = check()
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out after {limit:g} s waiting for {what}; last: {last!r}")

    def ctl_json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """``ctl … --json`` output, or None when the call failed (e.g. Core still down)."""
        res = self.run("ctl", *args, "--json", env=env)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def ctl_items(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """The ``items`` of a listing's ``ctl … --json``, or None when the call failed."""
        doc = self.ctl_json(*args, env=env)
        return None if doc is None else doc["items"]


class _CapExceeded(Exception):
    pass


F = TypeVar("F", bound=Callable[..., Any])


def cap(seconds: float) -> Callable[[F], F]:
    """This test's absolute time cap (default 15 s)."""

    def mark(fn: F) -> F:
        fn.time_cap = seconds  # type: ignore[attr-defined]
        return fn

    return mark


def one_line_error(res: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """A failed command: exit ``code``, nothing on stdout, one ``servermgr:`` line on stderr."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("servermgr: ")
    assert "Traceback" not in res.stderr
    return lines[0]


@contextmanager
def not_core() -> Iterator[str]:
    """Some other web server (answers 200 with HTML); yields its URL."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(10)

        def answer() -> None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                body = b"<html>\n<p>hello</p>\n</html>\n"
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.getsockname()[1]}"
        finally:
            server.close()
            thread.join(5)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).is_success
    except httpx.HTTPError:
        return False


def start_core(fleet: Fleet, port: int, *, config: str = "core.toml") -> tuple[Proc, str]:
    """Core on ``port`` (listening when this returns) and its key."""
    cfg = fleet.core_config(port, config)
    key = fleet.run("key", "show", "--config", str(cfg))
    assert key.returncode == 0, key.stderr
    core = fleet.spawn(f"core-{port}", "core", "serve", "--config", str(cfg))
    fleet.poll(f"Core listening on {port}", lambda: healthy(port) or not core.alive(), 10)
    assert core.alive(), core.text()
    return core, key.stdout.split()[0]
