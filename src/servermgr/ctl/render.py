"""Rich renderables for ctl, built in one place and printed by commands.

Every document from Core goes through ``printable_doc`` before it is drawn:
a string a node chose (its name, OS, disk names, error texts) never reaches
the terminal with a control character in it. Command output is the
exception, written as raw bytes on purpose (like ssh).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from servermgr.common.text import printable_doc
from servermgr.ctl import plain
from servermgr.ctl.plain import fmt_ago, fmt_bytes, fmt_duration, fmt_pct, fmt_rate

SPARKS = "▁▂▃▄▅▆▇█"


PIPED_WIDTH = 512


def piped(file: Any = None, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Is ``file`` (stdout) read by a program: not a terminal, no COLUMNS set?"""
    out = file or sys.stdout
    isatty = getattr(out, "isatty", None)
    return not (isatty and isatty()) and not environ.get("COLUMNS")


def console(file: Any = None, *, environ: Mapping[str, str] = os.environ) -> Console:
    """A console on ``file``; piped output is not cut to 80 columns (scripts grep it)."""
    out = file or sys.stdout
    return Console(
        file=out, highlight=False, width=PIPED_WIDTH if piped(out, environ=environ) else None
    )


def print_table(table: Table) -> None:
    """Print ``table``: drawn by rich on a terminal; piped, plain with one word a
    cell (``-`` for none) but the last, as ``ctl nodes`` (scripts split on blanks)."""
    if not piped():
        console().print(table)
        return
    columns = [[_text(cell) for cell in column.cells] for column in table.columns]
    rows = [
        [(plain.word(cell), None) for cell in row[:-1]] + [(" ".join(row[-1].split()) or "-", None)]
        for row in zip(*columns, strict=True)
    ]
    headers = [word_header(column.header) for column in table.columns]
    sys.stdout.write("\n".join(plain.table(headers, rows)) + "\n")


def word_header(header: Any) -> str:
    """A header as one word (``NEXT RUN`` -> ``NEXT_RUN``)."""
    return "_".join(_text(header).split())


def _text(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def sparkline(values: list[float | None], width: int = 30) -> str:
    """Values scaled between their min and max into block characters."""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    return "".join(
        " " if v is None else SPARKS[min(len(SPARKS) - 1, int((v - lo) / span * len(SPARKS)))]
        for v in values
    )


def node_detail(node: dict[str, Any], *, now: float) -> RenderableType:
    node = printable_doc(node)
    info = node.get("info") or {}
    latest = node.get("latest") or {}
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    rows = [
        ("name", node["name"]),
        ("id", node["id"]),
        ("status", node["status"]),
        ("labels", ", ".join(f"{k}={v}" for k, v in node.get("labels", {}).items()) or "-"),
        ("last seen", fmt_ago(node.get("last_seen"), now)),
        ("agent", node.get("agent_version") or "-"),
        ("os", info.get("os") or "-"),
        ("kernel", info.get("kernel") or "-"),
        ("arch", info.get("arch") or "-"),
        ("cpu", f"{info.get('cpu_model') or '-'} ({info.get('cpu_count') or '?'} cores)"),
        ("memory", fmt_bytes(info.get("mem_total"))),
        ("uptime", fmt_duration(latest.get("uptime"))),
        ("cpu now", fmt_pct(latest.get("cpu_percent"))),
        (
            "memory now",
            f"{fmt_pct(latest.get('mem_percent'))} of {fmt_bytes(latest.get('mem_total'))}",
        ),
        ("swap", fmt_pct(latest.get("swap_percent"))),
        (
            "load",
            " ".join(
                "-" if latest.get(k) is None else f"{latest[k]:.2f}"
                for k in ("load1", "load5", "load15")
            ),
        ),
        ("processes", str(latest.get("procs") or "-")),
    ]
    reported = info.get("hostname")
    if reported and reported != node["name"]:
        rows.insert(1, ("hostname", f"{reported} (reported by the node; not its name)"))
    for k, v in rows:
        head.add_row(k, Text(str(v)))
    parts: list[RenderableType] = [head]
    if latest.get("disks"):
        disks = Table(title="disks", title_justify="left", box=None, header_style="bold")
        for col in ("MOUNT", "FS", "USED", "SIZE", "USE%"):
            disks.add_column(col, justify="left" if col in ("MOUNT", "FS") else "right")
        for d in latest["disks"]:
            disks.add_row(
                Text(d["mount"]),
                Text(d["fstype"]),
                fmt_bytes(d["used"]),
                fmt_bytes(d["total"]),
                fmt_pct(d["percent"]),
            )
        parts += [Text(""), disks]
    if latest.get("nets"):
        nets = Table(title="network", title_justify="left", box=None, header_style="bold")
        for col in ("INTERFACE", "RX", "TX"):
            nets.add_column(col, justify="left" if col == "INTERFACE" else "right")
        for n in latest["nets"]:
            nets.add_row(Text(n["name"]), fmt_rate(n["rx_bps"]), fmt_rate(n["tx_bps"]))
        parts += [Text(""), nets]
    return Group(*parts)


def print_node(node: dict[str, Any]) -> None:
    console().print(node_detail(node, now=time.time()))


METRIC_ROWS = (
    ("cpu_percent", "CPU %", fmt_pct),
    ("mem_percent", "memory %", fmt_pct),
    ("disk_percent", "disk %", fmt_pct),
    ("load1", "load 1m", lambda v: "-" if v is None else f"{v:.2f}"),
    ("net_rx_bps", "net rx", fmt_rate),
    ("net_tx_bps", "net tx", fmt_rate),
    ("disk_read_bps", "disk read", fmt_rate),
    ("disk_write_bps", "disk write", fmt_rate),
)


STEP_NAMES = {"raw": "samples", "1m": "1-minute averages", "1h": "hourly averages"}


def metrics_table(doc: dict[str, Any]) -> RenderableType:
    doc = printable_doc(doc)
    samples = doc["samples"]
    if not samples:
        return Text(f"no samples for {doc['name']} in this range")
    table = Table(box=None, header_style="bold")
    for col, justify in (
        ("METRIC", "left"),
        ("MIN", "right"),
        ("AVG", "right"),
        ("MAX", "right"),
        ("LAST", "right"),
        ("HISTORY", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    step = doc.get("step", "raw")
    for key, label, fmt in METRIC_ROWS:
        values = [s.get(key) for s in samples]
        known = [v for v in values if v is not None]
        if not known:
            table.add_row(label, "-", "-", "-", "-", "")
            continue
        # Rollups carry each bucket's extremes: MIN/MAX are true extremes, not of averages.
        lows = [s[f"{key}_min"] for s in samples if s.get(f"{key}_min") is not None] or known
        highs = [s[f"{key}_max"] for s in samples if s.get(f"{key}_max") is not None] or known
        table.add_row(
            label,
            fmt(min(lows)),
            fmt(sum(known) / len(known)),
            fmt(max(highs)),
            fmt(known[-1]),
            Text(sparkline(values, 40), style="cyan"),
        )
    first = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(samples[0]["ts"]))
    last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(samples[-1]["ts"]))
    what = STEP_NAMES.get(step, "samples")
    title = Text(f"{doc['name']}: {len(samples)} {what} from {first} to {last}\n", style="bold")
    return Group(title, table)


def print_metrics(doc: dict[str, Any]) -> None:
    console().print(metrics_table(doc))


STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "refused": "yellow",
    "expired": "yellow",
    "lost": "red",
    "stalled": "red",
    "queued": "dim",
    "sent": "cyan",
    "running": "cyan",
}


def _exit(n: dict[str, Any]) -> str:
    if n.get("exit_code") is not None:
        return str(n["exit_code"])
    if n.get("signal") is not None:
        return f"signal {n['signal']}"
    return "-"


def job_summary(job: dict[str, Any]) -> Table:
    job = printable_doc(job)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, justify in (
        ("NODE", "left"),
        ("STATE", "left"),
        ("EXIT", "right"),
        ("DURATION", "right"),
        ("NOTE", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=col != "NOTE")  # type: ignore[arg-type]
    for n in job["nodes"]:
        note = n.get("error") or ""
        if n.get("stdout_truncated") or n.get("stderr_truncated"):
            note = (note + "; " if note else "") + "output truncated"
        table.add_row(
            Text(n["node"]),
            Text(n["state"], style=STATE_STYLE.get(n["state"], "")),
            _exit(n),
            "-" if n.get("duration") is None else f"{n['duration']:.2f}s",
            Text(note),
        )
    return table


def _add_column(table: Table, name: str, *, shrink: bool) -> None:
    """A column kept whole (ids, times), or one that gives up width when the table is too wide.

    rich narrows only wrappable columns first, then every column evenly (short
    ones vanish, ids get cut); so shrinking columns are wrappable and their
    cells (``_cut``) stay on one line with an ellipsis.
    """
    table.add_column(name, no_wrap=not shrink, overflow="ellipsis")


def _cut(text: str) -> Text:
    return Text(text, no_wrap=True, overflow="ellipsis")


def jobs_table(jobs: list[dict[str, Any]], *, now: float) -> Table:
    jobs = printable_doc(jobs)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("JOB", "CREATED", "TARGET", "STATE", "NODES", "COMMAND"):
        _add_column(table, col, shrink=col in ("TARGET", "NODES", "COMMAND"))
    for j in jobs:
        states = ", ".join(f"{v} {k}" for k, v in sorted(j["states"].items()))
        table.add_row(
            j["id"],
            fmt_ago(j["created"], now),
            _cut(j["target"]),
            Text(j["state"], style="cyan" if j["state"] == "running" else ""),
            _cut(states),
            _cut(_what(j)),
        )
    return table


def print_jobs(jobs: list[dict[str, Any]]) -> None:
    c = console()
    if not jobs:
        c.print("no jobs yet: try `servermgr ctl exec NODE 'uptime'`")
        return
    if piped():  # one word a cell, as ctl nodes: scripts split on blanks
        sys.stdout.write("\n".join(plain.jobs_lines(jobs, now=time.time())) + "\n")
        return
    c.print(jobs_table(jobs, now=time.time()))


def _what(job: dict[str, Any]) -> str:
    if job.get("command") is not None:
        return str(job["command"])
    service = job.get("service") or {}
    return f"systemctl {service.get('action')} {service.get('unit')}"


def print_job(job: dict[str, Any]) -> None:
    job = printable_doc(job)
    c = console()
    c.print(Text(f"job {job['id']}: {_what(job)}", style="bold"))
    c.print(
        Text(
            f"target {job['target']} · {job['state']} · by {job['principal']} · "
            f"timeout {job['timeout']:g}s",
            style="dim",
        )
    )
    c.print(job_summary(job))
    for n in job["nodes"]:
        for stream in ("stdout", "stderr"):
            if n.get(stream):
                c.print(Text(f"\n── {n['node']} {stream} ──", style="bold"))
                sys.stdout.flush()
                sys.stdout.buffer.write(base64.b64decode(n[f"{stream}_b64"]))
                sys.stdout.flush()


def print_audit(rows: list[dict[str, Any]]) -> None:
    rows = printable_doc(rows)
    c = console()
    if not rows:
        c.print("the audit log is empty")
        return
    if piped():
        sys.stdout.write("\n".join(plain.audit_lines(rows)) + "\n")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("TIME", "WHO", "ACTION", "TARGET", "OUTCOME", "JOB", "WHAT"):
        _add_column(table, col, shrink=col in ("TARGET", "OUTCOME", "WHAT"))
    for r in rows:
        table.add_row(
            time.strftime("%m-%d %H:%M:%S", time.localtime(r["ts"])),
            r["principal"],
            r["action"],
            _cut(r["target"]),
            _cut(r["outcome"] or ("running" if r["job_id"] else "-")),
            r["job_id"] or "-",
            _cut(r["detail"]),
        )
    c.print(table)


def _at(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def schedules_table(schedules: list[dict[str, Any]]) -> Table:
    schedules = printable_doc(schedules)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "WHEN", "TARGET", "NEXT RUN", "LAST JOB", "RUNS", "COMMAND"):
        _add_column(table, col, shrink=col in ("TARGET", "COMMAND"))
    for s in schedules:
        table.add_row(
            s["name"],
            s["describe"],
            _cut(s["target"]),
            "paused" if s["paused"] else _at(s["next_run"]),
            s["last_job"] or "-",
            str(s["runs"]),
            _cut(_what(s["job"])),
        )
    return table


def print_schedules(schedules: list[dict[str, Any]]) -> None:
    c = console()
    if not schedules:
        c.print("no schedules: try `servermgr ctl schedule add NAME --every 1h all uptime`")
        return
    print_table(schedules_table(schedules))
