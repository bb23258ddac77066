"""``ctl alerts`` and ``ctl alert ...``: what fires, the history, rules, silences.

Tables are built here from the API's documents (escaped as they come in:
node names and rule conditions never reach the terminal with a control
character); the handlers in ctl/alert_commands.py call Core and print them.
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from rich.text import Text

from servermgr.common.text import printable_doc
from servermgr.ctl import plain, render


def _time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%m-%d %H:%M:%S", time.localtime(ts))


def until(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _value(v: float | None) -> str:
    return "-" if v is None else f"{round(v, 1):g}"


def _seconds(v: float | None) -> str:
    return "-" if v is None else plain.fmt_duration(v) if v >= 1 else f"{v:g}s"


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


STATE_STYLE = {"firing": "bold red", "pending": "yellow", "resolved": "green", "cleared": "dim"}


def alerts_table(rows: list[dict[str, Any]], *, now: float) -> Table:
    table = _table("STATE", "RULE", "NODE", "SUBJECT", "VALUE", "SINCE", "FOR", "SILENCED")
    for r in printable_doc(rows):
        table.add_row(
            Text(r["state"], style=STATE_STYLE.get(r["state"], "")),
            Text(r["rule"]),
            Text(r["node"]),
            Text(r["subject"] or "-"),
            Text(_value(r["value"])),
            Text(_time(r["since"])),
            Text(plain.fmt_duration(max(0.0, now - r["started"]))),
            Text("yes" if r["silenced"] else ""),
        )
    return table


def history_table(rows: list[dict[str, Any]]) -> Table:
    table = _table("TIME", "RULE", "NODE", "SUBJECT", "FROM", "TO", "VALUE")
    for r in printable_doc(rows):
        table.add_row(
            Text(_time(r["ts"])),
            Text(r["rule"]),
            Text(r["node"]),
            Text(r["subject"] or "-"),
            Text(r["from"] or "-"),
            Text(r["to"], style=STATE_STYLE.get(r["to"], "")),
            Text(_value(r["value"])),
        )
    return table


def deliveries_table(rows: list[dict[str, Any]]) -> Table:
    table = _table("TIME", "RECEIVER", "KIND", "RULE", "NODE", "TRY", "OUTCOME", "DETAIL")
    for r in printable_doc(rows):
        style = "green" if r["outcome"] == "sent" else "bold red"
        table.add_row(
            Text(_time(r["ts"])),
            Text(r["receiver"]),
            Text(r["kind"]),
            Text(r["rule"]),
            Text(r["node"] + (f" {r['subject']}" if r["subject"] else "")),
            Text(str(r["attempt"])),
            Text(r["outcome"], style=style),
            Text(r["detail"] or ""),
        )
    return table


def rules_table(rows: list[dict[str, Any]]) -> Table:
    table = _table("NAME", "WHEN", "FOR", "NODES", "NOTIFY", "RENOTIFY", "SOURCE")
    for r in printable_doc(rows):
        table.add_row(
            Text(r["name"]),
            Text(r["when"]),
            Text(_seconds(r["for"]) if r["for"] else "0"),
            Text(r["nodes"]),
            Text(",".join(r["notify"]) if r["notify"] is not None else "all"),
            Text(_seconds(r["renotify"])),
            Text(r["source"]),
        )
    return table


def silences_table(rows: list[dict[str, Any]]) -> Table:
    table = _table("ID", "SCOPE", "TARGET", "UNTIL", "BY")
    for r in printable_doc(rows):
        table.add_row(
            Text(str(r["id"])),
            Text(r["scope"]),
            Text(r["target"]),
            Text(_time(r["until"])),
            Text(r["created_by"]),
        )
    return table


def show(rows: list[dict[str, Any]], table: Table, empty: str) -> None:
    """Print ``table``, or ``empty`` when there are no rows."""
    if not rows:
        render.console().print(Text(empty))
    else:
        render.print_table(table)
