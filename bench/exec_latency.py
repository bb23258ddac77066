"""Latency of running one command on one node.

Against a real Core (``servermgr core serve``) with one real agent
(``servermgr node run``) on this machine:

1. whole process: ``servermgr ctl exec NODE /bin/true`` from fork to exit
   (3 warm-ups, then the median of 20), with the CPU seconds of that process
   (from ``wait4``: unaffected by other load);
2. API round trip: ``POST /api/v1/jobs`` then ``GET /api/v1/jobs/{id}/stream``
   read until ``done``, from this process with httpx over a kept-alive
   connection (200 iterations, p50/p99), with the POST alone beside it.

Examples::

    python bench/exec_latency.py
    python bench/exec_latency.py --quick
    python bench/exec_latency.py --profile      # pyinstrument of one ctl exec
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

NODE = "bench-node"


def api_round_trip(core: benchlib.Core, iterations: int) -> dict[str, Any]:
    total: list[float] = []
    post: list[float] = []
    with core.client() as http:
        for _ in range(iterations):
            t0 = time.perf_counter()
            resp = http.post("/api/v1/jobs", json={"target": NODE, "command": "/bin/true"})
            resp.raise_for_status()
            t1 = time.perf_counter()
            job_id = resp.json()["id"]
            states = []
            with http.stream("GET", f"/api/v1/jobs/{job_id}/stream") as stream:
                for line in stream.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if event["type"] == "state":
                        states.append(event["state"])
                    if event["type"] == "done":
                        break
            t2 = time.perf_counter()
            if "succeeded" not in states:
                raise RuntimeError(f"job {job_id} did not succeed: {states}")
            post.append(t1 - t0)
            total.append(t2 - t0)
    return {
        "iterations": iterations,
        "p50_s": benchlib.percentile(total, 50),
        "p99_s": benchlib.percentile(total, 99),
        "post_p50_s": benchlib.percentile(post, 50),
        "post_p99_s": benchlib.percentile(post, 99),
    }


def whole_process(core: benchlib.Core, warmups: int, runs: int) -> dict[str, Any]:
    cmd = [*benchlib.servermgr_cmd(), "ctl", "exec", NODE, "/bin/true"]
    env = core.env()
    for _ in range(warmups):
        benchlib.run_timed(cmd, env)
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, code = benchlib.run_timed(cmd, env)
        if code != 0:
            raise RuntimeError(f"ctl exec exited {code}")
        walls.append(wall)
        cpus.append(cpu)
    return {
        "runs": runs,
        "median_s": benchlib.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_median_s": benchlib.median(cpus),
    }


def profile_ctl(core: benchlib.Core, out: Path) -> None:
    """pyinstrument of one whole ``ctl exec`` (imports included), if installed."""
    exe = Path(sys.executable).parent / "pyinstrument"
    if not exe.exists():
        print("(pyinstrument not installed: pip install pyinstrument)")
        return
    script = benchlib.servermgr_cmd()[0]
    subprocess.run(
        [str(exe), "--show-all", "-o", str(out), script, "ctl", "exec", NODE, "/bin/true"],
        env=core.env(),
        check=False,
        stdout=subprocess.DEVNULL,
    )
    print(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed ctl exec runs (20)")
    parser.add_argument("--warmups", type=int, default=3, help="untimed runs first (3)")
    parser.add_argument("--iterations", type=int, default=200, help="API round trips (200)")
    parser.add_argument("--quick", action="store_true", help="5 runs, 50 round trips")
    parser.add_argument("--profile", action="store_true", help="pyinstrument one ctl exec")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.warmups, args.iterations = 5, 1, 50
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    with benchlib.Procs() as procs, benchlib.workdir("exec-latency-") as tmp:
        core = benchlib.start_core(procs, tmp)
        benchlib.start_agent(procs, core, tmp, NODE)
        benchlib.wait_online(core, [NODE])
        load = benchlib.loadavg()
        proc = whole_process(core, args.warmups, args.runs)
        load_api = benchlib.loadavg()
        api = api_round_trip(core, args.iterations)
        if args.profile:
            profile_ctl(core, tmp / "ctl-exec.txt")
    benchlib.print_table(
        "ctl exec NODE /bin/true, whole process",
        ["runs", "load before", "median ms", "min ms", "max ms", "CPU median ms"],
        [
            (
                proc["runs"],
                load,
                benchlib.ms(proc["median_s"]),
                benchlib.ms(proc["min_s"]),
                benchlib.ms(proc["max_s"]),
                benchlib.ms(proc["cpu_median_s"]),
            )
        ],
    )
    benchlib.print_table(
        "API round trip: POST /api/v1/jobs + stream until done (httpx, kept-alive)",
        ["iterations", "load before", "p50 ms", "p99 ms", "POST p50 ms", "POST p99 ms"],
        [
            (
                api["iterations"],
                load_api,
                benchlib.ms(api["p50_s"]),
                benchlib.ms(api["p99_s"]),
                benchlib.ms(api["post_p50_s"]),
                benchlib.ms(api["post_p99_s"]),
            )
        ],
    )
    benchlib.write_json(args.json, {"machine": benchlib.machine(), "ctl_exec": proc, "api": api})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
