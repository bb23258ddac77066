"""Rollup maths: time buckets, stored values, merging, step choice (pure).

No I/O, no clocks: ``history`` reads rows, calls these, and writes the
results. SQLite computes each minute's count, avg, min and max in C (the GIL
is released, so ingest keeps running); ``from_stats`` turns them into a
stored rollup and ``merge`` makes hours from minutes. A rollup of one bucket
is a flat tuple ``(n, f1, f1_min, f1_max, f2, ...)`` in the column order of
the rollup tables, where ``n`` is how many samples the bucket holds.

Values are stored as scaled integers (``SCALE``: a percentage kept to
0.01 %, a load to 0.01, bytes and rates to 1): SQLite writes a small integer
in 1 to 4 bytes and a float always in 8, and a rollup row has 45 values.
That is most of what keeps a year of history per node in a few megabytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MINUTE = 60
HOUR = 3600
WIDTH = {"1m": MINUTE, "1h": HOUR}
STEPS = ("raw", "1m", "1h")

# Auto step: the finest resolution whose data covers the range and whose
# point count stays reasonable (6 h of 5 s samples: 4,320 points; < 7 days of
# minutes: < 10,080 points; a year of hours: 8,760 points).
RAW_MAX_SPAN = 6 * HOUR
MINUTE_MAX_SPAN = 7 * 86400

# Stored value = round(value * scale); read back as stored / scale. Every
# field of storage.METRIC_FIELDS needs one (history checks at import).
SCALE: dict[str, int] = {
    "cpu_percent": 100,
    "load1": 100,
    "load5": 100,
    "load15": 100,
    "mem_used": 1,
    "mem_total": 1,
    "mem_percent": 100,
    "swap_percent": 100,
    "disk_percent": 100,
    "disk_read_bps": 1,
    "disk_write_bps": 1,
    "net_rx_bps": 1,
    "net_tx_bps": 1,
    "uptime": 1,
    "procs": 10,
}
_MAX_STORED = 2**62

Value = float | int | None
Rollup = tuple[int | None, ...]


@dataclass(frozen=True)
class Retention:
    """How long each resolution is kept (seconds); ``max_bytes`` caps the file."""

    raw: float = 86400.0
    minute: float = 7 * 86400.0
    hour: float = 365 * 86400.0
    max_bytes: int | None = None

    def keeps(self, step: str) -> float:
        return {"raw": self.raw, "1m": self.minute, "1h": self.hour}[step]


def bucket(ts: float, width: int) -> int:
    """Start of the ``width``-second bucket holding ``ts`` (exact floor)."""
    return int(ts // width) * width


def encode(value: float, scale: int) -> int | None:
    """A value as its stored integer; None when it cannot be stored (inf, NaN, huge)."""
    if not math.isfinite(value):
        return None
    scaled = round(value * scale)
    return scaled if -_MAX_STORED < scaled < _MAX_STORED else None


def from_stats(n: int, stats: Sequence[Value], scales: Sequence[int]) -> Rollup:
    """A minute's rollup from ``n`` and each field's ``avg, min, max`` (SQLite computes them).

    ``stats`` holds three raw values per field, in field order; None stays None
    (a field unknown in every sample of the minute).
    """
    if len(stats) != 3 * len(scales):
        raise ValueError(f"expected {3 * len(scales)} stats, got {len(stats)}")
    out: list[int | None] = [n]
    for i, v in enumerate(stats):
        out.append(None if v is None else encode(v, scales[i // 3]))
    return tuple(out)


def merge(parts: Sequence[Rollup]) -> Rollup:
    """One rollup from several (minutes into an hour): averages weighted by ``n``.

    A minute in which a field was unknown in some samples weighs by its whole
    ``n``; close enough, and it keeps the row to one count.
    """
    if not parts:
        raise ValueError("merge needs at least one rollup")
    out: list[int | None] = [sum(p[0] or 0 for p in parts)]
    for i in range(1, len(parts[0]), 3):
        total = weight = 0
        lo: int | None = None
        hi: int | None = None
        for p in parts:
            avg, p_lo, p_hi = p[i], p[i + 1], p[i + 2]
            if avg is not None:
                total += avg * (p[0] or 0)
                weight += p[0] or 0
            if p_lo is not None and (lo is None or p_lo < lo):
                lo = p_lo
            if p_hi is not None and (hi is None or p_hi > hi):
                hi = p_hi
        out += (round(total / weight) if weight else None, lo, hi)
    return tuple(out)


def choose_step(
    since: float, until: float, *, now: float, retention: Retention, requested: str = "auto"
) -> str:
    """Which table answers a query: ``requested`` if it names one, else by range.

    Raw up to 6 h, 1-minute below 7 days, else 1-hour; a range that starts
    before a resolution's retention skips to the next coarser one.
    ValueError for an unknown ``requested``.
    """
    if requested in STEPS:
        return requested
    if requested != "auto":
        raise ValueError(f"bad step {requested!r}: use raw, 1m, 1h or auto")
    span = until - since
    if span <= RAW_MAX_SPAN and since >= now - retention.raw:
        return "raw"
    if span < MINUTE_MAX_SPAN and since >= now - retention.minute:
        return "1m"
    return "1h"


def runs(buckets: Iterable[int], max_gap: int) -> list[tuple[int, int]]:
    """Sorted buckets grouped into ``(first, last)`` runs with gaps of at most ``max_gap``."""
    out: list[tuple[int, int]] = []
    for b in sorted(buckets):
        if out and b - out[-1][1] <= max_gap:
            out[-1] = (out[-1][0], b)
        else:
            out.append((b, b))
    return out
