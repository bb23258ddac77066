"""The rig of bench/faults.py: one Core, real agents, simulated nodes, and the checks.

Each fault gets a fresh ``Rig``: a Core subprocess with its own data dir,
real agents (``servermgr node run``, each in its own directory, which is
its jobs' working directory), and simulated nodes (bench/fleet_sim.py with
``keep_unacked``: they keep their samples until Core acks them, re-send
them after a reconnect, as the agent does, and count what they made).

What "nothing lost" means here, checked by counts, never by timing:

- samples: every sample a simulated node made is in Core's database, once
  (``metrics`` is keyed by node and timestamp, so a sample is stored at
  most once; the check is that the count per node equals what the node
  made). A real agent's stored samples may have no hole: the agent makes
  one per interval, connected or not, so a missing one leaves a gap of at
  least two intervals between stored timestamps.
- jobs: one submission is one job (a retry after a lost answer did not
  make a second); every targeted node's entry is final with the right
  state; a real agent ran the command at most once (each command appends a
  token to ``ran.log`` in the agent's directory) and it ran exactly when
  its entry says ``succeeded``.

Also the system plumbing the faults need: network namespaces with a veth
pair, a tmpfs, slow unauthenticated clients.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import httpx
from fleet_sim import Fleet

FINAL_STATES = {
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "refused",
    "expired",
    "lost",
    "stalled",
}
DB_NAME = "server_manager.db"


class Failed(Exception):
    """A step of a fault did not happen in its time bound."""


@dataclass
class Settings:
    quick: bool
    interval: float  # Core's heartbeat interval for most faults (s)
    sims: int  # simulated nodes per fault
    agents: int  # real agents per fault
    hold: float  # how long a fault lasts (partition, disk full, ...)
    storm_nodes: int
    storm_interval: float
    slow_clients: int
    nofile_cap: int
    bound: float  # the longest any one wait may take (s)


QUICK = Settings(True, 0.5, 100, 3, 8.0, 500, 1.0, 400, 256, 60.0)
FULL = Settings(False, 1.0, 1000, 3, 20.0, 5000, 5.0, 1500, 512, 180.0)


def wait_until(what: str, check: Callable[[], Any], timeout: float, step: float = 0.1) -> float:
    """Poll ``check`` until it is truthy; the seconds it took (``Failed`` past ``timeout``)."""
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise Failed(f"{what}: not within {timeout:g} s")
        time.sleep(step)


@dataclass
class SampleCheck:
    made: int = 0
    stored: int = 0
    missing: dict[str, int] = field(default_factory=dict)  # node -> samples not stored
    agent_holes: dict[str, float] = field(default_factory=dict)  # agent -> longest gap (intervals)
    agent_samples: int = 0

    @property
    def lost(self) -> bool:
        return bool(self.missing) or bool(self.agent_holes)

    def describe(self) -> str:
        text = f"samples made {self.made:,}, stored {self.stored:,}"
        if self.missing:
            worst = sorted(self.missing.items(), key=lambda kv: -kv[1])[:3]
            text += (
                f" ({sum(self.missing.values()):,} missing on {len(self.missing)} nodes, e.g. "
                + ", ".join(f"{n} {k}" for n, k in worst)
                + ")"
            )
        text += f"; agents {self.agent_samples:,} stored"
        if self.agent_holes:
            text += (
                " with holes ("
                + ", ".join(f"{n}: {g:.1f} intervals" for n, g in self.agent_holes.items())
                + ")"
            )
        else:
            text += ", no hole"
        return text


@dataclass
class JobCheck:
    token: str
    jobs: int = 0
    nodes: int = 0
    states: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        return bool(self.problems)

    def describe(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()))
        text = f"{self.jobs} job, {self.nodes} results ({states})"
        if self.problems:
            text += "; " + "; ".join(self.problems[:4])
        return text


class Rig:
    """One fault's Core, agents and simulated nodes; everything stops with ``procs``."""

    def __init__(
        self, procs: benchlib.Procs, base: Path, settings: Settings, *, host: str = "127.0.0.1"
    ) -> None:
        self.procs = procs
        self.base = base
        self.s = settings
        self.host = host
        self.interval = settings.interval
        self.core: benchlib.Core | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.agent_prefix: dict[str, list[str]] = {}
        self.fleets: list[Fleet] = []

    # --- Core ------------------------------------------------------------------------

    @property
    def db(self) -> Path:
        return self.base / "core-data" / DB_NAME

    def start_core(self, *, interval: float | None = None, nofile_cap: int | None = None) -> None:
        if interval is not None:
            self.interval = interval
        self.core = benchlib.start_core(
            self.procs,
            self.base,
            interval=self.interval,
            log_level="info",
            host=self.host,
            nofile=20_000,
            nofile_cap=nofile_cap,
        )

    def restart_core(self, timeout: float | None = None) -> float:
        """Start Core again on the same data and port; seconds until /healthz answers."""
        t0 = time.monotonic()
        self.core = benchlib.respawn_core(self.procs, self.c)
        benchlib.until_healthy(self.core, timeout or self.s.bound)
        return time.monotonic() - t0

    @property
    def c(self) -> benchlib.Core:
        if self.core is None:
            raise RuntimeError("Core is not started")
        return self.core

    def kill_core(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.c.pid, sig)
        self.c.proc.wait(30)

    def http(self, timeout: float = 10.0) -> httpx.Client:
        return self.c.client(timeout=timeout)

    def get(self, path: str) -> Any:
        with self.http() as h:
            r = h.get(path)
            r.raise_for_status()
            return r.json()

    def online(self) -> int:
        try:
            n: int = self.get("/api/v1/status")["nodes"]["online"]
        except (httpx.HTTPError, ValueError):
            return -1
        return n

    def total_nodes(self) -> int:
        return len(self.agents) + sum(f.nodes for f in self.fleets)

    def wait_all_online(self, timeout: float | None = None) -> float:
        total = self.total_nodes()
        return wait_until(
            f"all {total} nodes online", lambda: self.online() >= total, timeout or self.s.bound
        )

    def log_text(self) -> str:
        return self.c.log.read_text(errors="replace")

    def operator_lines(self, most: int = 8) -> list[str]:
        """Distinct warnings and errors in Core's and the agents' logs (what an operator sees).

        Lines differing only in numbers and ids count as one kind; the first of
        each kind is shown with how many there were.
        """
        kinds: dict[str, list[Any]] = {}  # kind -> [first line, count]
        logs = [("core", self.c.log)] if self.core else []
        logs += [(n, self.base / "agents" / n / "agent.log") for n in self.agents]
        for who, path in logs:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                # Log lines at WARNING and above, and the one line Core prints when it stops.
                if not (
                    any(w in line for w in ("WARNING", "ERROR", "CRITICAL"))
                    or line.startswith("servermgr:")
                ):
                    continue
                text = line if line.startswith("servermgr:") else line[24:]
                kind = who.split("-")[0] + re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "N", text)
                if kind in kinds:
                    kinds[kind][1] += 1
                else:
                    kinds[kind] = [f"{who}: {line.strip()[:220]}", 1]
        return [f"{first} (x{n})" for first, n in list(kinds.values())[:most]]

    # --- nodes -------------------------------------------------------------------------

    def start_agent(self, name: str, prefix_cmd: list[str] | None = None) -> None:
        self.agent_prefix[name] = prefix_cmd or []
        self.agents[name] = benchlib.start_agent(
            self.procs, self.c, self.base / "agents", name, prefix_cmd=prefix_cmd or []
        )

    def restart_agent(self, name: str) -> None:
        d = self.base / "agents" / name
        self.agents[name] = self.procs.start(
            [
                *self.agent_prefix[name],
                *benchlib.servermgr_cmd(),
                "node",
                "run",
                "-c",
                str(d / "node.toml"),
            ],
            log=d / "agent.log",
            cwd=d,
        )

    def start_fleet(
        self, nodes: int, prefix: str = "sim", prefix_cmd: list[str] | None = None
    ) -> Fleet:
        fleet = Fleet(
            self.procs,
            self.c.url,
            self.c.key,
            nodes,
            self.base / f"fleet-{prefix}",
            prefix=prefix,
            keep_unacked=True,
            prefix_cmd=prefix_cmd,
            ramp=max(1.0, nodes / 1000),
        )
        fleet.start(timeout=self.s.bound * 3)
        fleet.connect(timeout=self.s.bound * 3)
        self.fleets.append(fleet)
        return fleet

    def standard(self, sims: int | None = None) -> None:
        """Core, ``settings.agents`` agents and ``sims`` simulated nodes, all online."""
        self.start_core()
        for i in range(self.s.agents):
            self.start_agent(f"agent-{i}")
        self.start_fleet(self.s.sims if sims is None else sims)
        self.wait_all_online()

    # --- jobs ---------------------------------------------------------------------------

    @staticmethod
    def token() -> str:
        return uuid.uuid4().hex[:16]

    @staticmethod
    def command(token: str, before: str = "") -> str:
        """A command that leaves ``token`` in ``ran.log`` (one line per run) and prints it."""
        return f"{before}echo {token} >> ran.log; echo {token}"

    def submit(
        self,
        command: str,
        target: str = "*",
        *,
        key: str | None = None,
        timeout: float = 10.0,
        wait: float = 120.0,
    ) -> tuple[int, Any]:
        """POST /api/v1/jobs: (HTTP status, body); status 0 when the connection failed.

        ``key``: an idempotency key, sent as the ``Idempotency-Key`` header.
        ``wait``: how long the job waits for nodes that are offline (reconnecting).
        """
        headers = {"Idempotency-Key": key} if key else {}
        try:
            with self.http(timeout) as h:
                r = h.post(
                    "/api/v1/jobs",
                    json={"target": target, "command": command, "timeout": 120, "wait": wait},
                    headers=headers,
                )
        except httpx.HTTPError as exc:
            return 0, str(exc)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def jobs_with(self, token: str) -> list[dict[str, Any]]:
        with self.http() as h:
            r = h.get("/api/v1/jobs", params={"limit": 1000})
            r.raise_for_status()
            jobs: list[dict[str, Any]] = [
                j for j in r.json()["jobs"] if j.get("command") and token in j["command"]
            ]
        return jobs

    def job(self, job_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = self.get(f"/api/v1/jobs/{job_id}")
        return doc

    def job_final(self, token: str) -> bool:
        """Is the job carrying ``token`` final on every node? (False when Core does not answer.)"""
        try:
            jobs = self.jobs_with(token)
        except httpx.HTTPError:
            return False
        return bool(jobs) and all(j["state"] == "done" for j in jobs)

    def wait_job_final(self, token: str, timeout: float | None = None) -> float:
        return wait_until(
            f"job {token} final on every node",
            lambda: self.job_final(token),
            timeout or self.s.bound,
        )

    def settle_job(self, token: str, timeout: float | None = None) -> float | None:
        """``wait_job_final``, but None past the bound (``check_job`` says what is open)."""
        try:
            return self.wait_job_final(token, timeout)
        except Failed:
            return None

    def agent_has_job(self) -> bool:
        """Has any agent received a job it has not finished (its spool file exists)?"""
        return any((self.base / "agents").glob("*/data/jobs/*.json"))

    def ran(self, agent: str, token: str) -> int:
        """How many times ``agent`` ran the command carrying ``token``."""
        path = self.base / "agents" / agent / "ran.log"
        try:
            return path.read_text().split().count(token)
        except FileNotFoundError:
            return 0

    def check_job(self, token: str, expect: dict[str, set[str]] | None = None) -> JobCheck:
        """One job for ``token``; every node final with the expected state (default succeeded)."""
        expect = expect or {}
        out = JobCheck(token)
        jobs = self.jobs_with(token)
        out.jobs = len(jobs)
        if len(jobs) != 1:
            out.problems.append(f"{len(jobs)} jobs for one submission")
        sim_runs: dict[str, int] = {}
        for f in self.fleets:
            for k, v in f.stats()["jobs"].items():
                sim_runs[k] = sim_runs.get(k, 0) + v
        wanted = self.total_nodes()
        for j in jobs:
            doc = self.job(j["id"])
            nodes = doc["nodes"]
            out.nodes += len(nodes)
            if len(nodes) != wanted:
                out.problems.append(f"{len(nodes)} of {wanted} nodes in the job")
            sims_ok = 0
            for n in nodes:
                name, state = n["node"], n["state"]
                out.states[state] = out.states.get(state, 0) + 1
                ok_states = expect.get(name, {"succeeded"})
                if state not in FINAL_STATES:
                    out.problems.append(f"{name} still {state}")
                elif state not in ok_states:
                    out.problems.append(f"{name} {state} ({n.get('error') or 'no error'})")
                if name in self.agents:
                    runs = self.ran(name, token)
                    if runs > 1:
                        out.problems.append(f"{name} ran it {runs} times")
                    elif state == "succeeded" and runs != 1:
                        out.problems.append(f"{name} recorded succeeded but ran it {runs} times")
                    elif state != "succeeded" and runs:
                        out.problems.append(f"{name} ran it but it is recorded {state}")
                elif state == "succeeded":
                    sims_ok += 1
            ran = sim_runs.get(j["id"], 0)
            if sims_ok > ran:
                out.problems.append(f"{sims_ok} simulated nodes recorded succeeded, {ran} ran it")
        return out

    # --- samples -----------------------------------------------------------------------

    def stored_per_node(self) -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT n.name, count(m.ts) FROM nodes n "
                "LEFT JOIN metrics m ON m.node = n.seq GROUP BY n.name"
            ).fetchall()
        return {name: count for name, count in rows}

    def agent_stamps(self, name: str) -> list[float]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT m.ts FROM metrics m JOIN nodes n ON m.node = n.seq "
                "WHERE n.name = ? ORDER BY m.ts",
                (name,),
            ).fetchall()
        return [r[0] for r in rows]

    def stored_total(self) -> int:
        try:
            return sum(self.stored_per_node().values())
        except sqlite3.Error:
            return -1

    def check_samples(
        self, timeout: float | None = None, skip_agents: tuple[str, ...] = ()
    ) -> SampleCheck:
        """Stop new samples, wait until Core has stored what every simulated node made.

        Real agents (not in ``skip_agents``): no hole in their stored history.
        """
        for f in self.fleets:
            f.quiesce()
        out = SampleCheck()

        def settled() -> bool:
            made: dict[str, int] = {}
            for f in self.fleets:
                made.update({n: v[0] for n, v in f.stats()["nodes"].items()})
            try:
                stored = self.stored_per_node()
            except sqlite3.Error:
                return False
            out.made = sum(made.values())
            out.stored = sum(stored.get(n, 0) for n in made)
            out.missing = {n: k - stored.get(n, 0) for n, k in made.items() if stored.get(n, 0) < k}
            return not out.missing

        with contextlib.suppress(Failed):
            wait_until("samples stored", settled, timeout or self.s.bound, step=0.5)
        for name in self.agents:
            stamps = self.agent_stamps(name)
            out.agent_samples += len(stamps)
            if name in skip_agents or len(stamps) < 2:
                continue
            gap = max(b - a for a, b in zip(stamps, stamps[1:], strict=False)) / self.interval
            # The agent makes a sample every interval (after the last one): a
            # missing sample means a gap of two intervals or more.
            if gap >= 1.95:
                out.agent_holes[name] = gap
        return out


# --- system plumbing -------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def netns_pair(tag: str) -> Iterator[tuple[str, str, str, str]]:
    """Two network namespaces joined by a veth pair with a private /30; the calling
    thread moves into the first (so Core and everything it starts live there).

    Yields (core namespace, node namespace, Core's address, node's address).
    Nothing is configured in the machine's own namespace; both namespaces
    (and with them the veth pair and any iptables rule in them) are deleted
    afterwards.
    """
    ns_core, ns_node = f"smfault-core-{tag}", f"smfault-node-{tag}"
    a_core, a_node = "10.253.77.1", "10.253.77.2"
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    made: list[str] = []
    try:
        for ns in (ns_core, ns_node):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        veth_c, veth_n = f"smfc{tag}"[:15], f"smfn{tag}"[:15]
        sh(
            "ip",
            "-n",
            ns_core,
            "link",
            "add",
            veth_c,
            "type",
            "veth",
            "peer",
            veth_n,
            "netns",
            ns_node,
        )
        for ns, dev, addr in ((ns_core, veth_c, a_core), (ns_node, veth_n, a_node)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        fd = os.open(f"/run/netns/{ns_core}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        yield ns_core, ns_node, a_core, a_node
    finally:
        _setns(home)
        os.close(home)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=30)


def partition(ns_node: str, peer: str, on: bool) -> None:
    """Drop (``on``) or pass every packet between ``ns_node`` and ``peer`` (iptables in ns_node)."""
    action = "-A" if on else "-D"
    for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
        sh("ip", "netns", "exec", ns_node, "iptables", action, chain, flag, peer, "-j", "DROP")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        r = subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=30)
        if r.returncode:
            subprocess.run(
                ["umount", "-l", str(path)], check=False, capture_output=True, timeout=30
            )


def fill(directory: Path) -> int:
    """Add to a file in ``directory`` until the file system is full; bytes written."""
    n = 0
    chunk = b"\0" * (1 << 16)
    with open(directory / "filler", "ab", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                n += f.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                n += f.write(b"\0" * 512)
    return n


class SlowClients:
    """``n`` unauthenticated TCP clients that send an HTTP request a byte at a time.

    Each binds to one of ``sources`` (loopback addresses) before connecting;
    one that Core closes is replaced at the next ``trickle``.
    """

    REQUEST = (
        b"GET /api/v1/node/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    )

    def __init__(self, host: str, port: int, n: int, sources: list[str]) -> None:
        self.host, self.port, self.n, self.sources = host, port, n, sources
        self.socks: list[socket.socket] = []
        self.opened = 0
        self.pos = 0

    def open(self) -> None:
        """Connect until ``n`` are open (or connecting)."""
        for _ in range(self.n - len(self.socks)):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.bind((self.sources[self.opened % len(self.sources)], 0))
                s.connect((self.host, self.port))
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                continue
            self.opened += 1
            self.socks.append(s)

    def trickle(self) -> None:
        """Each client sends its next byte (never the end of its headers); the closed reconnect."""
        b = self.REQUEST[self.pos % len(self.REQUEST) : self.pos % len(self.REQUEST) + 1]
        self.pos += 1
        for s in list(self.socks):
            try:
                s.send(b)
            except BlockingIOError:
                pass
            except OSError:
                self.socks.remove(s)
                s.close()
        self.open()

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()
