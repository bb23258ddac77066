"""Rollups in steady state: the CPU of History's passes per heartbeat stored.

A fleet of ``--nodes`` nodes sends a sample every 5 s for ``--minutes``
simulated minutes, written as Core's writer does (``Storage.write_batch``,
one batch per second of samples); every 30 s of simulated time (Core's pass
interval at a 5 s heartbeat) ``History`` rolls the marked minutes, and
every 60 s the marked hours, on an injected clock. This process's CPU time
(``time.process_time``, the worker threads included) is read around the
passes only. Reports CPU per heartbeat and how many minute rollups were
written per node and minute (1.0 when each minute is rolled once).

Examples::

    python bench/history_costs.py                 # 2,000 nodes, 6 minutes
    python bench/history_costs.py --nodes 8000 --json /tmp/history_costs.json
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import trio
from fleet_sim import SampleGen

from servermgr.core.history import History
from servermgr.core.rollup import HOUR, MINUTE, Retention
from servermgr.core.storage import Storage
from servermgr.core.writer import Database

INTERVAL = 5.0
PASS_EVERY = 30.0


async def measure(db: Path, nodes: int, minutes: int) -> dict[str, Any]:
    storage = Storage.open(db)
    try:
        seqs = [
            storage.insert_node(f"n{i:05x}", f"node-{i:05d}", {}, "0" * 64, 0.0).seq
            for i in range(nodes)
        ]
        gen = SampleGen(random.Random(1))
        start = float(int(time.time()) // HOUR * HOUR)
        now = [start]
        history = History(Database(storage), Retention(), clock=lambda: now[0])
        cpu = 0.0
        rolled = {MINUTE: 0, HOUR: 0}
        stored = 0
        per_second = (nodes + INTERVAL - 1) // INTERVAL
        for second in range(int(minutes * 60)):
            now[0] = start + second
            part = second % int(INTERVAL)
            batch = [
                (seq, gen.sample(now[0] - random.random() * 0.5))
                for seq in seqs[int(part * per_second) : int((part + 1) * per_second)]
            ]
            storage.write_batch(batch, {})
            stored += len(batch)
            if second % PASS_EVERY == PASS_EVERY - 1:
                t = time.process_time()
                rolled[MINUTE] += await history.roll(MINUTE)
                if second % 60 == 59:
                    rolled[HOUR] += await history.roll(HOUR)
                cpu += time.process_time() - t
    finally:
        storage.close()
    return {
        "nodes": nodes,
        "minutes": minutes,
        "heartbeats": stored,
        "passes_us_per_hb": 1e6 * cpu / stored,
        "minute_rollups_per_node_minute": rolled[MINUTE] / (nodes * minutes),
        "hour_rollups": rolled[HOUR],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2000])
    parser.add_argument("--minutes", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    docs = []
    for n in args.nodes:
        with benchlib.workdir("history-costs-") as tmp:
            doc = trio.run(measure, tmp / "core.db", n, args.minutes)
            docs.append(doc | {"load": benchlib.loadavg()})
    benchlib.print_table(
        "Rollups: CPU of History's passes per heartbeat (this process, all threads)",
        [
            "nodes",
            "minutes",
            "load",
            "heartbeats",
            "passes us/hb",
            "minute rollups per node-minute",
        ],
        [
            (
                d["nodes"],
                d["minutes"],
                d["load"],
                d["heartbeats"],
                f"{d['passes_us_per_hb']:.1f}",
                f"{d['minute_rollups_per_node_minute']:.2f}",
            )
            for d in docs
        ],
    )
    benchlib.write_json(args.json, {"machine": benchlib.machine(), "results": docs})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
