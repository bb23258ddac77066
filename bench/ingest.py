"""Heartbeat ingest: how many heartbeats per second one Core process sustains.

For each fleet size: a fresh ``servermgr core serve`` subprocess (temp config,
``heartbeat_interval`` as given), the fleet simulator (bench/fleet_sim.py)
registers and connects that many nodes, a warm-up, then a measured window:

- offered and acked heartbeats per second (acks counted when they arrive),
- Core CPU: utime + stime from /proc/<pid>/stat over the window, as % of one
  core and as microseconds per heartbeat (robust to other load on the machine),
- Core RSS (max over the window, sampled twice a second),
- heartbeat-to-queryable latency p50/p99: from a sample's send to its
  ``heartbeat.ack``, which Core sends once the batch holding it is committed
  to SQLite (so ``GET /api/v1/nodes/{id}/metrics`` returns it; the in-memory
  status behind ``GET /api/v1/nodes/{id}`` is updated even earlier, on receipt),
- heartbeats sent in the window and never acked, the simulator's own lag
  (how late it was sending: its overload, not Core's) and CPU, and what the
  rest of the machine used meanwhile.

Examples::

    python bench/ingest.py                      # 1k, 5k, 10k, 20k nodes at 5 s
    python bench/ingest.py --nodes 2000 --window 30
    python bench/ingest.py --quick              # 200 nodes at 1 s for 15 s
    python bench/ingest.py --nodes 5000 --profile   # py-spy of Core in the window
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import benchlib
from fleet_sim import Fleet, FleetResult


def measure(args: argparse.Namespace, nodes: int, tmp: Path) -> dict[str, Any]:
    doc: dict[str, Any] = {"nodes": nodes, "interval": args.interval, "load": benchlib.loadavg()}
    print(f"\n== {nodes} nodes at {args.interval:g} s (load {doc['load']})", flush=True)
    with benchlib.Procs() as procs:
        core = benchlib.start_core(
            procs, tmp, interval=args.interval, nofile=nodes + 4096, log_level=args.log_level
        )
        fleet = Fleet(procs, core.url, core.key, nodes, tmp / "fleet", workers=args.workers)
        fleet.start()
        doc["register_s"] = fleet.register_seconds
        print(f"registered in {fleet.register_seconds:.1f} s", flush=True)
        fleet.connect()
        doc["connect_s"] = fleet.connect_seconds
        print(f"connected in {fleet.connect_seconds:.1f} s (ramp {fleet.ramp:g} s)", flush=True)
        time.sleep(max(args.warmup, 2 * args.interval))
        rss: list[int] = []
        prof: list[Path | None] = []
        pids = {"core": core.pid} | {f"sim{i}": p for i, p in enumerate(fleet.pids)}
        profiler = None
        if args.profile:
            profiler = threading.Thread(
                target=lambda: prof.append(
                    benchlib.profile(core.pid, args.window, tmp / "core.prof")
                ),
                daemon=True,
            )
        with benchlib.Window(pids) as win:
            if profiler is not None:
                profiler.start()
            end = time.time() + args.window
            while time.time() < end:
                rss.append(benchlib.rss_bytes(core.pid))
                time.sleep(0.5)
        if profiler is not None:
            profiler.join()
        # Heartbeats sent at the end of the window get time to be acked.
        time.sleep(max(2.0, args.interval))
        doc["core_threads"] = benchlib.threads(core.pid)
        doc["core_pss"] = benchlib.pss_bytes(core.pid)
        result = fleet.stop()
        t_stop = time.monotonic()
        procs.stop(core.proc, timeout=60)
        doc["core_stop_s"] = time.monotonic() - t_stop
        doc["core_log_tail"] = benchlib.tail(core.log, 5)
    doc |= summarize(result, win, rss)
    if prof and prof[0] is not None:
        doc["profile"] = benchlib.top_frames(prof[0], 20)
        doc["profile_inclusive"] = benchlib.top_inclusive(prof[0], 40)
        print_profile(doc)
    return doc


def summarize(result: FleetResult, win: benchlib.Window, rss: list[int]) -> dict[str, Any]:
    lat, sent, acked = result.window(win.start, win.end)
    core_cpu = win.cpu("core")
    sim_cpu = sum(win.cpu(k) for k in win.pids if k.startswith("sim"))
    return {
        "window_s": win.seconds,
        "sent": sent,
        "offered_per_s": sent / win.seconds,
        "acked_per_s": acked / win.seconds,
        "unacked": sent - len(lat),
        "p50_s": benchlib.percentile(lat, 50),
        "p99_s": benchlib.percentile(lat, 99),
        "max_s": max(lat, default=float("nan")),
        "core_cpu_pct": 100 * core_cpu / win.seconds,
        "core_us_per_hb": 1e6 * core_cpu / acked if acked else float("nan"),
        "core_rss_max": max(rss, default=0),
        "sim_cpu_pct": 100 * sim_cpu / win.seconds,
        "sim_lag_p99_s": benchlib.percentile(result.lag, 99),
        "others_cores": win.others(),
        "disconnects": result.total("disconnects"),
        "connect_failures": result.total("connect_failures"),
        "errors": result.errors(),
    }


def print_profile(doc: dict[str, Any]) -> None:
    benchlib.print_table(
        f"Core profile, {doc['nodes']} nodes (py-spy, self time)",
        ["frame", "self %", "total %"],
        [(f[:110], f"{s:.1f}", f"{t:.1f}") for f, s, t in doc["profile"]],
    )
    benchlib.print_table(
        f"Core profile, {doc['nodes']} nodes (inclusive)",
        ["frame", "total %"],
        [(f[:110], f"{t:.1f}") for f, t in doc["profile_inclusive"]],
    )


def table(docs: list[dict[str, Any]]) -> None:
    rows = []
    for d in docs:
        if "error" in d:
            rows.append(
                (d["nodes"], f"{d['interval']:g}", d["load"], f"broke: {d['error']}") + ("",) * 12
            )
            continue
        rows.append(
            (
                d["nodes"],
                f"{d['interval']:g}",
                d["load"],
                f"{d['offered_per_s']:.0f}",
                f"{d['acked_per_s']:.0f}",
                f"{d['core_cpu_pct']:.0f}",
                f"{d['core_us_per_hb']:.0f}",
                benchlib.mib(d["core_rss_max"]),
                benchlib.ms(d["p50_s"]),
                benchlib.ms(d["p99_s"]),
                d["unacked"],
                benchlib.ms(d["sim_lag_p99_s"]),
                f"{d['sim_cpu_pct']:.0f}",
                f"{d['others_cores']:.2f}",
                f"{d['register_s']:.0f}",
                f"{d['connect_s']:.0f}",
            )
        )
    benchlib.print_table(
        "Heartbeat ingest (one Core process)",
        [
            "nodes",
            "interval s",
            "load before",
            "offered hb/s",
            "acked hb/s",
            "Core CPU %",
            "Core CPU us/hb",
            "Core RSS MiB",
            "p50 ms",
            "p99 ms",
            "unacked",
            "sim lag p99 ms",
            "sim CPU %",
            "other load (cores)",
            "register s",
            "connect s",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval (5)")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds (60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before it (10)")
    parser.add_argument("--workers", type=int, help="simulator processes (1 per 10k nodes)")
    parser.add_argument("--log-level", default="info", help="Core's log level (info)")
    parser.add_argument("--profile", action="store_true", help="py-spy Core during the window")
    parser.add_argument("--quick", action="store_true", help="200 nodes, 1 s interval, 15 s")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.interval, args.window, args.warmup = [200], 1.0, 15.0, 3.0
    benchlib.install_signal_handlers()
    benchlib.raise_nofile(max(args.nodes) + 4096)
    benchlib.print_machine()
    docs: list[dict[str, Any]] = []
    failed = False
    for n in args.nodes:
        with benchlib.workdir(f"ingest-{n}-", keep=args.keep) as tmp:
            try:
                docs.append(measure(args, n, tmp))
            except (RuntimeError, TimeoutError, OSError) as exc:
                traceback.print_exc()
                failed = True
                docs.append(
                    {
                        "nodes": n,
                        "interval": args.interval,
                        "load": benchlib.loadavg(),
                        "error": str(exc).splitlines()[0][:200],
                    }
                )
    table(docs)
    benchlib.write_json(args.json, {"machine": benchlib.machine(), "results": docs})
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
