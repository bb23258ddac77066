"""Plain-text tables for the paths that must start fast (``ctl exec``'s summary).

rich draws ctl's other tables; importing it costs ``ctl exec --all`` more CPU
than the whole job (bench/exec_latency.py). Columns are padded with spaces,
one word per cell where the value is one word, so piped output splits on
whitespace; colour only on a terminal and without ``NO_COLOR``. Every string
from Core or a node passes ``text.printable``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from servermgr.common.text import printable

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


def print_job_summary(job: Mapping[str, Any], out: TextIO) -> None:
    out.write("\n".join(job_summary_lines(job, color=colored(out))) + "\n")
    out.flush()
