"""Helpers shared by test modules: configs, waiting, job helpers, a sample factory.

Fixtures live in conftest.py; test modules import helpers from here, never
from each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import trio
from trio_websocket import wrap_client_stream

from servermgr.common import proto
from servermgr.common.config import Config, NodeConfig, parse_config
from servermgr.core.app import Core
from servermgr.core.metrics_export import CoreFigures
from servermgr.core.storage import NodeRow, Storage
from servermgr.core.writer import AGE_BOUNDS_MS
from servermgr.node.agent import Agent
from servermgr.node.collector import Collector

_exe = shutil.which("servermgr", path=os.path.dirname(sys.executable))
# The installed console script when there is one, else the module.
SERVERMGR = [_exe] if _exe else [sys.executable, "-m", "servermgr"]


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a Core that must restart on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


INTERVAL = 0.2


# Tests send many wrong keys from 127.0.0.1 on purpose, and many requests without a
# credential, each closed connection counted for a handshake timeout after it ends;
# tests of the limits set their own.
NO_AUTH_LIMIT = "auth_failures = 1000000\nunauthenticated_connections = 100000\n"


def core_config(
    tmp_path: Path, *, interval: float = INTERVAL, extra: str = "", limits: str = NO_AUTH_LIMIT
) -> Config:
    text = f'[server]\nlisten = "127.0.0.1:0"\nheartbeat_interval = {interval}\n' + extra
    text += f"[limits]\n{limits}"
    return parse_config(text, source=None, base_dir=tmp_path / "core")


def node_config(core: Core, tmp_path: Path, name: str, **labels: str) -> Config:
    base = parse_config("", source=None, base_dir=tmp_path)
    return dataclasses.replace(
        base,
        node=NodeConfig(
            core_addr=(core.url.replace("http://", "ws://"),),
            register_token=core.key.value,
            hostname=name,
            data_dir=tmp_path / "nodes" / name,
            labels=labels,
        ),
    )


@dataclasses.dataclass
class RunningCore:
    core: Core
    stop: trio.Event
    done: trio.Event


StartCore = Callable[..., Awaitable[RunningCore]]


class RecordingCollector(Collector):
    """The real collector, remembering the timestamp of every sample it made.

    So a test can check "every sample the node made is stored" by counting,
    instead of guessing from the gaps between stored timestamps.
    """

    def __init__(self) -> None:
        super().__init__()
        self.made: list[float] = []

    def sample(self) -> proto.Sample:
        s = super().sample()
        self.made.append(s.ts)
        return s


@dataclasses.dataclass
class RunningNode:
    agent: Agent
    collector: RecordingCollector
    scope: trio.CancelScope
    done: trio.Event
    error: BaseException | None = None

    def kill(self) -> None:
        self.scope.cancel()


StartNode = Callable[..., Awaitable[RunningNode]]


def api(core: Core) -> httpx.AsyncClient:
    """Core's REST API with the core key (trusting Core's own certificate when it serves TLS)."""
    verify = ssl.create_default_context(cafile=str(core.tls.cert)) if core.tls else True
    return httpx.AsyncClient(
        base_url=core.url,
        headers={"Authorization": f"Bearer {core.key.value}"},
        timeout=10,
        verify=verify,
    )


async def submit(core: Core, **body: Any) -> dict[str, Any]:
    async with api(core) as client:
        resp = await client.post("/api/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


async def job_doc(core: Core, job_id: str) -> dict[str, Any]:
    """The job document as ``GET /api/v1/jobs/{id}`` answers it now."""
    async with api(core) as client:
        resp = await client.get(f"/api/v1/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


async def finished(core: Core, job_id: str, limit: float = 15) -> dict[str, Any]:
    """The job document once every node is final (read from the live stream)."""
    async with api(core) as client:
        with trio.fail_after(limit):
            lines = ['"type": "job.open"']
            while '"type": "job.open"' in lines[-1]:  # the follow window ran out: again
                async with client.stream("GET", f"/api/v1/jobs/{job_id}/stream") as resp:
                    assert resp.status_code == 200
                    lines = [line async for line in resp.aiter_lines()]  # ends after job.done
        assert '"type": "job.done"' in lines[-1]
        doc: dict[str, Any] = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    return doc


def by_node(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in job["nodes"]}


def online(core: Core, *names: str) -> bool:
    rows = [core.registry.by_ref(n) for n in names]
    return all(r is not None and core.sessions.is_online(r.id) for r in rows)


def live_processes(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or []):
            out.append(p)
    return out


def make_sample(ts: float, **overrides: Any) -> proto.Sample:
    fields: dict[str, Any] = {
        "ts": ts,
        "cpu_percent": 12.5,
        "cpu_per_core": [10.0, 15.0],
        "load1": 0.5,
        "load5": 0.4,
        "load15": 0.3,
        "mem_total": 8_000_000_000,
        "mem_used": 2_000_000_000,
        "mem_available": 6_000_000_000,
        "mem_percent": 25.0,
        "swap_total": 1_000_000,
        "swap_used": 0,
        "swap_percent": 0.0,
        "disks": [proto.DiskUsage(mount="/", fstype="ext4", total=100, used=40, percent=40.0)],
        "disk_read_bps": 1000.0,
        "disk_write_bps": 2000.0,
        "net_rx_bps": 300.0,
        "net_tx_bps": 400.0,
        "nets": [proto.NetRate(name="eth0", rx_bps=300.0, tx_bps=400.0)],
        "uptime": 3600.0,
        "procs": 123,
    }
    fields.update(overrides)
    return proto.Sample(**fields)


def stored_stamps(path: Path, node_seq: int) -> list[float]:
    """Timestamps of a node's stored samples, oldest first."""
    with closing(sqlite3.connect(path)) as conn:
        return [
            t
            for (t,) in conn.execute(
                "SELECT ts FROM metrics WHERE node = ? ORDER BY ts", (node_seq,)
            )
        ]


SQLITE_MAX_PAGES = 1073741823  # SQLite's default


def cap_database(storage: Storage, grow: bool) -> None:
    """Disk full, simulated on a real file: ``PRAGMA max_page_count`` at the current
    size makes the next write that needs a new page fail with SQLITE_FULL, as a
    full disk does. ``grow=True`` gives the space back. Call through the writer
    (``await db.write(cap_database, storage, False)``), never beside it."""
    with storage.transaction() as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {SQLITE_MAX_PAGES if grow else pages:d}")


def make_database(path: Path, nodes: int = 3, samples: int = 2000) -> None:
    """A real Core database with nodes ``web-0``... and history (a few hundred pages)."""
    storage = Storage.open(path)
    try:
        for i in range(nodes):
            row = storage.insert_node(f"n-{i}", f"web-{i}", {}, "hash", 100.0)
            storage.write_batch([(row.seq, make_sample(1000.0 + t)) for t in range(samples)], {})
        storage.checkpoint()  # everything in the main file, no WAL left
    finally:
        storage.close()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` at ``path`` (a disk that can fill up);
    the test is skipped, in one line, when it cannot be mounted (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a tmpfs needs root (mount -t tmpfs)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def fill_up(directory: Path) -> int:
    """Write ``directory/filler`` until the file system is full; bytes written."""
    written = 0
    with open(directory / "filler", "wb", buffering=0) as f:
        for chunk in (1 << 16, 512):
            with contextlib.suppress(OSError):
                while True:
                    written += f.write(b"\0" * chunk)
    return written


async def wait_for(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]], limit: float = 10.0
) -> None:
    """Poll ``predicate`` (cheap state of another component; sync or async) until true.

    Fails after ``limit`` seconds. Polling is deliberate: the components under
    test expose no event for every condition a test waits on.
    """
    with trio.fail_after(limit):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(0.02)


async def register_node(core: Core, name: str) -> tuple[str, str]:
    """Register ``name`` through the REST API, as an agent does: (node id, credential)."""
    from servermgr.node import transport

    doc = await transport.register(core.url, core.key.value, name, {})
    return doc["node_id"], doc["credential"]


def hello_text(node_id: str, hostname: str, **info: Any) -> str:
    """A hello frame with the given hostname and system info fields (others None)."""
    fields = dict.fromkeys(
        ("os", "kernel", "arch", "cpu_model", "cpu_count", "mem_total", "boot_time")
    )
    fields.update(info)
    return proto.encode(
        proto.Hello(
            protocol=1,
            node_id=node_id,
            hostname=hostname,
            agent_version="test",
            info=proto.SystemInfo(**fields),
        )
    )


async def ws_handshake(core: Core, url: str, headers: list[tuple[bytes, bytes]]) -> None:
    """Open and close a WebSocket (``ConnectionRejected`` if refused); the TCP
    stream is ours, so a rejection cannot leak it."""
    stream = await trio.open_tcp_stream("127.0.0.1", core.port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(5):
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    f"127.0.0.1:{core.port}",
                    urlsplit(url).path,
                    extra_headers=headers,
                )
            await ws.aclose()
    except BaseExceptionGroup as group:
        (exc,) = group.exceptions
        raise exc from None
    finally:
        await trio.aclose_forcefully(stream)


async def make_token(core: Core, name: str, role: str, *, expires: float | None = None) -> str:
    """A named token stored as ``servermgr key create`` stores it, live in ``core`` at once."""
    from servermgr.core import tokens

    _, secret = await core.db.write(
        tokens.create, core.db.storage, name, tokens.Role(role), now=time.time(), expires=expires
    )
    await core.auth.refresh()
    return secret


REDIS_INSTALL = "redis-server is not installed: apt-get install -y redis-server"


class RedisServer:
    """A real redis-server of the test's own: 127.0.0.1, a free port, a temp dir,
    nothing persisted. ``kill()`` and ``start()`` again keep its port (a Redis
    that died and came back)."""

    def __init__(self, exe: str, directory: Path, *, password: str | None = None) -> None:
        self.exe = exe
        self.dir = directory
        self.password = password
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (on the same port after ``kill``); raises RuntimeError if it cannot."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a free port can be taken between the check and the bind
            port = self.port or free_port()
            args = [self.exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.dir)]
            args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
            args += ["--logfile", str(self.dir / "redis.log")]
            if self.password:
                args += ["--requirepass", self.password]
            proc = subprocess.Popen(args, start_new_session=True, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                if self._answers(port):
                    self.port, self.proc = port, proc
                    return
                time.sleep(0.02)
            _kill_group(proc)
            if self.port:  # its port is not free again yet: try a little later
                time.sleep(0.5)
        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server did not start; its log ends:\n{log}")

    def _answers(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """Kill it at once (SIGKILL): nothing is saved."""
        if self.proc is not None:
            _kill_group(self.proc)
            self.proc = None

    def pause(self) -> None:
        """Stop it (SIGSTOP): connections stay open and nothing answers: a slow Redis."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def cli(self, *args: str) -> str:
        """What redis-cli prints for ``args`` (raises on failure)."""
        cmd = [shutil.which("redis-cli") or "redis-cli", "-p", str(self.port), "--no-auth-warning"]
        if self.password:
            cmd += ["-a", self.password]
        out = subprocess.run(cmd + list(args), capture_output=True, timeout=20, check=True)
        return out.stdout.decode()


StartRedis = Callable[..., RedisServer]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait(timeout=10)


def node_row(name: str, ident: str = "n1", **labels: str) -> NodeRow:
    """A registered node as Core's registry holds it (no credential)."""
    return NodeRow(
        seq=1,
        id=ident,
        name=name,
        labels=labels,
        cred_hash="",
        first_seen=0.0,
        last_seen=None,
        info=None,
        agent_version="1.0",
    )


def metrics_figures(**over: Any) -> CoreFigures:
    """Core's own figures for the Prometheus renderer, with small known values."""
    fields: dict[str, Any] = {
        "version": "9.9",
        "started": 100.0,
        "nodes_known": 3,
        "nodes_connected": 2,
        "heartbeats_received": 10,
        "heartbeats_stored": 9,
        "samples_stored": 12,
        "ingest_queued": 1,
        "ingest_held": 0,
        "failed_batches": 0,
        "storage_writable": True,
        "age_counts": [0] * 10 + [4] + [0] * (len(AGE_BOUNDS_MS) - 10),
        "age_sum": 0.01,
        "gc_collections": [5, 2, 1],
        "gc_pause_counts": [3, 1, 0, 0],
        "gc_pause_bounds_ms": (1, 5, 10),
        "gc_pause_total": 0.004,
        "gc_frozen": 7,
        "jobs_open": {"queued": 1, "sent": 0, "running": 2},
        "jobs_finished": {"succeeded": 5, "failed": 1},
    }
    fields.update(over)
    return CoreFigures(**fields)


class WebhookServer:
    """A real HTTP server on 127.0.0.1 port 0 that keeps every JSON body POSTed to it.

    ``fail_first`` answers the first N requests with 500; ``hold`` (a
    threading.Event) holds every answer until it is set (a stuck receiver).
    Runs in its own threads (stdlib).
    """

    def __init__(self, *, fail_first: int = 0, hold: Any = None) -> None:
        import http.server
        import json
        import threading

        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.requests = 0
        received = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                received.requests += 1
                failing = received.requests <= fail_first
                if hold is not None:
                    hold.wait(30)
                if not failing:
                    received.bodies.append(json.loads(body))
                    received.headers.append(dict(self.headers))
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def of(self, status: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b.get("status") == status]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class SmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 port 0 with STARTTLS and AUTH,
    keeping each message it accepts; ``cert`` is its self-signed certificate."""

    USER, PASSWORD = "alerts", "s3cret-pw"

    def __init__(self, directory: Path) -> None:
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        from servermgr.core.tls import ensure_self_signed

        self.cert, key = directory / "smtp.crt", directory / "smtp.key"
        ensure_self_signed(self.cert, key, ["127.0.0.1"])
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.messages: list[Any] = []
        self.logins: list[str] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                import email

                outer.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> Any:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == self.USER
                and data.password.decode() == self.PASSWORD
            )
            if ok:
                outer.logins.append(data.login.decode())
            return AuthResult(success=ok, handled=ok)

        class PortZero(Controller):
            """Listens on port 0 and learns the port the kernel gave."""

            def _trigger_server(self) -> None:
                assert self.server is not None
                self.port = self.server.sockets[0].getsockname()[1]
                super()._trigger_server()

        self._controller = PortZero(
            Handler(),
            hostname="127.0.0.1",
            port=0,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_require_tls=True,
        )
        self._controller.start()
        self.port: int = self._controller.port

    def close(self) -> None:
        self._controller.stop()
