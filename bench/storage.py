"""Storage: database size per node per day, and the time of a 24 h history query.

Writes ``--days`` of 5-second samples for ``--nodes`` nodes straight through
``servermgr.core.storage.Storage.write_batch`` (one transaction per
timestamp holding every node's sample, as Core's writer batches them; the
samples come from the fleet simulator's generator), then computes the
1-minute and 1-hour rollups with ``core.history`` as Core's History task
would. Reports the file size (WAL checkpointed) per node per simulated day,
raw alone and with rollups, per table when SQLite has ``dbstat``.

Then times a 24 h query of one node, two ways:

- ``raw``: ``Storage.query_metrics`` over the raw rows (17,280 at 5 s);
- ``1m``: ``history.query(step="1m")``, which is what
  ``GET /api/v1/nodes/{id}/metrics?since=24h`` reads (``rollup.choose_step``
  picks 1-minute rollups for spans over 6 h): 1,440 rows;

each cold (a fresh process opening the file: with the file's pages dropped
from the page cache by ``posix_fadvise(DONTNEED)`` -- this file only, nothing
else on the machine is touched -- and without) and warm (same connection,
median of repeats). Last, the same 24 h through a real Core serving the file:
``GET /api/v1/nodes/NODE/metrics`` (JSON encoding and HTTP included).

Last, what a damaged-file check and a backup cost on that file: Core's start
(``Storage.open``, which runs SQLite's ``quick_check`` over the whole file)
cold and warm, and ``servermgr core backup`` (``core.dbfile.backup``).

bench/storage_year.py (another benchmark) covers a year with rollups and
retention; this one covers a day in detail.

Examples::

    python bench/storage.py                 # 50 nodes x 1 day
    python bench/storage.py --nodes 200
    python bench/storage.py --quick         # 5 nodes x 1 day
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
from fleet_sim import SampleGen

DAY = 86400.0


def fill(db: Path, nodes: int, days: float, interval: float) -> dict[str, Any]:
    from servermgr.core import history
    from servermgr.core.rollup import HOUR, MINUTE
    from servermgr.core.storage import Storage

    storage = Storage.open(db)
    try:
        seqs = [
            storage.insert_node(f"n{i:04x}", f"node-{i:04d}", {}, "0" * 64, 0.0).seq
            for i in range(nodes)
        ]
        gens = [SampleGen(random.Random(i)) for i in range(nodes)]
        end = float(int(time.time()) // 3600 * 3600)
        start = end - days * DAY
        steps = int(days * DAY / interval)
        t0 = time.perf_counter()
        gen_s = 0.0
        for k in range(steps):
            ts = start + k * interval
            g0 = time.perf_counter()
            batch = [
                (seq, gen.sample(ts + random.random() * 0.5))
                for seq, gen in zip(seqs, gens, strict=True)
            ]
            gen_s += time.perf_counter() - g0
            storage.write_batch(batch, {seqs[0]: ts})
        write_s = time.perf_counter() - t0 - gen_s
        storage.checkpoint()
        raw_size, _ = storage.file_size()
        raw_tables = table_sizes(db)
        t0 = time.perf_counter()
        for level in (MINUTE, HOUR):
            while True:
                work = history.plan(storage, level, 5000)
                if not work.seen:
                    break
                history.apply(storage, work)
        rollup_s = time.perf_counter() - t0
        storage.checkpoint()
        size, free = storage.file_size()
        tables = table_sizes(db)
    finally:
        storage.close()
    rows = nodes * steps
    return {
        "nodes": nodes,
        "days": days,
        "rows": rows,
        "write_s": write_s,
        "rows_per_s": rows / write_s,
        "rollup_s": rollup_s,
        "raw_size": raw_size,
        "size": size,
        "free": free,
        "tables": tables,
        "raw_tables": raw_tables,
        "until": end,
        "seq": seqs[len(seqs) // 2],
    }


def table_sizes(db: Path) -> dict[str, int]:
    """Bytes per table (indexes included) from SQLite's dbstat, when compiled in."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT coalesce(m.tbl_name, s.name), sum(s.pgsize) FROM dbstat s "
            "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY 1"
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {name: int(size) for name, size in rows}


def drop_cache(path: Path) -> None:
    """Evict this file's pages (and its WAL's) from the page cache."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def check_and_backup(db: Path, tmp: Path) -> dict[str, Any]:
    """Seconds for Core's start-up check (cold, warm) and for an online backup of ``db``."""
    from servermgr.core import dbfile
    from servermgr.core.storage import Storage

    out: dict[str, Any] = {"size": db.stat().st_size}
    for name, drop in (("open_cold_s", True), ("open_warm_s", False)):
        if drop:
            drop_cache(db)
        t0 = time.perf_counter()
        Storage.open(db).close()
        out[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = dbfile.backup(db, tmp / "backup.db")
    out["backup_s"] = time.perf_counter() - t0
    out["backup_size"] = report.bytes
    return out


def query_once(db: Path, seq: int, until: float, step: str, repeat: int) -> dict[str, Any]:
    """Open the file, run the 24 h query ``repeat`` times: (open s, first s, warm median s)."""
    from servermgr.core import history
    from servermgr.core.storage import Storage

    t0 = time.perf_counter()
    storage = Storage.open(db)
    opened = time.perf_counter() - t0
    try:
        times = []
        n = 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            if step == "raw":
                rows = storage.query_metrics(seq, until - DAY, until, limit=100_000)
            else:
                rows = history.query(storage, step, seq, until - DAY, until, 10_000)
            times.append(time.perf_counter() - t0)
            n = len(rows)
    finally:
        storage.close()
    return {
        "open_s": opened,
        "first_s": times[0],
        "warm_s": benchlib.median(times[1:]) if len(times) > 1 else float("nan"),
        "rows": n,
    }


def cold(db: Path, seq: int, until: float, step: str, drop: bool) -> dict[str, Any]:
    if drop:
        drop_cache(db)
    out = subprocess.run(
        [sys.executable, __file__, "--query-child", json.dumps([str(db), seq, until, step])],
        check=True,
        capture_output=True,
        text=True,
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def over_http(db: Path, tmp: Path, node: str, until: float, repeat: int) -> dict[str, Any]:
    """``GET /api/v1/nodes/NODE/metrics`` for 24 h from a real Core serving ``db``."""
    with benchlib.Procs() as procs:
        core = benchlib.start_core(procs, tmp, sqlite_path=db, log_level="warning")
        params = {"since": str(until - DAY), "until": str(until)}
        times = []
        with core.client() as http:
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                resp = http.get(f"/api/v1/nodes/{node}/metrics", params=params)
                times.append(time.perf_counter() - t0)
                resp.raise_for_status()
        doc = resp.json()
    return {
        "first_s": times[0],
        "warm_s": benchlib.median(times[1:]),
        "rows": len(doc["samples"]),
        "step": doc["step"],
        "bytes": len(resp.content),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query-child", help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=50, help="nodes (50)")
    parser.add_argument("--days", type=float, default=1.0, help="simulated days (1)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds per sample (5)")
    parser.add_argument("--repeat", type=int, default=20, help="warm queries (20)")
    parser.add_argument("--cold", type=int, default=5, help="cold queries, each a process (5)")
    parser.add_argument("--quick", action="store_true", help="5 nodes x 1 day, fewer queries")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.query_child:
        db, seq, until, step = json.loads(args.query_child)
        print(json.dumps(query_once(Path(db), seq, until, step, 1)))
        return 0
    if args.quick:
        args.nodes, args.repeat, args.cold = 5, 5, 2
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    with benchlib.workdir("storage-") as tmp:
        db = tmp / "bench.db"
        print(f"writing {args.nodes} nodes x {args.days:g} days ...", flush=True)
        doc = fill(db, args.nodes, args.days, args.interval)
        node_days = args.nodes * args.days
        load = benchlib.loadavg()
        queries: dict[str, dict[str, Any]] = {}
        for step in ("raw", "1m"):
            dropped = [cold(db, doc["seq"], doc["until"], step, True) for _ in range(args.cold)]
            fresh = [cold(db, doc["seq"], doc["until"], step, False) for _ in range(args.cold)]
            warm = query_once(db, doc["seq"], doc["until"], step, args.repeat + 1)
            queries[step] = {"dropped": dropped, "fresh": fresh, "warm": warm}
        node = f"node-{doc['seq'] - 1:04d}"
        api = over_http(db, tmp, node, doc["until"], args.repeat)
        checks = check_and_backup(db, tmp)
    benchlib.print_table(
        "Database size (5 s samples)",
        [
            "nodes",
            "days",
            "rows",
            "write rows/s",
            "raw MiB",
            "raw KiB/node/day",
            "with rollups MiB",
            "KiB/node/day",
            "rollup s",
        ],
        [
            (
                args.nodes,
                f"{args.days:g}",
                doc["rows"],
                f"{doc['rows_per_s']:.0f}",
                benchlib.mib(doc["raw_size"]),
                f"{doc['raw_size'] / node_days / 1024:.0f}",
                benchlib.mib(doc["size"]),
                f"{doc['size'] / node_days / 1024:.0f}",
                f"{doc['rollup_s']:.1f}",
            )
        ],
    )
    if doc["tables"]:
        benchlib.print_table(
            "Bytes per table (dbstat), per node per day",
            ["table", "KiB/node/day"],
            [(t, f"{b / node_days / 1024:.1f}") for t, b in sorted(doc["tables"].items())],
        )
    rows = []
    for step, q in queries.items():
        rows.append(
            (
                step,
                q["warm"]["rows"],
                load,
                benchlib.ms(benchlib.median([c["first_s"] for c in q["dropped"]])),
                benchlib.ms(benchlib.median([c["open_s"] for c in q["dropped"]])),
                benchlib.ms(benchlib.median([c["first_s"] for c in q["fresh"]])),
                benchlib.ms(q["warm"]["first_s"]),
                benchlib.ms(q["warm"]["warm_s"]),
            )
        )
    benchlib.print_table(
        f"24 h query of one node ({args.nodes} nodes in a {benchlib.mib(doc['size'])} MiB file)",
        [
            "step",
            "rows",
            "load before",
            "cold, pages dropped ms",
            "open ms",
            "cold, fresh process ms",
            "first in process ms",
            "warm median ms",
        ],
        rows,
    )
    benchlib.print_table(
        "The same 24 h over HTTP: GET /api/v1/nodes/NODE/metrics?since=..&until=.. (real Core)",
        ["step Core chose", "rows", "bytes", "first ms", "warm median ms"],
        [
            (
                api["step"],
                api["rows"],
                api["bytes"],
                benchlib.ms(api["first_s"]),
                benchlib.ms(api["warm_s"]),
            )
        ],
    )
    benchlib.print_table(
        "Start-up check and backup of that file",
        [
            "file MiB",
            "Storage.open, pages dropped s",
            "Storage.open, warm s",
            "core backup s",
            "backup MiB",
        ],
        [
            (
                benchlib.mib(checks["size"]),
                f"{checks['open_cold_s']:.2f}",
                f"{checks['open_warm_s']:.2f}",
                f"{checks['backup_s']:.2f}",
                benchlib.mib(checks["backup_size"]),
            )
        ],
    )
    benchlib.write_json(
        args.json,
        {
            "machine": benchlib.machine(),
            "fill": doc,
            "queries": queries,
            "api": api,
            "load": load,
            "checks": checks,
        },
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
