"""Remote execution end to end, tried as a new user would: the real ``servermgr ctl``
as subprocesses against a real ``servermgr core serve`` and real ``servermgr node run``.

Two fleets start once for the module (to keep the file fast):

* main: node-01 and node-02 (``role=web``), node-03 (``role=db``);
* edge: ``locked`` (``[exec] enabled = false``), ``nosd`` (no ``systemctl`` on
  its PATH) and ``gone`` (registered, then stopped: offline).

Every node has ``E2E_NODE=<its name>`` in its environment, which its jobs
inherit, so output shows where a command really ran. Every process this file
starts carries a marker in its environment; each test checks with psutil that
it left none behind (zombies aside: PID 1 in this container does not reap), and
the module's teardown stops the fleets and checks again. Each test has an
absolute time cap; every subprocess call has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import psutil
import pytest

from tests.support import SERVERMGR, free_port

pytestmark = pytest.mark.e2e

INTERVAL = 0.5
MARKER = "SERVERMGR_EXEC_E2E_RUN"
CAP = 25.0  # seconds per test, set up of the fleets aside
T = TypeVar("T")


def poll(what: str, check: Callable[[], T | None], limit: float) -> T:
    """The first truthy ``check()`` within ``limit`` seconds."""
    end = time.monotonic() + limit
    last: T | None = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {limit:g} s waiting for {what}; last: {last!r}")


def marked(run_id: str, *, exclude: Collection[int] = ()) -> list[psutil.Process]:
    """Live (non-zombie) processes carrying this run's marker."""
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        if p.pid == os.getpid() or p.pid in exclude or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if p.environ().get(MARKER) == run_id:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid}: {' '.join(p.cmdline())}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


# --- the fleets ------------------------------------------------------------------


@dataclass
class Core:
    url: str
    key: str

    def flags(self) -> list[str]:
        return ["--core", self.url, "--key", self.key]

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = httpx.request(
            method,
            self.url + path,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=5,
            trust_env=False,
            **kwargs,
        )
        resp.raise_for_status()
        return resp.json()

    def statuses(self) -> dict[str, str]:
        try:
            return {n["name"]: n["status"] for n in self.api("GET", "/api/v1/nodes")}
        except httpx.HTTPError:
            return {}


@dataclass
class Fleets:
    tmp: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)
    main: Core = field(init=False)
    edge: Core = field(init=False)

    def __post_init__(self) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SERVERMGR_")}
        self.env[MARKER] = self.run_id
        self.cwd = self.tmp / "cwd"  # no servermgr.toml here: ctl knows only flags and env
        self.cwd.mkdir()

    def daemon(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.daemons[name] = subprocess.Popen(
                [*SERVERMGR, *args],
                cwd=self.tmp,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.daemons[name]

    def start_core(self, name: str) -> Core:
        port = free_port()
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\nheartbeat_interval = {INTERVAL}\n'
            f'[storage]\ndata_dir = "{name}-data"\n'
        )
        key = subprocess.run(
            [*SERVERMGR, "key", "show", "--config", str(cfg)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()[0]
        self.daemon(name, "core", "serve", "--config", str(cfg))
        return Core(f"http://127.0.0.1:{port}", key)

    def start_node(
        self, core: Core, name: str, *, extra: str = "", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(
            f'[node]\ncore_addr = "{core.url.replace("http", "ws", 1)}"\n'
            f'register_token = "{core.key}"\nhostname = "{name}"\ndata_dir = "{name}-data"\n'
            + extra
        )
        return self.daemon(
            name, "node", "run", "--config", str(cfg), env={"E2E_NODE": name, **(env or {})}
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in self.tmp.glob("*.log")
        )

    # --- ctl: against the main fleet (SERVERMGR_CORE/KEY), the edge one with flags --

    def spawn_ctl(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*SERVERMGR, "ctl", *args],
            cwd=self.cwd,
            env={**self.env, "SERVERMGR_CORE": self.main.url, "SERVERMGR_KEY": self.main.key},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.spawned.append(proc)
        return proc

    def ctl_many(
        self, calls: Sequence[Sequence[str]], timeout: float = 15
    ) -> list[subprocess.CompletedProcess[bytes]]:
        """Several ctl calls at once (each is mostly interpreter start-up)."""
        procs = [(list(args), self.spawn_ctl(*args)) for args in calls]
        done = []
        for args, proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
        return done

    def ctl(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[bytes]:
        return self.ctl_many([args], timeout)[0]

    def ctl_json(self, *args: str) -> Any:
        res = self.ctl(*args, "--json")
        assert res.returncode == 0, res
        return json.loads(res.stdout)

    def stop(self, procs: list[subprocess.Popen[bytes]], timeout: float = 10) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


@pytest.fixture(scope="module")
def fleets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleets]:
    f = Fleets(tmp_path_factory.mktemp("exec-e2e"))
    try:
        f.main = f.start_core("main")
        f.edge = f.start_core("edge")
        for name, role in (("node-01", "web"), ("node-02", "web"), ("node-03", "db")):
            f.start_node(f.main, name, extra=f'[node.labels]\nrole = "{role}"\n')
        f.start_node(f.edge, "locked", extra="[exec]\nenabled = false\n")
        f.start_node(f.edge, "nosd", env={"PATH": str(f.tmp / "empty-path")})
        gone = f.start_node(f.edge, "gone")
        want_main = dict.fromkeys(["node-01", "node-02", "node-03"], "online")
        want_edge = dict.fromkeys(["gone", "locked", "nosd"], "online")
        try:
            poll("main fleet online", lambda: f.main.statuses() == want_main, 20)
            poll("edge fleet online", lambda: f.edge.statuses() == want_edge, 10)
            f.stop([gone])
            want_edge["gone"] = "offline"
            poll("gone offline", lambda: f.edge.statuses() == want_edge, 10)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{f.logs()}") from None
        yield f
    finally:
        f.stop(list(f.daemons.values()))
        left = marked(f.run_id)
        for p in left:
            p.kill()
    assert not left, f"processes outlived the module: {describe(left)}"


class _CapExceeded(Exception):
    pass


@pytest.fixture
def fleet(fleets: Fleets) -> Iterator[Fleets]:
    """The module's fleets, with the test's time cap and a check for leftovers."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise _CapExceeded(f"test exceeded its absolute cap of {CAP:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CAP)
    try:
        yield fleets
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        for p in fleets.spawned:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=5)
        fleets.spawned.clear()
    left = marked(fleets.run_id, exclude={p.pid for p in fleets.daemons.values()})
    for p in left:
        p.kill()
    assert not left, f"processes outlived the test: {describe(left)}"
    dead = [name for name, p in fleets.daemons.items() if name != "gone" and p.poll() is not None]
    assert not dead, f"{dead} stopped during the test\n{fleets.logs()}"


# --- helpers ---------------------------------------------------------------------


def failed_255(res: subprocess.CompletedProcess[bytes], *reasons: str) -> str:
    """Exit 255, nothing on stdout, one ``servermgr:`` line on stderr naming ``reasons``."""
    assert res.returncode == 255, res
    assert res.stdout == b"", res
    lines = res.stderr.decode().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("servermgr: "), lines
    for reason in reasons:
        assert reason in lines[0], (reason, lines[0])
    return lines[0]


def prefixed(out: bytes) -> list[str]:
    return sorted(out.decode().splitlines())


def summary_rows(err: bytes) -> dict[str, list[str]]:
    """The summary table on stderr: node -> [state, exit, duration, ...]."""
    rows = {}
    for line in err.decode().splitlines():
        cells = line.split()
        if cells and re.fullmatch(r"node-0\d|locked|nosd|gone", cells[0]):
            rows[cells[0]] = cells[1:]
    return rows


def sleepers(fleet: Fleets, seconds: str) -> list[psutil.Process]:
    """Live ``sleep SECONDS`` processes started by our nodes."""
    found = []
    for p in marked(fleet.run_id):
        try:
            if p.cmdline() == ["sleep", seconds]:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


# --- one node --------------------------------------------------------------------


def test_one_node_passes_stdout_stderr_and_exit_code_through(fleet: Fleets) -> None:
    res = fleet.ctl("exec", "node-01", "echo hi; echo err >&2; exit 3")
    assert (res.returncode, res.stdout, res.stderr) == (3, b"hi\n", b"err\n")


def test_one_node_output_is_the_raw_bytes(fleet: Fleets) -> None:
    marked_up, big, split = fleet.ctl_many(
        [
            ["exec", "node-02", r"printf '[bold]x\377\n'; printf '[red]e\376 no newline' >&2"],
            ["exec", "node-03", "seq 1 60000"],
            # Words after the target are joined with spaces, as ssh does.
            ["exec", "node-01", "--", "printf", "%s", "a", "[b]"],
        ]
    )
    assert marked_up.returncode == 0, marked_up
    assert marked_up.stdout == b"[bold]x\xff\n"
    assert marked_up.stderr == b"[red]e\xfe no newline"
    assert big.returncode == 0, big.stderr
    assert big.stdout == b"".join(b"%d\n" % i for i in range(1, 60001))
    assert big.stderr == b""
    assert (split.returncode, split.stdout, split.stderr) == (0, b"a[b]", b"")


def test_output_is_live_unless_no_stream(fleet: Fleets, tmp_path: Path) -> None:
    # The command goes on only once the test has seen its first line (or after 30 s).
    flag = tmp_path / "go-on"
    wait = f"for i in $(seq 600); do [ -e {flag} ] && break; sleep 0.05; done"
    cmd = f"echo first; {wait}; echo second"
    live = fleet.spawn_ctl("exec", "node-01", cmd)
    batch = fleet.spawn_ctl("exec", "--no-stream", "node-02", cmd)
    assert live.stdout is not None
    assert batch.stdout is not None
    ready, _, _ = select.select([live.stdout], [], [], 30)
    assert ready, "no live output within 30 s"
    first = os.read(live.stdout.fileno(), 100)
    assert first == b"first\n"
    assert live.poll() is None, "the first line should arrive while the command runs"
    ready, _, _ = select.select([batch.stdout], [], [], 0)
    assert not ready, "--no-stream printed before the job finished"
    flag.touch()
    rest, live_err = live.communicate(timeout=10)
    out, batch_err = batch.communicate(timeout=10)
    assert (live.returncode, first + rest, live_err) == (0, b"first\nsecond\n", b"")
    assert (batch.returncode, out, batch_err) == (0, b"first\nsecond\n", b"")


def test_timeout_exits_124_and_leaves_no_process(fleet: Fleets) -> None:
    started = time.monotonic()
    res = fleet.ctl("exec", "node-01", "-t", "1s", "sleep 30")  # options after the target
    took = time.monotonic() - started
    assert res.returncode == 124, res
    assert res.stdout == b""
    assert "timed out" in res.stderr.decode()
    assert took < 25, took  # stopped at its timeout, not waited out (sleep 30)
    # The node kills the job's process group before it reports the result.
    assert not describe(sleepers(fleet, "30"))


def test_json_prints_the_job_document(fleet: Fleets) -> None:
    res = fleet.ctl("exec", "--json", "node-03", "echo hi; echo err >&2; exit 3")
    assert res.returncode == 3, res
    assert res.stderr == b""
    doc = json.loads(res.stdout)
    assert doc["command"] == "echo hi; echo err >&2; exit 3"
    assert doc["target"] == "node-03"
    assert doc["state"] == "done"
    [node] = doc["nodes"]
    assert node["node"] == "node-03"
    assert node["state"] == "failed"
    assert node["exit_code"] == 3
    assert node["stdout"] == "hi\n"
    assert node["stderr"] == "err\n"
    assert node["duration"] >= 0
    again = fleet.ctl_json("job", doc["id"])
    assert again["nodes"][0]["exit_code"] == 3


# --- many nodes ------------------------------------------------------------------


def test_all_prefixes_lines_and_summarises_on_stderr(fleet: Fleets) -> None:
    ok, one_fails = fleet.ctl_many(
        [
            ["exec", "--all", "hostname"],
            ["exec", "--all", 'echo "$E2E_NODE"; test "$E2E_NODE" != node-02'],
        ]
    )
    host = socket.gethostname()
    assert ok.returncode == 0, ok
    assert prefixed(ok.stdout) == [f"node-0{i} | {host}" for i in (1, 2, 3)]
    rows = summary_rows(ok.stderr)
    assert sorted(rows) == ["node-01", "node-02", "node-03"]
    for cells in rows.values():
        assert cells[:2] == ["succeeded", "0"]
        assert re.fullmatch(r"\d+\.\d\ds", cells[2]), cells
    assert re.search(r"3/3 succeeded · job \S+", ok.stderr.decode())

    assert one_fails.returncode != 0, one_fails
    assert prefixed(one_fails.stdout) == [f"node-0{i} | node-0{i}" for i in (1, 2, 3)]
    rows = summary_rows(one_fails.stderr)
    assert rows["node-01"][:2] == ["succeeded", "0"]
    assert rows["node-02"][:2] == ["failed", "1"]
    assert rows["node-03"][:2] == ["succeeded", "0"]
    assert "2/3 succeeded" in one_fails.stderr.decode()


def test_labels_lists_and_ids_pick_the_right_nodes(fleet: Fleets) -> None:
    ids = {n["name"]: n["id"] for n in fleet.main.api("GET", "/api/v1/nodes")}
    cmd = 'echo "$E2E_NODE"'
    web, db, listed, by_id, dup_labels, glob, negated, bad_name = fleet.ctl_many(
        [
            ["exec", "--label", "role=web", cmd],
            ["exec", "role=db", cmd],
            ["exec", "node-03,node-01,node-03", cmd],
            ["exec", ids["node-02"], cmd],
            ["exec", "role=web,role=db", cmd],
            ["exec", "node-0*", "-t", "10s", cmd],
            ["exec", "-l", "role!=db", cmd],
            ["exec", "no!de", cmd],
        ]
    )
    assert web.returncode == 0, web
    assert prefixed(web.stdout) == ["node-01 | node-01", "node-02 | node-02"]
    assert db.returncode == 0, db
    assert prefixed(db.stdout) == ["node-03 | node-03"]
    assert listed.returncode == 0, listed
    assert prefixed(listed.stdout) == ["node-01 | node-01", "node-03 | node-03"]
    assert (by_id.returncode, by_id.stdout, by_id.stderr) == (0, b"node-02\n", b"")
    assert glob.returncode == 0, glob
    assert prefixed(glob.stdout) == [f"node-0{i} | node-0{i}" for i in (1, 2, 3)]
    assert negated.returncode == 0, negated
    assert prefixed(negated.stdout) == ["node-01 | node-01", "node-02 | node-02"]
    # A malformed target is a usage error, found before Core is asked.
    for res, reason in ((dup_labels, "'role' given two different values"), (bad_name, "no!de")):
        assert res.returncode == 2, res
        assert res.stdout == b""
        assert reason in res.stderr.decode()


def test_fan_out_over_refused_and_offline_nodes_says_which(fleet: Fleets) -> None:
    res = fleet.ctl(*fleet.edge.flags(), "exec", "--all", 'echo "$E2E_NODE"')
    assert res.returncode != 0, res
    assert res.stdout == b"nosd   | nosd\n"  # padded to the longest name, "locked"
    rows = summary_rows(res.stderr)
    assert rows["nosd"][:2] == ["succeeded", "0"]
    assert rows["locked"][:2] == ["refused", "-"]
    assert rows["gone"][:2] == ["expired", "-"]
    err = res.stderr.decode()
    assert "enabled = false" in err
    assert "offline" in err
    assert "1/3 succeeded" in err


# --- failures: exit 255 and one line ---------------------------------------------


def test_failures_exit_255_with_one_line_and_run_nothing(fleet: Fleets) -> None:
    ran = fleet.tmp / "ran"
    ran.mkdir()
    down = f"http://127.0.0.1:{free_port()}"
    edge = fleet.edge.flags()
    cases = {
        "unreachable": (["--core", down, "exec", "node-01"], ["cannot reach Core", down]),
        "bad-key": (["--key", "0" * 64, "exec", "node-01"], ["refused the key"]),
        "unknown": (["exec", "node-09"], ["unknown node", "node-09"]),
        "one-unknown": (["exec", "node-01,node-09"], ["unknown node", "node-09"]),
        "no-match": (["exec", "--label", "role=cache"], ["no node matches", "role=cache"]),
        "offline": ([*edge, "exec", "gone"], ["gone", "offline", "--wait"]),
        "policy": ([*edge, "exec", "locked"], ["locked", "refused", "enabled = false"]),
    }
    results = fleet.ctl_many(
        [[*args, f"touch {ran / name}"] for name, (args, _) in cases.items()], timeout=20
    )
    for (name, (_, reasons)), res in zip(cases.items(), results, strict=True):
        line = failed_255(res, *reasons)
        assert "Traceback" not in line, name
    assert sorted(p.name for p in ran.iterdir()) == []


def test_cancel_a_job_from_another_ctl(fleet: Fleets) -> None:
    since = time.time()
    background = fleet.spawn_ctl("exec", "--no-stream", "node-01", "sleep 30")

    def running_job() -> str | None:
        for job in fleet.main.api("GET", "/api/v1/jobs", params={"node": "node-01"})["jobs"]:
            if job["command"] == "sleep 30" and job["created"] >= since - 1:
                return str(job["id"]) if job["state"] == "running" else None
        return None

    job_id = poll("the sleep job", running_job, 10)
    poll("the sleep process", lambda: sleepers(fleet, "30"), 10)
    listed, shown = fleet.ctl_many([["jobs"], ["job", job_id]])
    assert listed.returncode == 0, listed
    assert job_id in listed.stdout.decode()  # whole, so it can be copied
    assert shown.returncode == 0, shown
    assert f"job {job_id}: sleep 30" in shown.stdout.decode()

    cancelled = fleet.ctl("cancel", job_id)
    assert (cancelled.returncode, cancelled.stdout) == (
        0,
        f"cancel sent for job {job_id}\n".encode(),
    )
    out, err = background.communicate(timeout=10)
    assert background.returncode == 255, (out, err)
    assert out == b""
    assert "cancelled" in err.decode()

    assert not describe(sleepers(fleet, "30"))

    doc, shown, on_01, on_02, cancelled_jobs, missing = fleet.ctl_many(
        [
            ["job", job_id, "--json"],
            ["job", job_id],
            ["jobs", "--node", "node-01", "--limit", "100", "--json"],
            ["jobs", "--node", "node-02", "--limit", "100", "--json"],
            ["jobs", "--state", "cancelled", "--json"],
            ["cancel", "no-such-job"],
        ]
    )
    job = json.loads(doc.stdout)
    assert job["state"] == "done"
    assert [n["state"] for n in job["nodes"]] == ["cancelled"]
    assert "cancelled" in shown.stdout.decode()

    def ids(res: subprocess.CompletedProcess[bytes]) -> list[str]:
        return [j["id"] for j in json.loads(res.stdout)["items"]]

    assert job_id in ids(on_01)
    assert job_id not in ids(on_02)
    assert job_id in ids(cancelled_jobs)
    assert missing.returncode != 0
    assert missing.stdout == b""
    assert "no-such-job" in missing.stderr.decode()


# --- service actions --------------------------------------------------------------


def test_service_refuses_a_unit_name_with_shell_syntax(fleet: Fleets) -> None:
    pwned = fleet.tmp / "pwned"
    example, touch = fleet.ctl_many(
        [
            ["service", "node-01", "status", "nginx; rm -rf /"],
            ["service", "node-02", "restart", f"x;touch {pwned}"],
        ]
    )
    # Refused by Core before any node sees it (the node would refuse it too).
    failed_255(example, "unit name 'nginx; rm -rf /'")
    failed_255(touch, "unit name")
    assert not pwned.exists()
    jobs = fleet.ctl_json("jobs", "--node", "node-02", "--limit", "1000")["items"]
    assert not [j for j in jobs if j["service"] and "touch" in j["service"]["unit"]]


def test_service_on_a_node_without_systemctl_is_a_clear_error(fleet: Fleets) -> None:
    res = fleet.ctl(*fleet.edge.flags(), "service", "nosd", "status", "nginx")
    failed_255(res, "nosd", "systemd is not available on this node")


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd runs here")
def test_service_where_systemd_does_not_run_is_a_clear_error(fleet: Fleets) -> None:
    res = fleet.ctl("service", "node-01", "status", "nginx")
    failed_255(res, "node-01", "systemd")


# --- audit ------------------------------------------------------------------------


def test_audit_lists_who_ran_what_where_and_how_it_ended(fleet: Fleets) -> None:
    ran, refused = fleet.ctl_many(
        [["exec", "node-02", "echo audit-me"], ["service", "role=db", "status", "no-such-unit-x"]]
    )
    assert ran.returncode == 0, ran
    assert refused.returncode != 0, refused
    rows = fleet.ctl_json("audit", "--limit", "500")["items"]
    exec_row = next(r for r in rows if r["detail"] == "echo audit-me")
    assert exec_row["principal"] == "core-key"
    assert exec_row["action"] == "exec"
    assert exec_row["target"] == "node-02"
    assert exec_row["outcome"] == "1 succeeded"
    service_row = next(r for r in rows if r["detail"] == "systemctl status no-such-unit-x")
    assert service_row["principal"] == "core-key"
    assert service_row["action"] == "service"
    assert service_row["target"] == "role=db"
    assert service_row["outcome"] in ("1 refused", "1 failed")  # no systemd here, or no unit
    assert rows == sorted(rows, key=lambda r: r["ts"], reverse=True)

    services = fleet.ctl_json("audit", "--action", "service", "--limit", "500")["items"]
    assert {r["action"] for r in services} == {"service"}
    table = fleet.ctl("audit")
    assert table.returncode == 0, table
    assert exec_row["job_id"] in table.stdout.decode()


def test_audit_outcome_of_a_job_for_an_offline_node(fleet: Fleets) -> None:
    res = fleet.ctl(*fleet.edge.flags(), "exec", "gone", "echo audit-offline")
    assert res.returncode == 255, res
    rows = fleet.ctl(*fleet.edge.flags(), "audit", "--json", "--limit", "500")
    row = next(r for r in json.loads(rows.stdout)["items"] if r["detail"] == "echo audit-offline")
    assert row["outcome"] == "1 expired"


# --- standard input --------------------------------------------------------------


def ctl_with_stdin(fleet: Fleets, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*SERVERMGR, "ctl", *args],
        cwd=fleet.cwd,
        env={**fleet.env, "SERVERMGR_CORE": fleet.main.url, "SERVERMGR_KEY": fleet.main.key},
        input=stdin,
        capture_output=True,
        timeout=20,
    )


def test_stdin_is_forwarded_like_ssh(fleet: Fleets) -> None:
    echoed = ctl_with_stdin(fleet, b"hi\n", "exec", "node-01", "cat")
    assert (echoed.returncode, echoed.stdout, echoed.stderr) == (0, b"hi\n", b"")
    script = fleet.cwd / "script.sh"
    script.write_bytes(b'echo "from $E2E_NODE with $1"\nexit 5\n')
    with script.open("rb") as f:
        ran = subprocess.run(
            [*SERVERMGR, "ctl", "exec", "node-03", "bash", "-s", "--", "arg"],
            cwd=fleet.cwd,
            env={**fleet.env, "SERVERMGR_CORE": fleet.main.url, "SERVERMGR_KEY": fleet.main.key},
            stdin=f,
            capture_output=True,
            timeout=20,
        )
    assert (ran.returncode, ran.stdout) == (5, b"from node-03 with arg\n"), ran
    fanned = ctl_with_stdin(fleet, b"x\ny\n", "exec", "role=web", "wc -l")
    assert fanned.returncode == 0, fanned
    assert prefixed(fanned.stdout) == ["node-01 | 2", "node-02 | 2"]
    ignored = ctl_with_stdin(fleet, b"hi\n", "exec", "-n", "node-01", "cat; echo end")
    assert ignored.stdout == b"end\n"


def test_stdin_to_one_node_is_a_stream_of_any_size(fleet: Fleets) -> None:
    size = 16 * 1024 * 1024  # far over what a job body holds (512 KiB)
    counted = ctl_with_stdin(fleet, bytes(size), "exec", "node-01", "wc -c")
    assert (counted.returncode, counted.stdout.strip()) == (0, str(size).encode()), counted
    env = {**fleet.env, "SERVERMGR_CORE": fleet.main.url, "SERVERMGR_KEY": fleet.main.key}
    # Endless input to a command that never reads it: done when the command is.
    endless = subprocess.Popen(["yes"], stdout=subprocess.PIPE, start_new_session=True)
    try:
        ran = subprocess.run(
            [*SERVERMGR, "ctl", "exec", "node-01", "echo done"],
            cwd=fleet.cwd,
            env=env,
            stdin=endless.stdout,
            capture_output=True,
            timeout=20,
        )
    finally:
        endless.kill()
        endless.wait()
        assert endless.stdout is not None
        endless.stdout.close()
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, b"done\n", b""), ran


def test_ctrl_c_cancels_a_job_reading_stdin(fleet: Fleets) -> None:
    read, write = os.pipe()
    ctl = subprocess.Popen(
        [*SERVERMGR, "ctl", "exec", "node-02", "cat; echo ended"],
        cwd=fleet.cwd,
        env={**fleet.env, "SERVERMGR_CORE": fleet.main.url, "SERVERMGR_KEY": fleet.main.key},
        stdin=read,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As from a terminal: SIGINT at its default, whatever the test runner ignores.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(read)
    try:
        os.write(write, b"half a line")
        assert ctl.stdout is not None
        assert select.select([ctl.stdout], [], [], 15)[0], "cat never echoed its input"
        ctl.send_signal(signal.SIGINT)
        out, err = ctl.communicate(timeout=15)
    finally:
        os.close(write)
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()
    assert ctl.returncode == 130, err
    assert out == b"half a line"
    job_id = re.search(rb"cancelled job (\S+)", err)
    assert job_id is not None, err
    job = fleet.main.api("GET", f"/api/v1/jobs/{job_id[1].decode()}")
    assert [n["state"] for n in job["nodes"]] == ["cancelled"]


def test_stdin_for_several_nodes_over_the_limit_is_refused_before_anything_runs(
    fleet: Fleets,
) -> None:
    res = ctl_with_stdin(fleet, b"x" * (512 * 1024 + 1), "exec", "role=web", "cat")
    assert res.returncode == 2, res
    assert res.stdout == b""
    assert b"over 512 KiB" in res.stderr
