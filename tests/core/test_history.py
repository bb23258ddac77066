"""History that lasts: rollup maths, late samples, retention, the size cap, step choice.

Real SQLite files and fixed timestamps; the History pass is driven directly
(``run_once(force=True)``) with an injected clock, except in the outage test,
where Core's own background task does the work.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from servermgr.common import proto
from servermgr.common.config import parse_config
from servermgr.common.config_fields import parse_size
from servermgr.common.errors import ConfigError
from servermgr.core import history, migrations, rollup
from servermgr.core.app import Core
from servermgr.core.history import History
from servermgr.core.rollup import HOUR, MINUTE, Retention
from servermgr.core.storage import METRIC_FIELDS, Storage
from servermgr.core.writer import Database
from servermgr.node.agent import Backlog
from tests.support import StartCore, StartNode, core_config, make_sample, stored_stamps, wait_for

T0 = 1_699_999_200  # a whole hour (UTC)
DAY = 86400


def add_node(storage: Storage, name: str = "web-1") -> int:
    return storage.insert_node(f"id-{name}", name, {}, "h", float(T0)).seq


def cpu(point: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A rollup point's CPU: (avg, min, max)."""
    return point["cpu_percent"], point["cpu_percent_min"], point["cpu_percent_max"]


def write(storage: Storage, seq: int, stamps: list[float], *, cpu: float = 10.0, **kw: Any) -> None:
    for i in range(0, len(stamps), 500):
        batch = [(seq, make_sample(t, cpu_percent=cpu, **kw)) for t in stamps[i : i + 500]]
        storage.write_batch(batch, {})


def every(start: float, end: float, step: float) -> list[float]:
    return [start + i * step for i in range(int((end - start) / step))]


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


def make_history(storage: Storage, now: list[float], **kw: Any) -> History:
    return History(Database(storage), Retention(**kw), clock=lambda: now[0])


# --- pure maths -----------------------------------------------------------------


def test_bucket_is_the_exact_floor() -> None:
    assert rollup.bucket(T0 + 59.999999, MINUTE) == T0
    assert rollup.bucket(T0 + 60, MINUTE) == T0 + 60
    assert rollup.bucket(T0 + HOUR - 0.001, HOUR) == T0
    assert rollup.bucket(math.nextafter(T0 + 60.0, 0), MINUTE) == T0


def test_from_stats_scales_values_and_keeps_unknowns() -> None:
    scales = [rollup.SCALE[f] for f in ("cpu_percent", "procs", "swap_percent")]
    got = rollup.from_stats(3, [15.0, 10.0, 20.0, 101.0, 100, 102, None, None, None], scales)
    assert got == (3, 1500, 1000, 2000, 1010, 1000, 1020, None, None, None)
    with pytest.raises(ValueError, match="expected 9 stats"):
        rollup.from_stats(1, [1.0], scales)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(0, 100)),
            st.one_of(st.none(), st.integers(0, 2**40)),
            st.floats(0, 1e9),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_minute_rollup_is_avg_min_max_of_its_samples(
    values: list[tuple[float | None, int | None, float]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage.open(Path(tmp) / "h.db")
        try:
            seq = add_node(storage)
            batch = [
                (seq, make_sample(T0 + i * 5, cpu_percent=cpu, mem_used=mem, net_rx_bps=rx))
                for i, (cpu, mem, rx) in enumerate(values)
            ]
            storage.write_batch(batch, {})
            history.apply(storage, history.plan(storage, MINUTE, 10))
            (got,) = history.query(storage, "1m", seq, T0, T0, 10)
        finally:
            storage.close()
    for k, (name, scale) in enumerate((("cpu_percent", 100), ("mem_used", 1), ("net_rx_bps", 1))):
        known = [v[k] for v in values if v[k] is not None]
        if not known:
            assert got[name] is got[f"{name}_min"] is got[f"{name}_max"] is None
            continue
        assert got[name] == pytest.approx(sum(known) / len(known), abs=0.5 / scale + 1e-9)
        assert got[f"{name}_min"] == pytest.approx(min(known), abs=0.5 / scale)
        assert got[f"{name}_max"] == pytest.approx(max(known), abs=0.5 / scale)


def test_merge_weights_averages_by_sample_count() -> None:
    a = (12, 1000, 500, 1500)
    b = (4, 5000, 4000, 9000)
    assert rollup.merge([a, b]) == (16, 2000, 500, 9000)
    assert rollup.merge([a, (3, None, None, None)]) == (15, 1000, 500, 1500)


def test_values_that_cannot_be_stored_become_null() -> None:
    assert rollup.encode(math.inf, 1) is None
    assert rollup.encode(math.nan, 100) is None
    assert rollup.encode(1e30, 1) is None
    assert rollup.encode(12.345, 100) in (1234, 1235)


def test_every_metric_has_a_scale_and_a_rollup_column(storage: Storage, db_path: Path) -> None:
    assert set(rollup.SCALE) == set(METRIC_FIELDS)
    for table in ("metrics_1m", "metrics_1h"):
        cols = [r[1] for r in rows(db_path, f"PRAGMA table_info({table})")]
        assert cols == ["node", "ts", *history.ROLLUP_COLUMNS]


@pytest.mark.parametrize(
    ("span", "requested", "expected"),
    [
        (600, "auto", "raw"),
        (6 * HOUR, "auto", "raw"),
        (6 * HOUR + 1, "auto", "1m"),
        (DAY, "auto", "1m"),
        (7 * DAY - 1, "auto", "1m"),
        (7 * DAY, "auto", "1h"),
        (365 * DAY, "auto", "1h"),
        (365 * DAY, "raw", "raw"),
        (600, "1h", "1h"),
    ],
)
def test_step_follows_the_range(span: float, requested: str, expected: str) -> None:
    now = float(T0)
    step = rollup.choose_step(now - span, now, now=now, retention=Retention(), requested=requested)
    assert step == expected


def test_step_skips_resolutions_already_deleted_at_that_age() -> None:
    now, keep = float(T0), Retention()
    # One hour, two days ago: raw is gone (24 h), minutes are not (7 d).
    assert rollup.choose_step(now - 2 * DAY, now - 2 * DAY + HOUR, now=now, retention=keep) == "1m"
    assert rollup.choose_step(now - 9 * DAY, now - 9 * DAY + HOUR, now=now, retention=keep) == "1h"
    with pytest.raises(ValueError, match="bad step '5m'"):
        rollup.choose_step(now - 60, now, now=now, retention=keep, requested="5m")


def test_runs_group_near_buckets() -> None:
    assert rollup.runs([300, 0, 60, 5000, 120], max_gap=600) == [(0, 300), (5000, 5000)]
    assert rollup.runs([], max_gap=60) == []


# --- config ---------------------------------------------------------------------


def test_storage_retention_keys_and_their_errors(tmp_path: Path) -> None:
    src = tmp_path / "s.toml"
    cfg = parse_config(
        '[storage]\nretention_raw = "48h"\nretention_1m = "30d"\nretention_1h = 31536000\n'
        'max_db_size = "1GiB"\n',
        source=src,
        base_dir=tmp_path,
    ).storage
    assert (cfg.retention_raw, cfg.retention_1m, cfg.retention_1h) == (2 * DAY, 30 * DAY, 365 * DAY)
    assert cfg.max_db_size == 2**30
    default = parse_config("", source=None, base_dir=tmp_path).storage
    assert (default.retention_raw, default.retention_1m) == (DAY, 7 * DAY)
    assert default.max_db_size is None
    for text, key, reason in [
        ('retention_raw = "soon"', "storage.retention_raw", "bad duration 'soon'"),
        ("retention_1m = true", "storage.retention_1m", "must be a duration"),
        ('retention_raw = "60d"', "storage.retention_1m", "7d by default, shorter than"),
        ('max_db_size = "lots"', "storage.max_db_size", "bad size 'lots'"),
        ("max_db_size = 1000", "storage.max_db_size", "at least 1MiB"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(f"[storage]\n{text}\n", source=src, base_dir=tmp_path)
        assert info.value.path == str(src)
        assert info.value.key == key
        assert reason in info.value.reason


def test_parse_size() -> None:
    assert parse_size("1GiB") == 2**30
    assert parse_size("500 MB") == 500_000_000
    assert parse_size("1.5KiB") == 1536
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError, match="bad size"):
        parse_size("-1MB")


# --- rollups on a real file -------------------------------------------------------


async def test_rollups_hold_avg_min_max_of_the_samples(storage: Storage) -> None:
    seq = add_node(storage)
    stamps = every(T0, T0 + 2 * HOUR, 5)
    # cpu cycles 0, 5, ..., 55 within each minute: avg 27.5, min 0, max 55.
    for t in stamps:
        storage.write_batch(
            [
                (
                    seq,
                    make_sample(
                        t,
                        cpu_percent=float((t - T0) % 60),
                        procs=int(t) % 7,
                        swap_percent=None,
                        disk_read_bps=1000.5,
                    ),
                )
            ],
            {},
        )
    report = await make_history(storage, [T0 + 2 * HOUR]).run_once(force=True)
    assert (report.minutes, report.hours) == (120, 2)

    minutes = history.query(storage, "1m", seq, T0, T0 + 2 * HOUR, 10000)
    assert [m["ts"] for m in minutes] == list(range(T0, T0 + 2 * HOUR, 60))
    for m in minutes:
        assert (m["cpu_percent"], m["cpu_percent_min"], m["cpu_percent_max"]) == (27.5, 0.0, 55.0)
        assert m["mem_used"] == m["mem_used_min"] == m["mem_used_max"] == 2_000_000_000
        assert m["disk_read_bps"] == 1000  # rates kept to 1 B/s
        assert m["swap_percent"] is None
    procs = [[int(t) % 7 for t in stamps if m["ts"] <= t < m["ts"] + 60] for m in minutes]
    assert [m["procs"] for m in minutes] == [round(sum(p) / 12, 1) for p in procs]
    assert [(m["procs_min"], m["procs_max"]) for m in minutes] == [(min(p), max(p)) for p in procs]

    hours = history.query(storage, "1h", seq, T0, T0 + 2 * HOUR, 10000)
    assert [h["ts"] for h in hours] == [T0, T0 + HOUR]
    assert [(h["cpu_percent"], h["cpu_percent_min"], h["cpu_percent_max"]) for h in hours] == [
        (27.5, 0.0, 55.0)
    ] * 2
    counts = rows(storage.path, "SELECT n FROM metrics_1h ORDER BY ts")
    assert counts == [(720,), (720,)]
    assert rows(storage.path, "SELECT count(*) FROM rollup_dirty") == [(0,)]


async def test_late_samples_fix_their_minute_and_hour(storage: Storage) -> None:
    seq = add_node(storage)
    hist = make_history(storage, [T0 + HOUR])
    # An outage: the first half of each minute of the first 10 minutes arrives now...
    on_time = [t for t in every(T0, T0 + 600, 5) if (t - T0) % 60 < 30]
    write(storage, seq, on_time, cpu=10.0)
    await hist.run_once(force=True)
    first = history.query(storage, "1m", seq, T0, T0 + 600, 100)
    assert [(m["cpu_percent"], m["cpu_percent_max"]) for m in first] == [(10.0, 10.0)] * 10
    (hour,) = history.query(storage, "1h", seq, T0, T0, 10)
    assert hour["cpu_percent"] == 10.0

    # ...the rest is backfilled later with its original timestamps (and one repeat).
    late = [t for t in every(T0, T0 + 600, 5) if (t - T0) % 60 >= 30]
    write(storage, seq, late, cpu=30.0)
    write(storage, seq, on_time[:3], cpu=99.0)  # re-sent: stored once, ignored
    assert storage.count_metrics(seq) == 120
    assert [r["ts"] for r in storage.query_metrics(seq, T0, T0 + 600)] == every(T0, T0 + 600, 5)
    await hist.run_once(force=True)
    fixed = history.query(storage, "1m", seq, T0, T0 + 600, 100)
    assert [(m["cpu_percent"], m["cpu_percent_min"], m["cpu_percent_max"]) for m in fixed] == [
        (20.0, 10.0, 30.0)
    ] * 10
    (hour,) = history.query(storage, "1h", seq, T0, T0, 10)
    assert (hour["cpu_percent"], hour["cpu_percent_min"], hour["cpu_percent_max"]) == (
        20.0,
        10.0,
        30.0,
    )
    assert rows(storage.path, "SELECT n FROM metrics_1h") == [(120,)]


async def test_a_pass_rolls_each_minute_once_it_has_closed(storage: Storage) -> None:
    seq = add_node(storage)
    now = [T0 + 150.0]  # in the third minute
    hist = make_history(storage, now)
    write(storage, seq, every(T0, T0 + 155, 5))
    assert await hist.roll(MINUTE) == 2  # the open minute waits...
    assert [m["ts"] for m in history.query(storage, "1m", seq, T0, T0 + 180, 10)] == [
        T0,
        T0 + 60,
    ]
    write(storage, seq, [T0 + 155.0, T0 + 160.0])
    assert await hist.roll(MINUTE) == 0  # ...however many samples it gets
    now[0] = T0 + 181.0
    assert await hist.roll(MINUTE) == 1  # ...until it closes: then once, with them all
    (third,) = history.query(storage, "1m", seq, T0 + 120, T0 + 120, 10)
    assert rows(storage.path, "SELECT n FROM metrics_1m WHERE ts = ?", T0 + 120) == [(9,)]
    assert third["cpu_percent"] == 10.0
    write(storage, seq, [T0 + 100.0 + 0.5])  # late, into a closed minute: rolled again
    assert await hist.roll(MINUTE) == 1


async def test_a_sample_landing_during_a_pass_is_not_forgotten(storage: Storage) -> None:
    seq = add_node(storage)
    write(storage, seq, [T0, T0 + 5], cpu=10.0)
    work = history.plan(storage, MINUTE, 100)
    write(storage, seq, [T0 + 10], cpu=40.0)  # after the read, before the write
    history.apply(storage, work)
    assert rows(storage.path, "SELECT n FROM metrics_1m") == [(2,)]
    assert rows(storage.path, "SELECT level, bucket FROM rollup_dirty ORDER BY level") == [
        (MINUTE, T0),
        (HOUR, T0),
    ]
    history.apply(storage, history.plan(storage, MINUTE, 100))
    (m,) = history.query(storage, "1m", seq, T0, T0, 10)
    assert (m["cpu_percent"], m["cpu_percent_max"]) == (20.0, 40.0)


async def test_upgraded_database_gets_rollups_of_its_old_history(db_path: Path) -> None:
    db_path.parent.mkdir()
    conn = sqlite3.connect(db_path, isolation_level=None)
    migrations.migrate(conn, "old.db", migrations.MIGRATIONS[:2])
    conn.execute("INSERT INTO nodes VALUES (1, 'id-a', 'a', '{}', 'h', 0, NULL, NULL, NULL)")
    conn.executemany("INSERT INTO metrics (node, ts, cpu) VALUES (1, ?, ?)", [(T0, 1), (T0 + 1, 3)])
    conn.close()
    storage = Storage.open(db_path)
    try:
        await make_history(storage, [T0 + 60]).run_once(force=True)
        (m,) = history.query(storage, "1m", 1, T0, T0, 10)
        assert cpu(m) == (2.0, 1.0, 3.0)  # the column of version 1 is renamed by version 8
    finally:
        storage.close()


def test_removing_a_node_removes_its_rollups(storage: Storage) -> None:
    seq = add_node(storage)
    write(storage, seq, every(T0, T0 + 120, 5))
    history.apply(storage, history.plan(storage, MINUTE, 100))
    history.apply(storage, history.plan(storage, HOUR, 100))
    assert storage.delete_node("id-web-1")
    for table in ("metrics_1m", "metrics_1h", "rollup_dirty"):
        assert rows(storage.path, f"SELECT count(*) FROM {table}") == [(0,)]


# --- retention and the size cap --------------------------------------------------


async def test_retention_removes_exactly_what_is_too_old(storage: Storage) -> None:
    seq = add_node(storage)
    other = add_node(storage, "web-2")
    end = T0 + 3 * DAY
    stamps = every(T0, end, 30)
    write(storage, seq, stamps)
    write(storage, other, stamps[-10:])
    now = [float(end)]
    hist = make_history(storage, now)
    hist._delete_batch = 1000  # several small transactions
    report = await hist.run_once(force=True)
    assert report.deleted == {"raw": len([t for t in stamps if t < end - DAY])}
    kept = [r["ts"] for r in storage.query_metrics(seq, 0, end, 10**6)]
    assert kept == [t for t in stamps if t >= end - DAY]
    assert storage.count_metrics(other) == 10
    assert rows(storage.path, "SELECT count(*) FROM metrics_1m WHERE node = ?", seq) == [
        (3 * 1440,)
    ]
    assert rows(storage.path, "SELECT count(*) FROM metrics_1h WHERE node = ?", seq) == [(72,)]

    now[0] = T0 + 7.5 * DAY  # 1-minute rows older than 7 days go; hours stay
    await hist.run_once(force=True)
    assert storage.count_metrics(seq) == 0
    (oldest,) = rows(storage.path, "SELECT min(ts) FROM metrics_1m WHERE node = ?", seq)[0]
    assert oldest == T0 + DAY // 2
    assert rows(storage.path, "SELECT count(*) FROM metrics_1h WHERE node = ?", seq) == [(72,)]


async def test_raw_rows_wait_for_their_rollup_before_retention(storage: Storage) -> None:
    seq = add_node(storage)
    now = [float(T0 + 3 * DAY)]
    hist = make_history(storage, now)
    write(storage, seq, [T0 + 10, T0 + 20])  # backfilled, already past 24 h
    assert await hist.retain() == {}
    assert storage.count_metrics(seq) == 2
    await hist.run_once(force=True)
    assert storage.count_metrics(seq) == 0
    assert rows(storage.path, "SELECT ts, n FROM metrics_1m") == [(T0, 2)]


async def test_size_cap_drops_oldest_raw_then_oldest_minutes(storage: Storage) -> None:
    a, b = add_node(storage, "a"), add_node(storage, "b")
    end = T0 + DAY
    for seq in (a, b):
        write(storage, seq, every(T0, end, 5))
    now = [float(end)]
    hist = make_history(storage, now, raw=30 * DAY, minute=30 * DAY, max_bytes=None)
    await hist.run_once(force=True)
    full, _ = storage.file_size()
    minutes = rows(storage.path, "SELECT count(*) FROM metrics_1m")

    cap = full // 2
    hist.retention = Retention(raw=30 * DAY, minute=30 * DAY, max_bytes=cap)
    report = await hist.run_once(force=True)
    assert set(report.dropped) == {"raw"}
    assert storage.file_size()[0] <= cap
    assert storage.path.stat().st_size <= cap  # the WAL was checkpointed into a smaller file
    assert rows(storage.path, "SELECT count(*) FROM metrics_1m") == minutes
    for seq in (a, b):  # the newest raw samples are the ones kept, for both nodes
        left = [r["ts"] for r in storage.query_metrics(seq, 0, end, 10**6)]
        assert left == every(left[0], end, 5)
        assert left[0] > T0 + DAY / 4

    # Raw is 3 MB of the 3.6 MB here, minutes 0.5 MB, hours 12 kB.
    hist.retention = Retention(raw=30 * DAY, minute=30 * DAY, max_bytes=350_000)
    report = await hist.run_once(force=True)
    assert storage.file_size()[0] <= 350_000
    assert report.dropped["1m"] > 0
    assert storage.count_metrics(a) == storage.count_metrics(b) == 0
    (oldest_minute,) = rows(storage.path, "SELECT min(ts) FROM metrics_1m")[0]
    assert oldest_minute > T0
    assert rows(storage.path, "SELECT count(*) FROM metrics_1h") == [(48,)]


# --- the metrics route ------------------------------------------------------------


async def test_metrics_route_picks_the_resolution_by_range(core: Core) -> None:
    now = core.api.clock()
    node, _ = await core.registry.register("node-01", {})
    seq = node.seq
    stamps = every(now - 20 * HOUR, now, 30)
    await core.db.write(storage_write, core.db.storage, seq, stamps)
    await History(core.db, core.api.retention).run_once(force=True)
    headers = {"Authorization": f"Bearer {core.key.value}"}
    async with httpx.AsyncClient(base_url=core.url, headers=headers, timeout=5) as api:

        async def get(**params: str) -> dict[str, Any]:
            resp = await api.get("/api/v1/nodes/node-01/metrics", params=params)
            assert resp.status_code == 200, resp.text
            doc: dict[str, Any] = resp.json()
            return doc

        recent = await get(since="1h")
        assert recent["step"] == "raw"
        assert 119 <= len(recent["samples"]) <= 120  # the clock moved on a little
        assert "cpu_percent_min" not in recent["samples"][0]
        day = await get(since="24h")
        assert day["step"] == "1m"
        assert 20 * 60 <= len(day["samples"]) <= 20 * 60 + 1
        assert {"ts", "cpu_percent", "cpu_percent_min", "cpu_percent_max", "net_rx_bps_max"} <= set(
            day["samples"][0]
        )
        assert day["samples"][0]["cpu_percent"] == 10.0
        month = await get(since="30d")
        assert month["step"] == "1h"
        assert 20 <= len(month["samples"]) <= 21
        forced = await get(since="24h", step="raw", limit="50")
        assert forced["step"] == "raw"
        assert [s["ts"] for s in forced["samples"]] == stamps[-50:]
        resp = await api.get("/api/v1/nodes/node-01/metrics", params={"step": "5m"})
        assert resp.status_code == 400
        assert "'5m'" in resp.json()["error"]["message"]


def storage_write(storage: Storage, seq: int, stamps: list[float]) -> None:
    write(storage, seq, stamps)


def test_ctl_metrics_shows_the_step_and_true_extremes_of_rollups() -> None:
    from io import StringIO

    from rich.console import Console

    from servermgr.ctl import render

    points = [
        {"ts": T0, "cpu_percent": 20.0, "cpu_percent_min": 5.0, "cpu_percent_max": 90.0},
        {"ts": T0 + 60, "cpu_percent": 30.0, "cpu_percent_min": 10.0, "cpu_percent_max": 40.0},
    ]
    out = StringIO()
    Console(file=out, width=200).print(
        render.metrics_table({"name": "web-1", "step": "1m", "samples": points})
    )
    text = out.getvalue()
    assert "web-1: 2 1-minute averages from" in text
    cpu = next(line.strip() for line in text.splitlines() if line.strip().startswith("CPU %"))
    assert cpu.split()[2:6] == ["5%", "25%", "90%", "30%"]


# --- backfill after an outage -------------------------------------------------------


def test_backlog_resends_everything_unacked_oldest_first_in_heartbeats_of_500() -> None:
    backlog = Backlog(limit=2000)
    for i in range(2100):
        backlog.add(make_sample(T0 + 5 * i))
    assert backlog.dropped == 100
    first = backlog.take()
    assert first is not None
    assert len(first.samples) == proto.MAX_SAMPLES_PER_HEARTBEAT
    backlog.requeue()  # the connection dropped before the ack
    sent: list[float] = []
    while (hb := backlog.take()) is not None:
        assert len(hb.samples) <= proto.MAX_SAMPLES_PER_HEARTBEAT
        sent += [s.ts for s in hb.samples]
        backlog.ack(hb.seq)
    assert sent == [T0 + 5 * i for i in range(100, 2100)]
    assert len(backlog) == 0


async def test_core_outage_leaves_no_gap_in_samples_or_rollups(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        first = await start_core()
        node = await start_node(first.core, "node-01")
        path = first.core.config.storage.sqlite_path
        await wait_for(lambda: first.core.registry.by_ref("node-01") is not None)
        row = first.core.registry.by_ref("node-01")
        assert row is not None
        count = "SELECT count(*) FROM metrics WHERE node = ?"
        await wait_for(lambda: rows(path, count, row.seq)[0][0] >= 2, limit=5)
        first.stop.set()
        await first.done.wait()
        # Core down while the node makes several samples.
        down = len(node.collector.made)
        await wait_for(lambda: len(node.collector.made) >= down + 5, limit=10)

        cfg = core_config(tmp_path)
        cfg = dataclasses.replace(
            cfg, server=dataclasses.replace(cfg.server, listen_port=first.core.port)
        )
        second = await start_core(cfg)
        # Every sample made until a few after the restart is stored, once.
        restarted = len(node.collector.made)
        await wait_for(lambda: len(node.collector.made) >= restarted + 2, limit=10)
        made = list(node.collector.made)
        await wait_for(lambda: set(made) <= set(stored_stamps(path, row.seq)), limit=10)

        async def rolled_up() -> bool:
            # Core's passes leave the open minute until it closes: this one does all now.
            await History(second.core.db, second.core.api.retention).run_once(force=True)
            raw = rows(path, "SELECT count(*) FROM metrics WHERE node = ?", row.seq)[0][0]
            n = rows(path, "SELECT sum(n) FROM metrics_1m WHERE node = ?", row.seq)[0][0]
            return bool(n == raw)

        await wait_for(rolled_up, limit=10)

    stamps = stored_stamps(path, row.seq)
    assert len(stamps) == len(set(stamps))
    assert stamps[: len(made)] == made
    per_minute: dict[int, int] = {}
    for t in stamps:
        per_minute[rollup.bucket(t, MINUTE)] = per_minute.get(rollup.bucket(t, MINUTE), 0) + 1
    stored = dict(rows(path, "SELECT ts, n FROM metrics_1m WHERE node = ?", row.seq))
    assert stored == per_minute
