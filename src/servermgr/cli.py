"""The ``servermgr`` command line: a thin edge over the roles.

Library code raises typed errors (common/errors.py); ``main`` turns them into
one line on stderr and an exit code. Heavy modules (trio, httpx, rich,
hypercorn) are imported inside commands so ``--help`` and ``ctl`` start fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from servermgr import __version__

if TYPE_CHECKING:
    from servermgr.common.config import Config
    from servermgr.common.tls import Trust
    from servermgr.ctl.client import Client


class _NodeGroup(TyperGroup):
    """``ctl node NAME`` shows a node; ``ctl node rename|remove NAME`` changes one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    rich_markup_mode=None,
    name="servermgr",
    help="A lightweight manager for a fleet of Linux servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
core_app = typer.Typer(
    rich_markup_mode=None,
    help="Run Core: registration, node gateway, REST API, history.",
    no_args_is_help=True,
)
node_app = typer.Typer(rich_markup_mode=None, help="Run the node agent.", no_args_is_help=True)
key_app = typer.Typer(
    rich_markup_mode=None,
    help="Credentials on the Core host: the core key (admin) and named tokens with a role.",
    no_args_is_help=True,
)
ctl_app = typer.Typer(
    rich_markup_mode=None, help="Operate the fleet through Core's API.", no_args_is_help=True
)
ctl_node_app = typer.Typer(
    rich_markup_mode=None,
    cls=_NodeGroup,
    help="Show, rename or remove one node.",
    no_args_is_help=True,
)
ctl_schedule_app = typer.Typer(
    rich_markup_mode=None,
    help="Jobs Core runs by itself, every N or at cron times (docs/schedules.md).",
    no_args_is_help=True,
)
app.add_typer(core_app, name="core")
app.add_typer(node_app, name="node")
app.add_typer(key_app, name="key")
app.add_typer(ctl_app, name="ctl")
ctl_app.add_typer(ctl_node_app, name="node")
ctl_alert_app = typer.Typer(
    rich_markup_mode=None,
    help="Alert rules and silences (what fires: `ctl alerts`).",
    no_args_is_help=True,
)
ctl_app.add_typer(ctl_alert_app, name="alert")
ctl_app.add_typer(ctl_schedule_app, name="schedule")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $SERVERMGR_CONFIG, else "
        "./servermgr.toml if present, else built-in defaults).",
        dir_okay=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    from servermgr.common.text import printable

    sys.stderr.write(f"servermgr: {printable(message)}\n")
    raise typer.Exit(code)


def _config(path: Path | None) -> Config:
    from servermgr.common.config import find_config, load_config

    cwd = Path.cwd()
    return load_config(find_config(path, os.environ, cwd), cwd=cwd)


def _version(value: bool) -> None:
    if value:
        print(f"servermgr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """A lightweight manager for a fleet of Linux servers."""


# --- core / node / up --------------------------------------------------------


@core_app.command("serve")
def core_serve(config: ConfigOpt = None) -> None:
    """Run Core on [server] listen until SIGINT/SIGTERM."""
    cfg = _config(config)
    import trio

    from servermgr.common import logs
    from servermgr.common.run import stop_on_signals
    from servermgr.core.app import serve

    logs.setup(cfg.log_level)

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_on_signals, stop)
            await serve(cfg, stop)
            nursery.cancel_scope.cancel()

    trio.run(main)


@core_app.command("backup")
def core_backup(
    file: Annotated[Path, typer.Argument(help="Where to write the copy.", dir_okay=False)],
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
) -> None:
    """Copy Core's database to FILE: consistent while Core runs, mode 0600."""
    cfg = _config(config)
    from servermgr.core.dbfile import backup

    report = backup(cfg.storage.sqlite_path, file, overwrite=force)
    print(
        f"backed up {cfg.storage.sqlite_path} to {report.path}: {report.bytes} bytes, "
        f"{report.nodes} nodes, {report.jobs} jobs, {report.samples} raw samples"
    )


@core_app.command("agent-publish")
def core_agent_publish(
    file: Annotated[
        Path, typer.Argument(help="A servermgr zipapp (build_zipapp.sh).", dir_okay=False)
    ],
    config: ConfigOpt = None,
) -> None:
    """Make FILE the agent Core hands out to `ctl node upgrade` (checked: it must start)."""
    cfg = _config(config)
    from servermgr.core.agentfile import publish

    agent = publish(cfg.storage.data_dir, file)
    print(
        f"published agent {agent.version} ({agent.size} bytes, sha256 {agent.sha256}) "
        f"as {agent.path}; move nodes to it with: servermgr ctl node upgrade --all"
    )


@node_app.command("upgrade-watch", hidden=True)
def node_upgrade_watch(
    marker: Annotated[Path, typer.Argument(help="The upgrade marker (data_dir/upgrade.json).")],
) -> None:
    """Started by an agent that upgrades itself: rolls back unless the new one is welcomed."""
    from servermgr.node.upgrade import watch

    watch(marker)


@node_app.command("run")
def node_run(config: ConfigOpt = None) -> None:
    """Run the node agent: register, send heartbeats, reconnect forever."""
    from servermgr.node.run import run_agent

    run_agent(config)


@app.command("up")
def up(config: ConfigOpt = None) -> None:
    """Run Core plus a local node in one process: the quickest way to look around."""
    cfg = _config(config)
    from servermgr import up as up_mod
    from servermgr.common import logs

    logs.setup(cfg.log_level)
    up_mod.main(cfg)


# --- key -----------------------------------------------------------------------


@key_app.command("show")
def key_show(
    config: ConfigOpt = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Core's data directory (overrides [storage] data_dir).",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Print the core key (created if missing). The first line is the key alone."""
    from servermgr.common.keyfile import load_or_create_key

    if config is not None and data_dir is not None:
        _fail("give --config or --data-dir, not both", 2)
    cfg = _config(config) if data_dir is None else None
    path = cfg.storage.key_path if cfg is not None else data_dir / "core.key"  # type: ignore[operator]
    key = load_or_create_key(path)
    print(key.value)
    if key.warning:
        sys.stderr.write(f"warning: {key.warning}\n")
    note = "created" if key.created else "stored"
    sys.stderr.write(
        f"({note} in {key.path}; the admin credential: use it as SERVERMGR_KEY; for nodes "
        "make an enroll token: servermgr key create --role enroll --name NAME)\n"
    )
    _show_fingerprint(cfg, data_dir)


def _show_fingerprint(cfg: Config | None, data_dir: Path | None) -> None:
    """Line 2 of ``key show`` when Core serves TLS: its certificate's fingerprint."""
    from servermgr.core import tls

    files = tls.fingerprint_for(cfg, data_dir)
    if files is None:
        return
    print(files.fingerprint)
    sys.stderr.write(
        f"(line 2: the fingerprint of {files.cert}; use it as node.tls_fingerprint "
        "and SERVERMGR_FINGERPRINT)\n"
    )


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Core's data directory (overrides [storage] data_dir).", file_okay=False
    ),
]


def _core_paths(config: Path | None, data_dir: Path | None) -> tuple[Path, Path]:
    """(core key file, database) of the Core whose credentials a key command manages."""
    if config is not None and data_dir is not None:
        _fail("give --config or --data-dir, not both", 2)
    if data_dir is not None:
        return data_dir / "core.key", data_dir / "server_manager.db"
    cfg = _config(config)
    return cfg.storage.key_path, cfg.storage.sqlite_path


@key_app.command("create")
def key_create(
    role: Annotated[
        str, typer.Option("--role", help="read, operate or enroll.", show_default=False)
    ],
    name: Annotated[
        str, typer.Option("--name", help="A name for the token (audit, list, revoke).")
    ],
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="Stop working after this long (30d, 12h); default never."),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make a named token with a role; prints it once, alone on the first line."""
    from servermgr.core import keyadmin

    _, db = _core_paths(config, data_dir)
    doc, secret = keyadmin.create(db, name, role, expires)
    print(secret)
    until = "never expires" if doc["expires"] is None else "expires " + _when(doc["expires"])
    sys.stderr.write(
        f"(token {doc['name']!r}, role {doc['role']}, {until}; shown only now: Core keeps a "
        "hash. A running Core takes it within a second)\n"
    )


@key_app.command("list")
def key_list(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, json_out: JsonOpt = False
) -> None:
    """List named tokens: name, role, created, expires, last used (never the secret)."""
    from servermgr.core import keyadmin

    _, db = _core_paths(config, data_dir)
    rows = keyadmin.listing(db)
    if json_out:
        from servermgr.ctl import render

        render.print_json(rows)
        return
    if not rows:
        print("no tokens (make one: servermgr key create --role read --name NAME)")
        return
    table = [("NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED")]
    for r in rows:
        table.append(
            (
                r["name"],
                r["role"],
                _when(r["created"]),
                _when(r["expires"]) if r["expires"] is not None else "never",
                _when(r["last_used"]) if r["last_used"] is not None else "never",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@key_app.command("revoke")
def key_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a named token; a running Core refuses it within a second."""
    from servermgr.core import keyadmin

    _, db = _core_paths(config, data_dir)
    keyadmin.revoke(db, name)
    print(f"revoked token {name!r}")


@key_app.command("rotate")
def key_rotate(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Replace the core key; prints the new one alone on the first line."""
    from servermgr.core import keyadmin

    path, _ = _core_paths(config, data_dir)
    key = keyadmin.rotate(path)
    print(key.value)
    sys.stderr.write(
        f"(new core key in {path}; the old one stops working, on a running Core within a "
        "second; registered nodes keep working: update SERVERMGR_KEY where it was used)\n"
    )


def _when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


# --- ctl -----------------------------------------------------------------------


@ctl_app.callback()
def _ctl(
    ctx: typer.Context,
    core: Annotated[
        str | None,
        typer.Option(
            "--core",
            envvar="SERVERMGR_CORE",
            help="Core's address, e.g. http://127.0.0.1:9999 [default: from the config's "
            "[server] listen]",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="SERVERMGR_KEY",
            show_envvar=True,
            help="The core key [default: read from the local Core's data_dir]",
        ),
    ] = None,
    config: ConfigOpt = None,
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            envvar="SERVERMGR_FINGERPRINT",
            show_envvar=True,
            help="For https: Core's certificate fingerprint (sha256:..., as `key show` prints "
            "it) [default: the local Core's]",
        ),
    ] = None,
    ca_file: Annotated[
        str | None,
        typer.Option(
            "--ca-file",
            envvar="SERVERMGR_CA_FILE",
            show_envvar=True,
            help="For https: verify Core's certificate with this CA file instead of a pin.",
        ),
    ] = None,
) -> None:
    """Operate the fleet through Core's API (--core/--key or SERVERMGR_CORE/SERVERMGR_KEY)."""
    ctx.obj = (core, key, config, fingerprint, ca_file)


def _show(json_out: bool, doc: Any, printer: str, table: Any = None) -> None:
    """Print ``doc`` as JSON, or ``table`` (default: ``doc``) with ``render.<printer>``."""
    from servermgr.ctl import render

    if json_out:
        render.print_json(doc)
    else:
        getattr(render, printer)(doc if table is None else table)


def _resolve(ctx: typer.Context) -> tuple[str, str, Trust | None]:
    from servermgr.ctl.client import resolve

    core, key, config, fingerprint, ca_file = ctx.obj
    return resolve(core, key, lambda: _config(config), fingerprint=fingerprint, ca_file=ca_file)


def _client(ctx: typer.Context) -> Client:
    from servermgr.ctl.client import Client

    base, secret, trust = _resolve(ctx)
    return Client(base, secret, trust=trust)


def _exec_client(ctx: typer.Context) -> Client:
    """The client for exec/service, whose own failures exit 255 (as ssh does)."""
    from servermgr.common.errors import ClientError

    try:
        return _client(ctx)
    except ClientError as exc:
        exc.exit_code = 255
        raise


@ctl_app.command("nodes")
def ctl_nodes(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List nodes: status, CPU, memory, disk, network, load, uptime, last seen."""
    nodes = _client(ctx).nodes()
    _show(json_out, nodes, "print_nodes")


@ctl_node_app.command("show")
def ctl_node_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Node name or id.")],
    json_out: JsonOpt = False,
) -> None:
    """Show one node: static info, disks, interfaces, latest sample."""
    node = _client(ctx).node(name)
    _show(json_out, node, "print_node")


@ctl_node_app.command("remove")
def ctl_node_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Node name or id.")],
    json_out: JsonOpt = False,
) -> None:
    """Remove a node and its history; its name can then be registered again."""
    result = _client(ctx).remove_node(name)
    if json_out:
        from servermgr.ctl import render

        render.print_json(result)
    else:
        from servermgr.common.text import printable

        print(printable(f"removed {result['name']} ({result['removed']})"))


@ctl_node_app.command("rename")
def ctl_node_rename(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Node name or id.")],
    new_name: Annotated[str, typer.Argument(help="The node's new name.")],
    json_out: JsonOpt = False,
) -> None:
    """Rename a node; it keeps its id, credential and history."""
    result = _client(ctx).rename_node(name, new_name)
    if json_out:
        from servermgr.ctl import render

        render.print_json(result)
    else:
        from servermgr.common.text import printable

        print(printable(f"renamed {name} to {result['name']} ({result['id']})"))


@ctl_node_app.command("upgrade")
def ctl_node_upgrade(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(help="Nodes: a name, a,b, role=web or * (or --all).", show_default=False),
    ] = None,
    all_nodes: Annotated[bool, typer.Option("--all", "-a", help="Every node.")] = False,
    batch: Annotated[int, typer.Option("--batch", help="Nodes upgraded at once.", metavar="N")] = 1,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout",
            help="A node not back with the new version this long rolls back.",
            metavar="DURATION",
        ),
    ] = "60s",
    json_out: JsonOpt = False,
) -> None:
    """Move agents to the zipapp Core holds (core agent-publish), N at a time.

    Needs the core key. Each node checks the file, switches, restarts and
    keeps its identity; one not back with the new version within --timeout
    rolls back. A batch with a failure stops the rest. Exit 0: every node
    runs the new version; 1: any did not.
    """
    from servermgr.common.errors import UsageError
    from servermgr.ctl import upgrade
    from servermgr.ctl.client import Client
    from servermgr.ctl.jobspec import seconds

    if all_nodes == (target is not None):
        raise UsageError("give the nodes to upgrade (a name, a,b, role=web) or --all")
    base, secret, trust = _resolve(ctx)
    code = upgrade.run(
        lambda t: Client(base, secret, timeout=t, trust=trust),
        "*" if all_nodes else str(target),
        batch=batch,
        timeout=seconds(timeout, "--timeout"),
        as_json=json_out,
    )
    raise typer.Exit(code)


@ctl_app.command("top")
def ctl_top(ctx: typer.Context) -> None:
    """Live dashboard of every node: CPU, memory, disk, network, load (q quits).

    Keys: s sort · / filter by name or label · arrows/j/k select · Enter details ·
    PgUp/PgDn scroll · Esc back · q quit.
    """
    base, secret, trust = _resolve(ctx)
    from servermgr.ctl import dashboard

    raise typer.Exit(dashboard.main(base, secret, trust=trust))


@ctl_app.command("metrics")
def ctl_metrics(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Node name or id.")],
    since: Annotated[
        str, typer.Option(help="Start: a duration ago (10m, 1h, 7d) or unix seconds.")
    ] = "1h",
    until: Annotated[str | None, typer.Option(help="End (default: now).")] = None,
    step: Annotated[
        str,
        typer.Option(
            help="Resolution: raw, 1m or 1h; auto picks by range "
            "(raw up to 6h, 1m below 7d, else 1h)."
        ),
    ] = "auto",
    json_out: JsonOpt = False,
) -> None:
    """A node's metrics over time, with sparklines (1-minute or hourly rollups for long ranges)."""
    doc = _client(ctx).metrics(name, since=since, until=until, step=step)
    _show(json_out, doc["samples"], "print_metrics", doc)


TimeoutOpt = Annotated[
    str, typer.Option("--timeout", "-t", help="Kill the command after this long (30s, 5m, 1h).")
]
WaitOpt = Annotated[
    str,
    typer.Option(
        "--wait", help="Queue the job for offline nodes this long (10m) instead of failing at once."
    ),
]
AllOpt = Annotated[bool, typer.Option("--all", "-a", help="Target every node.")]
LabelOpt = Annotated[
    str | None,
    typer.Option("--label", "-l", help="Target nodes with these labels: role=web,env=prod."),
]


@ctl_app.command("exec", context_settings={"ignore_unknown_options": False})
def ctl_exec(
    ctx: typer.Context,
    args: Annotated[
        list[str],
        typer.Argument(
            help="TARGET (node, node-01,node-02 or role=web) then the command; quote the command "
            "or put it after --.",
            show_default=False,
        ),
    ],
    all_nodes: AllOpt = False,
    label: LabelOpt = None,
    timeout: TimeoutOpt = "60s",
    output_cap: Annotated[
        int, typer.Option("--output-cap", help="Keep at most this many bytes per stream per node.")
    ] = 1 << 20,
    wait: WaitOpt = "0s",
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", "-e", help="Set NAME=VALUE in the command's environment (repeatable)."
        ),
    ] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", help="Working directory.")] = None,
    json_out: JsonOpt = False,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print the output when the job is done, not live.")
    ] = False,
) -> None:
    """Run a shell command on one node or many, with live output.

    One node: its output as written and its exit code. Several: lines prefixed
    with the node name and a summary on stderr; exit 0 only if all succeeded.
    Exit 124: timed out; 255: ctl, Core or the node could not run it.
    """
    from servermgr.ctl.jobspec import job_body, target_of

    target, words, single = target_of(args, all_nodes, label)
    if not words:
        _fail("missing the command to run", 2)
    body = job_body(
        target,
        " ".join(words),
        None,
        timeout=timeout,
        output_cap=output_cap,
        wait=wait,
        env=env or [],
        cwd=cwd,
    )
    from servermgr.ctl import exec as exec_mod

    code = exec_mod.run(
        _exec_client(ctx), body, single=single, stream=not no_stream, as_json=json_out
    )
    raise typer.Exit(code)


@ctl_app.command("cp")
def ctl_cp(
    ctx: typer.Context,
    src: Annotated[
        str, typer.Argument(help="A local file, or NODE:/path to pull from.", show_default=False)
    ],
    dst: Annotated[
        str,
        typer.Argument(
            help="TARGET:/path to push to (a node, a,b, role=web or *), or a local path.",
            show_default=False,
        ),
    ],
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode", help="Permissions of the copied file, octal (0644).", metavar="MODE"
        ),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="Push: owner of the placed file, USER[:GROUP] or :GROUP.",
            metavar="USER",
        ),
    ] = None,
    parallel: Annotated[
        int, typer.Option("--parallel", help="Push: nodes written at once.", metavar="N")
    ] = 4,
    json_out: JsonOpt = False,
) -> None:
    """Copy a file to nodes (LOCAL TARGET:PATH) or from one node (NODE:PATH LOCAL).

    Streamed in chunks with back-pressure; the SHA-256 is checked on every
    side and printed; a push is placed atomically. The node's [files] policy
    decides which paths. Exit 0: every node has the file; 1: any failed;
    255: Core unreachable or the key refused.
    """
    from servermgr.common.errors import ClientError
    from servermgr.ctl import cp

    base, secret, trust = _resolve(ctx)
    conn = cp.Connection(base, secret, trust)
    try:
        code = cp.run(
            conn,
            lambda: _client(ctx).nodes(),
            src,
            dst,
            mode=mode,
            owner=owner,
            parallel=parallel,
            as_json=json_out,
        )
    except ClientError as exc:
        exc.exit_code = 255
        raise
    raise typer.Exit(code)


@ctl_app.command("shell")
def ctl_shell(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="The node (name or id).", show_default=False)],
) -> None:
    """Open an interactive shell on a node, like ssh (needs [exec] shell = true there).

    Exits with the shell's status (128+N when killed by signal N); 255 when
    the shell cannot be opened (unknown or offline node, refused, Core
    unreachable).
    """
    import trio

    from servermgr.common.errors import ClientError
    from servermgr.ctl import shell
    from servermgr.ctl.cp import Connection

    base, secret, trust = _resolve(ctx)
    try:
        code = trio.run(shell.run, Connection(base, secret, trust), node)
    except ClientError as exc:
        exc.exit_code = 255
        raise
    raise typer.Exit(code)


@ctl_app.command("service")
def ctl_service(
    ctx: typer.Context,
    args: Annotated[
        list[str],
        typer.Argument(
            help="TARGET ACTION UNIT (ACTION: status, start, stop, restart, reload, enable, "
            "disable); with --all or --label: ACTION UNIT.",
            show_default=False,
        ),
    ],
    all_nodes: AllOpt = False,
    label: LabelOpt = None,
    timeout: TimeoutOpt = "60s",
    wait: WaitOpt = "0s",
    json_out: JsonOpt = False,
) -> None:
    """Manage a systemd unit on nodes, with the same guarantees as exec."""
    from servermgr.ctl.jobspec import job_body, service_spec, target_of

    target, words, single = target_of(args, all_nodes, label)
    body = job_body(
        target,
        None,
        service_spec(words),
        timeout=timeout,
        output_cap=1 << 20,
        wait=wait,
        env=[],
        cwd=None,
    )
    from servermgr.ctl import exec as exec_mod

    raise typer.Exit(exec_mod.run(_exec_client(ctx), body, single=single, as_json=json_out))


@ctl_app.command("jobs")
def ctl_jobs(
    ctx: typer.Context,
    node: Annotated[str | None, typer.Option(help="Only jobs that ran on this node.")] = None,
    state: Annotated[
        str | None, typer.Option(help="Only jobs with a node in this state (e.g. failed, running).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 20,
    before: Annotated[
        float | None,
        typer.Option(help="Page: jobs created before this time (the next_before of --json)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    for k, v in (("node", node), ("state", state), ("before", before)):
        if v is not None:
            params[k] = v
    doc = _client(ctx).request("GET", "/api/v1/jobs", params=params)
    _show(json_out, doc, "print_jobs", doc["jobs"])


@ctl_app.command("job")
def ctl_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    json_out: JsonOpt = False,
) -> None:
    """Show one job: each node's state, exit code, duration and output."""
    from urllib.parse import quote

    doc = _client(ctx).request("GET", f"/api/v1/jobs/{quote(job_id, safe='')}")
    _show(json_out, doc, "print_job")


@ctl_app.command("cancel")
def ctl_cancel(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    json_out: JsonOpt = False,
) -> None:
    """Cancel a job on every node where it has not finished."""
    from urllib.parse import quote

    doc = _client(ctx).request("POST", f"/api/v1/jobs/{quote(job_id, safe='')}/cancel")
    from servermgr.ctl import render

    if json_out:
        render.print_json(doc)
    else:
        print(f"cancel sent for job {doc['id']}")


@ctl_app.command("audit")
def ctl_audit(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Only since (1h, 7d, unix seconds).")] = None,
    action: Annotated[
        str | None, typer.Option(help="exec, service, schedule.add, schedule.remove, ...")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many rows (newest first).")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The audit log: who ran what, where, when, and how it ended."""
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        params["since"] = since
    if action is not None:
        params["action"] = action
    rows = _client(ctx).request("GET", "/api/v1/audit", params=params)
    _show(json_out, rows, "print_audit")


# --- alerts (docs/alerts.md) --------------------------------------------------


@ctl_app.command("alerts")
def ctl_alerts(
    ctx: typer.Context,
    history: Annotated[
        bool, typer.Option("--history", help="Every transition (pending, firing, resolved).")
    ] = False,
    deliveries: Annotated[
        bool, typer.Option("--deliveries", help="Every notification attempt and its outcome.")
    ] = False,
    since: Annotated[
        str, typer.Option(help="With --history/--deliveries: since (1h, 7d, unix seconds).")
    ] = "7d",
    limit: Annotated[int, typer.Option(help="With --history/--deliveries: the newest N.")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """Alerts pending or firing now; --history for every transition."""
    import time

    from servermgr.ctl import alerts

    if history and deliveries:
        _fail("give --history or --deliveries, not both", 2)
    client = _client(ctx)
    if history or deliveries:
        path = "/api/v1/alerts/history" if history else "/api/v1/alerts/deliveries"
        rows = client.request("GET", path, params={"since": since, "limit": limit})
        table = alerts.history_table(rows) if history else alerts.deliveries_table(rows)
        empty = f"nothing since {since}"
    else:
        rows = client.request("GET", "/api/v1/alerts")
        table, empty = alerts.alerts_table(rows, now=time.time()), "no alert is firing or pending"
    if json_out:
        _show(True, rows, "print_json")
    else:
        alerts.show(rows, table, empty)


@ctl_alert_app.command("list")
def ctl_alert_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """The alert rules: from Core's config and added with `ctl alert add`."""
    from servermgr.ctl import alerts

    rows = _client(ctx).request("GET", "/api/v1/alerts/rules")
    if json_out:
        _show(True, rows, "print_json")
    else:
        alerts.show(rows, alerts.rules_table(rows), "no alert rules")


@ctl_alert_app.command("add")
def ctl_alert_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The rule's name (a-z, 0-9, . - _).")],
    when: Annotated[
        str,
        typer.Option(
            "--when",
            help='The condition: "cpu > 90", "disk:/var >= 80", "net_rx > 10M", offline, '
            "job_failed.",
        ),
    ],
    hold: Annotated[
        str, typer.Option("--for", help="How long it must hold before firing (30s, 5m).")
    ] = "0",
    nodes: Annotated[
        str, typer.Option(help="Which nodes: a name, a comma list, key=value labels, *.")
    ] = "*",
    notify: Annotated[
        str | None, typer.Option(help="Receivers (comma list) [default: all].")
    ] = None,
    renotify: Annotated[
        str | None, typer.Option(help="While firing, notify again this often (1h).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Add an alert rule (kept by Core across restarts; needs the operate role)."""
    from servermgr.ctl import alerts

    body: dict[str, Any] = {"name": name, "when": when, "for": hold, "nodes": nodes}
    if notify is not None:
        body["notify"] = [n.strip() for n in notify.split(",") if n.strip()]
    if renotify is not None:
        body["renotify"] = renotify
    from servermgr.common.errors import ApiError

    try:
        rule = _client(ctx).request("POST", "/api/v1/alerts/rules", json=body)
    except ApiError as exc:
        if exc.status == 400:
            exc.exit_code = 2  # a bad rule is a usage error
        raise
    if json_out:
        _show(True, rule, "print_json")
    else:
        alerts.show([rule], alerts.rules_table([rule]), "")


@ctl_alert_app.command("remove")
def ctl_alert_remove(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The rule's name.")]
) -> None:
    """Remove an alert rule added with `ctl alert add` (config rules: edit the file)."""
    from urllib.parse import quote

    _client(ctx).request("DELETE", f"/api/v1/alerts/rules/{quote(name, safe='')}")
    print(f"removed alert rule {name}")


@ctl_alert_app.command("silence")
def ctl_alert_silence(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(help="A node or a rule (node:NAME / rule:NAME if both exist).")
    ],
    hold: Annotated[str, typer.Option("--for", help="How long (30m, 2h, 1d).")] = "1h",
    json_out: JsonOpt = False,
) -> None:
    """Hold back the notifications of a node's or a rule's alerts for a while."""
    from servermgr.ctl import alerts

    doc = _client(ctx).request(
        "POST", "/api/v1/alerts/silences", json={"target": target, "for": hold}
    )
    if json_out:
        _show(True, doc, "print_json")
    else:
        print(
            f"silenced {doc['scope']} {doc['target']} until {alerts.until(doc['until'])} "
            f"(silence {doc['id']}; end it with: servermgr ctl alert unsilence {doc['id']})"
        )


@ctl_alert_app.command("silences")
def ctl_alert_silences(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """The silences in force."""
    from servermgr.ctl import alerts

    rows = _client(ctx).request("GET", "/api/v1/alerts/silences")
    if json_out:
        _show(True, rows, "print_json")
    else:
        alerts.show(rows, alerts.silences_table(rows), "no silence in force")


@ctl_alert_app.command("unsilence")
def ctl_alert_unsilence(
    ctx: typer.Context, silence_id: Annotated[int, typer.Argument(help="The silence's id.")]
) -> None:
    """End a silence now."""
    _client(ctx).request("DELETE", f"/api/v1/alerts/silences/{silence_id}")
    print(f"silence {silence_id} ended")


ScheduleName = Annotated[str, typer.Argument(help="The schedule's name.", show_default=False)]


@ctl_schedule_app.command("add")
def ctl_schedule_add(
    ctx: typer.Context,
    name: ScheduleName,
    args: Annotated[
        list[str],
        typer.Argument(
            help="TARGET (node, node-01,node-02 or role=web) then the command; quote the command "
            "or put it after --.",
            show_default=False,
        ),
    ],
    every: Annotated[
        str | None, typer.Option("--every", help="Run every DURATION (90s, 10m, 1h, 1d).")
    ] = None,
    cron: Annotated[
        str | None,
        typer.Option("--cron", help="Run at cron times: 'MIN HOUR DAY MONTH WEEKDAY'."),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="Time zone of --cron (e.g. Europe/Berlin; default UTC)."),
    ] = None,
    all_nodes: AllOpt = False,
    label: LabelOpt = None,
    timeout: TimeoutOpt = "60s",
    wait: WaitOpt = "0s",
    output_cap: Annotated[
        int, typer.Option("--output-cap", help="Keep at most this many bytes per stream per node.")
    ] = 1 << 20,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", "-e", help="Set NAME=VALUE in the command's environment (repeatable)."
        ),
    ] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", help="Working directory.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Make it paused.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Make a schedule: run a command on a target every DURATION or at cron times.

    Each run is an ordinary job (ctl jobs, by schedule:NAME). A run missed while
    Core was down runs once when it is back; the rest are skipped.
    """
    from servermgr.ctl import render
    from servermgr.ctl.schedules import said, schedule_body

    body = schedule_body(
        name,
        args,
        all_nodes=all_nodes,
        label=label,
        every=every,
        cron=cron,
        tz=tz,
        timeout=timeout,
        wait=wait,
        output_cap=output_cap,
        env=env or [],
        cwd=cwd,
        paused=paused,
    )
    doc = _client(ctx).add_schedule(body)
    if json_out:
        render.print_json(doc)
    else:
        print(said(doc, "made"))


@ctl_schedule_app.command("list")
def ctl_schedule_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List schedules: when each runs, its target, next run, last job."""
    _show(json_out, _client(ctx).schedules(), "print_schedules")


@ctl_schedule_app.command("remove")
def ctl_schedule_remove(ctx: typer.Context, name: ScheduleName, json_out: JsonOpt = False) -> None:
    """Remove a schedule (its past jobs stay)."""
    from servermgr.ctl import render

    doc = _client(ctx).remove_schedule(name)
    if json_out:
        render.print_json(doc)
    else:
        print(f"removed schedule {doc['removed']} (its past jobs stay)")


def _pause(ctx: typer.Context, name: str, paused: bool, json_out: bool) -> None:
    from servermgr.ctl import render
    from servermgr.ctl.schedules import said

    doc = _client(ctx).pause_schedule(name, paused=paused)
    if json_out:
        render.print_json(doc)
    else:
        print(said(doc, "paused" if paused else "resumed"))


@ctl_schedule_app.command("pause")
def ctl_schedule_pause(ctx: typer.Context, name: ScheduleName, json_out: JsonOpt = False) -> None:
    """Pause a schedule: no runs until resumed."""
    _pause(ctx, name, True, json_out)


@ctl_schedule_app.command("resume")
def ctl_schedule_resume(ctx: typer.Context, name: ScheduleName, json_out: JsonOpt = False) -> None:
    """Resume a schedule from its next due time (runs missed while paused are skipped)."""
    _pause(ctx, name, False, json_out)
