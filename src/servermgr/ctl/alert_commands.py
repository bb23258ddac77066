"""Handlers of ``ctl alerts`` and ``ctl alert ...`` (spec: cli/commands.py; docs/alerts.md).

Tables come from ``ctl/alerts.py``; requests from ``ctl/client.py``.
"""

from __future__ import annotations

from typing import Any

from servermgr.cli.spec import Parsed
from servermgr.common.errors import ApiError, UsageError
from servermgr.ctl import output
from servermgr.ctl.commands import client


def alerts(a: Parsed) -> None:
    import time

    from servermgr.ctl import alerts as tables

    if a.history and a.deliveries:
        raise UsageError("give --history or --deliveries, not both")
    c = client(a)
    if a.history or a.deliveries:
        kind = "history" if a.history else "deliveries"
        rows = c.alert_log(kind, since=a.since, limit=a.limit)
        if a.json:
            output.print_items(rows)
            return
        table = tables.history_table(rows) if a.history else tables.deliveries_table(rows)
        tables.show(rows, table, f"nothing since {a.since}")
        return
    rows = c.alerts()
    if a.json:
        output.print_items(rows)
    else:
        tables.show(
            rows, tables.alerts_table(rows, now=time.time()), "no alert is firing or pending"
        )


def alert_list(a: Parsed) -> None:
    rows = client(a).alert_rules()
    if a.json:
        output.print_items(rows)
    else:
        from servermgr.ctl import alerts as tables

        tables.show(rows, tables.rules_table(rows), "no alert rules")


def alert_add(a: Parsed) -> None:
    if a.when is None:
        raise UsageError(
            'give --when, e.g. --when "cpu > 90" (see: servermgr ctl alert add --help)'
        )
    body: dict[str, Any] = {"name": a.name, "when": a.when, "for": a.hold, "nodes": a.nodes}
    if a.notify is not None:
        body["notify"] = [n.strip() for n in a.notify.split(",") if n.strip()]
    if a.renotify is not None:
        body["renotify"] = a.renotify
    try:
        rule = client(a).add_alert_rule(body)
    except ApiError as exc:
        if exc.status == 400:
            exc.exit_code = 2  # a bad rule is a usage error
        raise
    if a.json:
        output.print_json(rule)
    else:
        from servermgr.ctl import alerts as tables

        tables.show([rule], tables.rules_table([rule]), "")


def alert_remove(a: Parsed) -> None:
    client(a).remove_alert_rule(a.name)
    print(f"removed alert rule {a.name}")


def alert_silence(a: Parsed) -> None:
    doc = client(a).add_silence(a.target, a.hold)
    if a.json:
        output.print_json(doc)
        return
    from servermgr.ctl import alerts as tables

    print(
        f"silenced {doc['scope']} {doc['target']} until {tables.until(doc['until'])} "
        f"(silence {doc['id']}; end it with: servermgr ctl alert unsilence {doc['id']})"
    )


def alert_silences(a: Parsed) -> None:
    rows = client(a).silences()
    if a.json:
        output.print_items(rows)
    else:
        from servermgr.ctl import alerts as tables

        tables.show(rows, tables.silences_table(rows), "no silence in force")


def alert_unsilence(a: Parsed) -> None:
    try:
        silence_id = int(a.silence_id)
    except ValueError:
        raise UsageError(
            f"silence id {a.silence_id!r}: a number (see: ctl alert silences)"
        ) from None
    client(a).remove_silence(silence_id)
    print(f"silence {silence_id} ended")
