"""A year of history for one node: how big, and how fast is a 24-hour query?

    python bench/storage_year.py [--quick] [--days 365] [--nodes 200] [--dir DIR]

Runs the real code on a simulated clock: one node sampled every 5 s, stored
through ``Storage.write_batch`` (as the writer stores heartbeats), with
``History.run_once`` (rollups, retention, vacuum, WAL checkpoint) after each
simulated day. Then a database holding many nodes with one day of raw
samples each (and their rollups). For both, a 24-hour query of one node is
timed cold (the file evicted from the OS page cache with posix_fadvise, as
after a reboot; the read connection already open, as Core keeps it) and
warm, for the step Core picks (1-minute rollups) and for raw samples
(``step=raw``, the newest 10,000 as the API caps them). Medians of 5.

``--quick`` (well under two minutes on 2 cores) samples days 9 to 357 every
60 s instead of 5 s (the state after a year is the same size: see
``one_node_year``) and builds the many-node database with 50 nodes.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import trio

from servermgr.common import proto
from servermgr.core import history
from servermgr.core.api import MAX_POINTS
from servermgr.core.history import History
from servermgr.core.rollup import Retention
from servermgr.core.storage import Storage
from servermgr.core.writer import Database

INTERVAL = 5.0
DAY = 86400
START = 1_700_006_400  # a midnight (UTC)
MEM_TOTAL = 16 * 2**30


class Host:
    """A plausible machine: daily CPU cycle with noise, bursts of I/O, slow disk growth.

    ``day`` replays one of three drawn days (shared by all hosts, each host
    shifted) with new timestamps: msgspec ``replace`` is ~10x cheaper than
    drawing a sample, and the storage cost does not depend on which values.
    """

    _templates: list[list[proto.Sample]] = []

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.disk = 30.0 + seed % 40
        self.boot = START - self.rng.uniform(0, 30 * DAY)

    def day(self, start: float, every: int = 1) -> list[proto.Sample]:
        """The samples of the day starting at ``start`` (only each ``every``-th one)."""
        n = int(DAY / INTERVAL)
        if not Host._templates:
            Host._templates = [
                [self.sample(START + i * INTERVAL) for i in range(n)] for _ in range(3)
            ]
        template = Host._templates[(int(start // DAY) + self.seed) % 3]
        shift = self.seed * 37 % n
        template = (template[shift:] + template[:shift])[::every]
        step = INTERVAL * every
        return [
            msgspec.structs.replace(s, ts=start + i * step, uptime=start + i * step - self.boot)
            for i, s in enumerate(template)
        ]

    def sample(self, ts: float) -> proto.Sample:
        r = self.rng
        phase = math.sin((ts % DAY) / DAY * 2 * math.pi)
        cpu = min(100.0, max(0.0, 25 + 15 * phase + r.gauss(0, 6)))
        mem_used = int(MEM_TOTAL * (0.45 + 0.1 * phase + r.uniform(-0.02, 0.02)))
        self.disk = min(99.0, self.disk + 0.00001)
        return proto.Sample(
            ts=ts,
            cpu_percent=cpu,
            cpu_per_core=[],
            load1=cpu / 25 + r.random() * 0.3,
            load5=cpu / 25,
            load15=cpu / 26,
            mem_total=MEM_TOTAL,
            mem_used=mem_used,
            mem_available=MEM_TOTAL - mem_used,
            mem_percent=100.0 * mem_used / MEM_TOTAL,
            swap_total=2**31,
            swap_used=0,
            swap_percent=0.0,
            disks=[
                proto.DiskUsage(mount="/", fstype="ext4", total=2**36, used=0, percent=self.disk)
            ],
            disk_read_bps=r.expovariate(1 / 20000),
            disk_write_bps=r.expovariate(1 / 80000),
            net_rx_bps=r.expovariate(1 / 150000),
            net_tx_bps=r.expovariate(1 / 90000),
            nets=[],
            uptime=ts - self.boot,
            procs=180 + r.randrange(40),
        )


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def count(storage: Storage, table: str) -> int:
    with storage.reader() as conn:
        n: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return n


def evict(path: Path) -> None:
    """Drop the database file from the OS page cache (a cold read after a reboot)."""
    for p in (path, Path(f"{path}-wal")):
        if p.exists():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def time_query(path: Path, seq: int, step: str, until: float) -> tuple[float, float, int]:
    """(cold ms, warm ms, points) of a 24 h query ending at ``until``; medians of 5."""
    cold, warm = [], []
    points = 0
    for _ in range(5):
        storage = Storage.open(path)
        try:
            with storage.reader():  # Core keeps its read connections open
                pass
            evict(path)
            t = time.perf_counter()
            points = len(history.query(storage, step, seq, until - DAY, until, MAX_POINTS))
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            history.query(storage, step, seq, until - DAY, until, MAX_POINTS)
            warm.append(time.perf_counter() - t)
        finally:
            storage.close()
    return statistics.median(cold) * 1e3, statistics.median(warm) * 1e3, points


async def one_node_year(
    path: Path, days: int, quick: bool
) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """Simulate ``days`` days; rows (day, raw, 1m, 1h, bytes) at checkpoints, and the seq.

    ``quick`` samples days 9 to ``days - 8`` every 60 s instead of 5 s: the
    end state (24 h of raw, 7 days of minutes, a year of hours) is the same
    size, as an hour row is the same size whatever its sample count.
    """
    storage = Storage.open(path)
    now = [float(START)]
    hist = History(Database(storage), Retention(), clock=lambda: now[0])
    host = Host(1)
    seq = storage.insert_node("node-year", "node-year", {}, "x", START).seq
    full_rate = set(range(8)) | set(range(days - 8, days))
    marks = {1, 2, 7, 8, days} if quick else {1, 2, 7, 8, 30, 90, 180, days}
    table = []
    started = time.perf_counter()
    try:
        for day in range(days):
            base = START + day * DAY
            samples = host.day(base, every=1 if day in full_rate or not quick else 12)
            # One batch per 10 simulated minutes; the writer batches heartbeats likewise.
            for chunk in range(0, len(samples), 120):
                storage.write_batch([(seq, s) for s in samples[chunk : chunk + 120]], {})
            now[0] = base + DAY
            await hist.run_once(force=True)
            if day + 1 in marks:
                row = (
                    day + 1,
                    count(storage, "metrics"),
                    count(storage, "metrics_1m"),
                    count(storage, "metrics_1h"),
                    file_bytes(path),
                )
                table.append(row)
                elapsed = time.perf_counter() - started
                print(f"  day {day + 1:>3}: {mb(row[4])}  ({elapsed:.0f} s)", file=sys.stderr)
    finally:
        storage.close()
    return table, seq


async def many_nodes_day(path: Path, nodes: int) -> int:
    """``nodes`` nodes × 1 day of raw samples, written interleaved as a fleet sends them."""
    storage = Storage.open(path)
    hosts = [Host(100 + i) for i in range(nodes)]
    seqs = [storage.insert_node(f"n{i}", f"node-{i:03d}", {}, "x", START).seq for i in range(nodes)]
    try:
        days = [host.day(START) for host in hosts]
        for chunk in range(0, int(DAY / INTERVAL), 12):  # one batch per simulated minute
            batch = [
                (seq, day[i])
                for i in range(chunk, chunk + 12)
                for seq, day in zip(seqs, days, strict=True)
            ]
            storage.write_batch(batch, {})
        del days
        hist = History(Database(storage), Retention(), clock=lambda: START + DAY)
        await hist.run_once(force=True)
    finally:
        storage.close()
    return seqs[nodes // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="60 s samples for days 9 to 357 (same end state), 50 nodes in the fleet database",
    )
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--nodes", type=int, default=None, help="fleet database size (default 200)")
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    args = ap.parse_args(argv)
    nodes = args.nodes or (50 if args.quick else 200)
    work = Path(tempfile.mkdtemp(prefix="storage_year-", dir=args.dir))
    t0 = time.perf_counter()
    try:
        print(f"one node, {INTERVAL:g} s samples, {args.days} simulated days ...", file=sys.stderr)
        sizes, seq = trio.run(one_node_year, work / "year.db", args.days, args.quick)
        year_time = time.perf_counter() - t0
        print(f"{nodes} nodes x 1 day raw ...", file=sys.stderr)
        t1 = time.perf_counter()
        fleet_seq = trio.run(many_nodes_day, work / "fleet.db", nodes)
        fleet_time = time.perf_counter() - t1
        end = START + args.days * DAY
        queries = [
            (f"1 node, {args.days} days", work / "year.db", seq, end),
            (f"{nodes} nodes, 1 day each", work / "fleet.db", fleet_seq, START + DAY),
        ]
        timings = [
            (name, step, *time_query(p, s, step, u))
            for name, p, s, u in queries
            for step in ("1m", "raw")
        ]
        fleet_size = file_bytes(work / "fleet.db")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    keep = Retention()
    print(
        f"\nRetention: raw {keep.raw / 3600:g} h, 1-minute {keep.minute / DAY:g} d, "
        f"1-hour {keep.hour / DAY:g} d; one node sampled every {INTERVAL:g} s"
    )
    print(f"\n{'day':>5} {'raw rows':>9} {'1m rows':>8} {'1h rows':>8} {'file size':>11}")
    for day, raw, m, h, size in sizes:
        print(f"{day:>5} {raw:>9} {m:>8} {h:>8} {mb(size):>11}")
    steady = [s for s in sizes if s[0] == 8]
    if steady and sizes[-1][0] > 8:
        growth = (sizes[-1][4] - steady[0][4]) / (sizes[-1][0] - 8)
        print(f"\nafter day 8 the file grows {growth / 1e3:.1f} kB/day (1-hour rollups only)")
    if args.quick:
        print("(--quick: days 9 to 357 sampled every 60 s; the end state has the same size)")
    print(
        f"\n{nodes}-node database, 1 day raw + rollups: {mb(fleet_size)} "
        f"({mb(fleet_size / nodes)} per node)"
    )
    print(f"\n{'24 h query of one node':<26} {'step':>4} {'points':>7} {'cold':>9} {'warm':>9}")
    for name, step, cold, warm, points in timings:
        print(f"{name:<26} {step:>4} {points:>7} {cold:>7.1f}ms {warm:>7.1f}ms")
    print(f"\nbuilt in {year_time:.0f} s (year) + {fleet_time:.0f} s (fleet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
