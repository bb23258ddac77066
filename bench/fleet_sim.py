"""Fleet simulator: N simulated nodes on real WebSockets, speaking the real protocol.

Each simulated node does what ``servermgr node run`` does on the wire:

1. registers over REST with the core key (``POST /api/v1/register``),
2. opens ``/api/v1/node/ws`` with ``Authorization: Bearer <credential>``,
3. sends ``hello`` (``servermgr.common.proto.Hello``) and waits for ``welcome``,
4. sends a ``heartbeat`` with one ``Sample`` every interval Core set in
   ``welcome``: 2-8 cores, 2-3 disks, 2 interfaces, values that wander like
   a real machine's (about 950 bytes of JSON per heartbeat, like
   node/collector.py's),
5. answers ``job.run`` with ``job.output`` (the empty chunk at offset 0 a
   real agent sends when the process starts) then ``job.result`` (succeeded,
   exit 0) at once -- no process is run -- and takes ``job.ack`` and
   ``heartbeat.ack`` (Core acks at most once per ``welcome.ack_interval``,
   cumulatively by ``seq``).

A failed handshake (TCP connect, the upgrade, or ``hello`` to ``welcome``)
and a lost connection are retried after a jittered exponential backoff, as
an agent does (``servermgr.common.ws.Backoff``: 0.5-1 s, then 1-2 s, ...
up to 15-30 s; reset by ``welcome``); so is a connection on which Core has
been silent as long as the agent would allow. With ``Fleet(handshakes=N)``
at most N nodes per worker handshake at once: a Core answering slower than
the ramp then slows the ramp, instead of handshakes timing out while they
wait for CPU and being retried on top of the ramp (which stormed a loaded
Core before). Every message
is encoded and decoded with ``servermgr.common.proto``. With ``keep_unacked``
(``Fleet(keep_unacked=True)``, for bench/faults.py) a node also keeps its
samples until Core acks them and sends them again after a reconnect, as the
agent does, and counts the samples it made: what Core stored can then be
compared with what the nodes made, node by node.

Processes. The nodes are spread over a few worker processes (``--workers``,
default one per 7,000 nodes), each one trio loop. The WebSocket client is a
small RFC 6455 client (masked frames, no extensions) rather than
trio-websocket, and the work per heartbeat is kept small, so that the
simulator leaves the shared 2 cores to Core (its CPU per heartbeat is in
docs/performance.md, "The fleet simulator"):

- one trio task per node connects, says ``hello`` and waits for
  ``welcome``, then sleeps until its connection ends: after ``welcome`` a
  node costs no task wake at all;
- one "beater" task per worker does the rest, woken once per tick (50 ms):
  it reads what Core sent to any node since the last tick (one
  ``epoll_wait`` over every session's socket, then a ``recv`` on each that
  has data: acks, ``job.run``, pings, close), then sends every heartbeat due
  in this tick and puts each back one interval later on a wheel of ticks
  (the next tick if it fell more than an interval behind); a node whose
  Core has been silent too long is taken for dead when its heartbeat is due;
- after ``welcome`` every frame (heartbeats, job replies, pong, close) is
  written synchronously to the raw non-blocking socket (a dup of the
  connection's); what the kernel does not take waits in the node's small
  write buffer, which the beater flushes first on each tick, so frames are
  never interleaved and nobody waits; frames are masked with the zero key
  (RFC 6455 lets the client pick the key; the masked payload is then the
  payload, no copy);
- sample noise comes from tables of random numbers drawn once (a different
  walk through them per node), not from a dozen ``random`` calls per sample.

Start-up. First every worker registers its nodes (16 requests at a time),
then the parent names one start time and node ``i`` of ``N`` connects at
``start + ramp * i / N`` (``--ramp``, default N/500 s), so there is no
thundering herd. Every 2 s each worker reports its nodes online and its
failed handshakes (``Fleet.online``), so a benchmark waiting for the fleet
can say how far it got. Each node's first heartbeat comes at a random point
of its first interval, so heartbeats are spread evenly.

Measures. Per heartbeat: its send time and how late the simulator was in
sending it (sender lag: from the start of the tick its slot is in, so a few
ms when keeping up; the simulator's own overload shows there, not as
Core's; a heartbeat goes out up to a tick before its slot). Per ``heartbeat.ack``:
when it came and how many heartbeats it acked (its ``seq`` minus the
session's previous one). Counts of connects, disconnects, jobs answered and
``job.ack``s. How soon a heartbeat becomes queryable is Core's figure, not
the simulator's (acks are deliberately rare): ``GET /api/v1/status`` gives
the age of each heartbeat's newest sample at commit as a cumulative
histogram; run alone, the simulator prints its p50/p99 over the run from two
readings (``core_status``, ``IngestDelta``), as bench/ingest.py does over
its window.

Each worker writes to ``--out``: ``worker-N.hb`` (send times, float64),
``worker-N.lag`` (sender lag of the same heartbeats, in the same order),
``worker-N.acks`` (pairs: arrival time, heartbeats acked), ``worker-N.json``
(counts, errors, CPU seconds) and ``worker-N.log``.

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
import select
import socket
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

from servermgr.common import proto
from servermgr.common.errors import ProtocolError
from servermgr.common.ws import Backoff

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_PATH = "/api/v1/node/ws"
CONNECT_TIMEOUT = 10.0
WELCOME_TIMEOUT = 30.0
# A failed handshake or a lost connection is retried after a jittered
# exponential backoff (the agent's ``Backoff``): 0.5-1 s, 1-2 s, ... 15-30 s.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
PROGRESS_EVERY = 2.0  # s between a worker's "progress" events
REGISTER_CONCURRENCY = 16
NODES_PER_WORKER = 7_000  # two fds per node (the stream and its dup): stays under 20,000
# The beater's period (s). Each wake costs a few hundred us of CPU here however
# little it does, so 50 ms, not 10: ~30 % less simulator CPU per heartbeat
# (docs/performance.md, "The fleet simulator").
TICK = 0.05


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
    """A final client frame, masked as RFC 6455 requires of a client.

    The client picks the masking key; this one picks zero, so the masked
    payload is the payload itself (no copy). Core unmasks whatever the key,
    at the same cost.
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n, 0, 0, 0, 0))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126, n >> 8, n & 0xFF, 0, 0, 0, 0))
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big") + bytes(4)
    return head + payload


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
    """A minimal WebSocket client: text messages, ping/pong, close.

    Until ``go_raw`` frames are sent and received with the trio stream
    (``send_text``, ``recv``); after it synchronously on a non-blocking dup
    of the socket: ``write`` sends (the rest kept in ``wbuf`` when the
    kernel does not take it all, for ``flush``), ``receive`` reads what has
    come (the worker polls every connection's socket once per tick, so a
    message from Core costs no wake of its own). A failed write or read,
    or Core closing, sets ``broken`` and cancels ``scope`` (the session
    task's), which ends the session.
    """

    def __init__(self, stream: Any, leftover: bytes) -> None:
        self.stream = stream
        self.buf = bytearray(leftover)
        self.parts: list[bytes] = []
        self.sock: socket.socket | None = None
        self.wbuf = bytearray()
        self.unflushed: set[WsClient] = set()  # the worker's: clients with a non-empty wbuf
        self.broken: BaseException | None = None
        self.scope: Any = None  # a trio.CancelScope, cancelled when the connection fails
        self.last_rx = 0.0  # trio time Core last sent something (after go_raw)

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
        """Before ``go_raw``: send a text message through the trio stream."""
        await self.stream.send_all(encode_frame(0x1, text.encode()))

    def go_raw(self, unflushed: set[WsClient], scope: Any, now: float) -> int:
        """From now on, send with ``write`` and read with ``receive``; the socket's fd."""
        sock = socket.socket(fileno=os.dup(self.stream.socket.fileno()))
        sock.setblocking(False)
        self.sock = sock
        self.unflushed = unflushed
        self.scope = scope
        self.last_rx = now
        return sock.fileno()

    def receive(self, now: float) -> list[bytes]:
        """After ``go_raw``: the text messages that have come (maybe none); answers
        pings; ``Closed`` when Core closed or the connection broke."""
        if self.broken is not None or self.sock is None:
            raise Closed("connection already broken")
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError as exc:
            raise Closed(f"receive failed: {type(exc).__name__}: {exc}") from None
        if not chunk:
            raise Closed("connection closed by Core")
        self.last_rx = now
        self.buf += chunk
        return self.messages()

    def messages(self) -> list[bytes]:
        """After ``go_raw``: the whole text messages in the read buffer."""
        out = []
        while (frame := parse_frame(self.buf)) is not None:
            opcode, fin, payload, used = frame
            del self.buf[:used]
            if opcode == 0x8:
                self.write(encode_frame(0x8, payload[:2]))
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                raise Closed(f"closed by Core (code {code})")
            if opcode == 0x9:
                self.write(encode_frame(0xA, payload))
            elif opcode != 0xA:
                self.parts.append(payload)
                if fin:
                    out.append(b"".join(self.parts))
                    self.parts.clear()
        return out

    def write(self, frame: bytes) -> bool:
        """Send ``frame`` now or queue what is left of it; False if the connection broke."""
        if self.broken is not None or self.sock is None:
            return False
        if self.wbuf:  # behind earlier frames, in order
            self.wbuf += frame
            return True
        try:
            n = self.sock.send(frame)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.fail(exc)
            return False
        if n < len(frame):
            self.wbuf += memoryview(frame)[n:]
            self.unflushed.add(self)
        return True

    def flush(self) -> bool:
        """Send what waits in ``wbuf``; True when nothing is left (or it broke)."""
        if self.broken is not None or self.sock is None:
            return True
        try:
            n = self.sock.send(self.wbuf)
        except BlockingIOError:
            return False
        except OSError as exc:
            self.fail(exc)
            return True
        del self.wbuf[:n]
        return not self.wbuf

    def fail(self, exc: BaseException) -> None:
        """The connection is done: ``broken`` says why; the session task is cancelled."""
        if self.broken is None:
            self.broken = exc
        self.wbuf.clear()
        if self.scope is not None:
            self.scope.cancel()

    async def _control(self, opcode: int, payload: bytes) -> None:
        import trio

        frame = encode_frame(opcode, payload)
        if self.sock is not None:
            self.write(frame)
        else:
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self.stream.send_all(frame)

    async def recv(self) -> str:
        """The next text message. Cancel-safe: a cancelled call loses no bytes."""
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
                await self._control(0x8, payload[:2])
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                raise Closed(f"closed by Core (code {code})")
            if opcode == 0x9:
                await self._control(0xA, payload)
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

        self.unflushed.discard(self)
        if self.sock is not None:
            self.sock.close()
        await trio.aclose_forcefully(self.stream)


# Noise for the samples, drawn once: each node walks through these tables
# from its own offset with its own stride, so a sample costs a few lookups
# instead of a dozen calls into ``random`` (which were most of its cost).
_NOISE = 1 << 13  # table size (a power of 2); indices wrap with & (_NOISE - 1)
_NOISE_RNG = random.Random(20240601)
_GAUSS = [_NOISE_RNG.gauss(0, 1) for _ in range(_NOISE + 16)]  # N(0, 1)
_EXPO = [_NOISE_RNG.expovariate(1) for _ in range(_NOISE + 16)]  # Exp(1)
_UNIF = [_NOISE_RNG.random() for _ in range(_NOISE + 16)]  # U(0, 1)


class SampleGen:
    """Samples of one made-up machine; values drift from beat to beat.

    Disks grow a little on about one sample in four; the others reuse the
    previous ``DiskUsage`` objects (never changed once made, so samples kept
    together, as bench/storage.py does, stay independent).
    """

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
        self.pos = rng.randrange(_NOISE)
        self.stride = rng.randrange(17, _NOISE, 2)  # odd: visits every offset
        self.usage = self._disk_usage(0.0)

    def _disk_usage(self, grow: float) -> list[proto.DiskUsage]:
        usage = []
        for j, (mount, fs, total) in enumerate(self.disks):
            self.disk_used[j] = d = min(0.99, self.disk_used[j] + grow)
            used = int(total * d)
            usage.append(
                proto.DiskUsage(
                    mount=mount, fstype=fs, total=total, used=used, percent=round(100 * d, 1)
                )
            )
        return usage

    def sample(self, ts: float) -> proto.Sample:
        i = self.pos
        self.pos = (i + self.stride) & (_NOISE - 1)
        g, e, u = _GAUSS, _EXPO, _UNIF
        cpu = self.cpu + 5 * g[i]
        cpu = cpu if 0.0 <= cpu <= 100.0 else 0.0 if cpu < 0.0 else 100.0
        self.cpu = cpu
        mem = self.mem + 0.01 * g[i + 1]
        mem = mem if 0.05 <= mem <= 0.98 else 0.05 if mem < 0.05 else 0.98
        self.mem = mem
        per_core = [cpu + 10 * z for z in g[i + 2 : i + 2 + self.cores]]
        for j, c in enumerate(per_core):
            if c < 0.0:
                per_core[j] = 0.0
            elif c > 100.0:
                per_core[j] = 100.0
        load = cpu / 100 * self.cores
        mem_total = self.mem_total
        used = int(mem * mem_total)
        swap_total = self.swap_total
        swap_used = int(swap_total * 0.05 * u[i])
        if u[i + 3] < 0.25:
            self.usage = self._disk_usage(4e-5 * u[i + 4])
        rx0, tx0, rx1, tx1 = 2e5 * e[i], 1e5 * e[i + 1], 2e5 * e[i + 2], 1e5 * e[i + 3]
        n0, n1 = self.nets
        return proto.Sample(
            ts=ts,
            cpu_percent=cpu,
            cpu_per_core=per_core,
            load1=load * (0.9 + 0.2 * u[i + 1]),
            load5=load,
            load15=load * (0.8 + 0.2 * u[i + 2]),
            mem_total=mem_total,
            mem_used=used,
            mem_available=mem_total - used,
            mem_percent=round(100 * mem, 1),
            swap_total=swap_total,
            swap_used=swap_used,
            swap_percent=round(100 * swap_used / swap_total, 1) if swap_total else 0.0,
            disks=self.usage,
            disk_read_bps=5e5 * e[i + 4],
            disk_write_bps=1e6 * e[i + 5],
            net_rx_bps=rx0 + rx1,
            net_tx_bps=tx0 + tx1,
            nets=[
                proto.NetRate(name=n0, rx_bps=rx0, tx_bps=tx0),
                proto.NetRate(name=n1, rx_bps=rx1, tx_bps=tx1),
            ],
            uptime=ts - self.boot,
            procs=self.procs + int(11 * u[i + 5]) - 5,
        )

    def info(self) -> proto.SystemInfo:
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
    # With ``keep_unacked`` (as the real agent does): timestamps of samples
    # made and not yet acked -- ``inflight`` sent under a seq of the current
    # session, ``unsent`` waiting -- and how many samples were made at all.
    produced: int = 0
    inflight: deque[tuple[int, float]] = field(default_factory=deque)
    unsent: deque[float] = field(default_factory=deque)
    ran: set[str] = field(default_factory=set)  # job ids answered (a re-sent one runs nothing)
    # Results Core has not acked (the agent's spool): named in the hello and
    # sent again after the next welcome, as the real agent does.
    unacked: dict[str, proto.JobResult] = field(default_factory=dict)

    def requeue(self) -> None:
        """After a lost connection: what was in flight is sent again, first (node/agent.py)."""
        self.unsent.extendleft(t for _, t in reversed(self.inflight))
        self.inflight.clear()


class Session:
    """A node's connection after ``welcome``: what the beater needs to send its heartbeats."""

    __slots__ = ("acked", "gen", "interval", "node", "period", "seq", "silent", "ws")

    def __init__(
        self, node: SimNode, gen: int, ws: WsClient, interval: float, silent: float
    ) -> None:
        self.node = node
        self.gen = gen  # tells this session's wheel entries from an earlier session's
        self.ws = ws
        self.interval = interval
        self.period = max(1, round(interval / TICK))  # ticks between heartbeats
        self.silent = silent  # Core silent this long (s): the connection is taken for dead
        self.seq = 0  # of the last heartbeat sent
        self.acked = 0  # the highest heartbeat.ack seq


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
    keep_unacked: bool = False
    handshakes: int = 0  # at most this many nodes handshaking at once (0: no bound)


@dataclass
class WorkerStats:
    registered: int = 0
    register_seconds: float = 0.0
    connected: int = 0
    connect_seconds: float = 0.0
    sessions: int = 0
    connect_failures: int = 0  # handshakes that failed: TCP, the upgrade, or hello -> welcome
    disconnects: int = 0
    hb_sent: int = 0
    acks: int = 0  # heartbeat.ack messages
    hb_acked: int = 0  # heartbeats they acked (cumulative seq)
    jobs: int = 0
    job_reruns: int = 0  # job.run messages for a job this node had already answered
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
        # Per heartbeat: wall-clock send time and sender lag (s), in the same order.
        self.sent_at = array("d")
        self.lag = array("d")
        # Per heartbeat.ack: wall-clock arrival time, heartbeats it acked.
        self.acks = array("d")
        self.nodes = [
            SimNode(i, f"{cfg.prefix}-{i:05d}", SampleGen(random.Random(cfg.seed * 1_000_003 + i)))
            for i in cfg.indices
        ]
        self.sessions: list[Session | None] = [None] * len(self.nodes)
        self.generation = 0
        # Tick number (trio time // TICK) -> (node k, session generation) of the
        # heartbeats due in that tick; ``done``: the last tick the beater sent.
        self.wheel: dict[int, list[tuple[int, int]]] = {}
        self.done = -1
        self.unflushed: set[WsClient] = set()
        # Every session's socket (its dup), polled once per tick for what Core sent.
        self.poller = select.epoll()
        self.by_fd: dict[int, Session] = {}
        self.connected_changed: Any = None  # a trio.Event while someone waits for connects
        self.quiet = False  # after "quiesce": no new samples, the unacked ones still go out

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
            limiter = trio.CapacityLimiter(self.cfg.handshakes or math.inf)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.beater)
                for k, node in enumerate(self.nodes):
                    at = float(start) + float(ramp) * node.index / self.cfg.total
                    nursery.start_soon(self.run_node, k, node, at, limiter)
                nursery.start_soon(self.report_connected, float(start))
                nursery.start_soon(self.report_progress, limiter)
                async for line in lines:
                    if line == "stats":
                        self.emit("stats", **self.snapshot())
                    elif line == "quiesce":
                        self.quiet = True
                        self.emit("quiesced")
                    else:  # "stop"
                        break
                nursery.cancel_scope.cancel()
        await stdin.aclose()
        self.finish()

    def snapshot(self) -> dict[str, Any]:
        """Counts now: per node (samples made, not acked), per job (nodes that ran it)."""
        jobs: dict[str, int] = {}
        for n in self.nodes:
            for j in n.ran:
                jobs[j] = jobs.get(j, 0) + 1
        return {
            "connected": self.stats.connected,
            "sessions": self.stats.sessions,
            "disconnects": self.stats.disconnects,
            "connect_failures": self.stats.connect_failures,
            "job_reruns": self.stats.job_reruns,
            "nodes": {n.name: [n.produced, len(n.inflight) + len(n.unsent)] for n in self.nodes},
            "jobs": jobs,
            "errors": self.stats.errors,
        }

    async def report_connected(self, start: float) -> None:
        import trio

        wanted = sum(1 for n in self.nodes if n.credential)
        while self.stats.connected < wanted:
            self.connected_changed = trio.Event()
            await self.connected_changed.wait()
        self.stats.connect_seconds = time.time() - start
        self.emit("connected", n=self.stats.connected, seconds=self.stats.connect_seconds)

    async def report_progress(self, limiter: Any) -> None:
        """Every PROGRESS_EVERY: nodes online, failed handshakes, handshakes under way."""
        import trio

        while True:
            self.emit(
                "progress",
                online=self.stats.connected,
                failed=self.stats.connect_failures,
                handshaking=limiter.borrowed_tokens,
            )
            await trio.sleep(PROGRESS_EVERY)

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

    async def run_node(self, k: int, node: SimNode, at: float, limiter: Any) -> None:
        """Connect at ``at``, then keep the node connected.

        At most ``limiter``'s tokens of nodes handshake at once (a slow Core
        slows the ramp rather than timing handshakes out); a failed handshake
        or a lost connection is retried after the backoff, reset by ``welcome``.
        """
        import trio

        if not node.credential:
            return
        await trio.sleep(max(0.0, at - time.time()))
        backoff = Backoff(base=BACKOFF_BASE, cap=BACKOFF_CAP)
        while True:
            try:
                async with limiter:
                    ws = await WsClient.connect(self.host, self.port, WS_PATH, node.credential)
                    try:
                        welcome = await self.handshake(node, ws)
                    except BaseException:
                        with trio.CancelScope(shield=True):
                            await ws.aclose()
                        raise
            except (
                Closed,
                OSError,
                HandshakeFailed,
                trio.TooSlowError,
                trio.BrokenResourceError,
            ) as exc:
                self.stats.connect_failures += 1
                self.error("handshake", exc)
                await trio.sleep(backoff.next())
                continue
            backoff.reset()
            try:
                await self.session(k, node, ws, welcome)
            except (Closed, OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                self.stats.disconnects += 1
                self.error("session", exc)
            finally:
                self.sessions[k] = None  # the beater drops its wheel entry
                node.requeue()
                with trio.CancelScope(shield=True):
                    await ws.aclose()
                if node.connected_once:
                    self.stats.connected -= 1
                    node.connected_once = False
            await trio.sleep(backoff.next())

    async def handshake(self, node: SimNode, ws: WsClient) -> proto.Welcome:
        """Say hello and wait for ``welcome``."""
        import trio

        hello = proto.Hello(
            protocol=proto.PROTOCOL_VERSION,
            node_id=node.node_id,
            hostname=node.name,
            agent_version="fleet-sim",
            info=node.gen.info(),
            labels=self.cfg.labels,
            jobs=list(node.unacked),
        )
        await ws.send_text(proto.encode(hello))
        with trio.fail_after(WELCOME_TIMEOUT):
            msg = proto.decode_from_core(await ws.recv())
        if not isinstance(msg, proto.Welcome):
            raise Closed(f"expected welcome, got {type(msg).__name__}")
        return msg

    async def session(self, k: int, node: SimNode, ws: WsClient, msg: proto.Welcome) -> None:
        """Read what Core sends; the beater sends the heartbeats."""
        import trio

        interval = msg.heartbeat_interval
        self.stats.sessions += 1
        self.stats.connected += 1
        if self.connected_changed is not None:
            self.connected_changed.set()
        node.connected_once = True
        # Like the agent: a Core silent this long is gone (a partition drops
        # packets without closing anything): reconnect. The beater checks it
        # when it sends the node's heartbeat.
        silent = max(interval * 3, msg.ack_interval + 2 * interval) + 1.0
        self.generation += 1
        with trio.CancelScope() as scope:
            fd = ws.go_raw(self.unflushed, scope, trio.current_time())
            session = Session(node, self.generation, ws, interval, silent)
            try:
                self.poller.register(fd, select.EPOLLIN)
                self.by_fd[fd] = session
                for result in node.unacked.values():
                    ws.write(encode_frame(0x1, proto.encode(result).encode()))
                for text in ws.messages():  # what came with welcome
                    self.handle(session, proto.decode_from_core(text))
                self.sessions[k] = session
                first = int((trio.current_time() + random.uniform(0, interval)) / TICK)
                self.wheel.setdefault(max(first, self.done + 1), []).append((k, session.gen))
                await trio.sleep_forever()  # until ws.fail cancels the scope
            finally:
                self.by_fd.pop(fd, None)
                with contextlib.suppress(OSError, ValueError):
                    self.poller.unregister(fd)
        if ws.broken is not None:
            raise Closed(f"{type(ws.broken).__name__}: {ws.broken}")

    def handle(self, session: Session, msg: Any) -> None:
        if isinstance(msg, proto.HeartbeatAck):
            self.stats.acks += 1
            inflight = session.node.inflight
            while inflight and inflight[0][0] <= msg.seq:
                inflight.popleft()
            if msg.seq > session.acked:
                n = msg.seq - session.acked
                session.acked = msg.seq
                self.stats.hb_acked += n
                self.acks.append(time.time())
                self.acks.append(n)
        elif isinstance(msg, proto.JobRun):
            if msg.job_id in session.node.ran:
                self.stats.job_reruns += 1  # answered again below, counted once
            else:
                session.node.ran.add(msg.job_id)
                self.stats.jobs += 1
            t0 = time.perf_counter()
            ws = session.ws
            ws.write(
                encode_frame(
                    0x1,
                    proto.encode(
                        proto.JobOutput(job_id=msg.job_id, stream="stdout", offset=0, chunk=b"")
                    ).encode(),
                )
            )
            result = proto.JobResult(
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
            session.node.unacked[msg.job_id] = result
            ws.write(encode_frame(0x1, proto.encode(result).encode()))
        elif isinstance(msg, proto.JobAck):
            self.stats.job_acks += 1
            session.node.unacked.pop(msg.job_id, None)
        elif isinstance(msg, proto.Error):
            self.error("core error", RuntimeError(f"{msg.code}: {msg.message}"))

    def read_all(self, now: float) -> None:
        """What Core sent to any session since the last tick (one ``epoll_wait``)."""
        for fd, _ in self.poller.poll(0):
            session = self.by_fd.get(fd)
            if session is None:
                continue
            ws = session.ws
            try:
                for text in ws.receive(now):
                    self.handle(session, proto.decode_from_core(text))
            except (Closed, ProtocolError) as exc:
                ws.fail(exc)

    async def beater(self) -> None:
        """Every TICK: flush write buffers, read what Core sent, then send every
        heartbeat that is due (and take a node whose Core fell silent for dead).

        Each heartbeat is put back one interval later on the wheel of ticks;
        one that fell more than an interval behind goes to the next tick.
        """
        import trio

        encode, heartbeat = proto.encode, proto.Heartbeat
        wheel, sessions, unflushed = self.wheel, self.sessions, self.unflushed
        sent_at, lags, stats = self.sent_at, self.lag, self.stats
        wall, clock = time.time, trio.current_time
        keep, most = self.cfg.keep_unacked, proto.MAX_SAMPLES_PER_HEARTBEAT
        self.done = int(clock() / TICK)
        while True:
            await trio.sleep_until((self.done + 1) * TICK)
            if unflushed:
                for ws in list(unflushed):
                    if ws.flush():
                        unflushed.discard(ws)
            now = clock()
            self.read_all(now)
            current = int(now / TICK)
            wall0 = wall()
            for t in range(self.done + 1, current + 1):
                self.done = t
                due_now = wheel.pop(t, None)
                if due_now is None:
                    continue
                lag0 = now - t * TICK - wall0
                for k, gen in due_now:
                    s = sessions[k]
                    if s is None or s.gen != gen:
                        continue  # that session ended
                    if now - s.ws.last_rx > s.silent:
                        s.ws.fail(Closed(f"Core silent for {s.silent:g} s"))
                        continue
                    later = t + s.period
                    if later <= current:
                        later = current + 1
                    ts = wall()
                    if keep:
                        node = s.node
                        if not self.quiet:
                            node.produced += 1
                            node.unsent.append(ts)
                        if not node.unsent:  # quiesced, nothing left to send
                            wheel.setdefault(later, []).append((k, gen))
                            continue
                        s.seq += 1
                        batch = [node.unsent.popleft() for _ in range(min(most, len(node.unsent)))]
                        node.inflight.extend((s.seq, made) for made in batch)
                        samples = [node.gen.sample(made) for made in batch]
                        hb = heartbeat(seq=s.seq, samples=samples)
                    else:
                        s.seq += 1
                        hb = heartbeat(seq=s.seq, samples=[s.node.gen.sample(ts)])
                    if not s.ws.write(encode_frame(0x1, encode(hb).encode())):
                        continue
                    sent_at.append(ts)
                    lags.append(lag0 + ts)
                    stats.hb_sent += 1
                    wheel.setdefault(later, []).append((k, gen))

    def finish(self) -> None:
        out = Path(self.cfg.out)
        with open(out / f"worker-{self.cfg.worker}.hb", "wb") as f:
            self.sent_at.tofile(f)
        with open(out / f"worker-{self.cfg.worker}.lag", "wb") as f:
            self.lag.tofile(f)
        with open(out / f"worker-{self.cfg.worker}.acks", "wb") as f:
            self.acks.tofile(f)
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
class FleetWindow:
    """What the simulator saw in one time window."""

    seconds: float
    sent: int  # heartbeats sent in the window
    acked: int  # heartbeats acked by heartbeat.acks that arrived in the window
    lag: list[float]  # sender lag (s) of the heartbeats sent in the window

    @property
    def sent_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else math.nan


@dataclass
class FleetResult:
    """What the workers measured, merged."""

    nodes: int
    workers: list[dict[str, Any]]
    sent_at: list[float]  # wall-clock send time of every heartbeat
    lag: list[float]  # its sender lag (s), same order
    ack_at: list[float]  # arrival time of every heartbeat.ack that acked something
    ack_n: list[int]  # heartbeats it acked, same order
    worker_cpu: float

    def total(self, key: str) -> int:
        return int(sum(w[key] for w in self.workers))

    def errors(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for w in self.workers:
            for k, v in w["errors"].items():
                merged[k] = merged.get(k, 0) + v
        return merged

    def window(self, t0: float, t1: float) -> FleetWindow:
        """Heartbeats sent in [t0, t1], their sender lag, and heartbeats acked in it."""
        lag = [d for ts, d in zip(self.sent_at, self.lag, strict=True) if t0 <= ts <= t1]
        acked = sum(n for ts, n in zip(self.ack_at, self.ack_n, strict=True) if t0 <= ts <= t1)
        return FleetWindow(t1 - t0, len(lag), acked, lag)


def core_status(core_url: str, key: str) -> dict[str, Any]:
    """Core's ``GET /api/v1/status`` document, plus ``read_at``.

    ``read_at``: wall-clock time halfway through the request, when Core took
    its figures (near enough: the request takes a few ms on loopback).
    """
    import httpx

    with httpx.Client(
        base_url=core_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30.0,
        trust_env=False,
    ) as http:
        for attempt in range(3):  # a Core starved of CPU may drop the connection
            try:
                t0 = time.time()
                resp = http.get("/api/v1/status")
                t1 = time.time()
                break
            except httpx.TransportError:
                if attempt == 2:
                    raise
                time.sleep(1.0)
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        doc["read_at"] = (t0 + t1) / 2
        return doc


def counts_between(before: list[int], after: list[int]) -> list[int]:
    """What a list of cumulative counters (a histogram) gained between two readings."""
    return [y - x for x, y in zip(before, after, strict=True)]


@dataclass
class IngestDelta:
    """Core's ingest between two ``/api/v1/status`` readings.

    ``stored``: samples committed. ``counts``: the sample-age histogram of
    the heartbeats committed in between (the age of each one's newest
    sample, from its ``ts`` to the commit), buckets as Core's
    ``ingest.sample_age_ms.bounds``; the last one is "older than the last
    bound". Quantiles come from ``servermgr.core.writer.quantile``: the upper
    bound of the bucket holding them (bounds are 10 % apart). ``start`` and
    ``end``: the readings' ``read_at``, to count the simulator's heartbeats
    over the same time (``FleetResult.window(start, end)``).
    """

    stored: int
    counts: list[int]
    bounds: list[float]
    start: float
    end: float

    @classmethod
    def between(cls, before: dict[str, Any], after: dict[str, Any]) -> IngestDelta:
        a, b = before["ingest"], after["ingest"]
        bounds = b["sample_age_ms"]["bounds"]
        if bounds != a["sample_age_ms"]["bounds"]:
            raise RuntimeError("Core's sample-age histogram bounds changed between readings")
        counts = counts_between(a["sample_age_ms"]["counts"], b["sample_age_ms"]["counts"])
        return cls(
            b["samples_stored"] - a["samples_stored"],
            counts,
            bounds,
            before["read_at"],
            after["read_at"],
        )

    @property
    def heartbeats(self) -> int:
        """Heartbeats committed (each counted once in the histogram)."""
        return sum(self.counts)

    def quantile_ms(self, q: float) -> float | None:
        """Upper bound (ms) of the bucket holding quantile ``q``; None if empty.

        ``math.inf`` when it lies beyond the last bound (older than 2 minutes).
        """
        from servermgr.core.writer import AGE_BOUNDS_MS, quantile

        if list(self.bounds) != list(AGE_BOUNDS_MS):
            raise RuntimeError(
                "Core's sample-age buckets differ from this checkout's servermgr.core.writer"
            )
        if not self.heartbeats:
            return None
        value = quantile(self.counts, q)
        return math.inf if value is None else value

    def max_ms(self) -> float | None:
        """Upper bound (ms) of the oldest non-empty bucket (``math.inf``: the overflow one)."""
        for i in range(len(self.counts) - 1, -1, -1):
            if self.counts[i]:
                return self.bounds[i] if i < len(self.bounds) else math.inf
        return None


def age_ms(value: float | None) -> str:
    """A bucket bound from ``IngestDelta`` for a table."""
    if value is None:
        return "n/a"
    if value == math.inf:
        return "> 120000"
    return f"{value:g}"


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
        keep_unacked: bool = False,
        prefix_cmd: list[str] | None = None,
        handshakes: int = 0,
    ) -> None:
        """``keep_unacked``: nodes keep samples until acked and re-send them after a
        reconnect, as the agent does, and count what they made (``stats``), so a
        benchmark can compare that with what Core stored. ``prefix_cmd``: run the
        workers under it (``ip netns exec NS``). ``handshakes``: at most this many
        nodes per worker handshaking at once (0: no bound, every node on its own
        like real agents); a Core slower than the ramp then slows the ramp
        instead of timing handshakes out.
        """
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
        self.keep_unacked = keep_unacked
        self.prefix_cmd = prefix_cmd or []
        self.handshakes = handshakes
        self.children: list[subprocess.Popen[bytes]] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.got: dict[str, dict[int, dict[str, Any]]] = {}  # event -> worker -> the event
        self.progress: dict[int, dict[str, Any]] = {}  # worker -> its latest "progress"
        self.register_seconds = 0.0
        self.connect_seconds = 0.0
        self._t_launch = 0.0
        self._t_connect = 0.0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.children]

    def cpu_seconds(self) -> float:
        return sum(benchlib.cpu_seconds(p) for p in self.pids)

    def core_status(self) -> dict[str, Any]:
        """Core's ``GET /api/v1/status`` with ``read_at`` (see ``IngestDelta``)."""
        return core_status(self.core_url, self.key)

    def start(self, timeout: float = 600.0) -> None:
        """Start the workers and register every node; returns when all are registered."""
        self.launch()
        self.wait_registered(timeout)

    def launch(self) -> None:
        """Start the workers, which register every node (``wait_registered`` waits for it).

        Several fleets (one per Core process) launch first and wait after, so
        that they register side by side."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._t_launch = time.time()
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
                keep_unacked=self.keep_unacked,
                handshakes=self.handshakes,
            )
            proc = self.procs.start(
                [
                    *self.prefix_cmd,
                    sys.executable,
                    __file__,
                    "--worker-config",
                    json.dumps(cfg.__dict__),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                log=self.out / f"worker-{w}.log",
                nofile=len(cfg.indices) + 1024,
            )
            self.children.append(proc)
            threading.Thread(target=self._read, args=(proc, w), daemon=True).start()

    def wait_registered(self, timeout: float = 600.0) -> None:
        """Return when every node is registered (after ``launch``)."""
        done = self._wait("registered", timeout)
        self.register_seconds = time.time() - self._t_launch
        registered = sum(e["n"] for e in done)
        if registered < self.nodes:
            raise RuntimeError(f"only {registered} of {self.nodes} nodes registered")

    def connect(self, timeout: float | None = None) -> None:
        """Open every node's WebSocket, spread over the ramp; returns when all have ``welcome``."""
        self.begin_connect()
        self.wait_connected(timeout)

    def begin_connect(self, start: float | None = None) -> None:
        """Tell the workers to connect their nodes from ``start`` (epoch s) over the ramp.

        Several fleets begin together and then wait (``wait_connected``): a
        fleet that waited for the one before it would start its ramp late."""
        self._t_connect = start if start is not None else time.time() + 0.2
        for proc in self.children:
            self._send(proc, f"connect {self._t_connect} {self.ramp}")

    def wait_connected(self, timeout: float | None = None) -> None:
        """Return when every node has ``welcome`` (after ``begin_connect``).

        ``TimeoutError`` past ``timeout`` (default three ramps plus two minutes),
        saying how many nodes are online."""
        timeout = timeout if timeout is not None else 3 * self.ramp + 120.0
        try:
            done = self._wait("connected", max(0.0, self._t_connect + timeout - time.time()))
        except TimeoutError:
            raise TimeoutError(
                f"{self.prefix}: {self.describe_online()} "
                f"{time.time() - self._t_connect:.0f} s after the connects began"
            ) from None
        self.connect_seconds = max(e["seconds"] for e in done)

    def connected(self) -> bool:
        """Whether every node has had ``welcome`` (after ``begin_connect``); does not wait."""
        with contextlib.suppress(TimeoutError):
            done = self._wait("connected", 0.0, keep=True)
            self.connect_seconds = max(e["seconds"] for e in done)
            return True
        return False

    def online(self) -> tuple[int, int]:
        """(nodes online, failed handshakes so far), from the workers' latest progress."""
        progress = list(self.progress.values())
        return sum(p["online"] for p in progress), sum(p["failed"] for p in progress)

    def describe_online(self) -> str:
        """Now: "7,003 of 10,000 nodes online, 3,701 failed handshakes"."""
        online, failed = self.online()
        return f"{online:,} of {self.nodes:,} nodes online, {failed:,} failed handshakes"

    def stats(self, timeout: float = 60.0) -> dict[str, Any]:
        """The workers' counts now, merged: see ``Worker.snapshot``."""
        for proc in self.children:
            self._send(proc, "stats")
        merged: dict[str, Any] = {"nodes": {}, "jobs": {}, "errors": {}}
        for doc in self._wait("stats", timeout):
            for key in ("connected", "sessions", "disconnects", "connect_failures", "job_reruns"):
                merged[key] = merged.get(key, 0) + doc[key]
            merged["nodes"].update(doc["nodes"])
            for key in ("jobs", "errors"):
                for k, v in doc[key].items():
                    merged[key][k] = merged[key].get(k, 0) + v
        return merged

    def quiesce(self, timeout: float = 60.0) -> None:
        """From now on nodes make no new samples; what they hold unacked is still sent."""
        for proc in self.children:
            self._send(proc, "quiesce")
        self._wait("quiesced", timeout)

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
        lag: list[float] = []
        ack_at: list[float] = []
        ack_n: list[int] = []
        for w, proc in enumerate(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            doc = json.loads((self.out / f"worker-{w}.json").read_text())
            cpu += doc["cpu_seconds"]
            docs.append(doc)
            sent_at.extend(_read_doubles(self.out / f"worker-{w}.hb"))
            lag.extend(_read_doubles(self.out / f"worker-{w}.lag"))
            acks = _read_doubles(self.out / f"worker-{w}.acks")
            ack_at.extend(acks[0::2])
            ack_n.extend(int(n) for n in acks[1::2])
        for proc in self.children:
            self.procs.stop(proc)
        self.children.clear()
        return FleetResult(self.nodes, docs, sent_at, lag, ack_at, ack_n, cpu)

    def _send(self, proc: subprocess.Popen[bytes], line: str) -> None:
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.write(line.encode() + b"\n")
                proc.stdin.flush()

    def _read(self, proc: subprocess.Popen[bytes], worker: int) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with contextlib.suppress(ValueError):
                e = json.loads(raw)
                if e.get("event") == "progress":
                    self.progress[worker] = e
                else:
                    self.events.put(e)
        self.events.put({"event": "exit", "worker": worker})

    def _wait(self, event: str, timeout: float, *, keep: bool = False) -> list[dict[str, Any]]:
        """Every worker's ``event``, waiting up to ``timeout``; events of other kinds
        that come meanwhile are kept for their own wait. ``keep``: leave them kept."""
        got = self.got.setdefault(event, {})
        deadline = time.monotonic() + timeout
        while len(got) < len(self.children):
            try:
                wait = deadline - time.monotonic()
                e = self.events.get(timeout=wait) if wait > 0 else self.events.get_nowait()
            except queue.Empty:
                raise TimeoutError(
                    f"fleet: {len(got)} of {len(self.children)} workers reported "
                    f"{event!r} within {timeout:g} s"
                ) from None
            if e["event"] == "exit" and event != "done":
                log = self.out / f"worker-{e['worker']}.log"
                raise RuntimeError(
                    f"fleet worker {e['worker']} exited early:\n{benchlib.tail(log)}"
                )
            self.got.setdefault(e["event"], {})[e["worker"]] = e
        if not keep:
            del self.got[event]
        return list(got.values())


def _read_doubles(path: Path) -> array[float]:
    data = array("d")
    with open(path, "rb") as f:
        data.frombytes(f.read())
    return data


# ==== standalone ===================================================================


def summary_rows(
    result: FleetResult, t0: float, t1: float, core: IngestDelta | None = None
) -> list[tuple[str, str]]:
    """The simulator's figures over [t0, t1]; with ``core``, Core's over the same time."""
    win = result.window(t0, t1)
    rows = [
        ("nodes", str(result.nodes)),
        ("registered", str(result.total("registered"))),
        ("sessions opened", str(result.total("sessions"))),
        (
            "disconnects / connect failures",
            f"{result.total('disconnects')} / {result.total('connect_failures')}",
        ),
        ("heartbeats sent in window (per s)", f"{win.sent} ({win.sent_per_s:.0f})"),
        ("heartbeats acked in window (heartbeat.ack is cumulative)", str(win.acked)),
        (
            "sender lag p50 / p99 ms",
            f"{benchlib.ms(benchlib.percentile(win.lag, 50))} / "
            f"{benchlib.ms(benchlib.percentile(win.lag, 99))}",
        ),
        ("jobs answered / job.acks", f"{result.total('jobs')} / {result.total('job_acks')}"),
        ("simulator CPU s (whole run)", f"{result.worker_cpu:.1f}"),
        ("errors", json.dumps(result.errors()) or "{}"),
    ]
    if core is not None:
        secs = t1 - t0
        rows += [
            ("Core: samples stored in window (per s)", f"{core.stored} ({core.stored / secs:.0f})"),
            (
                "Core: sample age at commit p50 / p99 ms",
                f"{age_ms(core.quantile_ms(0.5))} / {age_ms(core.quantile_ms(0.99))}",
            ),
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run N simulated nodes against a running Core (see the module docstring).",
    )
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    parser.add_argument("--core", help="Core's URL, e.g. http://127.0.0.1:9999")
    parser.add_argument("--key", default=os.environ.get("SERVERMGR_KEY"), help="the core key")
    parser.add_argument("--nodes", type=int, default=100, help="how many nodes (default 100)")
    parser.add_argument("--workers", type=int, help="worker processes (default 1 per 7,000)")
    parser.add_argument("--ramp", type=float, help="seconds to spread connects over (N/500)")
    parser.add_argument(
        "--handshakes",
        type=int,
        default=32,
        help="nodes per worker handshaking at once (32; 0: no bound, like real agents)",
    )
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
    core: IngestDelta | None = None
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
            handshakes=args.handshakes,
        )
        fleet.start()
        print(f"registered {args.nodes} nodes in {fleet.register_seconds:.1f} s", flush=True)
        fleet.connect()
        print(f"connected in {fleet.connect_seconds:.1f} s", flush=True)
        before = _status_or_none(fleet)
        t0 = time.time()
        time.sleep(args.duration)
        t1 = time.time()
        after = _status_or_none(fleet)
        if before is not None and after is not None:
            core = IngestDelta.between(before, after)
            t0, t1 = core.start, core.end  # count the heartbeats over Core's time
        result = fleet.stop()
    benchlib.print_table(
        "fleet simulator", ["measure", "value"], summary_rows(result, t0, t1, core)
    )
    return 0


def _status_or_none(fleet: Fleet) -> dict[str, Any] | None:
    """Core's status, or None (with a note) if this Core does not have it."""
    import httpx

    try:
        return fleet.core_status()
    except httpx.HTTPError as exc:
        print(f"no Core status ({exc}): Core's sample age is not shown", flush=True)
        return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
