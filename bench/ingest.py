"""Heartbeat ingest: how many heartbeats per second Core sustains.

With ``--cores N`` (N > 1), N Core processes share one data dir (key and
SQLite database) and one redis-server the benchmark starts; each gets its
share of the simulated fleet, and the figures below are added up over all
of them (latency from their histograms summed; RSS of all Core processes
together). ``--redis`` uses Redis with one Core too.

For each fleet size: a fresh ``servermgr core serve`` subprocess (temp config,
``heartbeat_interval`` as given), the fleet simulator (bench/fleet_sim.py)
registers and connects that many nodes, a warm-up, then a measured window.
Core's ``GET /api/v1/status`` is read just before and just after the window;
the difference of the two readings is what Core did in it:

- offered heartbeats per second: the simulator's, heartbeats sent in the
  window (one sample each),
- stored per second: the difference of ``ingest.samples_stored``,
- "not stored": offered in the window minus stored in it. Heartbeats are
  counted between the two readings (the middle of each request), but the
  edges are not exact: one sent just before the start may be committed in
  the window, one sent just before the end after it, samples are committed
  in batches (one per ~50 ms) and a reading is only known to within its
  request's few ms; so at steady state this is within about a batch (~50 ms
  of heartbeats) either way, possibly negative. A large number means Core
  fell behind,
- heartbeat-to-queryable latency p50/p99: from the difference of Core's
  cumulative ``ingest.sample_age_ms`` histogram (the age of each heartbeat's
  newest sample from its ``ts``, stamped by the simulator when it sends it,
  to the commit of its batch to SQLite, i.e. when
  ``GET /api/v1/nodes/{id}/metrics`` can return it; the in-memory status
  behind ``GET /api/v1/nodes/{id}`` is updated earlier, on receipt), with
  ``servermgr.core.writer.quantile``: the upper bound of the bucket holding
  the quantile (buckets 10 % apart, 1 ms to 2 min; "> 120000" beyond),
- Core CPU: utime + stime from /proc/<pid>/stat over the window, as % of one
  core and as microseconds per sample stored (robust to other load on the
  machine),
- Core RSS (max over the window, sampled twice a second),
- the simulator's own lag (how late it was sending the window's heartbeats:
  its overload, not Core's; a few ms when keeping up) and
  CPU (% of a core, and microseconds per heartbeat sent), and what the rest
  of the machine used meanwhile.

(``heartbeat.ack`` is no measure of latency any more: Core acks a node at
most once per ``ack_interval``, six heartbeat intervals. Acked heartbeats are
still counted, in the JSON output.)

Examples::

    python bench/ingest.py                      # 1k, 5k, 10k, 20k nodes at 5 s
    python bench/ingest.py --nodes 2000 --window 30
    python bench/ingest.py --quick              # 200 nodes at 1 s for 15 s
    python bench/ingest.py --nodes 20000 --cores 2   # two Cores sharing Redis
    python bench/ingest.py --nodes 5000 --profile   # py-spy of Core in the window
    python bench/ingest.py --nodes 5000 --profile-sim   # ... of a simulator worker
    python bench/ingest.py --nodes 10000 --rules 20  # alert rules' cost: 0 and 20 rules

With ``--rules N`` each fleet size is measured twice, without alert rules
and with N ``[[alert]]`` rules on every node (``ALERT_RULES``: metric
thresholds on cpu, memory, swap, each disk, load, rates, plus offline and
job_failed), and a second table gives the cost of the rules in Core CPU per
heartbeat.
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
import httpx
from fleet_sim import Fleet, FleetResult, IngestDelta, age_ms, counts_between

# Nodes per simulator worker handshaking at once: when Core answers slower
# than the ramp asks, the ramp slows down instead of handshakes timing out
# and being retried (which piles more work on a Core already behind).
HANDSHAKES = 32
CONNECT_SLACK = 120.0  # s beyond three ramps before the connect phase gives up
STALL = 60.0  # s without a node coming online before it gives up

# Twenty rules as an operator might write them; the simulated fleet breaches few.
ALERT_RULES = (
    ("cpu-high", "cpu > 90", "1m"),
    ("cpu-very-high", "cpu > 97", "10s"),
    ("cpu-idle", "cpu < 0.1", "1h"),
    ("memory-high", "memory > 90", "5m"),
    ("memory-full", "memory > 98", "0s"),
    ("swap-used", "swap > 50", "10m"),
    ("swap-full", "swap > 90", "1m"),
    ("disk-high", "disk > 85", "5m"),
    ("disk-full", "disk > 95", "0s"),
    ("root-full", "disk:/ > 90", "1m"),
    ("data-full", "disk:/data > 90", "1m"),
    ("load1-high", "load1 > 16", "5m"),
    ("load5-high", "load5 > 12", "5m"),
    ("load15-high", "load15 > 8", "15m"),
    ("net-rx-high", "net_rx > 500M", "5m"),
    ("net-tx-high", "net_tx > 500M", "5m"),
    ("disk-read-high", "disk_read > 400M", "5m"),
    ("disk-write-high", "disk_write > 400M", "5m"),
    ("offline", "offline", "1m"),
    ("jobs", "job_failed", "0s"),
)


def alert_rules(count: int) -> str:
    """``count`` [[alert]] tables (ALERT_RULES repeated under new names past 20)."""
    out = []
    for i in range(count):
        name, when, hold = ALERT_RULES[i % len(ALERT_RULES)]
        suffix = f"-{i // len(ALERT_RULES)}" if i >= len(ALERT_RULES) else ""
        hold_line = f'for = "{hold}"\n' if when != "job_failed" else ""
        out.append(f'\n[[alert]]\nname = "{name}{suffix}"\nwhen = "{when}"\n{hold_line}')
    return "".join(out)


def measure(args: argparse.Namespace, nodes: int, tmp: Path, rules: int = 0) -> dict[str, Any]:
    n_cores = args.cores
    doc: dict[str, Any] = {
        "rules": rules,
        "nodes": nodes,
        "cores": n_cores,
        "redis": bool(args.redis or n_cores > 1),
        "interval": args.interval,
        "load": benchlib.loadavg(),
    }
    where = f" on {n_cores} Core processes sharing Redis" if doc["redis"] else ""
    where += f", {rules} alert rules per node" if rules else ""
    print(f"\n== {nodes} nodes at {args.interval:g} s{where} (load {doc['load']})", flush=True)
    with benchlib.Procs() as procs:
        redis = benchlib.start_redis(procs, tmp / "redis") if doc["redis"] else None
        cores: list[benchlib.Core] = []
        for i in range(n_cores):
            cores.append(
                benchlib.start_core(
                    procs,
                    tmp / f"core{i}" if n_cores > 1 else tmp,
                    interval=args.interval,
                    nofile=2 * nodes + 4096,
                    log_level=args.log_level,
                    shared_data=(tmp / "core0" / "core-data") if i else None,
                    redis_url=redis.url if redis else None,
                    extra_config=alert_rules(rules),
                )
            )
        # Each Core gets its share of the fleet (nodes register through their own Core).
        fleets = []
        for i, core in enumerate(cores):
            share = nodes // n_cores + (1 if i < nodes % n_cores else 0)
            fleets.append(
                Fleet(
                    procs,
                    core.url,
                    core.key,
                    share,
                    tmp / f"fleet{i}",
                    workers=args.workers,
                    ramp=share / (args.connect_rate / n_cores),
                    prefix=f"sim{i}-" if n_cores > 1 else "sim",
                    handshakes=HANDSHAKES,
                )
            )
        # Side by side: each fleet registers, then connects, at the same time as the others.
        for fleet in fleets:
            fleet.launch()
        for fleet in fleets:
            fleet.wait_registered()
        doc["register_s"] = max(f.register_seconds for f in fleets)
        print(f"registered in {doc['register_s']:.1f} s", flush=True)
        start = time.time() + 0.2
        cpu0 = sum(benchlib.cpu_seconds(c.pid) for c in cores)
        sim0 = sum(f.cpu_seconds() for f in fleets)
        for fleet in fleets:
            fleet.begin_connect(start)
        connect_all(fleets, start, nodes / args.connect_rate)
        doc["connect_s"] = max(f.connect_seconds for f in fleets)
        # Core CPU while the fleet connects, per node (the heartbeats of the nodes
        # connected so far included: an upper bound of a connect's cost).
        connect_cpu = sum(benchlib.cpu_seconds(c.pid) for c in cores) - cpu0
        doc["connect_cpu_ms_per_node"] = 1e3 * connect_cpu / nodes
        # The simulator's too (its handshakes, and its heartbeats meanwhile).
        sim_cpu = sum(f.cpu_seconds() for f in fleets) - sim0
        doc["connect_sim_cpu_ms_per_node"] = 1e3 * sim_cpu / nodes
        doc["connect_failures_ramp"] = sum(f.online()[1] for f in fleets)
        print(
            f"connected in {doc['connect_s']:.1f} s, Core CPU "
            f"{doc['connect_cpu_ms_per_node']:.2f} ms per node meanwhile (simulator "
            f"{doc['connect_sim_cpu_ms_per_node']:.2f}), "
            f"{doc['connect_failures_ramp']:,} failed handshakes",
            flush=True,
        )
        time.sleep(max(args.warmup, 2 * args.interval))
        rss: list[int] = []
        prof: list[Path | None] = []
        pids = {f"core{i}": c.pid for i, c in enumerate(cores)}
        for i, fleet in enumerate(fleets):
            pids |= {f"sim{i}.{j}": p for j, p in enumerate(fleet.pids)}
        if redis is not None:
            pids["redis"] = redis.pid
        profiler = None
        if args.profile or args.profile_sim:
            target = fleets[0].pids[0] if args.profile_sim else cores[0].pid
            profiler = threading.Thread(
                # 199 Hz: not a multiple of the simulator's 100 Hz tick
                target=lambda: prof.append(
                    benchlib.profile(target, args.window, tmp / "window.prof", rate=199)
                ),
                daemon=True,
            )
        before = [f.core_status() for f in fleets]
        redis_rss: list[int] = []
        with benchlib.Window(pids) as win:
            if profiler is not None:
                profiler.start()
            end = time.time() + args.window
            while time.time() < end:
                rss.append(sum(benchlib.rss_bytes(c.pid) for c in cores))
                if redis is not None:
                    redis_rss.append(benchlib.rss_bytes(redis.pid))
                time.sleep(0.5)
        after = [f.core_status() for f in fleets]
        if profiler is not None:
            profiler.join()
        doc["gc_window"] = gc_window(before[0].get("gc", {}), after[0].get("gc", {}))
        doc["gc_window_each"] = [
            gc_window(b.get("gc", {}), a.get("gc", {})) for b, a in zip(before, after, strict=True)
        ]
        for i, g in enumerate(doc["gc_window_each"]):
            print(f"garbage collector in the window (Core {i}): {g}", flush=True)
        doc["core_threads"] = benchlib.threads(cores[0].pid)
        doc["core_pss"] = sum(benchlib.pss_bytes(c.pid) for c in cores)
        results = [f.stop() for f in fleets]
        t_stop = time.monotonic()
        for core in cores:
            procs.stop(core.proc, timeout=60)
        doc["core_stop_s"] = time.monotonic() - t_stop
        doc["core_log_tail"] = benchlib.tail(cores[0].log, 5)
    deltas = [IngestDelta.between(b, a) for b, a in zip(before, after, strict=True)]
    doc |= summarize(results, win, rss, deltas)
    doc["redis_rss_max"] = max(redis_rss, default=0)
    doc["redis_cpu_pct"] = 100 * win.cpu("redis") / win.seconds if redis is not None else 0.0
    if prof and prof[0] is not None:
        doc["profiled"] = "simulator worker 0" if args.profile_sim else "Core"
        doc["profile"] = benchlib.top_frames(prof[0], 20)
        doc["profile_inclusive"] = benchlib.top_inclusive(prof[0], 40)
        print_profile(doc)
    return doc


def connect_all(fleets: list[Fleet], start: float, ramp: float) -> None:
    """Wait for every fleet to connect, saying how far they are every 10 s.

    Gives up (``TimeoutError``, naming each Core's nodes online and failed
    handshakes) when the fleets are not online CONNECT_SLACK s after three
    times the ramp, or when no more nodes came online for STALL s.
    """
    deadline = start + 3 * ramp + CONNECT_SLACK
    most, last_change, last_note = -1, time.time(), time.time()
    while not all(f.connected() for f in fleets):
        now = time.time()
        online = sum(f.online()[0] for f in fleets)
        if online > most:
            most, last_change = online, now
        why = ""
        if now > deadline:
            why = f"not connected {now - start:.0f} s after the connects began"
        elif now - last_change > STALL and now > start + 10:
            why = f"no more nodes online than {most:,} for {STALL:g} s"
        if why:
            where = "; ".join(f"Core {i}: {f.describe_online()}" for i, f in enumerate(fleets))
            raise TimeoutError(f"connect phase gave up, {why}: {where}")
        if now - last_note >= 10:
            last_note = now
            print(
                f"connecting, {now - start:.0f} s: "
                + "; ".join(f"Core {i}: {f.describe_online()}" for i, f in enumerate(fleets)),
                flush=True,
            )
        time.sleep(1.0)


def gc_window(gc0: dict[str, Any], gc1: dict[str, Any]) -> dict[str, Any]:
    """Core's garbage collector between two ``/api/v1/status`` readings (``gc``).

    Empty readings (a Core from before the counters) give zeros.
    """
    doc: dict[str, Any] = {
        "collections": gc1.get("collections", 0) - gc0.get("collections", 0),
        "pause_ms": round(gc1.get("pause_total_ms", 0) - gc0.get("pause_total_ms", 0), 1),
        "by_generation": counts_between(
            gc0.get("by_generation", [0, 0, 0]), gc1.get("by_generation", [0, 0, 0])
        ),
        "freed_by_generation": counts_between(
            gc0.get("freed_by_generation", [0, 0, 0]), gc1.get("freed_by_generation", [0, 0, 0])
        ),
        "longest_by_generation_ms_since_start": gc1.get("longest_by_generation_ms"),
        "frozen": gc1.get("frozen_objects"),
        "pauses_ms": {},
    }
    h0, h1 = gc0.get("pauses_ms"), gc1.get("pauses_ms")
    if h0 and h1:  # by upper bound in ms, the empty buckets left out
        labels = [f"<={b}" for b in h1["bounds"]] + [f">{h1['bounds'][-1]}"]
        diff = counts_between(h0["counts"], h1["counts"])
        doc["pauses_ms"] = {label: n for label, n in zip(labels, diff, strict=True) if n}
    return doc


def longest_pause(gc: dict[str, Any]) -> str:
    """The bucket of the longest collection in a ``gc_window`` ("<=25": 10-25 ms)."""
    labels = list(gc.get("pauses_ms", {}))
    return labels[-1] if labels else "0"


def summarize(
    results: list[FleetResult], win: benchlib.Window, rss: list[int], cores: list[IngestDelta]
) -> dict[str, Any]:
    """The window's figures over every Core process (histograms added up)."""
    fleets = [r.window(c.start, c.end) for r, c in zip(results, cores, strict=True)]
    seconds = max(f.seconds for f in fleets)
    sent = sum(f.sent for f in fleets)
    core = IngestDelta(
        sum(c.stored for c in cores),
        [sum(col) for col in zip(*(c.counts for c in cores), strict=True)],
        cores[0].bounds,
        min(c.start for c in cores),
        max(c.end for c in cores),
    )
    per_core = [100 * win.cpu(k) / win.seconds for k in win.pids if k.startswith("core")]
    core_cpu = sum(win.cpu(k) for k in win.pids if k.startswith("core"))
    sim_cpu = sum(win.cpu(k) for k in win.pids if k.startswith("sim"))
    sim_sys = sum(win.system_cpu(k) for k in win.pids if k.startswith("sim"))
    lag = [x for f in fleets for x in f.lag]
    return {
        "window_s": win.seconds,
        "core_window_s": seconds,
        "sent": sent,
        "offered_per_s": sent / seconds,
        "stored": core.stored,
        "stored_per_s": core.stored / seconds,
        "not_stored": sent - core.stored,
        "acked": sum(f.acked for f in fleets),
        "p50_ms": core.quantile_ms(0.5),
        "p99_ms": core.quantile_ms(0.99),
        "max_ms": core.max_ms(),
        "age_counts": core.counts,
        "core_cpu_pct": 100 * core_cpu / win.seconds,
        "core_cpu_pct_each": per_core,
        "core_us_per_hb": 1e6 * core_cpu / core.stored if core.stored else float("nan"),
        "core_rss_max": max(rss, default=0),
        "sim_cpu_pct": 100 * sim_cpu / win.seconds,
        "sim_us_per_hb": 1e6 * sim_cpu / sent if sent else float("nan"),
        "sim_sys_us_per_hb": 1e6 * sim_sys / sent if sent else float("nan"),
        "sim_lag_p99_s": benchlib.percentile(lag, 99),
        "others_cores": win.others(),
        "disconnects": sum(r.total("disconnects") for r in results),
        "connect_failures": sum(r.total("connect_failures") for r in results),
        "errors": [r.errors() for r in results],
    }


def print_profile(doc: dict[str, Any]) -> None:
    benchlib.print_table(
        f"{doc['profiled']} profile, {doc['nodes']} nodes (py-spy, self time)",
        ["frame", "self %", "total %"],
        [(f[:110], f"{s:.1f}", f"{t:.1f}") for f, s, t in doc["profile"]],
    )
    benchlib.print_table(
        f"{doc['profiled']} profile, {doc['nodes']} nodes (inclusive)",
        ["frame", "total %"],
        [(f[:110], f"{t:.1f}") for f, t in doc["profile_inclusive"]],
    )


def table(docs: list[dict[str, Any]]) -> None:
    rows = []
    for d in docs:
        cores = f"{d.get('cores', 1)}{' +Redis' if d.get('redis') else ''}"
        if "error" in d:
            rows.append(
                (d["nodes"], cores, f"{d['interval']:g}", d["load"], f"broke: {d['error']}")
                + ("",) * 19
            )
            continue
        rows.append(
            (
                d["nodes"],
                cores,
                f"{d['interval']:g}",
                d["load"],
                f"{d['offered_per_s']:.0f}",
                f"{d['stored_per_s']:.0f}",
                f"{d['core_cpu_pct']:.0f}",
                f"{d['core_us_per_hb']:.0f}",
                " ".join(f"{x:.0f}" for x in d["core_cpu_pct_each"]),
                benchlib.mib(d["core_rss_max"]),
                f"{d['redis_cpu_pct']:.0f}" if d.get("redis") else "-",
                benchlib.mib(d["redis_rss_max"]) if d.get("redis") else "-",
                age_ms(d["p50_ms"]),
                age_ms(d["p99_ms"]),
                " ".join(longest_pause(g) for g in d.get("gc_window_each", [])) or "-",
                d["not_stored"],
                benchlib.ms(d["sim_lag_p99_s"]),
                f"{d['sim_cpu_pct']:.0f}",
                f"{d['sim_us_per_hb']:.0f} ({d.get('sim_sys_us_per_hb', float('nan')):.0f})",
                f"{d['others_cores']:.2f}",
                f"{d['register_s']:.0f}",
                f"{d['connect_s']:.0f}",
                f"{d.get('connect_cpu_ms_per_node', float('nan')):.2f}",
                d.get("connect_failures", "-"),
            )
        )
    benchlib.print_table(
        "Heartbeat ingest (Core RSS: all Core processes together)",
        [
            "nodes",
            "Core processes",
            "interval s",
            "load before",
            "offered hb/s",
            "stored/s",
            "Core CPU %",
            "Core CPU us/hb",
            "CPU % each Core",
            "Core RSS MiB",
            "Redis CPU %",
            "Redis RSS MiB",
            "p50 ms",
            "p99 ms",
            "GC pause ms, longest (each Core)",
            "not stored",
            "sim lag p99 ms",
            "sim CPU %",
            "sim CPU us/hb (kernel's)",
            "other load (cores)",
            "register s",
            "connect s",
            "Core CPU ms per connect",
            "failed handshakes",
        ],
        rows,
    )


def rules_table(docs: list[dict[str, Any]]) -> None:
    """The cost of alert rules: each run with rules against the run without, same fleet."""
    base = {d["nodes"]: d for d in docs if not d.get("rules") and "error" not in d}
    rows = []
    for d in docs:
        b = base.get(d["nodes"])
        if not d.get("rules") or "error" in d or b is None:
            continue
        rows.append(
            (
                d["nodes"],
                d["rules"],
                f"{b['core_us_per_hb']:.0f}",
                f"{d['core_us_per_hb']:.0f}",
                f"{100 * (d['core_us_per_hb'] / b['core_us_per_hb'] - 1):+.1f}",
                f"{b['core_cpu_pct']:.1f}",
                f"{d['core_cpu_pct']:.1f}",
                f"{100 * (d['core_cpu_pct'] / b['core_cpu_pct'] - 1):+.1f}",
                age_ms(d["p99_ms"]),
            )
        )
    if rows:
        benchlib.print_table(
            "Alert rules: Core CPU without and with rules (same fleet, same interval)",
            [
                "nodes",
                "rules/node",
                "us/hb without",
                "us/hb with",
                "us/hb change %",
                "CPU % without",
                "CPU % with",
                "CPU % change",
                "p99 ms with",
            ],
            rows,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval (5)")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds (60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before it (10)")
    parser.add_argument("--workers", type=int, help="simulator processes (1 per 7,000 nodes)")
    parser.add_argument(
        "--connect-rate",
        type=float,
        help="nodes connecting per second, all Cores together (default 250 with one Core, "
        "100 with several: on 2 cores the Cores' connect cost, 1.6-4 ms of Core CPU each, "
        "comes on top of the heartbeats of the nodes already connected; at 20,000 nodes "
        "those take ~1.5 of the 2 cores, leaving ~0.4 for 100 connects a second)",
    )
    parser.add_argument(
        "--cores", type=int, default=1, help="Core processes sharing Redis and one data dir (1)"
    )
    parser.add_argument("--redis", action="store_true", help="use Redis with one Core too")
    parser.add_argument("--log-level", default="info", help="Core's log level (info)")
    parser.add_argument("--profile", action="store_true", help="py-spy Core during the window")
    parser.add_argument(
        "--profile-sim",
        action="store_true",
        help="py-spy the first simulator worker during the window instead",
    )
    parser.add_argument("--quick", action="store_true", help="200 nodes, 1 s interval, 15 s")
    parser.add_argument(
        "--rules", type=int, default=0, help="also measure with this many alert rules per node"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.interval, args.window, args.warmup = [200], 1.0, 15.0, 3.0
    if args.connect_rate is None:
        args.connect_rate = 250.0 if args.cores == 1 else 100.0
    benchlib.install_signal_handlers()
    benchlib.raise_nofile(2 * max(args.nodes) + 4096)
    benchlib.print_machine()
    docs: list[dict[str, Any]] = []
    failed = False
    runs = [(n, r) for n in args.nodes for r in ([0, args.rules] if args.rules else [0])]
    for n, rules in runs:
        with benchlib.workdir(f"ingest-{n}-", keep=args.keep) as tmp:
            try:
                docs.append(measure(args, n, tmp, rules))
            except (RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
                traceback.print_exc()
                failed = True
                docs.append(
                    {
                        "nodes": n,
                        "cores": args.cores,
                        "redis": bool(args.redis or args.cores > 1),
                        "interval": args.interval,
                        "load": benchlib.loadavg(),
                        "error": str(exc).splitlines()[0][:200],
                    }
                )
    table(docs)
    rules_table(docs)
    benchlib.write_json(args.json, {"machine": benchlib.machine(), "results": docs})
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
