"""Footprint of the node agent beside Prometheus node_exporter.

A real ``servermgr node run`` connected to a real Core (heartbeats at the
interval given) is watched for a window after a warm-up: RSS and PSS (from
/proc/<pid>/smaps_rollup) sampled every interval, and CPU seconds (utime +
stime from /proc/<pid>/stat) over the window, as % of one core. CPU seconds
are what the agent costs whatever else runs on the machine.

When ``prometheus-node-exporter`` is installed (Debian package of that name)
it runs in the same window with ``--web.listen-address=127.0.0.1:<free
port>``, scraped from this process at the same interval (as Prometheus
would), and is measured the same way; otherwise it is skipped with a note.

Examples::

    python bench/agent_footprint.py                 # 10 minutes at 5 s
    python bench/agent_footprint.py --quick         # 30 s at 1 s
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import httpx

NODE = "footprint-node"
EXPORTER = "prometheus-node-exporter"


def wait_reconnected(core: benchlib.Core, since: float, timeout: float = 30.0) -> None:
    """Wait until the restarted agent is online again and has sent a sample."""
    deadline = time.monotonic() + timeout
    with core.client() as http:
        while time.monotonic() < deadline:
            node = http.get(f"/api/v1/nodes/{NODE}").json()
            connected = node.get("connected_at")
            if (
                node["status"] == "online"
                and connected
                and connected >= time.time() - (time.monotonic() - since)
            ):
                if (node.get("sample_ts") or 0) > connected:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{NODE} did not come back within {timeout:g} s")


def watch(pids: dict[str, int], seconds: float, interval: float, scrape: str | None) -> Any:
    """Sample RSS/PSS every ``interval`` for ``seconds``; CPU over the whole window."""
    mem: dict[str, list[tuple[int, int | None]]] = {k: [] for k in pids}
    scraped = 0
    scrape_bytes = 0
    with httpx.Client(timeout=5.0, trust_env=False) as http, benchlib.Window(pids) as win:
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < end:
            if scrape is not None:
                resp = http.get(scrape)
                scraped += 1
                scrape_bytes = len(resp.content)
            for name, pid in pids.items():
                mem[name].append((benchlib.rss_bytes(pid), benchlib.pss_bytes(pid)))
            next_at += interval
            time.sleep(max(0.0, min(next_at, end) - time.monotonic()))
    return win, mem, scraped, scrape_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="measured window (600)")
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval (5)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before (10)")
    parser.add_argument("--quick", action="store_true", help="30 s at a 1 s interval")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.interval, args.warmup = 30.0, 1.0, 3.0
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    exporter = shutil.which(EXPORTER)
    note = None
    with benchlib.Procs() as procs, benchlib.workdir("footprint-") as tmp:
        core = benchlib.start_core(procs, tmp, interval=args.interval)
        # First run: registers (one POST over http.client), then restarted as after a
        # reboot: the measured agent is the one that runs for months.
        first = benchlib.start_agent(procs, core, tmp, NODE)
        benchlib.wait_online(core, [NODE])
        time.sleep(2 * args.interval)
        first_rss = benchlib.rss_bytes(first.pid)
        procs.stop(first)
        t_start = time.monotonic()
        agent = benchlib.start_agent(procs, core, tmp, NODE)
        wait_reconnected(core, t_start)
        ready_s = time.monotonic() - t_start
        pids = {"servermgr node run": agent.pid}
        scrape = None
        if exporter is not None:
            port = benchlib.free_port()
            ne = procs.start(
                [exporter, f"--web.listen-address=127.0.0.1:{port}"], log=tmp / "exporter.log"
            )
            scrape = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 10
            while True:
                try:
                    httpx.get(scrape, timeout=1.0, trust_env=False)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or ne.poll() is not None:
                        raise RuntimeError(
                            f"node_exporter did not start:\n{benchlib.tail(tmp / 'exporter.log')}"
                        ) from None
                    time.sleep(0.1)
            pids["node_exporter"] = ne.pid
        else:
            note = f"{EXPORTER} not installed (apt-get install -y {EXPORTER}): skipped"
        startup_cpu = benchlib.cpu_seconds(agent.pid)
        time.sleep(args.warmup)
        load = benchlib.loadavg()
        win, mem, scraped, scrape_bytes = watch(pids, args.seconds, args.interval, scrape)
        with core.client() as http:
            samples = http.get(f"/api/v1/nodes/{NODE}").json()
        agent_threads = benchlib.threads(agent.pid)
    rows = []
    results = {}
    for name in pids:
        rss = [r for r, _ in mem[name]]
        pss = [p for _, p in mem[name] if p is not None]
        cpu = win.cpu(name)
        results[name] = {
            "rss_avg": sum(rss) / len(rss),
            "rss_max": max(rss),
            "pss_avg": sum(pss) / len(pss) if pss else None,
            "pss_max": max(pss) if pss else None,
            "cpu_s": cpu,
            "cpu_pct": 100 * cpu / win.seconds,
        }
        r = results[name]
        rows.append(
            (
                name,
                f"{win.seconds:.0f}",
                f"{args.interval:g}",
                benchlib.mib(r["rss_avg"]),
                benchlib.mib(r["rss_max"]),
                benchlib.mib(r["pss_avg"]),
                f"{cpu:.2f}",
                f"{r['cpu_pct']:.3f}",
            )
        )
    print(f"\nfirst run (registers): RSS {benchlib.mib(first_rss)} MiB")
    print(
        f"load before the window: {load}; restarted agent online {ready_s:.2f} s after start, "
        f"start-up CPU {startup_cpu:.2f} s, {agent_threads} threads; "
        f"last sample ts {samples.get('sample_ts')}"
    )
    if scrape is not None:
        print(f"node_exporter scraped {scraped} times, {scrape_bytes} bytes per scrape")
    if note:
        print(note)
    benchlib.print_table(
        "Agent footprint",
        [
            "process",
            "window s",
            "interval s",
            "RSS avg MiB",
            "RSS max MiB",
            "PSS avg MiB",
            "CPU s",
            "CPU % of a core",
        ],
        rows,
    )
    benchlib.write_json(
        args.json,
        {
            "machine": benchlib.machine(),
            "load": load,
            "results": results,
            "note": note,
            "startup_cpu_s": startup_cpu,
            "first_run_rss": first_rss,
            "ready_s": ready_s,
        },
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
