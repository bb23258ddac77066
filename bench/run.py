"""Run every benchmark, one after the other, and say which crashed.

``--quick`` runs each in its quick mode (small fleets, short windows; well
under 3 minutes in all on a 2-core machine): the smoke test CI runs. There
are no thresholds: the exit status is non-zero only when a benchmark
crashed (non-zero exit or timeout), and the figures are printed for a person.
bench/storage_year.py is run too when it exists (maintained separately).

Each benchmark runs in its own process group; Ctrl-C or SIGTERM stops the
one running (and everything it started) before this script exits.

Examples::

    python bench/run.py --quick
    python bench/run.py --quick --only ingest fanout
    python bench/run.py --json-dir /tmp/bench-results     # full runs (long)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import benchlib

BENCHMARKS = (
    "startup",
    "exec_latency",
    "ingest",
    "fanout",
    "agent_footprint",
    "storage",
    "node_strings",
    "exec_output",
    "exec_stdin",
    "jobs_memory",
    "web_render",
    "transfer",
    "storage_year",
)
OPTIONAL = {"storage_year"}
TIMEOUT_QUICK = 170.0
TIMEOUT_FULL = 3 * 3600.0


def run_one(name: str, quick: bool, json_dir: Path | None) -> tuple[int | None, float]:
    """(exit code or None on timeout, seconds) of ``bench/NAME.py``."""
    cmd = [sys.executable, str(benchlib.BENCH_DIR / f"{name}.py")]
    if quick:
        cmd.append("--quick")
    if json_dir is not None and name not in OPTIONAL:
        cmd += ["--json", str(json_dir / f"{name}.json")]
    print(f"\n{'=' * 20} {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        code: int | None = proc.wait(TIMEOUT_QUICK if quick else TIMEOUT_FULL)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return code, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="quick mode of each (CI smoke test)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--json-dir", type=Path, help="each benchmark writes NAME.json here")
    args = parser.parse_args(argv)
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    if args.json_dir is not None:
        args.json_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    t0 = time.monotonic()
    for name in args.only or BENCHMARKS:
        if name in OPTIONAL and not (benchlib.BENCH_DIR / f"{name}.py").exists():
            outcomes.append((name, "absent", 0.0))
            continue
        code, seconds = run_one(name, args.quick, args.json_dir)
        status = "ok" if code == 0 else "timed out" if code is None else f"crashed (exit {code})"
        outcomes.append((name, status, seconds))
    benchlib.print_table(
        f"Benchmarks ({'quick' if args.quick else 'full'}, {time.monotonic() - t0:.0f} s; "
        f"load now {benchlib.loadavg()})",
        ["benchmark", "result", "seconds"],
        [(n, s, f"{t:.0f}") for n, s, t in outcomes],
    )
    return 1 if any(s not in ("ok", "absent") for _, s, _ in outcomes) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
