"""Memory of ``ctl exec`` against the size of the standard input it forwards.

Against a real Core (``servermgr core serve``) and a real agent (``servermgr
node run``) on this machine: ``head -c SIZE /dev/zero | servermgr ctl exec
NODE wc -c`` for each size, the count checked. For each: ctl's peak RSS
(``ru_maxrss`` from ``wait4``), Core's and the agent's peak RSS so far
(VmHWM), the wall time and the rate. Then a command that exits without
reading (``yes | ctl exec NODE true``): it must end at once, not wait for
its endless input. The stream is relayed within credit at every hop
(``common/flow.py``): the peaks should not grow with the size.

Examples::

    python bench/exec_stdin.py               # 1 MiB, 16 MiB, 200 MiB
    python bench/exec_stdin.py --quick       # 1 MiB, 32 MiB
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


def piped_exec(core: benchlib.Core, source: str, node: str, command: str) -> dict[str, Any]:
    """``source | servermgr ctl exec node command``: its output and ctl's figures."""
    t0 = time.perf_counter()
    feeder = subprocess.Popen(
        ["/bin/sh", "-c", source], stdout=subprocess.PIPE, start_new_session=True
    )
    ctl = subprocess.Popen(
        [*benchlib.servermgr_cmd(), "ctl", "exec", "--timeout", "300s", node, command],
        stdin=feeder.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=core.env(),
        start_new_session=True,
    )
    assert feeder.stdout is not None
    assert ctl.stdout is not None
    feeder.stdout.close()  # ctl holds the read end now
    try:
        out = ctl.stdout.read()  # small: wc's count, or an error
        _, status, usage = os.wait4(ctl.pid, 0)  # not communicate: wait4 has ru_maxrss
        ctl.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ctl.pid, signal.SIGKILL)
        raise
    finally:
        ctl.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(feeder.pid, signal.SIGKILL)
        feeder.wait()
    return {
        "exit": ctl.returncode,
        "stdout": out.decode(errors="replace").strip(),
        "ctl_peak_rss": usage.ru_maxrss * 1024,
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 MiB and 32 MiB only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = [MIB // 16, 16 * MIB, 200 * MIB] if not args.quick else [MIB, 32 * MIB]
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    rows, results = [], []
    with benchlib.Procs() as procs, benchlib.workdir("exec-stdin-") as tmp:
        core = benchlib.start_core(procs, tmp)
        agent = benchlib.start_agent(procs, core, tmp, "in-01")
        benchlib.wait_online(core, ["in-01"])
        for size in sizes:
            r = piped_exec(core, f"head -c {size} /dev/zero", "in-01", "wc -c")
            r |= {"size": size, "ok": r["exit"] == 0 and r["stdout"] == str(size)}
            r |= {
                "core_peak_rss": benchlib.peak_rss_bytes(core.pid),
                "agent_peak_rss": benchlib.peak_rss_bytes(agent.pid),
            }
            results.append(r)
            rows.append(
                (
                    "head -c | wc -c",
                    benchlib.mib(size),
                    "yes" if r["ok"] else f"NO ({r['stdout'][:60]})",
                    f"{r['wall_s']:.1f}",
                    f"{size / MIB / r['wall_s']:.0f}",
                    benchlib.mib(r["ctl_peak_rss"]),
                    benchlib.mib(r["core_peak_rss"]),
                    benchlib.mib(r["agent_peak_rss"]),
                )
            )
        r = piped_exec(core, "yes", "in-01", "true")
        r |= {"size": None, "ok": r["exit"] == 0}
        r |= {
            "core_peak_rss": benchlib.peak_rss_bytes(core.pid),
            "agent_peak_rss": benchlib.peak_rss_bytes(agent.pid),
        }
        results.append(r)
        rows.append(
            (
                "yes | true",
                "endless",
                "yes" if r["ok"] else f"NO ({r['stdout'][:60]})",
                f"{r['wall_s']:.1f}",
                "-",
                benchlib.mib(r["ctl_peak_rss"]),
                benchlib.mib(r["core_peak_rss"]),
                benchlib.mib(r["agent_peak_rss"]),
            )
        )
    benchlib.print_table(
        "ctl exec with piped stdin: size vs peak RSS of ctl, Core and the agent",
        [
            "run",
            "stdin MiB",
            "complete",
            "wall s",
            "MiB/s",
            "ctl peak RSS MiB",
            "Core peak RSS MiB",
            "agent peak RSS MiB",
        ],
        rows,
    )
    benchlib.write_json(args.json, {"runs": results})
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
