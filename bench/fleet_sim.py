"""Fleet simulator: N simulated nodes on real WebSockets, speaking the real protocol.

Each simulated node does what ``servermgr node run`` does on the wire:

1. registers over REST with the core key (``POST /api/v1/register``),
2. opens ``/api/v1/node/ws`` with ``Authorization: Bearer <credential>``,
3. sends ``hello`` (``servermgr.common.proto.Hello``) and waits for ``welcome``,
4. sends a ``heartbeat`` with one ``Sample`` every interval Core set in
   ``welcome``: 2-8 cores, 2-3 disks, 2 interfaces, values that wander like
   a real machine's (about 750 bytes of JSON, like node/collector.py),
5. answers ``job.run`` with ``job.output`` (the empty chunk at offset 0 a
   real agent sends when the process starts) then ``job.result`` (succeeded,
   exit 0) at once -- no process is run -- and takes ``job.ack`` and
   ``heartbeat.ack``.

A lost connection is re-opened after 1-3 s, as an agent would. Every message
is encoded and decoded with ``servermgr.common.proto``.

Processes. The nodes are spread over a few worker processes (``--workers``,
default one per 10,000 nodes), each one trio loop with one task per node.
The WebSocket client is a small RFC 6455 client on trio streams (masked
frames, no extensions): ~20 lines of framing instead of trio-websocket's
reader task and wsproto state machine per connection, so the simulator
spends its CPU share of a 2-core machine on sending, not on itself.

Start-up. First every worker registers its nodes (16 requests at a time),
then the parent names one start time and node ``i`` of ``N`` connects at
``start + ramp * i / N`` (``--ramp``, default N/500 s), so there is no
thundering herd. Each node's first heartbeat comes at a random point of its
first interval, so heartbeats are spread evenly.

Measures. For every heartbeat the send time and the time to its
``heartbeat.ack`` (which Core sends once the sample is committed to SQLite,
i.e. queryable), how late the simulator itself was in sending it (its own
overload shows there, not as Core latency), connects, disconnects, jobs.

Use as a library (``Fleet``) from the benchmarks, or alone::

    python bench/fleet_sim.py --core http://127.0.0.1:9999 --key "$KEY" \\
        --nodes 1000 --duration 60

Ctrl-C stops it; the workers are stopped with it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import queue
import random
import subprocess
import sys
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import benchlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_PATH = "/api/v1/node/ws"
CONNECT_TIMEOUT = 10.0
WELCOME_TIMEOUT = 30.0
REGISTER_CONCURRENCY = 16
NODES_PER_WORKER = 10_000


# ==== worker side (trio) ============================================================


class Closed(Exception):
    """The WebSocket was closed or broke."""


class HandshakeFailed(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    k = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ k).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame (masked, as RFC 6455 requires of clients)."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    key = random.randbytes(4)
    return bytes(head) + key + _mask(payload, key)


def parse_frame(buf: bytearray) -> tuple[int, bool, bytes, int] | None:
    """(opcode, fin, payload, bytes used) of the first whole frame in ``buf``, or None."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    n = b1 & 0x7F
    i = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = int.from_bytes(buf[2:4], "big")
        i = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = int.from_bytes(buf[2:10], "big")
        i = 10
    key = b""
    if b1 & 0x80:
        key = bytes(buf[i : i + 4])
        i += 4
    if len(buf) < i + n:
        return None
    payload = bytes(buf[i : i + n])
    if key:
        payload = _mask(payload, key)
    return b0 & 0x0F, bool(b0 & 0x80), payload, i + n


class WsClient:
    """A minimal WebSocket client: text messages, ping/pong, close."""

    def __init__(self, stream: Any, leftover: bytes) -> None:
        self.stream = stream
        self.buf = bytearray(leftover)
        self.parts: list[bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int, path: str, credential: str) -> WsClient:
        import trio

        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
            try:
                key = base64.b64encode(random.randbytes(16))
                request = (
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {credential}\r\n\r\n"
                )
                await stream.send_all(request.encode())
                data = bytearray()
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise HandshakeFailed(0, "connection closed during the handshake")
                    data += chunk
                head, _, rest = bytes(data).partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                if status != 101:
                    raise HandshakeFailed(status, lines[0])
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)
                }
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
                if headers.get("sec-websocket-accept") != accept:
                    raise HandshakeFailed(status, "bad Sec-WebSocket-Accept")
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return cls(stream, rest)

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(encode_frame(0x1, text.encode()))

    async def recv(self) -> str:
        """The next text message. Cancel-safe: a cancelled call loses no bytes."""
        import trio

        while True:
            frame = parse_frame(self.buf)
            if frame is None:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise Closed("connection closed by Core")
                self.buf += chunk
                continue
            opcode, fin, payload, used = frame
            del self.buf[:used]
            if opcode == 0x8:
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.stream.send_all(encode_frame(0x8, payload[:2]))
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                raise Closed(f"closed by Core (code {code})")
            if opcode == 0x9:
                with trio.CancelScope(shield=True):
                    await self.stream.send_all(encode_frame(0xA, payload))
                continue
            if opcode == 0xA:
                continue
            self.parts.append(payload)
            if fin:
                text = b"".join(self.parts).decode()
                self.parts.clear()
                return text

    async def aclose(self) -> None:
        import trio

        await trio.aclose_forcefully(self.stream)


class SampleGen:
    """Samples of one made-up machine; values drift from beat to beat."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cores = rng.choice([2, 2, 4, 4, 4, 8, 8])
        self.mem_total = self.cores * rng.choice([2, 4, 8]) * 2**30
        self.swap_total = rng.choice([0, 2**31, 2**32])
        self.disks = [("/", "ext4", rng.choice([50, 100, 200]) * 10**9)]
        self.disks.append(("/boot", "ext4", 10**9))
        if rng.random() < 0.5:
            self.disks.append(("/data", "xfs", rng.choice([500, 1000, 4000]) * 10**9))
        self.disk_used = [rng.uniform(0.1, 0.8) for _ in self.disks]
        self.nets = rng.choice([["eth0", "eth1"], ["ens3", "docker0"], ["eno1", "eno2"]])
        self.cpu = rng.uniform(1, 60)
        self.mem = rng.uniform(0.2, 0.7)
        self.boot = time.time() - rng.uniform(3600, 90 * 86400)
        self.procs = rng.randint(80, 400)

    def sample(self, ts: float) -> Any:
        from servermgr.common import proto

        r = self.rng
        self.cpu = min(100.0, max(0.0, self.cpu + r.gauss(0, 5)))
        self.mem = min(0.98, max(0.05, self.mem + r.gauss(0, 0.01)))
        per_core = [min(100.0, max(0.0, self.cpu + r.gauss(0, 10))) for _ in range(self.cores)]
        load = self.cpu / 100 * self.cores
        used = int(self.mem * self.mem_total)
        swap_used = int(self.swap_total * r.uniform(0, 0.05))
        disks = []
        for i, (mount, fs, total) in enumerate(self.disks):
            self.disk_used[i] = min(0.99, self.disk_used[i] + r.uniform(0, 1e-5))
            u = int(total * self.disk_used[i])
            disks.append(
                proto.DiskUsage(
                    mount=mount, fstype=fs, total=total, used=u, percent=round(100 * u / total, 1)
                )
            )
        nets = [
            proto.NetRate(name=n, rx_bps=r.expovariate(1 / 2e5), tx_bps=r.expovariate(1 / 1e5))
            for n in self.nets
        ]
        return proto.Sample(
            ts=ts,
            cpu_percent=self.cpu,
            cpu_per_core=per_core,
            load1=load * r.uniform(0.9, 1.1),
            load5=load,
            load15=load * r.uniform(0.8, 1.0),
            mem_total=self.mem_total,
            mem_used=used,
            mem_available=self.mem_total - used,
            mem_percent=round(100 * self.mem, 1),
            swap_total=self.swap_total,
            swap_used=swap_used,
            swap_percent=round(100 * swap_used / self.swap_total, 1) if self.swap_total else 0.0,
            disks=disks,
            disk_read_bps=r.expovariate(1 / 5e5),
            disk_write_bps=r.expovariate(1 / 1e6),
            net_rx_bps=sum(n.rx_bps for n in nets),
            net_tx_bps=sum(n.tx_bps for n in nets),
            nets=nets,
            uptime=ts - self.boot,
            procs=self.procs + r.randint(-5, 5),
        )

    def info(self) -> Any:
        from servermgr.common import proto

        return proto.SystemInfo(
            os="Debian GNU/Linux 12 (bookworm)",
            kernel="6.1.0-18-amd64",
            arch="x86_64",
            cpu_model="Simulated CPU",
            cpu_count=self.cores,
            mem_total=self.mem_total,
            boot_time=self.boot,
        )


@dataclass
class SimNode:
    index: int
    name: str
    gen: SampleGen
    node_id: str = ""
    credential: str = ""
    connected_once: bool = False


@dataclass
class WorkerConfig:
    core: str
    key: str
    indices: list[int]
    total: int
    prefix: str
    labels: dict[str, str]
    out: str
    worker: int
    seed: int


@dataclass
class WorkerStats:
    registered: int = 0
    register_seconds: float = 0.0
    connected: int = 0
    connect_seconds: float = 0.0
    sessions: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    hb_sent: int = 0
    acks: int = 0
    jobs: int = 0
    job_acks: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""


class Worker:
    """One process's share of the fleet."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        url = urlsplit(cfg.core)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.stats = WorkerStats()
        # Per heartbeat: wall-clock send time, seconds to its ack (NaN: none), sender lag.
        self.sent_at = array("d")
        self.latency = array("d")
        self.lag = array("d")
        self.nodes = [
            SimNode(i, f"{cfg.prefix}-{i:05d}", SampleGen(random.Random(cfg.seed * 1_000_003 + i)))
            for i in cfg.indices
        ]
        self.pending: list[deque[tuple[int, int]]] = [deque() for _ in self.nodes]
        self.connected_changed: Any = None  # a trio.Event while someone waits for connects

    def emit(self, event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, "worker": self.cfg.worker, **fields}) + "\n")
        sys.stdout.flush()

    def error(self, what: str, exc: BaseException) -> None:
        key = f"{what}: {type(exc).__name__}"
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
        if not self.stats.first_error:
            self.stats.first_error = f"{key}: {exc}"

    async def main(self) -> None:
        import trio

        stdin = trio.lowlevel.FdStream(os.dup(0))
        lines = _lines(stdin)
        await self.register_all()
        self.emit("registered", n=self.stats.registered, seconds=self.stats.register_seconds)
        command = await anext(lines, "stop")
        if command.startswith("connect"):
            _, start, ramp = command.split()
            async with trio.open_nursery() as nursery:
                for k, node in enumerate(self.nodes):
                    at = float(start) + float(ramp) * node.index / self.cfg.total
                    nursery.start_soon(self.run_node, k, node, at)
                nursery.start_soon(self.report_connected, float(start))
                await anext(lines, "stop")  # "stop" or EOF
                nursery.cancel_scope.cancel()
        await stdin.aclose()
        self.finish()

    async def report_connected(self, start: float) -> None:
        import trio

        wanted = sum(1 for n in self.nodes if n.credential)
        while self.stats.connected < wanted:
            self.connected_changed = trio.Event()
            await self.connected_changed.wait()
        self.stats.connect_seconds = time.time() - start
        self.emit("connected", n=self.stats.connected, seconds=self.stats.connect_seconds)

    async def register_all(self) -> None:
        import httpx
        import trio

        limiter = trio.CapacityLimiter(REGISTER_CONCURRENCY)
        t0 = time.time()
        async with httpx.AsyncClient(
            base_url=self.cfg.core,
            headers={"Authorization": f"Bearer {self.cfg.key}"},
            timeout=60.0,
            trust_env=False,
            limits=httpx.Limits(max_connections=REGISTER_CONCURRENCY),
        ) as http:

            async def register(node: SimNode) -> None:
                async with limiter:
                    for attempt in range(5):
                        try:
                            resp = await http.post(
                                "/api/v1/register",
                                json={"hostname": node.name, "labels": self.cfg.labels},
                            )
                        except httpx.HTTPError as exc:
                            self.error("register", exc)
                            await trio.sleep(0.5 * (attempt + 1))
                            continue
                        if resp.status_code != 201:
                            self.error("register", RuntimeError(f"{resp.status_code} {resp.text}"))
                            return
                        doc = resp.json()
                        node.node_id, node.credential = doc["node_id"], doc["credential"]
                        self.stats.registered += 1
                        return

            async with trio.open_nursery() as nursery:
                for node in self.nodes:
                    nursery.start_soon(register, node)
        self.stats.register_seconds = time.time() - t0

    async def run_node(self, k: int, node: SimNode, at: float) -> None:
        import trio

        if not node.credential:
            return
        await trio.sleep(max(0.0, at - time.time()))
        while True:
            try:
                ws = await WsClient.connect(self.host, self.port, WS_PATH, node.credential)
            except (OSError, HandshakeFailed, trio.TooSlowError) as exc:
                self.stats.connect_failures += 1
                self.error("connect", exc)
                await trio.sleep(random.uniform(1, 3))
                continue
            try:
                await self.session(k, node, ws)
            except (Closed, OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                self.stats.disconnects += 1
                self.error("session", exc)
            finally:
                with trio.CancelScope(shield=True):
                    await ws.aclose()
                if node.connected_once:
                    self.stats.connected -= 1
                    node.connected_once = False
            await trio.sleep(random.uniform(1, 3))

    async def session(self, k: int, node: SimNode, ws: WsClient) -> None:
        import trio

        from servermgr.common import proto

        hello = proto.Hello(
            protocol=proto.PROTOCOL_VERSION,
            node_id=node.node_id,
            hostname=node.name,
            agent_version="fleet-sim",
            info=node.gen.info(),
            labels=self.cfg.labels,
            jobs=[],
        )
        await ws.send_text(proto.encode(hello))
        with trio.fail_after(WELCOME_TIMEOUT):
            msg = proto.decode_from_core(await ws.recv())
        if not isinstance(msg, proto.Welcome):
            raise Closed(f"expected welcome, got {type(msg).__name__}")
        interval = msg.heartbeat_interval
        self.stats.sessions += 1
        self.stats.connected += 1
        if self.connected_changed is not None:
            self.connected_changed.set()
        node.connected_once = True
        pending = self.pending[k]
        pending.clear()
        seq = 0
        next_beat = trio.current_time() + random.uniform(0, interval)
        while True:
            text: str | None = None
            with trio.move_on_at(next_beat):
                text = await ws.recv()
            if text is not None:
                await self.handle(ws, pending, proto.decode_from_core(text))
                continue
            now = trio.current_time()
            self.lag.append(now - next_beat)
            next_beat = max(next_beat + interval, now)
            seq += 1
            ts = time.time()
            hb = proto.Heartbeat(seq=seq, samples=[node.gen.sample(ts)])
            pending.append((seq, len(self.sent_at)))
            self.sent_at.append(ts)
            self.latency.append(math.nan)
            self.stats.hb_sent += 1
            await ws.send_text(proto.encode(hb))

    async def handle(self, ws: WsClient, pending: deque[tuple[int, int]], msg: Any) -> None:
        from servermgr.common import proto

        if isinstance(msg, proto.HeartbeatAck):
            now = time.time()
            while pending and pending[0][0] <= msg.seq:
                _, slot = pending.popleft()
                self.latency[slot] = now - self.sent_at[slot]
                self.stats.acks += 1
        elif isinstance(msg, proto.JobRun):
            self.stats.jobs += 1
            t0 = time.perf_counter()
            await ws.send_text(
                proto.encode(
                    proto.JobOutput(job_id=msg.job_id, stream="stdout", offset=0, chunk=b"")
                )
            )
            await ws.send_text(
                proto.encode(
                    proto.JobResult(
                        job_id=msg.job_id,
                        outcome="succeeded",
                        exit_code=0,
                        signal=None,
                        error=None,
                        duration=time.perf_counter() - t0,
                        stdout_bytes=0,
                        stderr_bytes=0,
                        stdout_truncated=False,
                        stderr_truncated=False,
                    )
                )
            )
        elif isinstance(msg, proto.JobAck):
            self.stats.job_acks += 1
        elif isinstance(msg, proto.Error):
            self.error("core error", RuntimeError(f"{msg.code}: {msg.message}"))

    def finish(self) -> None:
        out = Path(self.cfg.out)
        data = array("d")
        for i in range(len(self.sent_at)):
            data.append(self.sent_at[i])
            data.append(self.latency[i])
        with open(out / f"worker-{self.cfg.worker}.hb", "wb") as f:
            data.tofile(f)
        with open(out / f"worker-{self.cfg.worker}.lag", "wb") as f:
            self.lag.tofile(f)
        doc = self.stats.__dict__ | {"cpu_seconds": time.process_time()}
        (out / f"worker-{self.cfg.worker}.json").write_text(json.dumps(doc))
        self.emit("done")


async def _lines(stream: Any) -> Any:
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode().strip()
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        buf += chunk


def worker_main(cfg_json: str) -> None:
    import trio

    cfg = WorkerConfig(**json.loads(cfg_json))
    benchlib.raise_nofile(len(cfg.indices) + 1024)
    trio.run(Worker(cfg).main)


# ==== parent side ===================================================================


@dataclass
class FleetResult:
    """What the workers measured, merged."""

    nodes: int
    workers: list[dict[str, Any]]
    sent_at: list[float]
    latency: list[float]
    lag: list[float]
    worker_cpu: float

    def total(self, key: str) -> int:
        return int(sum(w[key] for w in self.workers))

    def errors(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for w in self.workers:
            for k, v in w["errors"].items():
                merged[k] = merged.get(k, 0) + v
        return merged

    def window(self, t0: float, t1: float) -> tuple[list[float], int, int]:
        """(latencies of heartbeats sent in [t0, t1] that were acked, sent, acked in [t0, t1])."""
        lat = []
        sent = 0
        acked_in = 0
        for ts, latency in zip(self.sent_at, self.latency, strict=True):
            if latency == latency and t0 <= ts + latency <= t1:
                acked_in += 1
            if t0 <= ts <= t1:
                sent += 1
                if latency == latency:
                    lat.append(latency)
        return lat, sent, acked_in


class Fleet:
    """Worker processes of the simulator, driven from a (synchronous) benchmark."""

    def __init__(
        self,
        procs: benchlib.Procs,
        core_url: str,
        key: str,
        nodes: int,
        out_dir: Path,
        *,
        workers: int | None = None,
        ramp: float | None = None,
        prefix: str = "sim",
        labels: dict[str, str] | None = None,
        seed: int = 1,
    ) -> None:
        self.procs = procs
        self.core_url = core_url
        self.key = key
        self.nodes = nodes
        self.out = out_dir
        self.workers = workers or max(1, math.ceil(nodes / NODES_PER_WORKER))
        self.ramp = ramp if ramp is not None else max(1.0, nodes / 500)
        self.prefix = prefix
        self.labels = labels if labels is not None else {"fleet": "sim"}
        self.seed = seed
        self.children: list[subprocess.Popen[bytes]] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.register_seconds = 0.0
        self.connect_seconds = 0.0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.children]

    def cpu_seconds(self) -> float:
        return sum(benchlib.cpu_seconds(p) for p in self.pids)

    def start(self, timeout: float = 600.0) -> None:
        """Start the workers and register every node; returns when all are registered."""
        self.out.mkdir(parents=True, exist_ok=True)
        for w in range(self.workers):
            cfg = WorkerConfig(
                core=self.core_url,
                key=self.key,
                indices=list(range(w, self.nodes, self.workers)),
                total=self.nodes,
                prefix=self.prefix,
                labels=self.labels,
                out=str(self.out),
                worker=w,
                seed=self.seed,
            )
            proc = self.procs.start(
                [sys.executable, __file__, "--worker-config", json.dumps(cfg.__dict__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                log=self.out / f"worker-{w}.log",
                nofile=len(cfg.indices) + 1024,
            )
            self.children.append(proc)
            threading.Thread(target=self._read, args=(proc, w), daemon=True).start()
        t0 = time.time()
        done = self._wait("registered", timeout)
        self.register_seconds = time.time() - t0
        registered = sum(e["n"] for e in done)
        if registered < self.nodes:
            raise RuntimeError(f"only {registered} of {self.nodes} nodes registered")

    def connect(self, timeout: float | None = None) -> None:
        """Open every node's WebSocket, spread over the ramp; returns when all have ``welcome``."""
        start = time.time() + 0.2
        for proc in self.children:
            self._send(proc, f"connect {start} {self.ramp}")
        self._wait("connected", timeout if timeout is not None else self.ramp + 120.0)
        self.connect_seconds = time.time() - start

    def stop(self, timeout: float = 60.0) -> FleetResult:
        """Stop the workers and collect what they measured."""
        for proc in self.children:
            self._send(proc, "stop")
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        self._wait("done", timeout)
        cpu = 0.0
        docs: list[dict[str, Any]] = []
        sent_at: list[float] = []
        latency: list[float] = []
        lag: list[float] = []
        for w, proc in enumerate(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            doc = json.loads((self.out / f"worker-{w}.json").read_text())
            cpu += doc["cpu_seconds"]
            docs.append(doc)
            data = array("d")
            with open(self.out / f"worker-{w}.hb", "rb") as f:
                data.frombytes(f.read())
            sent_at.extend(data[0::2])
            latency.extend(data[1::2])
            lags = array("d")
            with open(self.out / f"worker-{w}.lag", "rb") as f:
                lags.frombytes(f.read())
            lag.extend(lags)
        for proc in self.children:
            self.procs.stop(proc)
        self.children.clear()
        return FleetResult(self.nodes, docs, sent_at, latency, lag, cpu)

    def _send(self, proc: subprocess.Popen[bytes], line: str) -> None:
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.write(line.encode() + b"\n")
                proc.stdin.flush()

    def _read(self, proc: subprocess.Popen[bytes], worker: int) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(raw))
        self.events.put({"event": "exit", "worker": worker})

    def _wait(self, event: str, timeout: float) -> list[dict[str, Any]]:
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.children):
            try:
                e = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"fleet: {len(got)} of {len(self.children)} workers reported "
                    f"{event!r} within {timeout:g} s"
                ) from None
            if e["event"] == event:
                got[e["worker"]] = e
            elif e["event"] == "exit" and event != "done":
                log = self.out / f"worker-{e['worker']}.log"
                raise RuntimeError(
                    f"fleet worker {e['worker']} exited early:\n{benchlib.tail(log)}"
                )
        return list(got.values())


# ==== standalone ===================================================================


def summary_rows(result: FleetResult, t0: float, t1: float) -> list[tuple[str, str]]:
    lat, sent, acked = result.window(t0, t1)
    secs = t1 - t0
    return [
        ("nodes", str(result.nodes)),
        ("registered", str(result.total("registered"))),
        ("sessions opened", str(result.total("sessions"))),
        (
            "disconnects / connect failures",
            f"{result.total('disconnects')} / {result.total('connect_failures')}",
        ),
        ("heartbeats sent in window", str(sent)),
        ("acks in window per second", f"{acked / secs:.0f}"),
        (
            "ack latency p50 / p99 ms",
            f"{benchlib.ms(benchlib.percentile(lat, 50))} / "
            f"{benchlib.ms(benchlib.percentile(lat, 99))}",
        ),
        ("unacked of those sent", str(sent - len(lat))),
        ("sender lag p99 ms", benchlib.ms(benchlib.percentile(result.lag, 99))),
        ("jobs answered / job.acks", f"{result.total('jobs')} / {result.total('job_acks')}"),
        ("simulator CPU s", f"{result.worker_cpu:.1f}"),
        ("errors", json.dumps(result.errors()) or "{}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run N simulated nodes against a running Core (see the module docstring).",
    )
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    parser.add_argument("--core", help="Core's URL, e.g. http://127.0.0.1:9999")
    parser.add_argument("--key", default=os.environ.get("SERVERMGR_KEY"), help="the core key")
    parser.add_argument("--nodes", type=int, default=100, help="how many nodes (default 100)")
    parser.add_argument("--workers", type=int, help="worker processes (default 1 per 10,000)")
    parser.add_argument("--ramp", type=float, help="seconds to spread connects over (N/500)")
    parser.add_argument("--duration", type=float, default=30, help="seconds connected (30)")
    parser.add_argument("--prefix", default="sim", help="node names: PREFIX-00001 (sim)")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE (fleet=sim)")
    parser.add_argument("--out", type=Path, help="where workers write their data (temp dir)")
    args = parser.parse_args(argv)
    if args.worker_config:
        worker_main(args.worker_config)
        return 0
    if not args.core or not args.key:
        parser.error("--core and --key (or SERVERMGR_KEY) are required")
    labels = dict(item.split("=", 1) for item in args.label) or {"fleet": "sim"}
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    with benchlib.Procs() as procs, benchlib.workdir("fleet-sim-") as tmp:
        fleet = Fleet(
            procs,
            args.core,
            args.key,
            args.nodes,
            args.out or tmp,
            workers=args.workers,
            ramp=args.ramp,
            prefix=args.prefix,
            labels=labels,
        )
        fleet.start()
        print(f"registered {args.nodes} nodes in {fleet.register_seconds:.1f} s", flush=True)
        fleet.connect()
        print(f"connected in {fleet.connect_seconds:.1f} s", flush=True)
        t0 = time.time()
        time.sleep(args.duration)
        t1 = time.time()
        result = fleet.stop()
    benchlib.print_table("fleet simulator", ["measure", "value"], summary_rows(result, t0, t1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
