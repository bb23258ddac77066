"""Start-up and latency of the CLI, side by side with bare Python.

Against a real Core (``servermgr core serve``) with real agents
(``servermgr node run``) on this machine, each whole process from fork to
exit (warm-ups, then the median of ``--runs``), with its CPU seconds (from
``wait4``: less sensitive to other load than the wall clock):

- ``python -c pass``: the floor every Python command pays;
- ``servermgr --help``, ``servermgr ctl nodes``;
- ``servermgr ctl exec NODE /bin/true`` (the issue's target: within 40 ms of
  the floor);
- ``servermgr ctl exec --all /bin/true`` over ``--agents`` agents (10);

then where each ``ctl exec``'s wall time went, from the job's own times
(Core's and the agents' clocks are this machine's): ctl start-up and the
POST (fork to the job created in Core), Core's dispatch (created to
``job.run`` sent), the WebSocket hops and the agent's own work (sent to the
result at Core, less the process's run time), the process itself (the
agent's ``duration``: fork/exec of ``/bin/sh -c``), and the tail (result at
Core to ctl's exit: storing it, ``job.done`` on the stream, ctl's last GET,
its exit); then the API round trip alone (``POST /api/v1/jobs`` + the stream
until ``done``, httpx over a kept-alive connection, p50/p99).

servermgr's own modules are compiled to bytecode first if they are not
(``compileall``), as pip and the zipapp install them: with
``PYTHONDONTWRITEBYTECODE`` set and an editable install, every run would
otherwise compile them again (~15 ms of each ctl command here).
``--no-compile`` measures the tree as it is.

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


def api_round_trip(core: benchlib.Core, iterations: int, target: str = NODE) -> dict[str, Any]:
    total: list[float] = []
    post: list[float] = []
    with core.client() as http:
        for _ in range(iterations):
            t0 = time.perf_counter()
            resp = http.post("/api/v1/jobs", json={"target": target, "command": "/bin/true"})
            resp.raise_for_status()
            t1 = time.perf_counter()
            job_id = resp.json()["id"]
            states = []
            with http.stream("GET", f"/api/v1/jobs/{job_id}/stream") as stream:
                for line in stream.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if event["type"] == "job.state":
                        states.append(event["state"])
                    if event["type"] == "job.done":
                        break
            t2 = time.perf_counter()
            final = [s for s in states if s not in ("queued", "sent", "running")]
            if not final or set(final) != {"succeeded"}:
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


def exec_timed(
    http: Any, cmd: list[str], env: dict[str, str]
) -> tuple[dict[str, Any], dict[str, float]]:
    """One whole ``ctl exec``, and where its wall time went (the job's own times)."""
    t0 = time.time()
    wall, cpu, code = benchlib.run_timed(cmd, env)
    t_exit = t0 + wall
    if code != 0:
        raise RuntimeError(f"{cmd} exited {code}")
    listed = http.get("/api/v1/jobs", params={"limit": 1})
    listed.raise_for_status()
    job = http.get(f"/api/v1/jobs/{listed.json()['jobs'][0]['id']}").json()
    nodes = job["nodes"]
    sent = max(n["sent_at"] or job["created"] for n in nodes)
    result = max(n["finished_at"] for n in nodes)
    parts = {
        "ctl start-up + POST": job["created"] - t0,
        "Core dispatch": sent - job["created"],
        "WebSocket hops + agent": max(
            n["finished_at"] - (n["sent_at"] or job["created"]) - n["duration"] for n in nodes
        ),
        "process (agent's duration)": max(n["duration"] for n in nodes),
        "result -> ctl exit": t_exit - result,
    }
    return {"runs": 1, "median_s": wall, "min_s": wall, "max_s": wall, "cpu_median_s": cpu}, parts


def cpu_per_job(
    core: int, agents: list[int], cmd: list[str], env: dict[str, str], runs: int
) -> dict[str, float]:
    """CPU seconds per run of ``cmd`` of Core, of all agents, of the busiest
    agent and of ctl (``/proc/<pid>/stat`` before and after ``runs`` runs)."""
    core0 = benchlib.cpu_seconds(core)
    agents0 = [benchlib.cpu_seconds(a) for a in agents]
    ctl = 0.0
    for _ in range(runs):
        ctl += benchlib.run_timed(cmd, env)[1]
    spent = [benchlib.cpu_seconds(a) - a0 for a, a0 in zip(agents, agents0, strict=True)]
    return {
        "Core": (benchlib.cpu_seconds(core) - core0) / runs,
        "agents, all": sum(spent) / runs,
        "busiest agent": max(spent) / runs,
        "ctl": ctl / runs,
    }


def whole_process(cmd: list[str], env: dict[str, str], warmups: int, runs: int) -> dict[str, Any]:
    for _ in range(warmups):
        benchlib.run_timed(cmd, env)
    if not runs:
        return {}
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, code = benchlib.run_timed(cmd, env)
        if code != 0:
            raise RuntimeError(f"{cmd} exited {code}")
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
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each command (20)")
    parser.add_argument("--warmups", type=int, default=3, help="untimed runs first (3)")
    parser.add_argument("--iterations", type=int, default=200, help="API round trips (200)")
    parser.add_argument("--agents", type=int, default=10, help="agents for exec --all (10)")
    parser.add_argument("--quick", action="store_true", help="7 runs, 50 round trips")
    parser.add_argument("--profile", action="store_true", help="pyinstrument one ctl exec")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--no-compile", action="store_true", help="do not compile servermgr to bytecode first"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.warmups, args.iterations = 7, 1, 50
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    print(
        "bytecode:", "as found (--no-compile)" if args.no_compile else benchlib.compile_servermgr()
    )
    sm = benchlib.servermgr_cmd()
    names = [NODE, *(f"bench-{i:02d}" for i in range(1, args.agents))]
    agents: list[int] = []
    with benchlib.Procs() as procs, benchlib.workdir("exec-latency-") as tmp:
        core = benchlib.start_core(procs, tmp)
        for name in names:
            agents.append(benchlib.start_agent(procs, core, tmp, name).pid)
        benchlib.wait_online(core, names, timeout=60.0)
        env = core.env()
        commands = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("servermgr --help", [*sm, "--help"]),
            ("servermgr ctl nodes", [*sm, "ctl", "nodes"]),
            ("servermgr ctl exec NODE /bin/true", [*sm, "ctl", "exec", NODE, "/bin/true"]),
            (
                f"servermgr ctl exec --all /bin/true ({len(names)} agents)",
                [*sm, "ctl", "exec", "--all", "/bin/true"],
            ),
        ]
        # Interleaved: each round runs every command once, so load that comes
        # and goes while the bench runs touches all of them alike.
        results: dict[str, dict[str, Any]] = {}
        for _, cmd in commands:
            whole_process(cmd, env, args.warmups, 0)
        load = benchlib.loadavg()
        rounds = []
        parts: dict[str, list[dict[str, float]]] = {}
        with core.client() as http:
            for _ in range(args.runs):
                one: dict[str, dict[str, Any]] = {}
                for label, cmd in commands:
                    if "ctl exec" in label:
                        one[label], split = exec_timed(http, cmd, env)
                        parts.setdefault(label, []).append(split)
                    else:
                        one[label] = whole_process(cmd, env, 0, 1)
                rounds.append(one)
        load_after = benchlib.loadavg()
        per_job = {
            label: cpu_per_job(core.pid, agents, cmd, env, args.runs)
            for label, cmd in commands
            if "ctl exec" in label
        }
        for label, _ in commands:
            walls = [r[label]["median_s"] for r in rounds]
            cpus = [r[label]["cpu_median_s"] for r in rounds]
            results[label] = {
                "runs": args.runs,
                "median_s": benchlib.median(walls),
                "min_s": min(walls),
                "max_s": max(walls),
                "cpu_median_s": benchlib.median(cpus),
            }
        load_api = benchlib.loadavg()
        api = api_round_trip(core, args.iterations)
        api_all = api_round_trip(core, max(args.iterations // 4, 10), "*")
        if args.profile:
            profile_ctl(core, tmp / "ctl-exec.txt")
    floor = results["python -c pass"]
    benchlib.print_table(
        f"whole process, median of {args.runs} interleaved rounds "
        f"(load before: {load}; after: {load_after})",
        ["command", "median ms", "min ms", "max ms", "over python ms", "CPU median ms"],
        [
            (
                label,
                benchlib.ms(r["median_s"]),
                benchlib.ms(r["min_s"]),
                benchlib.ms(r["max_s"]),
                benchlib.ms(r["median_s"] - floor["median_s"]),
                benchlib.ms(r["cpu_median_s"]),
            )
            for label, r in results.items()
        ],
    )
    names_of_parts = list(next(iter(parts.values()))[0])
    benchlib.print_table(
        "where ctl exec's wall time goes, median ms of each part over the rounds "
        "(the job's times; with several nodes, the slowest node's)",
        ["command", *names_of_parts, "whole"],
        [
            (
                label,
                *(benchlib.ms(benchlib.median([p[k] for p in split])) for k in names_of_parts),
                benchlib.ms(results[label]["median_s"]),
            )
            for label, split in parts.items()
        ],
    )
    benchlib.print_table(
        f"CPU ms per job of each process, over {args.runs} more runs of each "
        f"(load after: {load_after}; heartbeats included, the agents' /bin/sh not)",
        ["command", "Core", "agents, all", "busiest agent", "ctl"],
        [(label, *(benchlib.ms(v) for v in cpu.values())) for label, cpu in per_job.items()],
    )
    benchlib.print_table(
        "API round trip: POST /api/v1/jobs + stream until done (httpx, kept-alive): "
        "Core's and the agents' share of the whole-process figures",
        ["target", "iterations", "load before", "p50 ms", "p99 ms", "POST p50 ms", "POST p99 ms"],
        [
            (
                target,
                r["iterations"],
                load_api,
                benchlib.ms(r["p50_s"]),
                benchlib.ms(r["p99_s"]),
                benchlib.ms(r["post_p50_s"]),
                benchlib.ms(r["post_p99_s"]),
            )
            for target, r in ((NODE, api), (f"* ({len(names)} agents)", api_all))
        ],
    )
    benchlib.write_json(
        args.json,
        {
            "machine": benchlib.machine(),
            "processes": results,
            "parts": parts,
            "cpu_per_job": per_job,
            "api": api,
            "api_all": api_all,
        },
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
