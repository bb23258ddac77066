"""Memory of ``ctl exec`` against the size of the output it prints.

Against a real Core (``servermgr core serve``) with real agents (``servermgr
node run``) on this machine: ``servermgr ctl exec --all`` of a command that
writes SIZE bytes on each node (lines of 64 bytes), its stdout read and
counted by this script. For each size: the total output, ctl's peak RSS
(``ru_maxrss`` from ``wait4``), whether every byte arrived, the wall time,
and Core's peak RSS so far (VmHWM). Then the same through a stdout that
stalls for a few seconds (a slow pipe): Core cuts ctl's stream off and ctl
completes the output by range.

Examples::

    python bench/exec_output.py                  # 6 agents, up to 16 MiB each (96 MiB)
    python bench/exec_output.py --quick          # 2 agents, up to 8 MiB each
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import benchlib

MIB = 1024 * 1024


def ctl_exec_all(core: benchlib.Core, size: int, stall: float = 0.0) -> dict[str, Any]:
    """One ``ctl exec --all`` writing ``size`` bytes per node; ctl's figures."""
    command = f"head -c {size} /dev/zero | tr '\\0' x | fold -w 63 | head -c {size}"
    cmd = [
        *benchlib.servermgr_cmd(),
        "ctl",
        "exec",
        "--all",
        "--output-cap",
        str(size),
        "--timeout",
        "120s",
        command,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=core.env(),
        start_new_session=True,
    )
    got = 0
    try:
        assert proc.stdout is not None
        if stall:
            first = proc.stdout.read1(1 << 16)
            got += len(first)
            time.sleep(stall)  # ctl blocks on its stdout meanwhile
        while chunk := proc.stdout.read1(1 << 20):
            got += len(chunk)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    return {
        "exit": proc.returncode,
        "printed": got,
        "ctl_peak_rss": usage.ru_maxrss * 1024,
        "wall_s": time.perf_counter() - t0,
        "core_peak_rss": benchlib.peak_rss_bytes(core.pid),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=6, help="real agents (6)")
    parser.add_argument("--stall", type=float, default=8.0, help="seconds the slow pipe stalls")
    parser.add_argument("--quick", action="store_true", help="2 agents, up to 8 MiB each")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = [MIB // 16, MIB, 4 * MIB, 16 * MIB]
    if args.quick:
        args.agents, sizes, args.stall = 2, [MIB // 16, MIB, 8 * MIB], 4.0
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    names = [f"out-{i:02d}" for i in range(args.agents)]
    rows, results = [], []
    with benchlib.Procs() as procs, benchlib.workdir("exec-output-") as tmp:
        core = benchlib.start_core(procs, tmp)
        for name in names:
            benchlib.start_agent(procs, core, tmp, name)
        benchlib.wait_online(core, names)
        runs = [(size, 0.0) for size in sizes] + [(sizes[-1], args.stall)]
        for size, stall in runs:
            r = ctl_exec_all(core, size, stall)
            r["cut_off"] = core.log.read_text(errors="replace").count("read too slowly")
            # 63 bytes and a newline per line; ctl prefixes each line with
            # "name | " and ends an unfinished last line.
            lines, rest = divmod(size, 64)
            expected = args.agents * (
                size + (lines + bool(rest)) * (len(names[0]) + 3) + bool(rest)
            )
            r |= {"size": size, "stall_s": stall, "expected": expected}
            results.append(r)
            rows.append(
                (
                    benchlib.mib(size),
                    benchlib.mib(size * args.agents),
                    f"{stall:g} s" if stall else "-",
                    benchlib.mib(r["ctl_peak_rss"]),
                    "yes" if r["printed"] == expected and r["exit"] == 0 else "NO",
                    f"{r['wall_s']:.1f}",
                    benchlib.mib(r["core_peak_rss"]),
                )
            )
    benchlib.print_table(
        f"ctl exec --all on {args.agents} agents: output size vs ctl's peak RSS",
        [
            "per node MiB",
            "total output MiB",
            "stdout stall",
            "ctl peak RSS MiB",
            "complete",
            "wall s",
            "Core peak RSS MiB",
        ],
        rows,
    )
    benchlib.write_json(args.json, {"agents": args.agents, "runs": results})
    return 0 if all(r["printed"] == r["expected"] and r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
