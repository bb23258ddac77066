"""Fault suite: each fault on a real Core with real agents and simulated nodes.

    python bench/faults.py            # the full table (5,000 nodes in the storm)
    python bench/faults.py --quick    # the short form CI runs (fewer nodes, shorter faults)
    python bench/faults.py --only partition,disk-full

Every fault starts a fresh Core (``servermgr core serve``), real agents
(``servermgr node run``) and simulated nodes (bench/fleet_sim.py, which
speaks the real protocol and keeps its samples until Core acks them, as the
agent does), injects the fault, heals it, and checks that nothing was lost
(see bench/faultlib.py for exactly what is counted). It prints one table
row per fault: what was checked (counts before and after), nothing lost
yes/no, and the time to recover. It exits 1 when any row failed (something
lost, or an expectation of the fault not met), 0 otherwise.

``partition`` and ``disk-full`` need root (network namespaces, iptables,
tmpfs): without it their rows say "skipped (needs root)" and do not fail.
All traffic stays on this machine: 127.0.0.1, or a private /30 between two
network namespaces the suite creates and deletes. Every wait is bounded;
every process, namespace and mount is removed in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import benchlib
import httpx
from faultlib import (
    FULL,
    QUICK,
    Failed,
    Rig,
    Settings,
    SlowClients,
    fill,
    netns_pair,
    partition,
    tmpfs,
    wait_until,
)

from servermgr.core.jobs_api import MAX_COMMAND


@dataclass
class Row:
    fault: str
    checked: str
    lost: bool | None  # None: skipped
    recovered: str
    notes: list[str]
    seen: list[str] = field(default_factory=list)  # what the operator saw in the logs

    @property
    def failed(self) -> bool:
        return self.lost is True or bool(self.notes)


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f} s"


# --- a. kill -9 Core mid fan-out ------------------------------------------------------


def core_killed(rig: Rig) -> Row:
    rig.standard()
    notes: list[str] = []
    before = rig.stored_total()
    token, key = rig.token(), rig.token()
    answer: list[tuple[int, object]] = []
    t = threading.Thread(
        target=lambda: answer.append(rig.submit(rig.command(token, "sleep 2; "), key=key))
    )
    t.start()
    # Killed as soon as the first agent has the job: Core is dispatching.
    wait_until("an agent receives the job", rig.agent_has_job, rig.s.bound, step=0.001)
    rig.kill_core()
    t.join(30)
    first = answer[0][0] if answer else 0
    time.sleep(1.0)
    t0 = time.monotonic()
    rig.restart_core()
    if first != 201:
        # The caller never saw the job: it retries with the same key, as ctl does.
        status, body = rig.submit(rig.command(token, "sleep 2; "), key=key)
        if status not in (200, 201):  # 200: the job the first attempt made
            notes.append(f"retry answered {status}: {str(body)[:120]}")
    rig.wait_all_online()
    rig.settle_job(token)
    recovered = time.monotonic() - t0
    jobs = rig.check_job(token)
    samples = rig.check_samples()
    return Row(
        "kill -9 Core mid fan-out",
        f"before: {before:,} samples stored; first answer {first or 'none'}; after: "
        f"{samples.describe()}; {jobs.describe()}",
        samples.lost or jobs.lost,
        _s(recovered),
        notes,
    )


# --- b. kill -9 node mid-job ------------------------------------------------------------


def node_killed(rig: Rig) -> Row:
    rig.standard()
    notes: list[str] = []
    token = rig.token()
    status, body = rig.submit(rig.command(token, "sleep 4; "))
    if status != 201:
        raise Failed(f"submit answered {status}: {body}")
    victim = "agent-0"

    def running() -> bool:
        job = rig.job(body["id"])  # type: ignore[index]
        return any(n["node"] == victim and n["state"] == "running" for n in job["nodes"])

    wait_until(f"{victim} running the job", running, rig.s.bound)
    os.kill(rig.agents[victim].pid, signal.SIGKILL)
    rig.agents[victim].wait(10)
    t0 = time.monotonic()
    rig.restart_agent(victim)
    rig.wait_all_online()
    rig.settle_job(token)
    recovered = time.monotonic() - t0
    jobs = rig.check_job(token, {victim: {"failed", "lost"}})
    doc = rig.job(body["id"])  # type: ignore[index]
    err = next((n.get("error") or "" for n in doc["nodes"] if n["node"] == victim), "")
    if err:
        notes_err = f"{victim}: {err[:90]}"
    else:
        notes_err = f"{victim}: no error text"
    samples = rig.check_samples(skip_agents=(victim,))
    return Row(
        "kill -9 node mid-job",
        f"{samples.describe()}; {jobs.describe()}; {notes_err}",
        samples.lost or jobs.lost,
        _s(recovered),
        notes,
    )


# --- c. node stopped (SIGSTOP) during a fan-out ------------------------------------------

STOP_FILLER_JOBS = 40  # of 32 KiB each: more than the kernel buffers of a connection hold


def node_stopped(rig: Rig) -> Row:
    rig.standard()
    notes: list[str] = []
    victim = "agent-0"
    # The same fan-out with every node well first: how fast results come on this machine now.
    base_token = rig.token()
    t0 = time.monotonic()
    status, body = rig.submit(rig.command(base_token), timeout=rig.s.bound, wait=0)
    if status != 201:
        raise Failed(f"submit answered {status}: {str(body)[:200]}")
    rig.wait_job_final(base_token)
    baseline = time.monotonic() - t0
    token = rig.token()
    os.kill(rig.agents[victim].pid, signal.SIGSTOP)
    try:
        # Fill the stopped node's socket (a node that does not read): big jobs for it
        # alone, each command near Core's 32 KiB limit (jobs_api.MAX_COMMAND).
        filler = ": " + "x" * (MAX_COMMAND - 16) + "; true"
        t0 = time.monotonic()
        fillers: list[str] = []
        for i in range(STOP_FILLER_JOBS):
            status, body = rig.submit(filler, victim, timeout=10.0, wait=0)
            if status != 201:
                notes.append(f"filler job {i} for {victim} answered {status}")
                break
            fillers.append(body["id"])
        filled = time.monotonic() - t0
        t0 = time.monotonic()
        # As `ctl exec --all` does: no waiting for offline nodes.
        status, body = rig.submit(rig.command(token), timeout=rig.s.bound, wait=0)
        answered = time.monotonic() - t0
        if status != 201:
            raise Failed(f"submit answered {status} after {answered:.1f} s: {str(body)[:200]}")
        job_id = body["id"]  # type: ignore[index]

        def others_done() -> bool:
            nodes = rig.job(job_id)["nodes"]
            return all(n["state"] == "succeeded" for n in nodes if n["node"] != victim)

        others = wait_until("the other nodes' results", others_done, rig.s.bound, step=0.05)
        others += answered
        if answered > 2.0:
            notes.append(f"POST /jobs took {answered:.1f} s")
        if others > baseline + 2.0:
            notes.append(f"the other nodes' results took {others:.1f} s ({baseline:.1f} s without)")

        def reported() -> bool:
            # In the fan-out, or in the last job that was queued behind the big ones.
            for j in [job_id, *fillers[-1:]]:
                n = next(n for n in rig.job(j)["nodes"] if n["node"] == victim)
                if "stall" in f"{n['state']} {n.get('error') or ''}".lower():
                    return True
            return False

        try:
            seen = wait_until(f"{victim} reported stalled", reported, 30.0, step=0.2)
            stalled = f"reported stalled after {answered + seen:.1f} s"
        except Failed:
            n = next(n for n in rig.job(job_id)["nodes"] if n["node"] == victim)
            stalled = f"not reported stalled (state {n['state']})"
            notes.append(f"{victim} {stalled}")
    finally:
        os.kill(rig.agents[victim].pid, signal.SIGCONT)
    t1 = time.monotonic()
    rig.wait_all_online()
    rig.settle_job(token)
    recovered = time.monotonic() - t1
    any_state = {"succeeded", "failed", "lost", "expired", "stalled"}
    jobs = rig.check_job(token, {victim: any_state})
    samples = rig.check_samples(skip_agents=(victim,))
    return Row(
        "node stopped (SIGSTOP) during a fan-out",
        f"{STOP_FILLER_JOBS} big jobs for {victim} took {filled:.1f} s, then a fan-out: "
        f"POST answered in {answered:.2f} s, others' results in {others:.2f} s "
        f"({baseline:.2f} s with every node well), {victim} "
        f"{stalled}; {samples.describe()}; {jobs.describe()}",
        samples.lost or jobs.lost,
        f"{_s(recovered)} after SIGCONT",
        notes,
    )


# --- d. network partition ------------------------------------------------------------------


def partitioned(rig: Rig) -> Row:
    if not shutil.which("iptables"):
        return Row(
            "network partition (packets dropped)",
            "not run",
            None,
            "n/a",
            ["iptables is missing (apt-get install iptables)"],
        )
    notes: list[str] = []
    with netns_pair(str(os.getpid())) as (_, ns_node, a_core, _):
        rig.host = a_core
        rig.start_core()
        inside = ["ip", "netns", "exec", ns_node]
        rig.start_agent("agent-0", inside)  # behind the partition
        for i in range(1, rig.s.agents):
            rig.start_agent(f"agent-{i}")
        rig.start_fleet(rig.s.sims)
        rig.start_fleet(5, prefix="cut", prefix_cmd=inside)  # behind the partition too
        rig.wait_all_online()
        before = rig.stored_total()
        partition(ns_node, a_core, True)
        healed = False
        try:
            total = rig.total_nodes()
            cut = 6
            noticed = wait_until(
                "Core notices the partitioned nodes",
                lambda: rig.online() <= total - cut,
                rig.s.bound,
            )
            token = rig.token()
            status, body = rig.submit(rig.command(token))
            if status != 201:
                notes.append(f"submit during the partition answered {status}")
            time.sleep(max(0.0, rig.s.hold - noticed))
            partition(ns_node, a_core, False)
            healed = True
        finally:
            if not healed:
                partition(ns_node, a_core, False)
        t0 = time.monotonic()
        rig.wait_all_online()
        rig.settle_job(token)
        recovered = time.monotonic() - t0
        jobs = rig.check_job(token)
        samples = rig.check_samples()
        return Row(
            "network partition (packets dropped)",
            f"{rig.s.hold:g} s partition of 1 agent + 5 simulated nodes, noticed by Core in "
            f"{noticed:.1f} s; before: {before:,} stored; after: {samples.describe()}; "
            f"{jobs.describe()}",
            samples.lost or jobs.lost,
            f"{_s(recovered)} after healing",
            notes,
        )


# --- e. disk full ------------------------------------------------------------------------------


def disk_full(rig: Rig) -> Row:
    notes: list[str] = []
    with tmpfs(rig.base / "core-data", "24m") as data:
        rig.standard()
        token_before = rig.token()
        # Its results arrive while the disk is full.
        status, body = rig.submit(rig.command(token_before, "sleep 2; "))
        if status != 201:
            raise Failed(f"submit answered {status}: {body}")
        before = rig.stored_total()
        filled = fill(data)
        try:
            time.sleep(0.5)
            filled += fill(data)  # what SQLite freed meanwhile (a checkpointed WAL)
            token_full = rig.token()
            status, body = rig.submit(rig.command(token_full))
            if status not in (201, 503):
                notes.append(f"job submitted while full: {status} {str(body)[:80]}")
            with rig.http() as h:
                reg = h.post("/api/v1/register", json={"hostname": "late-node"}).status_code
                nodes = h.get("/api/v1/nodes").status_code
            if reg not in (201, 503):
                notes.append(f"registration while full: {reg}")
            if nodes != 200:
                notes.append(f"GET /nodes while full: {nodes}")
            end = time.monotonic() + rig.s.hold
            while time.monotonic() < end:  # kept full
                filled += fill(data)
                time.sleep(0.25)
        finally:
            (data / "filler").unlink()
        t0 = time.monotonic()
        rig.settle_job(token_before)
        samples = rig.check_samples()
        jobs = rig.check_job(token_before)
        recovered = None if samples.lost or jobs.lost else time.monotonic() - t0
        log = rig.log_text()
        if "Traceback" in log:
            notes.append(f"{log.count('Traceback')} tracebacks in Core's log")
        return Row(
            "disk full (tmpfs)",
            f"{filled / 2**20:.1f} MiB filler, {rig.s.hold:g} s full; submit while full "
            f"{status}, register {reg}, GET /nodes {nodes}; before: {before:,} stored; after: "
            f"{samples.describe()}; {jobs.describe()}",
            samples.lost or jobs.lost,
            f"{_s(recovered)} after freeing space",
            notes,
        )


# --- f. database deleted, truncated ---------------------------------------------------------


def database(rig: Rig) -> Row:
    rig.standard()
    notes: list[str] = []
    db = rig.db
    # Deleted while Core runs: Core must stop and save what it had (a
    # ".rescued-" copy); the operator moves that back, as the message says.
    keep = rig.base / "db-kept"  # only used if Core saves nothing
    os.link(db, keep)
    db.unlink()
    t0 = time.monotonic()
    try:
        wait_until("Core exits", lambda: rig.c.proc.poll() is not None, 30.0)
        deleted = (
            f"deleted: Core exited {rig.c.proc.returncode} after {time.monotonic() - t0:.1f} s"
        )
        if rig.c.proc.returncode == 0:
            notes.append("Core exited 0 after its database was deleted")
    except Failed:
        deleted = "deleted: not noticed in 30 s"
        notes.append("Core did not notice its database was deleted")
        rig.kill_core(signal.SIGTERM)
    rescued = sorted(db.parent.glob(f"{db.name}.rescued-*"))
    if rescued:
        deleted += f", saved {rescued[-1].name}, moved back"
        os.rename(rescued[-1], db)
        keep.unlink()
    else:
        notes.append("Core saved no copy of the deleted database")
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        os.rename(keep, db)
    leftovers = [p.name for p in db.parent.glob(f"{db.name}-*")]
    if leftovers:
        deleted += f" (beside it: {', '.join(leftovers)})"
    rig.restart_core()
    rig.wait_all_online()
    # Truncated and 0-byte files, Core stopped: it must refuse them.
    rig.kill_core(signal.SIGTERM)
    backup = rig.base / "backup.db"
    shutil.copy2(db, backup)
    refused = []
    for what, size in (("truncated", os.path.getsize(db) // 2), ("0-byte", 0)):
        with open(db, "r+b") as f:
            f.truncate(size)
        code = _start_refused(rig)
        refused.append(f"{what}: {'served' if code is None else f'exit {code}'}")
        if code is None:
            notes.append(f"Core served a {what} database")
        elif code == 0:
            notes.append(f"Core exited 0 on a {what} database")
        shutil.copy2(backup, db)
        Path(f"{db}-wal").unlink(missing_ok=True)
        Path(f"{db}-shm").unlink(missing_ok=True)
    t1 = time.monotonic()
    rig.restart_core()
    rig.wait_all_online()
    recovered = time.monotonic() - t1
    token = rig.token()
    status, body = rig.submit(rig.command(token))
    if status != 201:
        notes.append(f"submit after restore answered {status}")
    rig.settle_job(token)
    jobs = rig.check_job(token)
    samples = rig.check_samples()
    return Row(
        "database deleted, truncated, 0 bytes",
        f"{deleted}; {', '.join(refused)}; restored: {samples.describe()}; {jobs.describe()}",
        samples.lost or jobs.lost,
        f"{_s(recovered)} after restore",
        notes,
    )


def _start_refused(rig: Rig) -> int | None:
    """Start Core on a bad database: its exit code, or None if it served (then stopped)."""
    try:
        rig.restart_core(timeout=20.0)
    except RuntimeError:
        return rig.c.proc.wait(10)
    rig.kill_core(signal.SIGTERM)
    return None


# --- g. Core restart with many nodes connected --------------------------------------------


def storm(rig: Rig) -> Row:
    notes: list[str] = []
    n = rig.s.storm_nodes
    rig.start_core(interval=rig.s.storm_interval)
    rig.start_agent("agent-0")
    rig.start_fleet(n)
    rig.wait_all_online(rig.s.bound * 2)
    before = rig.stored_total()
    rig.kill_core(signal.SIGTERM)
    t0 = time.monotonic()
    rig.restart_core()
    pid = rig.c.pid
    cpu0 = benchlib.cpu_seconds(pid)
    t1 = time.monotonic()
    took = rig.wait_all_online(rig.s.bound * 2)
    cpu = (benchlib.cpu_seconds(pid) - cpu0) / max(1e-6, time.monotonic() - t1)
    all_online = time.monotonic() - t0
    stats = rig.fleets[0].stats()
    if stats["connected"] < n:
        notes.append(f"only {stats['connected']} of {n} simulated nodes connected")
    samples = rig.check_samples(timeout=rig.s.bound * 2)
    return Row(
        f"Core restart with {n:,} nodes connected",
        f"all {n + 1:,} online {took:.1f} s after Core answered, Core CPU {cpu:.0%} of a core "
        f"meanwhile; connect failures {stats['connect_failures']:,} (nodes keep retrying); "
        f"before: {before:,} stored; after: {samples.describe()}",
        samples.lost,
        f"{_s(all_online)} (restart to all online)",
        notes,
    )


# --- h. fd limit and slow unauthenticated clients -------------------------------------------


def fd_limit(rig: Rig) -> Row:
    notes: list[str] = []
    sims = min(rig.s.sims, rig.s.nofile_cap // 3)
    rig.start_core(nofile_cap=rig.s.nofile_cap)
    for i in range(rig.s.agents):
        rig.start_agent(f"agent-{i}")
    rig.start_fleet(sims)
    rig.wait_all_online()
    before = rig.stored_total()
    log_before = len(rig.log_text().splitlines())
    port = int(rig.c.url.rsplit(":", 1)[1])
    benchlib.raise_nofile(rig.s.slow_clients + 1024)
    # The attackers come from other loopback addresses than the operator and
    # the nodes (127.0.0.1), eight connections each: under any per-address cap,
    # so they reach the fd limit. They reconnect when Core drops them.
    sources = [f"127.0.0.{2 + i}" for i in range(rig.s.slow_clients // 8)]
    slow = SlowClients("127.0.0.1", port, rig.s.slow_clients, sources)
    token = rig.token()
    # The operator's connection is open before the attack (as the nodes' are).
    operator = rig.http(timeout=10.0)
    try:
        operator.get("/api/v1/status").raise_for_status()
        slow.open()
        fds = len(os.listdir(f"/proc/{rig.c.pid}/fd"))
        end = time.monotonic() + rig.s.hold
        t0 = time.monotonic()
        try:
            r = operator.post("/api/v1/jobs", json={"target": "*", "command": rig.command(token)})
            status = r.status_code
        except httpx.HTTPError as exc:
            status = 0
            notes.append(f"submit under attack failed: {exc}")
        if status not in (0, 201):
            notes.append(f"submit under attack answered {status}")
        job_took: float | None = None
        while time.monotonic() < end:
            slow.trickle()
            fds = max(fds, len(os.listdir(f"/proc/{rig.c.pid}/fd")))
            if job_took is None and status == 201:
                with contextlib.suppress(httpx.HTTPError):
                    doc = operator.get(f"/api/v1/jobs/{r.json()['id']}").json()
                    if doc["state"] == "done":
                        job_took = time.monotonic() - t0
            time.sleep(0.25)
        if job_took is None:
            notes.append(f"the job under attack was not done in {rig.s.hold:g} s")
        with contextlib.suppress(httpx.HTTPError):
            online = operator.get("/api/v1/status").json()["nodes"]["online"]
            if online < rig.total_nodes():
                notes.append(f"{online} of {rig.total_nodes()} nodes online under attack")
        held, opened = len(slow.socks), slow.opened
    finally:
        slow.close()
        operator.close()
    if rig.c.proc.poll() is not None:
        notes.append(f"Core exited {rig.c.proc.returncode} under the attack")
        rig.restart_core()  # to count what was kept
    log_lines = len(rig.log_text().splitlines()) - log_before
    if log_lines > 60:
        notes.append(f"{log_lines} log lines during the attack")
    rig.settle_job(token)
    jobs = rig.check_job(token)
    t1 = time.monotonic()
    rig.start_agent("late-agent")
    rig.wait_all_online()
    recovered = time.monotonic() - t1
    samples = rig.check_samples()
    return Row(
        "fd limit with slow unauthenticated clients",
        f"Core limited to {rig.s.nofile_cap} fds (used {fds} at most), "
        f"{rig.s.slow_clients} slow clients from {len(sources)} addresses ({opened} connections "
        f"made, {held} open at the end) for {rig.s.hold:g} s; job under attack done in "
        f"{_s(job_took)}; {log_lines} log lines; before: {before:,} stored; after: "
        f"{samples.describe()}; {jobs.describe()}",
        samples.lost or jobs.lost,
        f"{_s(recovered)} (a new node joins after)",
        notes,
    )


FAULTS: dict[str, tuple[Callable[[Rig], Row], bool]] = {
    "core-kill": (core_killed, False),
    "node-kill": (node_killed, False),
    "node-stop": (node_stopped, False),
    "partition": (partitioned, True),
    "disk-full": (disk_full, True),
    "database": (database, False),
    "storm": (storm, False),
    "fd-limit": (fd_limit, False),
}


def run_one(name: str, settings: Settings, keep: bool) -> Row:
    fn, needs_root = FAULTS[name]
    if needs_root and os.geteuid() != 0:
        return Row(name, "skipped (needs root)", None, "n/a", [])
    print(f"== {name}", flush=True)
    t0 = time.monotonic()
    with benchlib.workdir(f"faults-{name}-", keep) as base, benchlib.Procs() as procs:
        rig = Rig(procs, base, settings)
        try:
            row = fn(rig)
        except (Failed, RuntimeError, TimeoutError, httpx.HTTPError, OSError) as exc:
            traceback.print_exc()
            what = f"did not complete: {exc}"
            if rig.core is not None:
                print(f"Core's log ends:\n{benchlib.tail(rig.core.log, 15)}", flush=True)
                if rig.core.proc.poll() is not None:
                    stop = [ln for ln in rig.log_text().splitlines() if ln.startswith("servermgr:")]
                    what += f"; Core exited {rig.core.proc.returncode}"
                    what += f" ({stop[-1]})" if stop else ""
            row = Row(name, what, True, "n/a", [])
        if rig.core is not None:
            row.seen = rig.operator_lines()
            print("   what the operator saw (warnings and errors in the logs):", flush=True)
            for line in row.seen:
                print(f"     {line}", flush=True)
    print(
        f"   {name}: {'FAILED' if row.failed else 'ok'} in {time.monotonic() - t0:.0f} s",
        flush=True,
    )
    return row


def write_markdown(
    path: Path, title: str, headers: list[str], cells: list[tuple[str, ...]], rows: list[Row]
) -> None:
    """The table and, per fault, the distinct warnings and errors of its logs."""
    m = benchlib.machine()
    out = [
        f"{title}: {m['nproc']} cpu, Python {m['python']}, servermgr {m['commit']}, "
        f"load {m['loadavg']}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    for r in rows:
        out += ["", f"#### {r.fault}: in the logs", "", "```"]
        out += r.seen or ["(no warning or error)"]
        out += ["```"]
    path.write_text("\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short form (CI)")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(FAULTS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--markdown", type=Path, help="also write the table and logs here")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(FAULTS)
    unknown = set(names) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    settings = QUICK if args.quick else FULL
    benchlib.install_signal_handlers()
    benchlib.raise_nofile(65536)
    benchlib.print_machine()
    t0 = time.monotonic()
    rows = [run_one(name, settings, args.keep) for name in names]
    title = f"faults ({'quick' if args.quick else 'full'}, {time.monotonic() - t0:.0f} s)"
    headers = ["fault", "checked", "nothing lost", "recovered in"]
    cells = [
        (
            r.fault,
            r.checked + ("" if not r.notes else " -- FAILED: " + "; ".join(r.notes)),
            "skipped" if r.lost is None else "no" if r.lost else "yes",
            r.recovered,
        )
        for r in rows
    ]
    benchlib.print_table(title, headers, cells)
    if args.markdown:
        write_markdown(args.markdown, title, headers, cells, rows)
    failed = [r.fault for r in rows if r.failed]
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
