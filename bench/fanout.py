"""Fan-out: ``/bin/true`` on many nodes, from POST until every result is in.

One Core (``servermgr core serve``) with, at the same time:

- 10 real agents (``servermgr node run`` subprocesses, label ``fleet=real``),
- 1,000 simulated nodes (bench/fleet_sim.py, label ``fleet=sim``), which
  answer ``job.run`` at once with ``job.output`` + ``job.result``,

all sending heartbeats at 5 s meanwhile. For each target the job is posted
(``POST /api/v1/jobs``, ``target`` the label) and its NDJSON stream read until
``done``; the time is from sending the POST to reading ``done``, repeated
(median and max), with Core's CPU seconds per job. The job document is then
checked: every node ``succeeded``.

Examples::

    python bench/fanout.py
    python bench/fanout.py --sim-nodes 2000 --repeat 10
    python bench/fanout.py --quick        # 200 simulated nodes, 3 repeats
    python bench/fanout.py --profile      # py-spy of Core over the simulated fan-outs
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import benchlib
from fleet_sim import Fleet


def fan_out(
    core: benchlib.Core, target: str, expected: int, wait: float
) -> tuple[float, float, float]:
    """(seconds POST -> done, seconds of the POST alone, Core CPU seconds) for one job."""
    cpu0 = benchlib.cpu_seconds(core.pid)
    with core.client(timeout=120) as http:
        t0 = time.perf_counter()
        resp = http.post(
            "/api/v1/jobs", json={"target": target, "command": "/bin/true", "wait": wait}
        )
        resp.raise_for_status()
        t_post = time.perf_counter() - t0
        job_id = resp.json()["id"]
        with http.stream("GET", f"/api/v1/jobs/{job_id}/stream") as stream:
            for line in stream.iter_lines():
                if line and json.loads(line)["type"] == "job.done":
                    break
        elapsed = time.perf_counter() - t0
        cpu = benchlib.cpu_seconds(core.pid) - cpu0
        doc = http.get(f"/api/v1/jobs/{job_id}").json()
    states = [n["state"] for n in doc["nodes"]]
    ok = states.count("succeeded")
    if len(states) != expected or ok != expected:
        seen = Counter(f"{n['state']} ({n['error']})" for n in doc["nodes"])
        raise RuntimeError(f"{target}: {ok} of {expected} succeeded: {dict(seen)}")
    return elapsed, t_post, cpu


def series(core: benchlib.Core, target: str, n: int, repeat: int, wait: float) -> dict[str, Any]:
    load = benchlib.loadavg()
    times, posts, cpus = [], [], []
    for _ in range(repeat):
        elapsed, post, cpu = fan_out(core, target, n, wait)
        times.append(elapsed)
        posts.append(post)
        cpus.append(cpu)
        time.sleep(0.5)
    return {
        "target": target,
        "nodes": n,
        "repeat": repeat,
        "load": load,
        "median_s": benchlib.median(times),
        "max_s": max(times),
        "post_median_s": benchlib.median(posts),
        "core_cpu_median_s": benchlib.median(cpus),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10, help="real agents (10)")
    parser.add_argument("--sim-nodes", type=int, default=1000, help="simulated nodes (1000)")
    parser.add_argument("--repeat", type=int, default=5, help="jobs per target (5)")
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval (5)")
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="the job's wait (60): with 0, Core expires entries it has not dispatched within "
        "0.5 s (see docs/performance.md)",
    )
    parser.add_argument("--quick", action="store_true", help="200 simulated nodes, 3 repeats")
    parser.add_argument("--profile", action="store_true", help="py-spy Core (simulated fan-outs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sim_nodes, args.repeat = 200, 3
    benchlib.install_signal_handlers()
    benchlib.raise_nofile(args.sim_nodes + 4096)
    benchlib.print_machine()
    results = []
    with benchlib.Procs() as procs, benchlib.workdir("fanout-") as tmp:
        core = benchlib.start_core(procs, tmp, interval=args.interval, nofile=args.sim_nodes + 4096)
        names = [f"agent-{i:02d}" for i in range(args.agents)]
        for name in names:
            benchlib.start_agent(procs, core, tmp, name, labels={"fleet": "real"})
        fleet = Fleet(procs, core.url, core.key, args.sim_nodes, tmp / "fleet")
        fleet.start()
        fleet.connect()
        benchlib.wait_online(core, names, timeout=60)
        time.sleep(2 * args.interval)  # let heartbeats settle into their rhythm
        results.append(series(core, "fleet=real", args.agents, args.repeat, args.wait))
        prof: list[Path | None] = []
        profiler = None
        if args.profile:
            seconds = max(5.0, 2 * args.repeat * results[0]["median_s"] + 5)
            profiler = threading.Thread(
                target=lambda: prof.append(benchlib.profile(core.pid, seconds, tmp / "p.raw")),
                daemon=True,
            )
            profiler.start()
        results.append(series(core, "fleet=sim", args.sim_nodes, args.repeat, args.wait))
        if profiler is not None:
            profiler.join()
        fleet.stop()
        if prof and prof[0] is not None:
            benchlib.print_table(
                "Core profile during simulated fan-outs (py-spy, GIL holder)",
                ["frame", "self %", "total %"],
                [(f[:110], f"{s:.1f}", f"{t:.1f}") for f, s, t in benchlib.top_frames(prof[0])],
            )
            benchlib.print_table(
                "Core profile during simulated fan-outs (inclusive, servermgr frames)",
                ["frame", "total %"],
                [
                    (f[:110], f"{t:.1f}")
                    for f, t in benchlib.top_inclusive(prof[0], 25, "servermgr")
                ],
            )
    benchlib.print_table(
        "Fan-out of /bin/true: POST until every result is in",
        [
            "nodes",
            "kind",
            "jobs",
            "load before",
            "median ms",
            "max ms",
            "POST ms",
            "Core CPU ms/job",
        ],
        [
            (
                r["nodes"],
                "real agents" if r["target"] == "fleet=real" else "simulated",
                r["repeat"],
                r["load"],
                benchlib.ms(r["median_s"]),
                benchlib.ms(r["max_s"]),
                benchlib.ms(r["post_median_s"]),
                benchlib.ms(r["core_cpu_median_s"]),
            )
            for r in results
        ],
    )
    benchlib.write_json(args.json, {"machine": benchlib.machine(), "results": results})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
