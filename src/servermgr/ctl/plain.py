"""Plain-text tables for the paths that must start fast (``ctl exec``'s summary).

rich draws ctl's other tables; importing it costs ``ctl exec --all`` more CPU
than the whole job (bench/exec_latency.py). Columns are padded with spaces,
one word per cell where the value is one word, so piped output splits on
whitespace; colour only on a terminal and without ``NO_COLOR``. Every string
from Core or a node passes ``text.printable``.
"""

from __future__ import annotations

import os

from servermgr.common.text import printable

TYPE_CHECKING = False  # not typing's: it costs ctl's start-up ~4 ms
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, TextIO

COLORS = {"green": "32", "red": "31", "yellow": "33", "cyan": "36", "dim": "2", "bold": "1"}
STATE_COLOR = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "refused": "red",
    "expired": "yellow",
    "lost": "red",
    "stalled": "red",
    "queued": "dim",
    "sent": "cyan",
    "running": "cyan",
}


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB/s"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"


def fmt_ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    return "now" if now - ts < 1 else f"{fmt_duration(now - ts)} ago"


def colored(out: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    return out.isatty() and "NO_COLOR" not in environ and environ.get("TERM") != "dumb"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[tuple[str, str | None]]],
    *,
    right: frozenset[int] = frozenset(),
    color: bool = False,
) -> list[str]:
    """Lines of a table; each cell is (text, colour name or None)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, (text, _) in enumerate(row):
            widths[i] = max(widths[i], len(text))

    def line(cells: Sequence[tuple[str, str | None]]) -> str:
        out = []
        for i, (text, style) in enumerate(cells):
            last = i == len(cells) - 1
            pad = text.rjust(widths[i]) if i in right else (text if last else text.ljust(widths[i]))
            if color and style in COLORS:
                pad = pad.replace(text, f"\x1b[{COLORS[style]}m{text}\x1b[0m", 1)
            out.append(pad)
        return "  ".join(out).rstrip()

    head = line([(h, "bold") for h in headers])
    return [head, *(line(r) for r in rows)]


def job_summary_lines(job: Mapping[str, Any], *, color: bool = False) -> list[str]:
    """The summary ``ctl exec`` prints after a fan-out: one row per node, then a total."""
    rows = []
    for n in job["nodes"]:
        note = n.get("error") or ""
        if n.get("stdout_truncated") or n.get("stderr_truncated"):
            note = (note + "; " if note else "") + "output truncated"
        if n.get("exit_code") is not None:
            code = str(n["exit_code"])
        elif n.get("signal") is not None:
            code = f"signal:{n['signal']}"
        else:
            code = "-"
        duration = "-" if n.get("duration") is None else f"{n['duration']:.2f}s"
        state = printable(str(n["state"]))
        rows.append(
            [
                (printable(str(n["node"])), None),
                (state, STATE_COLOR.get(state)),
                (code, None),
                (duration, None),
                (printable(" ".join(str(note).split())), None),
            ]
        )
    lines = table(
        ("NODE", "STATE", "EXIT", "DURATION", "NOTE"), rows, right=frozenset({2, 3}), color=color
    )
    ok = sum(1 for n in job["nodes"] if n["state"] == "succeeded")
    total = f"{ok}/{len(job['nodes'])} succeeded · job {printable(str(job['id']))}"
    return ["", *lines, f"\x1b[2m{total}\x1b[0m" if color else total]


def nodes_lines(
    nodes: Sequence[Mapping[str, Any]], *, now: float, color: bool = False
) -> list[str]:
    """``ctl nodes``: one node a row, one word a cell, ``-`` for an offline node's figures."""
    rows = []
    for n in nodes:
        online = n.get("status") == "online"

        def fig(text: str, online: bool = online) -> tuple[str, str | None]:
            return (text.replace(" ", "") if online else "-", None)

        load = n.get("load1")
        rows.append(
            [
                (printable(str(n["name"])), "bold" if online else "dim"),
                ("online" if online else "offline", "green" if online else "red"),
                fig(fmt_pct(n.get("cpu_percent"))),
                fig(fmt_pct(n.get("mem_percent"))),
                fig(fmt_pct(n.get("disk_percent"))),
                fig(fmt_rate(n.get("net_rx_bps"))),
                fig(fmt_rate(n.get("net_tx_bps"))),
                fig("-" if load is None else f"{load:.2f}"),
                fig(fmt_duration(n.get("uptime"))),
                (fmt_ago(n.get("last_seen"), now).replace(" ago", "").replace(" ", ""), None),
                (version_cell(n.get("agent_version")), None),
            ]
        )
    headers = (
        "NAME", "STATUS", "CPU", "MEM", "DISK", "RX", "TX", "LOAD", "UPTIME", "SEEN", "VERSION"
    )  # fmt: skip
    return table(headers, rows, right=frozenset(range(2, 10)), color=color)


def word(text: object) -> str:
    """``text`` as one word for a piped table (its blanks dropped; ``-`` if empty)."""
    return "".join(printable(str(text if text is not None else "")).split()) or "-"


def counts_word(text: object) -> str:
    """``2 succeeded, 1 failed`` as ``succeeded=2,failed=1``; any other text as one word."""
    parts = [p.split() for p in str(text or "").split(",")]
    if parts and all(len(p) == 2 and p[0].isdigit() for p in parts):
        return ",".join(f"{word(p[1])}={p[0]}" for p in parts)
    return word(text)


def _ago(ts: float | None, now: float) -> str:
    return fmt_ago(ts, now).replace(" ago", "").replace(" ", "")


def _free(text: object) -> str:
    """The last column's free text on one line."""
    return " ".join(printable(str(text)).split()) or "-"


def jobs_lines(jobs: Sequence[Mapping[str, Any]], *, now: float) -> list[str]:
    """``ctl jobs`` piped: one word a cell (``-`` for none) but the command, last."""
    rows = []
    for j in jobs:
        states = ",".join(f"{word(k)}={v}" for k, v in sorted(j["states"].items())) or "-"
        command = j.get("command")
        if command is None:
            service = j.get("service") or {}
            command = f"systemctl {service.get('action')} {service.get('unit')}"
        rows.append(
            [
                (word(j["id"]), None),
                (_ago(j["created"], now), None),
                (word(j["target"]), None),
                (word(j["state"]), None),
                (states, None),
                (_free(command), None),
            ]
        )
    return table(("JOB", "CREATED", "TARGET", "STATE", "NODES", "COMMAND"), rows)


def audit_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``ctl audit`` piped: one word a cell (an ISO time; ``-`` for none) but WHAT, last."""
    import time

    lines = []
    for r in rows:
        outcome = r.get("outcome") or ("running" if r.get("job_id") else "-")
        lines.append(
            [
                (time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r["ts"])), None),
                (word(r["principal"]), None),
                (word(r["action"]), None),
                (word(r["target"]), None),
                (counts_word(outcome), None),
                (word(r.get("job_id") or "-"), None),
                (_free(r.get("detail") or "-"), None),
            ]
        )
    return table(("TIME", "WHO", "ACTION", "TARGET", "OUTCOME", "JOB", "WHAT"), lines)


VERSION_WIDTH = 12


def version_cell(version: object) -> str:
    """The agent's version as one word, at most 12 wide (a long build tag ends in …)."""
    one = word(version or "-")
    return one if len(one) <= VERSION_WIDTH else one[: VERSION_WIDTH - 1] + "…"


def print_nodes(nodes: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    import time

    if not nodes:
        out.write("no nodes yet: start one with `servermgr node run --config node.toml`\n")
        return
    online = sum(1 for n in nodes if n.get("status") == "online")
    lines = nodes_lines(nodes, now=time.time(), color=colored(out))
    out.write("\n".join([*lines, "", f"{online}/{len(nodes)} online"]) + "\n")


def print_job_summary(job: Mapping[str, Any], out: TextIO) -> None:
    out.write("\n".join(job_summary_lines(job, color=colored(out))) + "\n")
    out.flush()
