"""Memory and speed of ``ctl cp`` for a large file: push, then pull.

Against a real Core (``servermgr core serve``) and a real agent (``servermgr
node run``) on this machine: ``servermgr ctl cp`` pushes a SIZE file of
random bytes to the node, then pulls it back. For each direction: the wall
time, the throughput, and the peak RSS of ctl (``ru_maxrss`` from
``wait4``), Core and the agent (VmHWM, read after the transfer); then
whether the copies are byte for byte the same. Memory stays bounded because
each hop holds at most one window of credit (1 MiB) whatever the size.

Examples::

    python bench/transfer.py                 # 1 GiB
    python bench/transfer.py --quick         # 32 MiB (bench/run.py --quick)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import time
from pathlib import Path

import benchlib

from servermgr.common.config_fields import parse_size

MIB = 1024 * 1024


def make_file(path: Path, size: int) -> str:
    """``size`` random bytes in ``path``; their SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as f:
        left = size
        while left:
            chunk = block[: min(MIB, left)]
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def ctl_cp(core: benchlib.Core, src: str, dst: str) -> tuple[float, int, str]:
    """One ``ctl cp``: (wall seconds, peak RSS of ctl, its output)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*benchlib.servermgr_cmd(), "ctl", "cp", src, dst],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=core.env(),
        start_new_session=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"ctl cp failed ({proc.returncode}): {out}")
    return wall, usage.ru_maxrss * 1024, out.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    parser.add_argument("--quick", action="store_true", help="32 MiB")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    size = parse_size("32MiB" if args.quick else args.size)
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    with benchlib.workdir("bench-transfer-", args.keep) as tmp, benchlib.Procs() as procs:
        core = benchlib.start_core(procs, tmp)
        agent = benchlib.start_agent(procs, core, tmp, "node-01")
        benchlib.wait_online(core, ["node-01"])
        src = tmp / "payload.bin"
        want = make_file(src, size)
        area = tmp / "node-01"  # the agent's own directory: [files] default allows any path
        rows = []
        for direction, a, b, landed in (
            ("push", str(src), f"node-01:{area / 'pushed.bin'}", area / "pushed.bin"),
            ("pull", f"node-01:{area / 'pushed.bin'}", str(tmp / "pulled.bin"), tmp / "pulled.bin"),
        ):
            wall, ctl_rss, out = ctl_cp(core, a, b)
            same = sha256(landed) == want
            rows.append(
                [
                    direction,
                    f"{size / MIB:.0f} MiB",
                    f"{wall:.1f} s",
                    f"{size / MIB / wall:.0f} MiB/s",
                    benchlib.mib(ctl_rss),
                    benchlib.mib(benchlib.peak_rss_bytes(core.pid)),
                    benchlib.mib(benchlib.peak_rss_bytes(agent.pid)),
                    "yes" if same and want in out else "NO",
                ]
            )
            if direction == "pull":
                landed.unlink()
        benchlib.print_table(
            f"ctl cp of {size / MIB:.0f} MiB: peak RSS in MiB (Core and agent: VmHWM so far)",
            ["direction", "size", "wall", "rate", "ctl", "Core", "agent", "sha256 ok"],
            rows,
        )
        print(f"load average: {benchlib.loadavg()}")
        headers = ["direction", "size", "wall", "rate", "ctl_mib", "core_mib", "agent_mib", "ok"]
        benchlib.write_json(args.json, [dict(zip(headers, row, strict=True)) for row in rows])


if __name__ == "__main__":
    main()
