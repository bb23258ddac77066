"""What TLS costs ``ctl exec``: the same command against a plain Core and a TLS Core.

Two real Cores on this machine (``tls = "off"`` and ``tls = "auto"``), one
real agent each (the TLS one over ``wss://`` pinned), then ``servermgr ctl
exec NODE /bin/true`` as a whole process, alternating plain and https
(pinned with ``SERVERMGR_FINGERPRINT``), with the CPU seconds of each run
from ``wait4``.

Examples::

    python bench/tls_exec.py
    python bench/tls_exec.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import benchlib

NODE = "bench-node"


def start(procs: benchlib.Procs, base: Path, tls: bool) -> dict[str, str]:
    """A Core and one agent under ``base``; the environment for ctl against them."""
    base.mkdir()
    port = benchlib.free_port()
    cfg = base / "core.toml"
    cfg.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\ntls = "{"auto" if tls else "off"}"\n'
        f'[storage]\ndata_dir = "{base / "data"}"\n'
    )
    shown = subprocess.run(
        [*benchlib.servermgr_cmd(), "key", "show", "-c", str(cfg)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    key, pin = shown[0], (shown[1] if tls else "")
    procs.start([*benchlib.servermgr_cmd(), "core", "serve", "-c", str(cfg)], log=base / "core.log")
    scheme = "wss" if tls else "ws"
    node = base / "node.toml"
    node.write_text(
        f'[node]\ncore_addr = "{scheme}://127.0.0.1:{port}"\nregister_token = "{key}"\n'
        f'hostname = "{NODE}"\ndata_dir = "{base / "node"}"\n'
        + (f'tls_fingerprint = "{pin}"\n' if tls else "")
        + '[log]\nlevel = "warning"\n'
    )
    procs.start([*benchlib.servermgr_cmd(), "node", "run", "-c", str(node)], log=base / "node.log")
    env = {
        "SERVERMGR_CORE": f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        "SERVERMGR_KEY": key,
        "SERVERMGR_FINGERPRINT": pin,
    }
    cmd = [*benchlib.servermgr_cmd(), "ctl", "exec", NODE, "/bin/true"]
    deadline = time.monotonic() + 30
    while subprocess.run(cmd, env=os.environ | env, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node did not come online:\n{benchlib.tail(base / 'node.log')}")
        time.sleep(0.2)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per Core (20)")
    args = parser.parse_args(argv)
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    cmd = [*benchlib.servermgr_cmd(), "ctl", "exec", NODE, "/bin/true"]
    results: dict[str, tuple[list[float], list[float]]] = {"http": ([], []), "https": ([], [])}
    with benchlib.Procs() as procs, benchlib.workdir("tls-exec-") as tmp:
        envs = {
            "http": start(procs, tmp / "plain", False),
            "https": start(procs, tmp / "tls", True),
        }
        load = benchlib.loadavg()
        for _ in range(args.runs):
            for name, env in envs.items():
                wall, cpu, code = benchlib.run_timed(cmd, os.environ | env)
                if code != 0:
                    raise RuntimeError(f"ctl exec over {name} exited {code}")
                results[name][0].append(wall)
                results[name][1].append(cpu)
    benchlib.print_table(
        f"ctl exec NODE /bin/true, whole process, {args.runs} runs each (load before: {load})",
        ["Core", "median ms", "min ms", "max ms", "CPU median ms"],
        [
            (
                name,
                benchlib.ms(benchlib.median(walls)),
                benchlib.ms(min(walls)),
                benchlib.ms(max(walls)),
                benchlib.ms(benchlib.median(cpus)),
            )
            for name, (walls, cpus) in results.items()
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
