"""Shared plumbing of the benchmarks: processes, /proc readings, tables.

Every process a benchmark starts goes through ``Procs``: each child gets its
own session (so its whole process group can be signalled), and leaving the
``with`` block -- normally, on an exception, on Ctrl-C or on SIGTERM (turned
into KeyboardInterrupt by ``install_signal_handlers``) -- sends SIGTERM to
every group, waits, then SIGKILLs what is left.

CPU figures come from /proc (utime + stime of a process and its threads), so
they do not grow when other programs load the shared machine; wall-clock
figures do, which is why every benchmark prints ``os.getloadavg()`` next to
them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BENCH_DIR = Path(__file__).resolve().parent


# --- signals and limits -----------------------------------------------------


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt: ``finally`` blocks stop the children."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    # Started in the background by a non-interactive shell, SIGINT comes ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit to at least ``wanted`` if allowed; the new soft limit.

    Root may raise the hard limit too (up to fs.nr_open); others get the hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    target = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- /proc ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size of ``pid`` so far (VmHWM); 0 if the kernel does not tell."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def pss_bytes(pid: int) -> int | None:
    """Proportional set size (shared pages divided among their users), if the kernel tells."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def system_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (for "what else ran meanwhile")."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = f.readline().split()[1:]
    values = [int(v) for v in parts[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        mem = int(f.readline().split()[1]) * 1024
    return {
        "commit": commit(),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": loadavg(),
    }


def commit() -> str:
    """The servermgr commit measured (``+dirty`` when src/ has local changes), if known."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def print_machine() -> None:
    m = machine()
    print(
        f"machine: {m['nproc']} cpu ({m['cpu_model']}), {m['mem_gib']} GiB, "
        f"Python {m['python']}, Linux {m['kernel']}; load {m['loadavg']}; "
        f"servermgr {m['commit']}",
        flush=True,
    )


@dataclass
class Window:
    """CPU of some processes and of the whole machine over one measured interval."""

    pids: dict[str, int]
    start: float = 0.0
    end: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)
    cpu1: dict[str, float] = field(default_factory=dict)
    sys0: dict[str, float] = field(default_factory=dict)
    sys1: dict[str, float] = field(default_factory=dict)
    busy0: float = 0.0
    busy1: float = 0.0

    def __enter__(self) -> Window:
        self.start = time.time()
        self.busy0 = system_busy_seconds()
        split = {k: cpu_split(p) for k, p in self.pids.items()}
        self.cpu0 = {k: u + s for k, (u, s) in split.items()}
        self.sys0 = {k: s for k, (_, s) in split.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        split = {k: _split_or_nan(p) for k, p in self.pids.items()}
        self.cpu1 = {k: u + s for k, (u, s) in split.items()}
        self.sys1 = {k: s for k, (_, s) in split.items()}
        self.busy1 = system_busy_seconds()
        self.end = time.time()

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def cpu(self, name: str) -> float:
        return self.cpu1[name] - self.cpu0[name]

    def system_cpu(self, name: str) -> float:
        """The kernel's share of ``cpu(name)`` (system time: syscalls, the network stack)."""
        return self.sys1[name] - self.sys0[name]

    def others(self) -> float:
        """Cores' worth of CPU used by everything not in ``pids`` (other people's work)."""
        ours = sum(self.cpu(k) for k in self.pids)
        return max(0.0, (self.busy1 - self.busy0 - ours) / self.seconds)


def _split_or_nan(pid: int) -> tuple[float, float]:
    try:
        return cpu_split(pid)
    except OSError:
        return float("nan"), float("nan")


# --- statistics and output ----------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.1f}"


def mib(n: float | None) -> str:
    return "n/a" if n is None or n != n else f"{n / 2**20:.1f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table (pasteable into docs/performance.md)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"

    print(f"\n### {title}\n")
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))
    print(flush=True)


def write_json(path: Path | None, doc: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


# --- processes ----------------------------------------------------------------------


def servermgr_cmd() -> list[str]:
    """The ``servermgr`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "servermgr"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "servermgr"]


def _limit_nofile(n: int) -> None:
    raise_nofile(n)


def _cap_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, soft), min(n, hard)))


class Procs:
    """Children started in their own sessions; all stopped when the block ends."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        cmd: Sequence[str],
        *,
        log: Path | None = None,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = None,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
        nofile_cap: int | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd``; ``nofile`` raises its open-file limit, ``nofile_cap`` lowers it."""
        out: int | IO[bytes] | None = stdout
        err: int | IO[bytes] | None = subprocess.DEVNULL
        if log is not None:
            handle = open(log, "ab")  # noqa: SIM115 -- closed with the child below
            err = handle
            if out is None:
                out = handle
        elif out is None:
            out = subprocess.DEVNULL
        preexec = (lambda: _limit_nofile(nofile)) if nofile else None
        if nofile_cap:
            preexec = lambda: _cap_nofile(nofile_cap)  # noqa: E731
        proc = subprocess.Popen(
            list(cmd),
            stdin=stdin,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 -- only setrlimit
        )
        if log is not None:
            handle.close()
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
        """SIGTERM the child's process group, wait, then SIGKILL it; its exit code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (a job's process): kill what is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(5)
        if proc in self.children:
            self.children.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        procs = list(reversed(self.children))
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(5)
        self.children.clear()


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary directory, removed afterwards unless ``keep``."""
    if keep:
        yield Path(tempfile.mkdtemp(prefix=prefix))
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def compile_servermgr() -> str:
    """Bytecode for servermgr's own modules (written next to them), as an install has."""
    import servermgr

    package = Path(servermgr.__file__).parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return f"servermgr's modules compiled to bytecode in {package} (as an install has them)"


def instructions(cmd: Sequence[str], env: dict[str, str] | None = None) -> int | None:
    """Instructions ``cmd`` executes, from valgrind's callgrind (None without
    valgrind): unlike wall or CPU time, the same on a busy machine."""
    exe = shutil.which("valgrind")
    if exe is None:
        return None
    out = subprocess.run(
        [exe, "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    return None


def run_timed(cmd: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Run ``cmd`` to completion: (wall seconds, CPU seconds of it and its children, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        if proc.stderr is not None:
            proc.stderr.close()
    if proc.returncode != 0 and err:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


# --- Core and agents ------------------------------------------------------------------


@dataclass
class Core:
    """A running ``servermgr core serve`` subprocess."""

    proc: subprocess.Popen[bytes]
    url: str
    key: str
    dir: Path
    log: Path
    cmd: list[str] = field(default_factory=list)
    nofile: int = 4096
    nofile_cap: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=timeout,
            trust_env=False,
        )

    def env(self) -> dict[str, str]:
        """Environment for ``servermgr ctl`` against this Core."""
        return os.environ | {"SERVERMGR_CORE": self.url, "SERVERMGR_KEY": self.key}


# Every simulated node connects from 127.0.0.1: Core's per-address abuse
# limits (made for one client per address) are raised so that a benchmark
# measures Core, not those limits (as an operator does for nodes behind NAT).
BENCH_LIMITS = "\n[limits]\nunauthenticated_connections = 100000\nauth_failures = 1000000\n"


def start_core(
    procs: Procs,
    base: Path,
    *,
    interval: float = 5.0,
    nofile: int = 4096,
    log_level: str = "info",
    timeout: float = 30.0,
    sqlite_path: Path | None = None,
    host: str = "127.0.0.1",
    nofile_cap: int | None = None,
    shared_data: Path | None = None,
    redis_url: str | None = None,
    extra_config: str = "",
) -> Core:
    """Start Core with a fresh data dir under ``base``; returns once /healthz answers.

    ``sqlite_path``: an existing database to serve instead of a new one.
    ``host``: the address to listen on (127.0.0.1, or one in a network
    namespace of the caller's). ``nofile_cap``: a lower open-file limit.
    ``shared_data``: another Core's data dir to share (its key and database:
    several Core processes, one fleet), with ``redis_url`` for its Redis.
    ``extra_config``: more TOML appended to Core's config (e.g. alert rules).
    """
    port = free_port() if host == "127.0.0.1" else 9999
    data = base / "core-data"
    base.mkdir(parents=True, exist_ok=True)
    if shared_data is not None:
        data.symlink_to(shared_data, target_is_directory=True)
    cfg = base / "core.toml"
    cfg.write_text(
        f'[server]\nlisten = "{host}:{port}"\nheartbeat_interval = {interval}\n\n'
        f'[storage]\ndata_dir = "{data}"\n'
        + (f'sqlite_path = "{sqlite_path}"\n' if sqlite_path else "")
        + (f'redis_url = "{redis_url}"\n' if redis_url else "")
        + BENCH_LIMITS
        + f'\n[log]\nlevel = "{log_level}"\n'
        + extra_config
    )
    cmd = [*servermgr_cmd(), "core", "serve", "-c", str(cfg)]
    core = Core(
        procs.start(cmd, log=base / "core.log", nofile=nofile, nofile_cap=nofile_cap),
        f"http://{host}:{port}",
        "",
        base,
        base / "core.log",
        cmd,
        nofile,
        nofile_cap,
    )
    return until_healthy(core, timeout)


@dataclass
class Redis:
    """A running redis-server of the benchmark's own (127.0.0.1, nothing persisted)."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_redis(procs: Procs, base: Path, timeout: float = 30.0) -> Redis:
    """Start ``redis-server`` on a free port in ``base``; returns once it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = base / "redis.log"
    cmd = [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(base)]
    cmd += ["--save", "", "--appendonly", "no", "--maxclients", "10000", "--logfile", str(log)]
    proc = procs.start(cmd, nofile=20000)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return Redis(proc, f"redis://127.0.0.1:{port}/0", log)
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer within {timeout:g} s")


def respawn_core(procs: Procs, core: Core) -> Core:
    """Start a stopped Core again (same config, data and port) without waiting for it."""
    if core.proc.poll() is None:
        raise RuntimeError("respawn_core: Core is still running")
    procs.stop(core.proc)
    proc = procs.start(core.cmd, log=core.log, nofile=core.nofile, nofile_cap=core.nofile_cap)
    return Core(proc, core.url, "", core.dir, core.log, core.cmd, core.nofile, core.nofile_cap)


def restart_core(procs: Procs, core: Core, timeout: float = 30.0) -> Core:
    """``respawn_core``, then wait until /healthz answers (RuntimeError if Core exits)."""
    return until_healthy(respawn_core(procs, core), timeout)


def until_healthy(core: Core, timeout: float) -> Core:
    from servermgr.common.keyfile import read_key

    proc, url, log = core.proc, core.url, core.log
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Core exited with {proc.returncode}:\n{tail(log)}")
            try:
                if http.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Core did not answer within {timeout:g} s:\n{tail(log)}")
            time.sleep(0.05)
    core.key = read_key(core.dir / "core-data" / "core.key").value
    return core


def start_agent(
    procs: Procs,
    core: Core,
    base: Path,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    log_level: str = "warning",
    prefix_cmd: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start a real ``servermgr node run`` named ``name`` against ``core``.

    It runs in ``base / name`` (its jobs' working directory), under
    ``prefix_cmd`` if given (``ip netns exec NS``).
    """
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    label_text = "".join(f'{k} = "{v}"\n' for k, v in (labels or {}).items())
    (d / "node.toml").write_text(
        f'[node]\ncore_addr = "{core.url.replace("http://", "ws://")}"\n'
        f'register_token = "{core.key}"\nhostname = "{name}"\ndata_dir = "{d / "data"}"\n'
        + (f"\n[node.labels]\n{label_text}" if label_text else "")
        + f'\n[log]\nlevel = "{log_level}"\n'
    )
    (d / "node.toml").chmod(0o600)  # it holds a secret: the agent warns otherwise
    return procs.start(
        [*prefix_cmd, *servermgr_cmd(), "node", "run", "-c", str(d / "node.toml")],
        log=d / "agent.log",
        cwd=d,
    )


def wait_online(core: Core, names: Sequence[str], timeout: float = 30.0) -> None:
    """Wait until every node in ``names`` is online and has sent a sample."""
    deadline = time.monotonic() + timeout
    wanted = set(names)
    with core.client() as http:
        while True:
            nodes = http.get("/api/v1/nodes").json()
            ready = {
                n["name"] for n in nodes if n["status"] == "online" and n["sample_ts"] is not None
            }
            if wanted <= ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes not online after {timeout:g} s: {wanted - ready}")
            time.sleep(0.1)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- profiling ---------------------------------------------------------------------


def py_spy() -> str | None:
    """The py-spy executable if installed (``pip install py-spy``)."""
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else None


def _stacks(collapsed: Path) -> list[tuple[list[str], int]]:
    """(frames, sample count) per line of a py-spy ``--format raw`` file."""
    out = []
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            out.append((stack.split(";"), int(count_text)))
    return out


def top_frames(collapsed: Path, n: int = 15) -> list[tuple[str, float, float]]:
    """(frame, self %, total %) of the busiest frames in a py-spy ``--format raw`` file."""
    self_count: dict[str, int] = {}
    total_count: dict[str, int] = {}
    samples = 0
    for frames, count in _stacks(collapsed):
        samples += count
        for f in set(frames):
            total_count[f] = total_count.get(f, 0) + count
        self_count[frames[-1]] = self_count.get(frames[-1], 0) + count
    if not samples:
        return []
    ranked = sorted(self_count.items(), key=lambda kv: -kv[1])[:n]
    return [(f, 100 * c / samples, 100 * total_count[f] / samples) for f, c in ranked]


def top_inclusive(collapsed: Path, n: int = 25, contains: str = "") -> list[tuple[str, float]]:
    """(frame, total %) of frames whose text contains ``contains``, most inclusive first."""
    total_count: dict[str, int] = {}
    samples = 0
    for frames, count in _stacks(collapsed):
        samples += count
        for f in set(frames):
            if contains in f:
                total_count[f] = total_count.get(f, 0) + count
    if not samples:
        return []
    ranked = sorted(total_count.items(), key=lambda kv: -kv[1])[:n]
    return [(f, 100 * c / samples) for f, c in ranked]


def profile(
    pid: int, seconds: float, out: Path, *, rate: int = 100, gil: bool = True
) -> Path | None:
    """Sample ``pid`` with py-spy for ``seconds`` into a collapsed-stack file; None without py-spy.

    ``gil``: only samples of the thread holding the GIL, i.e. where the
    Python CPU of a GIL-bound process goes (waiting threads left out).
    """
    exe = py_spy()
    if exe is None:
        return None
    subprocess.run(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            *(["--gil"] if gil else ["--threads"]),
            "--output",
            str(out),
            "--nonblocking",
        ],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=seconds + 60,
    )
    return out if out.exists() else None
