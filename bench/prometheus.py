"""What rendering ``GET /metrics`` costs for a fleet, in-process.

Builds N registered nodes, each online with a realistic latest sample
(two filesystems, two labels), and renders the exposition the way Core does
(``MetricsExport.render``: Core's figures, then every node's), twice: the
first scrape builds each node's cached line beginnings, the later ones
(what Prometheus sees every interval) reuse them. Prints, per fleet size,
the median of ``--runs`` steady renderings (CPU time of this process, which
other programs on a shared machine do not inflate, and wall-clock time),
the slowest, the first one, the size of the
text, and what gzip (level 1, done only when the scraper asks for it) adds.

Core renders in a worker thread, so the event loop keeps serving nodes
meanwhile (it shares the GIL: heartbeats see up to a few ms more delay).

Examples::

    python bench/prometheus.py
    python bench/prometheus.py --nodes 1000 20000 --runs 5
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import time

import benchlib

from servermgr.common import proto
from servermgr.core.metrics_export import (
    GZIP_LEVEL,
    CoreFigures,
    NodeRenderer,
    exposition,
    process_figures,
)
from servermgr.core.status import LiveStatus
from servermgr.core.storage import NodeRow
from servermgr.core.writer import AGE_BOUNDS_MS


def fleet(n: int, seed: int = 1) -> list[tuple[NodeRow, LiveStatus]]:
    rnd = random.Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        row = NodeRow(
            seq=i + 1,
            id=f"n{i:016x}",
            name=f"node-{i:05d}",
            labels={"role": rnd.choice(["web", "db", "cache"]), "env": "prod"},
            cred_hash="",
            first_seen=now,
            last_seen=now,
            info=None,
            agent_version="0.1.0",
        )
        disks = [
            proto.DiskUsage(
                mount="/",
                fstype="ext4",
                total=100 << 30,
                used=rnd.randrange(1 << 36),
                percent=rnd.uniform(0, 100),
            ),
            proto.DiskUsage(
                mount="/var",
                fstype="xfs",
                total=500 << 30,
                used=rnd.randrange(1 << 38),
                percent=rnd.uniform(0, 100),
            ),
        ]
        sample = proto.Sample(
            ts=now,
            cpu_percent=rnd.uniform(0, 100),
            cpu_per_core=[],
            load1=rnd.uniform(0, 4),
            load5=rnd.uniform(0, 4),
            load15=rnd.uniform(0, 4),
            mem_total=16 << 30,
            mem_used=rnd.randrange(16 << 30),
            mem_available=rnd.randrange(16 << 30),
            mem_percent=rnd.uniform(0, 100),
            swap_total=2 << 30,
            swap_used=rnd.randrange(1 << 30),
            swap_percent=rnd.uniform(0, 50),
            disks=disks,
            disk_read_bps=rnd.uniform(0, 1e7),
            disk_write_bps=rnd.uniform(0, 1e7),
            net_rx_bps=rnd.uniform(0, 1e8),
            net_tx_bps=rnd.uniform(0, 1e8),
            nets=[],
            uptime=rnd.uniform(0, 1e7),
            procs=rnd.randrange(50, 500),
        )
        st = LiveStatus(row.id, online=True, connected_at=now, last_seen=now, latest=sample)
        out.append((row, st))
    return out


def core_figures() -> CoreFigures:
    return CoreFigures(
        version="bench",
        started=time.time(),
        nodes_known=0,
        nodes_connected=0,
        heartbeats_received=0,
        heartbeats_stored=0,
        samples_stored=0,
        ingest_queued=0,
        ingest_held=0,
        failed_batches=0,
        storage_writable=True,
        age_counts=[1] * (len(AGE_BOUNDS_MS) + 1),
        age_sum=1.0,
        gc_collections=[1, 2, 3],
        gc_pause_counts=[1] * 10,
        gc_pause_bounds_ms=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
        gc_pause_total=0.1,
        gc_frozen=0,
        jobs_open={"queued": 1},
        jobs_finished={"failed": 2},
        process=process_figures(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    benchlib.print_machine()
    rows = []
    core = core_figures()
    for n in args.nodes:
        nodes = fleet(n)
        renderer = NodeRenderer()
        t0 = time.perf_counter()
        text = exposition(renderer, nodes, core)
        first = time.perf_counter() - t0
        times, cpu = [], []
        for _ in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            text = exposition(renderer, nodes, core)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        packed = gzip.compress(text, GZIP_LEVEL)
        gz = time.perf_counter() - t0
        rows.append(
            (
                n,
                f"{statistics.median(cpu) * 1000:.0f}",
                f"{statistics.median(times) * 1000:.0f}",
                f"{max(times) * 1000:.0f}",
                f"{first * 1000:.0f}",
                text.count(b"\n"),
                f"{len(text) / 1e6:.1f} MB",
                f"{gz * 1000:.0f}",
                f"{len(packed) / 1e6:.1f} MB",
            )
        )
    benchlib.print_table(
        f"GET /metrics rendering, median of {args.runs} (load {benchlib.loadavg()})",
        [
            "nodes",
            "render cpu ms",
            "wall ms",
            "max wall ms",
            "first ms",
            "lines",
            "bytes",
            "gzip ms",
            "gzipped",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
