"""Start-up time of the CLI, and where ``ctl exec`` spends it.

Whole-process wall time (fork to exit) and CPU seconds (``wait4``: not
inflated by other load) of, median of ``--runs``:

- ``servermgr --help``
- ``servermgr ctl nodes`` against a running Core with one real agent
- ``servermgr ctl exec NODE /bin/true`` against the same

then the instructions each executes (valgrind's callgrind, when installed:
``apt-get install -y valgrind``; the same figure however busy the machine
is, so it compares commits where wall and CPU times cannot), then
``python -X importtime`` of ``ctl exec``: the modules with the largest
cumulative import time (top-level packages and servermgr's own modules).
servermgr is compiled to bytecode first, as an install has it
(``--no-compile``: as found).

Examples::

    python bench/startup.py
    python bench/startup.py --quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import benchlib

NODE = "startup-node"


def timed(cmd: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    benchlib.run_timed(cmd, env)  # warm the page cache
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, code = benchlib.run_timed(cmd, env)
        if code != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {code}")
        walls.append(wall)
        cpus.append(cpu)
    return {"median_s": benchlib.median(walls), "min_s": min(walls), "cpu_s": benchlib.median(cpus)}


def import_times(cmd: list[str], env: dict[str, str]) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) from ``-X importtime``, as Python reports them."""
    script = cmd[0]
    out = subprocess.run(
        [sys.executable, "-X", "importtime", script, *cmd[1:]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, cumulative, name = (p.strip() for p in line[len("import time:") :].split("|"))
        rows.append((name, int(self_us), int(cumulative)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (10)")
    parser.add_argument("--top", type=int, default=25, help="imports listed (25)")
    parser.add_argument("--quick", action="store_true", help="3 runs each")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--no-compile", action="store_true", help="do not compile servermgr to bytecode first"
    )
    parser.add_argument(
        "--no-instructions", action="store_true", help="skip the valgrind instruction counts"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 3
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    print(
        "bytecode:", "as found (--no-compile)" if args.no_compile else benchlib.compile_servermgr()
    )
    sm = benchlib.servermgr_cmd()
    if len(sm) != 1:
        sys.exit("the servermgr console script is needed (pip install -e .)")
    results: dict[str, Any] = {}
    with benchlib.Procs() as procs, benchlib.workdir("startup-") as tmp:
        core = benchlib.start_core(procs, tmp)
        benchlib.start_agent(procs, core, tmp, NODE)
        benchlib.wait_online(core, [NODE])
        env = core.env() | {"COLUMNS": "120"}
        load = benchlib.loadavg()
        commands = {
            "servermgr --help": [*sm, "--help"],
            "servermgr ctl nodes": [*sm, "ctl", "nodes"],
            f"servermgr ctl exec {NODE} /bin/true": [*sm, "ctl", "exec", NODE, "/bin/true"],
        }
        for name, cmd in commands.items():
            results[name] = timed(cmd, env, args.runs)
        bare = timed([sys.executable, "-c", "pass"], dict(os.environ), args.runs)
        imports = import_times(commands[f"servermgr ctl exec {NODE} /bin/true"], env)
        counted: dict[str, int | None] = {}
        if not args.no_instructions:
            for name, cmd in {"python -c pass": [sys.executable, "-c", "pass"], **commands}.items():
                counted[name] = benchlib.instructions(cmd, env)
    benchlib.print_table(
        f"Whole-process start-up (median of {args.runs}; load before {load})",
        ["command", "median ms", "min ms", "CPU ms"],
        [
            (name, benchlib.ms(r["median_s"]), benchlib.ms(r["min_s"]), benchlib.ms(r["cpu_s"]))
            for name, r in [*results.items(), ("python -c pass", bare)]
        ],
    )
    if counted:
        floor = counted["python -c pass"]
        benchlib.print_table(
            "Instructions executed, millions (valgrind callgrind, one run each)",
            ["command", "M instructions", "over python -c pass"],
            [
                (
                    name,
                    "-" if n is None else f"{n / 1e6:.1f}",
                    "-" if n is None or floor is None else f"{(n - floor) / 1e6:.1f}",
                )
                for name, n in counted.items()
            ],
        )
    top_level = sorted(
        (r for r in imports if "." not in r[0].strip() or r[0].strip().startswith("servermgr")),
        key=lambda r: -r[2],
    )[: args.top]
    total = sum(r[1] for r in imports)
    benchlib.print_table(
        f"python -X importtime, ctl exec: largest cumulative imports (all imports: "
        f"{total / 1000:.0f} ms self time)",
        ["module", "cumulative ms", "self ms"],
        [(name.strip(), f"{cum / 1000:.1f}", f"{own / 1000:.1f}") for name, own, cum in top_level],
    )
    benchlib.write_json(
        args.json,
        {
            "machine": benchlib.machine(),
            "load": load,
            "results": results,
            "python": bare,
            "imports": top_level,
            "instructions": counted,
        },
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
