"""The node detail panel of ``ctl top``: compact enough for 80x24. Pure: no I/O.

Static facts and the latest sample in two columns of pairs, the CPU history,
every disk and interface (side by side when wide), the schedules that pick
the node and its last file transfer, then its recent jobs. Taller than the
screen, it scrolls (``Detail.scroll``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from servermgr.ctl import plain, render
from servermgr.ctl.dashboard_state import Detail, State

Spark = Callable[[Sequence[float | None], int], str]
SIDE_BY_SIDE = 100  # columns from which disks and interfaces share a row


def detail_panel(
    state: State, detail: Detail, *, width: int, now: float, spark: Spark
) -> RenderableType:
    """``spark(values, width) -> str`` draws the CPU history (from dashboard_view)."""
    live = state.nodes.get(detail.node_id, {})
    title = Text(live.get("name", detail.node_id), style="bold")
    body: RenderableType
    if detail.node is None:
        body = Text(detail.error or "loading…", style="red" if detail.error else "dim")
    else:
        fresh: dict[str, Any] = {k: live[k] for k in ("status", "last_seen") if k in live}
        doc: dict[str, Any] = {**detail.node, **fresh}
        hist = list(state.history.get(detail.node_id, ()))
        parts: list[RenderableType] = [
            facts(doc, now=now),
            Text.assemble(("cpu history ", "bold"), (spark(hist, max(10, width - 16)), "cyan")),
            devices(doc.get("latest") or {}, width=width),
            fleet_ops(detail, now=now),
            jobs(detail, now=now),
        ]
        if detail.error:
            parts.append(Text(detail.error, style="red"))
        body = Group(*parts)
    return Panel(Scrolled(body, detail.scroll), title=title, title_align="left", padding=(0, 1))


def facts(node: dict[str, Any], *, now: float) -> Table:
    info = node.get("info") or {}
    s = node.get("latest") or {}
    labels = ", ".join(f"{k}={v}" for k, v in sorted((node.get("labels") or {}).items()))
    loads = " ".join(
        "-" if s.get(k) is None else f"{s[k]:.2f}" for k in ("load1", "load5", "load15")
    )
    memory = f"{plain.fmt_pct(s.get('mem_percent'))} of {plain.fmt_bytes(s.get('mem_total'))}"
    pairs = [
        ("status", node.get("status") or "-"),
        ("last seen", plain.fmt_ago(node.get("last_seen"), now)),
        ("labels", labels or "-"),
        ("agent", node.get("agent_version") or "-"),
        ("os", info.get("os") or "-"),
        ("kernel", info.get("kernel") or "-"),
        ("cpu", f"{info.get('cpu_model') or '-'} ×{info.get('cpu_count') or '?'}"),
        ("arch", info.get("arch") or "-"),
        ("cpu now", plain.fmt_pct(s.get("cpu_percent"))),
        ("load", loads),
        ("memory", memory),
        ("swap", plain.fmt_pct(s.get("swap_percent"))),
        ("uptime", plain.fmt_duration(s.get("uptime"))),
        ("processes", str(s.get("procs") if s.get("procs") is not None else "-")),
        ("id", node.get("id") or "-"),
    ]
    grid = Table.grid(padding=(0, 1), expand=True)
    for _ in range(2):
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    for i in range(0, len(pairs), 2):
        (k1, v1), (k2, v2) = pairs[i], pairs[i + 1] if i + 1 < len(pairs) else ("", "")
        grid.add_row(k1, Text(str(v1)), k2, Text(str(v2)))
    return grid


def devices(latest: dict[str, Any], *, width: int) -> RenderableType:
    disks = _table(
        ("DISK", "FS", "USED", "SIZE", "USE%"),
        [
            (
                d["mount"],
                d["fstype"],
                plain.fmt_bytes(d["used"]),
                plain.fmt_bytes(d["total"]),
                plain.fmt_pct(d["percent"]),
            )
            for d in latest.get("disks") or ()
        ],
    )
    nets = _table(
        ("INTERFACE", "RX", "TX"),
        [
            (n["name"], plain.fmt_rate(n["rx_bps"]), plain.fmt_rate(n["tx_bps"]))
            for n in latest.get("nets") or ()
        ],
    )
    if width < SIDE_BY_SIDE:
        return Group(disks, nets)
    both = Table.grid(padding=(0, 4))
    both.add_row(disks, nets)
    return both


def _table(headers: Sequence[str], rows: list[tuple[str, ...]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 or h == "FS" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    if not rows:
        table.add_row(Text("none reported", style="dim"), *[""] * (len(headers) - 1))
    return table


def fleet_ops(detail: Detail, *, now: float) -> RenderableType:
    """Two lines: how many schedules pick the node (named), and its last ``ctl cp``."""
    if detail.schedules is None:
        schedules = Text("loading…", style="dim")
    else:
        names = ", ".join(s["name"] for s in detail.schedules[:5])
        more = ", …" if len(detail.schedules) > 5 else ""
        schedules = Text(f"{len(detail.schedules)}" + (f" ({names}{more})" if names else ""))
    t = detail.transfer
    if t is None:
        transfer = Text("none" if detail.schedules is not None else "loading…", style="dim")
    else:
        transfer = Text(
            f"{t['action']} {t['detail']} · {t['outcome']} · {plain.fmt_ago(t['ts'], now)}"
        )
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("schedules", schedules)
    grid.add_row("last transfer", transfer)
    return grid


def jobs(detail: Detail, *, now: float) -> RenderableType:
    if detail.jobs is None:
        return Text("recent jobs: loading…", style="dim")
    if not detail.jobs:
        return Text("no jobs on this node yet", style="dim")
    return render.jobs_table(detail.jobs, now=now)


@dataclass
class Scrolled:
    """``renderable`` from its ``offset``-th line, cut to the height it is given."""

    renderable: RenderableType
    offset: int

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options.update(height=None), pad=False)
        height = options.height or len(lines)
        start = max(0, min(self.offset, len(lines) - height))
        new_line = Segment.line()
        for line in lines[start : start + height]:
            yield from line
            yield new_line
