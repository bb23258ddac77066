"""The ``ctl top`` screen, built in one place from a ``State``. Pure: no I/O.

``screen(state, width=…, height=…, now=…)`` returns one renderable that fills
exactly ``width`` x ``height``: a header line, the node table (only the rows
that fit) or a node's detail panel, and a footer line. Columns drop by
priority so 80 columns stay readable; wider terminals get labels, uptime and
longer sparklines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType
from rich.layout import Layout
from rich.table import Table
from rich.text import Text

from servermgr.ctl import plain
from servermgr.ctl.dashboard_detail import detail_panel
from servermgr.ctl.dashboard_state import State

CHROME = 3  # header line, table header, footer line
BLOCKS = " ▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"


def body_rows(height: int) -> int:
    """How many node rows fit on a screen ``height`` lines high."""
    return max(1, height - CHROME)


def screen(state: State, *, width: int, height: int, now: float) -> RenderableType:
    layout = Layout()
    body: RenderableType
    if state.detail is not None:
        body = detail_panel(state, state.detail, width=width, now=now, spark=spark)
    else:
        body = node_table(state, width=width, rows=body_rows(height), now=now)
    layout.split_column(
        Layout(header(state, now=now), size=1),
        Layout(body),
        Layout(footer(state, rows=body_rows(height)), size=1),
    )
    return layout


# --- header and footer -----------------------------------------------------


def header(state: State, *, now: float) -> RenderableType:
    left = Text(no_wrap=True, overflow="ellipsis")
    jobs = len(state.jobs_open)
    left.append("core ", style="bold")
    left.append(state.core, style="cyan")
    left.append(f" · {state.online()}/{len(state.nodes)} online")
    left.append(f" · {jobs} job{'' if jobs == 1 else 's'} running")
    right = Text(no_wrap=True)
    firing = state.firing()
    if firing:  # on the right: the left side is cut first when the line is narrow
        right.append(f"{firing} alert{'' if firing == 1 else 's'} firing ", style="bold red")
    if state.dropped:
        right.append(f"{state.dropped} events dropped ", style="yellow")
    if state.connected:
        right.append("● live ", style="green")
    else:
        right.append(f"{state.status} ", style="bold yellow")
    right.append(time.strftime("%H:%M:%S", time.localtime(now)), style="dim")
    return _two_sides(left, right)


def footer(state: State, *, rows: int) -> RenderableType:
    if state.editing:
        left = Text("filter: ", style="bold")
        left.append(state.filter)
        left.append("█", style="blink")
        left.append("  Enter apply · Esc clear", style="dim")
    elif state.detail is not None:
        left = Text("Esc/Enter back · ↑↓ PgUp/PgDn scroll · q quit", style="dim")
    else:
        left = Text("q quit · s sort · / filter · ↑↓ PgUp PgDn · Enter details", style="dim")
        if state.filter:
            left = Text.assemble(("filter ", "bold"), (state.filter, "cyan"), " (Esc clears) · ")
            left.append("q quit · s sort · / filter · Enter details", style="dim")
    shown = state.rows()
    top, _ = state.window(shown, rows)
    last = min(len(shown), top + rows)
    span = f"{top + 1}-{last}/{len(shown)}" if shown else "0/0"
    right = Text(f"sort {state.sort} · {span}", style="bold")
    return _two_sides(left, right)


def _two_sides(left: Text, right: Text) -> Table:
    left.no_wrap, left.overflow = True, "ellipsis"
    grid = Table.grid(expand=True)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_column(no_wrap=True, justify="right")
    grid.add_row(left, right)
    return grid


# --- node table ------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    width: int
    justify: str = "right"


REQUIRED = (
    Column("dot", "", 1, "left"),
    Column("name", "NAME", 12, "left"),
    Column("cpu", "CPU", 4),
)
# In the order they are added as width allows: the first ones survive at 80 columns.
OPTIONAL = (
    Column("mem", "MEM", 4),
    Column("disk", "DISK", 4),
    Column("bar", "", 8, "left"),
    Column("rx", "RX/s", 6),
    Column("tx", "TX/s", 6),
    Column("spark", "CPU HISTORY", 11, "left"),
    Column("load", "LOAD", 5),
    Column("seen", "SEEN", 5),
    Column("uptime", "UPTIME", 7),
    Column("labels", "LABELS", 12, "left"),
)
ORDER = "dot name cpu bar spark mem disk rx tx load uptime seen labels".split()
GROW = {"name": 24, "spark": 30, "labels": 60}  # extra width, in this order, up to these


def plan_columns(width: int) -> list[Column]:
    """The columns that fit ``width`` (one space between), widened to fill it."""
    chosen = list(REQUIRED)
    used = sum(c.width for c in chosen) + len(chosen) - 1
    for col in OPTIONAL:
        if used + 1 + col.width <= width:
            chosen.append(col)
            used += 1 + col.width
    spare = width - used
    for key, cap in GROW.items():
        for i, col in enumerate(chosen):
            if col.key == key and spare > 0:
                extra = min(spare, cap - col.width)
                chosen[i] = Column(col.key, col.header, col.width + extra, col.justify)
                spare -= extra
    return sorted(chosen, key=lambda c: ORDER.index(c.key))


def node_table(state: State, *, width: int, rows: int, now: float) -> RenderableType:
    shown = state.rows()
    if not shown:
        if not state.nodes:
            note = "no nodes yet" if state.connected else "waiting for Core…"
        else:
            note = f"no node matches {state.filter!r} (Esc clears the filter)"
        return Text(note, style="dim")
    cols = plan_columns(width)
    table = Table(
        box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold", show_edge=False
    )
    for col in cols:
        table.add_column(
            col.header,
            width=col.width,
            min_width=col.width,
            max_width=col.width,
            justify=col.justify,  # type: ignore[arg-type]
            no_wrap=True,
            overflow="ellipsis",
        )
    top, sel = state.window(shown, rows)
    for i, node in enumerate(shown[top : top + rows], start=top):
        online = node.get("status") == "online"
        hist = state.history.get(node["id"], ())
        cells = [_cell(col, node, hist, online, now) for col in cols]
        style = ("" if online else "dim") + (" reverse" if i == sel else "")
        table.add_row(*cells, style=style.strip())
    return table


def _cell(
    col: Column, node: dict[str, Any], hist: Iterable[float | None], online: bool, now: float
) -> Text:
    key = col.key
    cpu = node.get("cpu_percent")
    if key == "dot":
        if node.get("alerts_firing"):
            return Text("!", style="bold red")  # an alert fires on it
        return Text("●", style="green") if online else Text("○", style="bold red")
    if key == "name":
        return Text(node["name"], style="bold" if online else "red")
    if key == "cpu":
        return Text(plain.fmt_pct(cpu), style=_level(cpu) if online else "")
    if key == "bar":
        return Text("offline", style="bold red") if not online else bar(cpu, col.width)
    if key == "spark":
        return Text(spark(list(hist), col.width), style="cyan" if online else "")
    if key in ("mem", "disk"):
        value = node.get(f"{key}_percent")
        return Text(plain.fmt_pct(value), style=_level(value) if online else "")
    if key in ("rx", "tx"):
        return Text(rate(node.get(f"net_{key}_bps")))
    if key == "load":
        return Text(load(node.get("load1")))
    if key == "seen":
        return Text(ago(node.get("last_seen"), now))
    if key == "uptime":
        return Text(plain.fmt_duration(node.get("uptime")))
    labels = node.get("labels") or {}
    return Text(",".join(f"{k}={v}" for k, v in sorted(labels.items())), style="dim")


def _level(pct: float | None) -> str:
    if pct is None:
        return ""
    return "green" if pct < 60 else "yellow" if pct < 85 else "bold red"


def bar(pct: float | None, width: int) -> Text:
    """A horizontal bar of ``pct`` percent, to an eighth of a cell."""
    if pct is None:
        return Text("")
    eighths = round(max(0.0, min(100.0, pct)) / 100 * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + (EIGHTHS[part] if part else "")
    out = Text(filled, style=_level(pct))
    out.append("·" * (width - len(filled)), style="dim")
    return out


def spark(values: Sequence[float | None], width: int) -> str:
    """The last ``width`` values on a fixed 0–100 scale (CPU % reads the same everywhere)."""
    values = list(values)[-width:]
    return "".join(" " if v is None else BLOCKS[max(1, min(8, round(v / 100 * 8)))] for v in values)


def rate(bps: float | None) -> str:
    """Bytes per second in at most 6 characters: 512B, 12.3K, 4.5M."""
    if bps is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if bps < 999.5:
            return f"{bps:.0f}{unit}" if unit == "B" or bps >= 99.95 else f"{bps:.1f}{unit}"
        bps /= 1000
    return f"{bps:.0f}P"


def load(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def ago(ts: float | None, now: float) -> str:
    """Compact age: now, 12s, 5m, 3h, 2d."""
    if ts is None:
        return "never"
    s = max(0.0, now - ts)
    if s < 2:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size:.0f}{unit}"
    return f"{s:.0f}s"
