"""``servermgr ctl schedule ...``: what the operator typed -> the API's schedule body,
and the one line each change prints (docs/schedules.md). No typer here.

A schedule is made from what ``ctl exec`` takes (TARGET, the command,
--timeout, --wait, --env, --cwd, --output-cap) plus when it runs: --every
DURATION or --cron 'MIN HOUR DAY MONTH WEEKDAY' (with --tz). The command spec
(cli/commands.py) parses the options; bad input raises UsageError (one line,
exit 2); Core checks the rest. Handlers: ``add``, ``listing``, ``remove``, ``pause``.
"""

from __future__ import annotations

import time
from typing import Any

from servermgr.cli.spec import Parsed
from servermgr.common.errors import UsageError
from servermgr.common.text import printable
from servermgr.ctl import output
from servermgr.ctl.commands import client
from servermgr.ctl.jobspec import job_body, target_of


def schedule_body(
    name: str,
    args: list[str],
    *,
    all_nodes: bool,
    label: str | None,
    every: float | None,
    cron: str | None,
    tz: str | None,
    timeout: float,
    wait: float,
    output_cap: int,
    env: list[str],
    cwd: str | None,
    paused: bool,
) -> dict[str, Any]:
    """The body of ``POST /api/v1/schedules`` (durations in seconds: the spec parsed them)."""
    if (every is None) == (cron is None):
        raise UsageError("give --every DURATION (e.g. 1h) or --cron 'MIN HOUR DAY MONTH WEEKDAY'")
    if tz is not None and cron is None:
        raise UsageError("--tz goes with --cron")
    target, words, _ = target_of(args, all_nodes, label)
    if not words:
        raise UsageError("missing the command to run (see: servermgr ctl schedule add --help)")
    job = job_body(
        target,
        " ".join(words),
        None,
        timeout=timeout,
        output_cap=output_cap,
        wait=wait,
        env=env,
        cwd=cwd,
    )
    body: dict[str, Any] = {"name": name, "job": job, "paused": paused}
    if every is not None:
        body["every"] = every
    if cron is not None:
        body["cron"] = cron
    if tz is not None:
        body["tz"] = tz
    return body


def said(doc: dict[str, Any], verb: str) -> str:
    """``schedule NAME VERB: every 1h on TARGET; next run ...`` for a schedule document."""
    if doc["paused"]:
        when = "paused"
    else:
        when = "next run " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["next_run"]))
    return printable(f"schedule {doc['name']} {verb}: {doc['describe']} on {doc['target']}; {when}")


# --- handlers (spec: cli/commands.py) ----------------------------------------------


def add(a: Parsed) -> None:
    body = schedule_body(
        a.name,
        a.words,
        all_nodes=a.all,
        label=a.label,
        every=a.every,
        cron=a.cron,
        tz=a.tz,
        timeout=a.timeout,
        wait=a.wait,
        output_cap=a.output_cap,
        env=a.env,
        cwd=a.cwd,
        paused=a.paused,
    )
    doc = client(a).add_schedule(body)
    if a.json:
        output.print_json(doc)
    else:
        print(said(doc, "made"))


def listing(a: Parsed) -> None:
    rows = client(a).schedules()
    if a.json:
        output.print_items(rows)
    else:
        from servermgr.ctl import render

        render.print_schedules(rows)


def remove(a: Parsed) -> None:
    doc = client(a).remove_schedule(a.name)
    if a.json:
        output.print_json(doc)
    else:
        print(f"removed schedule {doc['removed']} (its past jobs stay)")


def pause(a: Parsed) -> None:
    _pause(a, True)


def resume(a: Parsed) -> None:
    _pause(a, False)


def _pause(a: Parsed, paused: bool) -> None:
    doc = client(a).pause_schedule(a.name, paused=paused)
    if a.json:
        output.print_json(doc)
    else:
        print(said(doc, "paused" if paused else "resumed"))
