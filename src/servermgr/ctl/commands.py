"""Handlers of ``servermgr ctl ...`` (spec: cli/commands.py).

Each takes the parsed command line (its own options and ctl's: ``a.core``,
``a.key``...) and returns the exit code (None: 0). Every request goes
through ``client(a)``: the API's paths live in ``ctl/client.py`` only.
Tables are built with rich (``ctl/render.py``, imported when a table is
printed); ``--json`` goes through ``ctl/output.py``.
"""

from __future__ import annotations

import os
import sys

from servermgr.cli.spec import Parsed
from servermgr.common.errors import ClientError, UsageError
from servermgr.ctl import output

TYPE_CHECKING = False  # not typing's: it costs ctl's start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

    from servermgr.common.config import Config
    from servermgr.common.tls import Trust
    from servermgr.ctl.client import Client

EXIT_FAILURE = 255  # exec/service: ctl, Core or the node could not run it (as ssh)


def _config(a: Parsed) -> Config:
    from pathlib import Path

    from servermgr.common.config import find_config, load_config

    cwd = Path.cwd()
    path = Path(a.config) if a.config else None
    return load_config(find_config(path, os.environ, cwd), cwd=cwd)


def resolve(a: Parsed) -> tuple[str, str, Trust | None]:
    """Core's base URL, the key and how to trust its certificate, from ctl's options."""
    from servermgr.ctl.client import resolve as resolve_core

    return resolve_core(
        a.core, a.key, lambda: _config(a), fingerprint=a.fingerprint, ca_file=a.ca_file
    )


def client(a: Parsed) -> Client:
    from servermgr.ctl.client import Client

    base, secret, trust = resolve(a)
    return Client(base, secret, trust=trust)


def _render(name: str, doc: Any) -> None:
    from servermgr.ctl import render

    getattr(render, name)(doc)


def nodes(a: Parsed) -> None:
    if a.target is not None:
        _check_target(a.target)
    found = client(a).nodes(a.target)
    if a.json:
        output.print_items(found)
    else:
        from servermgr.ctl import plain

        plain.print_nodes(found, sys.stdout)


def _check_target(spec: str) -> None:
    """A malformed target is a usage error here, before Core is asked."""
    from servermgr.common import selector

    try:
        selector.parse_target(spec)
    except ValueError as exc:
        raise UsageError(f"{exc} (targets: docs/targeting.md)") from None


def node_show(a: Parsed) -> None:
    doc = client(a).node(a.node)
    if a.json:
        output.print_json(doc)
    else:
        _render("print_node", doc)


def node_remove(a: Parsed) -> int | None:
    from servermgr.common.text import printable

    c = client(a)
    if not a.force:
        node = c.node(a.node)
        if node.get("status") == "online":
            raise UsageError(
                f"{node['name']} is online: stop its agent first, or remove it anyway "
                "with --force (it cannot come back with its old credential)"
            )
    result = c.remove_node(a.node)
    if a.json:
        output.print_json(result)
    else:
        print(printable(f"removed {result['name']} ({result['removed']})"))
    return None


def node_rename(a: Parsed) -> None:
    from servermgr.common.text import printable

    result = client(a).rename_node(a.node, a.new_name)
    if a.json:
        output.print_json(result)
    else:
        print(printable(f"renamed {a.node} to {result['name']} ({result['id']})"))


def node_upgrade(a: Parsed) -> int:
    from servermgr.ctl import upgrade
    from servermgr.ctl.client import Client

    if a.all == (a.target is not None):
        raise UsageError("give the nodes to upgrade (a name, a,b, role=web) or --all")
    if a.target is not None:
        _check_target(a.target)
    base, secret, trust = resolve(a)
    return upgrade.run(
        lambda t: Client(base, secret, timeout=t, trust=trust),
        "*" if a.all else str(a.target),
        batch=a.batch,
        timeout=a.timeout,
        as_json=a.json,
    )


def top(a: Parsed) -> int:
    base, secret, trust = resolve(a)
    from servermgr.ctl import dashboard

    return dashboard.main(base, secret, trust=trust)


def metrics(a: Parsed) -> None:
    doc = client(a).metrics(a.node, since=a.since, until=a.until, step=a.step)
    if a.json:
        output.print_items(doc["samples"], **{k: v for k, v in doc.items() if k != "samples"})
    else:
        _render("print_metrics", doc)


def jobs(a: Parsed) -> None:
    doc = client(a).jobs(node=a.node, state=a.state, limit=a.limit, before=a.before)
    if a.json:
        output.print_items(doc["jobs"], next_before=doc.get("next_before"))
    else:
        _render("print_jobs", doc["jobs"])


def job(a: Parsed) -> None:
    doc = client(a).job(a.job_id)
    if a.json:
        output.print_json(doc)
    else:
        _render("print_job", doc)


def cancel(a: Parsed) -> None:
    doc = client(a).cancel_job(a.job_id)
    if a.json:
        output.print_json(doc)
    else:
        print(f"cancel sent for job {doc['id']}")


def audit(a: Parsed) -> None:
    rows = client(a).audit(since=a.since, action=a.action, limit=a.limit)
    if a.json:
        output.print_items(rows)
    else:
        _render("print_audit", rows)


def cp(a: Parsed) -> int:
    from servermgr.ctl import cp as cp_mod

    if (a.label is None) == (a.dst is None):
        raise UsageError("cp: give TARGET:PATH or --label SELECTOR:PATH (one of them)")
    dst = a.dst
    if a.label is not None:
        selector, colon, _ = a.label.partition(":")
        if not colon or "=" not in selector:
            raise UsageError(
                f"cp --label: expected SELECTOR:PATH (role=web:/etc/app.conf), got {a.label!r}"
            )
        dst = a.label
    base, secret, trust = resolve(a)
    conn = cp_mod.Connection(base, secret, trust)
    try:
        return cp_mod.run(
            conn,
            lambda: client(a).nodes(),
            a.src,
            dst,
            mode=a.mode,
            owner=a.owner,
            parallel=a.parallel,
            as_json=a.json,
        )
    except ClientError as exc:
        exc.exit_code = EXIT_FAILURE
        raise


def shell(a: Parsed) -> int:
    import trio

    from servermgr.ctl import shell as shell_mod
    from servermgr.ctl.cp import Connection

    base, secret, trust = resolve(a)
    try:
        return trio.run(shell_mod.run, Connection(base, secret, trust), a.node)
    except ClientError as exc:
        exc.exit_code = EXIT_FAILURE
        raise


# --- exec / service ----------------------------------------------------------------


def _exec_client(a: Parsed) -> Client:
    """The client for exec/service, whose own failures exit 255 (as ssh does)."""
    try:
        return client(a)
    except ClientError as exc:
        exc.exit_code = EXIT_FAILURE
        raise


def _exec_resolve(a: Parsed) -> tuple[str, str, Trust | None]:
    """``resolve`` for exec, whose own failures exit 255 (as ssh does)."""
    try:
        return resolve(a)
    except ClientError as exc:
        exc.exit_code = EXIT_FAILURE
        raise


def exec_(a: Parsed) -> int:
    from servermgr.ctl import exec as exec_mod
    from servermgr.ctl.jobspec import job_body, target_of

    target, words, single = target_of(a.words, a.all, a.label)
    if not words:
        raise UsageError("missing the command to run (see: servermgr ctl exec --help)")
    body = job_body(
        target,
        " ".join(words),
        None,
        timeout=a.timeout,
        output_cap=a.output_cap,
        wait=a.wait,
        env=a.env,
        cwd=a.cwd,
    )
    forward = None
    if not a.no_stdin and single and exec_mod.forwardable(0):
        # One node: a stream, any size, as the command reads it (ctl/stdin.py).
        from functools import partial

        from servermgr.ctl.stdin import Forwarder

        body["stdin_stream"] = True
        forward = partial(Forwarder, *_exec_resolve(a), patience=body.get("wait") or 0.0)
    elif not a.no_stdin:
        # Several: the same bytes to each, read whole first (at most 512 KiB).
        data = exec_mod.read_stdin(0)
        if data is not None:
            import base64

            body["stdin"] = base64.b64encode(data).decode()
    return exec_mod.run(
        _exec_client(a),
        body,
        single=single,
        stream=not a.no_stream,
        as_json=a.json,
        stdin=forward,
    )


def service(a: Parsed) -> int:
    from servermgr.ctl import exec as exec_mod
    from servermgr.ctl.jobspec import job_body, service_spec, target_of

    target, words, single = target_of(a.words, a.all, a.label)
    body = job_body(
        target,
        None,
        service_spec(words),
        timeout=a.timeout,
        output_cap=1 << 20,
        wait=a.wait,
        env=[],
        cwd=None,
    )
    return exec_mod.run(_exec_client(a), body, single=single, as_json=a.json)
