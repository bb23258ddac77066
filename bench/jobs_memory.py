"""Core's memory and file descriptors across many jobs: do they come back?

Against a real Core (``servermgr core serve``) with a few real agents
(``servermgr node run``): N jobs (``echo``), each run as ``servermgr ctl
exec NODE`` runs it (ctl's own client and output path, in this process,
from a few threads; one client per job, closed after it as a ctl process
is when it exits). Core's RSS, open file descriptors and sockets in
CLOSE-WAIT are read at three points: the baseline (after a warm-up of a few
hundred jobs, once its connections are closed), right after the N jobs, and
once back at the baseline (RSS within 1 MiB, no more fds, nothing in
CLOSE-WAIT; polled each second for at most ``--settle`` s: Core collects
the garbage cycles jobs leave once a minute, and closes a connection its
client closed when Hypercorn's keep-alive timeout ends).

Examples::

    python bench/jobs_memory.py                  # 10,000 jobs
    python bench/jobs_memory.py --quick          # 300 jobs (CI's smoke test)
"""

from __future__ import annotations

import argparse
import io
import threading
import time
from pathlib import Path
from typing import Any

import benchlib
import psutil

from servermgr.ctl import exec as exec_mod
from servermgr.ctl.client import Client

AGENTS = 3


def measure(core: benchlib.Core) -> dict[str, Any]:
    proc = psutil.Process(core.pid)
    conns = proc.net_connections(kind="tcp")
    conns = [c for c in conns if c.status != psutil.CONN_LISTEN]
    with core.client() as http:  # closed by Core at once, not kept alive: not counted
        gc_doc = http.get("/api/v1/status", headers={"Connection": "close"}).json()["gc"]
    return {
        "frozen": gc_doc["frozen_objects"],
        "rss": benchlib.rss_bytes(core.pid),
        "fds": proc.num_fds(),
        "close_wait": sum(1 for c in conns if c.status == psutil.CONN_CLOSE_WAIT),
        "sockets": len(conns),
    }


def settle(
    core: benchlib.Core, base: dict[str, Any] | None, limit: float
) -> tuple[dict[str, Any], float]:
    """Core's figures once back at ``base`` (RSS within 1 MiB, no more fds, nothing
    in CLOSE-WAIT), or after ``limit`` s; with no ``base``, once the fds stop
    falling and nothing is in CLOSE-WAIT. Returns them and the seconds waited."""
    t0 = time.monotonic()
    last = measure(core)
    while time.monotonic() - t0 < limit:
        time.sleep(1.0)
        now = measure(core)
        if base is None:
            if now["close_wait"] == 0 and now["fds"] >= last["fds"]:
                return now, time.monotonic() - t0
        elif (
            now["close_wait"] == 0
            and now["fds"] <= base["fds"]
            and now["rss"] <= base["rss"] + 2**20
        ):
            return now, time.monotonic() - t0
        last = now
    return last, time.monotonic() - t0


def run_jobs(core: benchlib.Core, nodes: list[str], n: int, workers: int) -> float:
    """Run ``n`` jobs over ``workers`` threads as ``ctl exec NODE`` does; seconds taken."""
    left = [n]
    lock = threading.Lock()
    failures: list[str] = []

    def worker(i: int) -> None:
        while True:
            with lock:
                if left[0] <= 0 or failures:
                    return
                left[0] -= 1
                k = left[0]
            client = Client(core.url, core.key)
            out = io.BytesIO()
            try:
                body = {"target": nodes[k % len(nodes)], "command": f"echo job {k}"}
                code = exec_mod.run(client, body, single=True, out=out, err=out)
            finally:
                client.close()
            if code != 0 or out.getvalue() != f"job {k}\n".encode():
                with lock:
                    failures.append(f"job {k}: exit {code}, output {out.getvalue()[:80]!r}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError("; ".join(failures[:3]))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to run (10,000)")
    parser.add_argument("--warmup", type=int, default=300, help="jobs before the baseline (300)")
    parser.add_argument("--workers", type=int, default=4, help="ctl clients at once (4)")
    parser.add_argument("--settle", type=float, default=150.0, help="most seconds to settle (150)")
    parser.add_argument(
        "--quick", action="store_true", help="300 jobs, 50 warm-up, at most 60 s to settle"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.warmup, args.settle = 300, 50, 60.0
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    nodes = [f"mem-{i:02d}" for i in range(AGENTS)]
    with benchlib.Procs() as procs, benchlib.workdir("jobs-memory-") as tmp:
        core = benchlib.start_core(procs, tmp)
        for name in nodes:
            benchlib.start_agent(procs, core, tmp, name)
        benchlib.wait_online(core, nodes)
        run_jobs(core, nodes, args.warmup, args.workers)
        base = settle(core, None, args.settle)[0]
        took = run_jobs(core, nodes, args.jobs, args.workers)
        after = measure(core)
        settled, waited = settle(core, base, args.settle)
    phases = [
        (f"baseline (after {args.warmup} jobs, settled)", base),
        (f"after {args.jobs} more jobs", after),
        (f"{waited:.0f} s later", settled),
    ]
    benchlib.print_table(
        f"Core across {args.jobs} jobs on {AGENTS} agents "
        f"({args.workers} ctl clients at once, {args.jobs / took:.0f} jobs/s)",
        [
            "when",
            "RSS MiB",
            "vs baseline MiB",
            "open fds",
            "TCP sockets",
            "in CLOSE-WAIT",
            "frozen objects",
        ],
        [
            (
                label,
                benchlib.mib(m["rss"]),
                f"{(m['rss'] - base['rss']) / 2**20:+.1f}",
                m["fds"],
                m["sockets"],
                m["close_wait"],
                m["frozen"],
            )
            for label, m in phases
        ],
    )
    grown = (settled["rss"] - base["rss"]) / 2**20
    print(f"\nRSS after settling vs baseline: {grown:+.1f} MiB after {args.jobs} jobs")
    benchlib.write_json(
        args.json,
        {"jobs": args.jobs, "seconds": took, "baseline": base, "after": after, "settled": settled},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
