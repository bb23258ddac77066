"""Every ``servermgr`` command, option and default, defined once.

The parser (``cli/spec.py``), ``--help``, shell completion
(``cli/completion.py``) and ``docs/reference/cli.md`` (``cli/reference.py``,
checked by ``tests/test_docs.py``) all read this tree. Nothing here imports
more than the standard library's small modules, so ``servermgr --help`` and
``ctl exec`` start fast; a handler's module is imported only when its command
runs.

Adding a command
----------------
1. Write the handler: ``def my_command(a: Parsed) -> int | None`` in the
   module of its area (ctl commands: ``ctl/commands.py`` or a module of
   their own, e.g. ``ctl/alerts.py``). It reads ``a.<dest>`` for every option
   and argument of the command and of its groups (``a.json``, ``a.core``),
   talks to Core through ``ctl.commands.client(a)`` (every API path lives in
   ``ctl/client.py``), raises typed errors (``common/errors.py``) and returns
   the exit code (None: 0).
2. Add a ``Cmd`` below, in its group's ``children``, with ``run`` naming the
   handler as ``"module:function"``. Reuse the shared options (``JSON``,
   ``TARGET``, ``TIMEOUT``...) so the same option reads the same everywhere;
   give a listing ``JSON`` and print it with ``ctl.output.print_items`` (one shape).
3. Document it under its own ``### servermgr ...`` heading in
   ``docs/reference/cli.md`` (``python -m servermgr.cli.reference`` prints the
   generated section; the docs test fails until it is there).
"""

from __future__ import annotations

from servermgr.cli.spec import Arg, Cmd, Opt
from servermgr.common import limits, timespec
from servermgr.ctl.jobspec import SERVICE_ACTIONS

# --- value checks (ValueError -> exit 2 with its text) --------------------------


def _duration(text: str) -> float:
    return timespec.parse_duration(text)


def _time(text: str) -> str:
    """A duration ago stays as typed (Core resolves it against its clock); an ISO
    date or time becomes unix seconds here, in the operator's own time zone."""
    value = timespec.parse_time(text, now=0.0)
    if timespec.is_relative(text):
        return text
    return f"{value:.3f}"


def _listen(text: str) -> str:
    from servermgr.common.config_fields import parse_listen

    parse_listen(text)
    return text


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{text!r} must not be negative")
    return value


class _CountUpTo:
    """A whole number from ``low`` to ``high``, as Core takes it (a page size, a cap)."""

    def __init__(self, low: int, high: int, unit: str = "") -> None:
        self.low, self.high, self.unit = low, high, unit

    def __call__(self, text: str) -> int:
        value = _count(text)
        if not self.low <= value <= self.high:
            raise ValueError(f"{text!r} is out of range: give {self.low} to {self.high}{self.unit}")
        return value


def _job_timeout(text: str) -> float:
    seconds = timespec.parse_duration(text)
    if not limits.JOB_MIN_TIMEOUT <= seconds <= limits.JOB_MAX_SECONDS:
        raise ValueError(f"{text!r} is out of range: give {limits.JOB_MIN_TIMEOUT:g}s to 7d")
    return seconds


def _job_wait(text: str) -> float:
    seconds = timespec.parse_duration(text)
    if not 0 <= seconds <= limits.JOB_MAX_SECONDS:
        raise ValueError(f"{text!r} is out of range: give 0s to 7d")
    return seconds


def _instant(text: str) -> float:
    """A point in time as unix seconds: a duration ago (1h), an ISO 8601 date or
    time, or unix seconds."""
    import time

    return timespec.parse_time(text, now=time.time())


# --- shared options ------------------------------------------------------------

CONFIG = Opt(
    ("--config", "-c"),
    "config",
    "Config file (default: $SERVERMGR_CONFIG, else ./servermgr.toml if present, "
    "else built-in defaults).",
    metavar="FILE",
    complete="file",
)
DATA_DIR = Opt(
    ("--data-dir",),
    "data_dir",
    "Core's data directory (overrides [storage] data_dir).",
    metavar="DIR",
    complete="dir",
)
JSON = Opt(("--json",), "json", 'Print JSON instead of a table: {"items": [...]} for lists.')
FORCE = Opt(("--force",), "force", "Replace FILE if it exists.")
ALL = Opt(("--all", "-a"), "all", "Target every node.", targets=True)
LABEL = Opt(
    ("--label", "-l"),
    "label",
    "Target nodes by labels: role=web,env!=staging (docs/targeting.md).",
    metavar="SELECTOR",
    complete="label",
    targets=True,
)
TIMEOUT = Opt(
    ("--timeout", "-t"),
    "timeout",
    "Kill the command after this long (30s, 5m, 1h; 0.1s to 7d).",
    metavar="DURATION",
    default="60s",
    check=_job_timeout,
)
WAIT = Opt(
    ("--wait",),
    "wait",
    "Queue the job for offline nodes this long (10m; up to 7d) instead of failing at once.",
    metavar="DURATION",
    default="0s",
    check=_job_wait,
)
NODE = Arg("NODE", "node", "Node name or id.", complete="node")
TARGET_HELP = (
    "TARGET then the command: a node, a glob ('web-*'), a comma list, a label selector "
    "(role=web,env!=staging) or all; quote the command or put it after --."
)

CTL_OPTIONS = (
    Opt(
        ("--core",),
        "core",
        "Core's address, e.g. http://127.0.0.1:9999 (default: from the config's [server] listen).",
        metavar="URL",
        env="SERVERMGR_CORE",
    ),
    Opt(
        ("--key",),
        "key",
        "The core key or a token (default: read from the local Core's data_dir).",
        metavar="KEY",
        env="SERVERMGR_KEY",
    ),
    CONFIG,
    Opt(
        ("--fingerprint",),
        "fingerprint",
        "For https: Core's certificate fingerprint (sha256:..., as `key show` prints it; "
        "default: the local Core's).",
        metavar="SHA256",
        env="SERVERMGR_FINGERPRINT",
    ),
    Opt(
        ("--ca-file",),
        "ca_file",
        "For https: verify Core's certificate with this CA file instead of a pin.",
        metavar="FILE",
        env="SERVERMGR_CA_FILE",
        complete="file",
    ),
)

# The job states of core/jobstate.py (ctl never imports core; a test keeps them equal).
JOB_STATES = (
    "queued",
    "sent",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "refused",
    "expired",
    "lost",
    "stalled",
)

# Every action Core writes to the audit log (add yours when a Core part audits a new one).
AUDIT_ACTIONS = (
    "exec",
    "service",
    "file.push",
    "file.pull",
    "shell",
    "agent.upgrade",
    "schedule.add",
    "schedule.remove",
)

A = "servermgr.cli.admin:"
C = "servermgr.ctl.commands:"
AL = "servermgr.ctl.alert_commands:"
SC = "servermgr.ctl.schedules:"

# --- the tree --------------------------------------------------------------------

KEY = Cmd(
    "key",
    "Credentials on the Core host: the core key (admin) and named tokens with a role.",
    children=(
        Cmd(
            "show",
            "Print the core key, alone on line 1 (made if missing only with a config file).",
            run=A + "key_show",
            options=(CONFIG, DATA_DIR),
        ),
        Cmd(
            "create",
            "Make a named token with a role; prints it once, alone on the first line.",
            run=A + "key_create",
            options=(
                Opt(
                    ("--role",),
                    "role",
                    "What the token may do.",
                    metavar="ROLE",
                    choices=("read", "operate", "enroll"),
                ),
                Opt(("--name",), "name", "A name for the token (audit, list, revoke).", "NAME"),
                Opt(
                    ("--expires",),
                    "expires",
                    "Stop working after this long (30d, 12h); default never.",
                    metavar="DURATION",
                ),
                CONFIG,
                DATA_DIR,
            ),
        ),
        Cmd(
            "list",
            "List named tokens: name, role, created, expires, last used (never the secret).",
            run=A + "key_list",
            options=(CONFIG, DATA_DIR, JSON),
        ),
        Cmd(
            "revoke",
            "Revoke a named token; a running Core refuses it within a second.",
            run=A + "key_revoke",
            options=(CONFIG, DATA_DIR),
            args=(Arg("NAME", "name", "The token's name."),),
        ),
        Cmd(
            "rotate",
            "Replace the core key; prints the new one alone on the first line.",
            run=A + "key_rotate",
            options=(CONFIG, DATA_DIR),
        ),
    ),
)

OUTPUT_CAP = Opt(
    ("--output-cap",),
    "output_cap",
    "Keep at most this many bytes per stream per node.",
    metavar="BYTES",
    default=1 << 20,
    check=_CountUpTo(0, limits.JOB_MAX_OUTPUT_CAP, " bytes"),
)
ENV = Opt(
    ("--env", "-e"),
    "env",
    "Set NAME=VALUE in the command's environment.",
    metavar="NAME=VALUE",
    repeat=True,
)
CWD = Opt(("--cwd",), "cwd", "Working directory.", metavar="DIR")
SCHEDULE_NAME = Arg("NAME", "name", "The schedule's name.")

SCHEDULE = Cmd(
    "schedule",
    "Jobs Core runs by itself, every N or at cron times (docs/schedules.md).",
    children=(
        Cmd(
            "add",
            "Make a schedule: run a command on a target every DURATION or at cron times.\n\n"
            "Each run is an ordinary job (ctl jobs, by schedule:NAME). A run missed while "
            "Core was down runs once when it is back; the rest are skipped. As with exec, "
            "options stand before the command's first word (or before --).",
            run=SC + "add",
            remote=True,
            options=(
                Opt(
                    ("--every",),
                    "every",
                    "Run every DURATION (90s, 10m, 1h, 1d).",
                    metavar="DURATION",
                    check=_duration,
                ),
                Opt(
                    ("--cron",),
                    "cron",
                    "Run at cron times: 'MIN HOUR DAY MONTH WEEKDAY'.",
                    metavar="CRON",
                ),
                Opt(
                    ("--tz",),
                    "tz",
                    "Time zone of --cron (e.g. Europe/Berlin; default UTC).",
                    metavar="ZONE",
                ),
                ALL,
                LABEL,
                TIMEOUT,
                WAIT,
                OUTPUT_CAP,
                ENV,
                CWD,
                Opt(("--paused",), "paused", "Make it paused."),
                JSON,
            ),
            args=(
                SCHEDULE_NAME,
                Arg("TARGET COMMAND", "words", TARGET_HELP, many=True, complete="target"),
            ),
        ),
        Cmd(
            "list",
            "List schedules: when each runs, its target, next run, last job.",
            run=SC + "listing",
            options=(JSON,),
        ),
        Cmd(
            "remove",
            "Remove a schedule (its past jobs stay).",
            run=SC + "remove",
            options=(JSON,),
            args=(SCHEDULE_NAME,),
        ),
        Cmd(
            "pause",
            "Pause a schedule: no runs until resumed.",
            run=SC + "pause",
            options=(JSON,),
            args=(SCHEDULE_NAME,),
        ),
        Cmd(
            "resume",
            "Resume a schedule from its next due time (runs missed while paused are skipped).",
            run=SC + "resume",
            options=(JSON,),
            args=(SCHEDULE_NAME,),
        ),
    ),
)

EXEC = Cmd(
    "exec",
    "Run a shell command on one node or many, with live output.\n\n"
    "Options stand before the command's first word (or before --). Standard input, "
    "when it is a pipe or a file, is the command's: streamed to one node, any size; "
    "the same to each of several (up to 512 KiB). "
    "One node: its output as "
    "written and its exit code. Several: lines prefixed with the node name and a "
    "summary on stderr; exit 0 only if all succeeded. Exit 124: timed out; 255: "
    "ctl, Core or the node could not run it.",
    run=C + "exec_",
    remote=True,
    options=(
        ALL,
        LABEL,
        TIMEOUT,
        OUTPUT_CAP,
        WAIT,
        ENV,
        CWD,
        Opt(
            ("--no-stdin", "-n"),
            "no_stdin",
            "Do not forward standard input (as ssh -n); a terminal never is.",
        ),
        JSON,
        Opt(("--no-stream",), "no_stream", "Print the output when the job is done, not live."),
    ),
    args=(Arg("TARGET COMMAND", "words", TARGET_HELP, many=True, complete="target"),),
)

SERVICE = Cmd(
    "service",
    "Manage a systemd unit on nodes, with the same guarantees as exec.",
    run=C + "service",
    remote=True,
    options=(ALL, LABEL, TIMEOUT, WAIT, JSON),
    args=(
        Arg(
            "TARGET ACTION UNIT",
            "words",
            f"ACTION: {', '.join(SERVICE_ACTIONS)}; with --all or --label: ACTION UNIT.",
            many=True,
            complete="target",
        ),
    ),
)

CTL = Cmd(
    "ctl",
    "Operate the fleet through Core's API (--core/--key or SERVERMGR_CORE/SERVERMGR_KEY).",
    options=CTL_OPTIONS,
    children=(
        Cmd(
            "nodes",
            "List nodes: status, CPU, memory, disk, network, load, uptime, last seen.",
            run=C + "nodes",
            options=(JSON,),
            args=(
                Arg(
                    "TARGET",
                    "target",
                    "Only these nodes: a glob ('web-*'), a list or labels (docs/targeting.md).",
                    optional=True,
                    complete="target",
                ),
            ),
        ),
        Cmd(
            "node",
            "Show, rename or remove one node.",
            default_child="show",
            children=(
                Cmd(
                    "show",
                    "Show one node: static info, disks, interfaces, latest sample.",
                    run=C + "node_show",
                    options=(JSON,),
                    args=(NODE,),
                ),
                Cmd(
                    "remove",
                    "Remove a node and its history; its name can then be registered again.",
                    run=C + "node_remove",
                    options=(
                        Opt(("--force",), "force", "Remove it even while it is online."),
                        JSON,
                    ),
                    args=(NODE,),
                ),
                Cmd(
                    "rename",
                    "Rename a node; it keeps its id, credential and history.",
                    run=C + "node_rename",
                    options=(JSON,),
                    args=(NODE, Arg("NEW_NAME", "new_name", "The node's new name.")),
                ),
                Cmd(
                    "upgrade",
                    "Move agents to the zipapp Core holds (core agent-publish), N at a time.\n\n"
                    "Needs the core key. Each node checks the file, switches, restarts and "
                    "keeps its identity; one not back with the new version within --timeout "
                    "rolls back. A batch with a failure stops the rest. Exit 0: every node "
                    "runs the new version; 1: any did not.",
                    run=C + "node_upgrade",
                    options=(
                        Opt(("--all", "-a"), "all", "Every node.", targets=True),
                        Opt(
                            ("--batch",),
                            "batch",
                            "Nodes upgraded at once.",
                            metavar="N",
                            default=1,
                            check=_count,
                        ),
                        Opt(
                            ("--timeout",),
                            "timeout",
                            "A node not back with the new version this long rolls back.",
                            metavar="DURATION",
                            default="60s",
                            check=_duration,
                        ),
                        JSON,
                    ),
                    args=(
                        Arg(
                            "TARGET",
                            "target",
                            "Nodes: a name, a glob, a,b, role=web or * (or --all).",
                            optional=True,
                            complete="target",
                        ),
                    ),
                ),
            ),
        ),
        Cmd(
            "top",
            "Live dashboard of every node: CPU, memory, disk, network, load (q quits).\n\n"
            "Keys: s sort · / filter by name or label · arrows/j/k select · Enter details · "
            "PgUp/PgDn scroll · Esc back · q quit.",
            run=C + "top",
        ),
        Cmd(
            "metrics",
            "A node's metrics over time, with sparklines (rollups for long ranges).",
            run=C + "metrics",
            options=(
                Opt(
                    ("--since",),
                    "since",
                    "Start: a duration ago (10m, 1h, 7d), an ISO 8601 date or time, "
                    "or unix seconds.",
                    metavar="TIME",
                    default="1h",
                    check=_time,
                ),
                Opt(
                    ("--until",),
                    "until",
                    "End, in the same forms (default: now).",
                    metavar="TIME",
                    check=_time,
                ),
                Opt(
                    ("--step",),
                    "step",
                    "Resolution; auto picks by range (raw up to 6h, 1m below 7d, else 1h).",
                    metavar="STEP",
                    default="auto",
                    choices=("auto", "raw", "1m", "1h"),
                ),
                JSON,
            ),
            args=(NODE,),
        ),
        EXEC,
        SCHEDULE,
        Cmd(
            "cp",
            "Copy a file to nodes (LOCAL TARGET:PATH) or from one node (NODE:PATH LOCAL).\n\n"
            "Streamed in chunks with back-pressure; the SHA-256 is checked on every side "
            "and printed; a push is placed atomically. The node's [files] policy decides "
            "which paths. Exit 0: every node has the file; 1: any failed; 255: Core "
            "unreachable or the key refused.",
            run=C + "cp",
            options=(
                Opt(
                    ("--mode",),
                    "mode",
                    "Permissions of the copied file, octal (0644).",
                    metavar="MODE",
                ),
                Opt(
                    ("--owner",),
                    "owner",
                    "Push: owner of the placed file, USER[:GROUP] or :GROUP.",
                    metavar="USER",
                ),
                Opt(
                    ("--parallel",),
                    "parallel",
                    "Push: nodes written at once.",
                    metavar="N",
                    default=4,
                    check=_count,
                ),
                Opt(
                    ("--label", "-l"),
                    "label",
                    "Push to the nodes a label selector picks: SELECTOR:PATH "
                    "(role=web:/etc/app.conf), instead of TARGET:PATH.",
                    metavar="SELECTOR:PATH",
                    complete="label",
                ),
                JSON,
            ),
            args=(
                Arg(
                    "LOCAL|NODE:PATH",
                    "src",
                    "A local file, or NODE:/path to pull from.",
                    complete="file",
                ),
                Arg(
                    "TARGET:PATH|LOCAL",
                    "dst",
                    "TARGET:/path to push to (a node, a,b, role=web or *), or a local path; "
                    "absent with --label.",
                    optional=True,
                    complete="file",
                ),
            ),
        ),
        Cmd(
            "shell",
            "Open an interactive shell on a node, like ssh (needs [exec] shell = true there).\n\n"
            "Exits with the shell's status (128+N when killed by signal N); 255 when the "
            "shell cannot be opened (unknown or offline node, refused, Core unreachable).",
            run=C + "shell",
            args=(NODE,),
        ),
        SERVICE,
        Cmd(
            "jobs",
            "List jobs, newest first.",
            run=C + "jobs",
            options=(
                Opt(
                    ("--node",),
                    "node",
                    "Only jobs that ran on this node.",
                    metavar="NODE",
                    complete="node",
                ),
                Opt(
                    ("--state",),
                    "state",
                    "Only jobs with a node in this state.",
                    metavar="STATE",
                    choices=JOB_STATES,
                ),
                Opt(
                    ("--limit",),
                    "limit",
                    "How many (newest first).",
                    "N",
                    default=20,
                    check=_CountUpTo(1, limits.JOBS_PAGE),
                ),
                Opt(
                    ("--before",),
                    "before",
                    "Page: jobs created before this time (next_before of --json; "
                    "1h, an ISO 8601 date or time, unix seconds).",
                    metavar="TIME",
                    check=_instant,
                ),
                JSON,
            ),
        ),
        Cmd(
            "job",
            "Show one job: each node's state, exit code, duration and output.",
            run=C + "job",
            options=(JSON,),
            args=(Arg("JOB_ID", "job_id", "Job id."),),
        ),
        Cmd(
            "cancel",
            "Cancel a job on every node where it has not finished.",
            run=C + "cancel",
            options=(JSON,),
            args=(Arg("JOB_ID", "job_id", "Job id."),),
        ),
        Cmd(
            "alerts",
            "Alerts pending or firing now; --history for every transition.",
            run=AL + "alerts",
            options=(
                Opt(("--history",), "history", "Every transition (pending, firing, resolved)."),
                Opt(("--deliveries",), "deliveries", "Every notification attempt and its outcome."),
                Opt(
                    ("--since",),
                    "since",
                    "With --history/--deliveries: since (1h, 7d, an ISO 8601 date or time, "
                    "unix seconds).",
                    metavar="TIME",
                    default="7d",
                    check=_time,
                ),
                Opt(
                    ("--limit",),
                    "limit",
                    "With --history/--deliveries: the newest N.",
                    metavar="N",
                    default=200,
                    check=_CountUpTo(1, limits.ALERT_ROWS),
                ),
                JSON,
            ),
        ),
        Cmd(
            "alert",
            "Alert rules and silences (what fires: `ctl alerts`).",
            children=(
                Cmd(
                    "list",
                    "The alert rules: from Core's config and added with `ctl alert add`.",
                    run=AL + "alert_list",
                    options=(JSON,),
                ),
                Cmd(
                    "add",
                    "Add an alert rule (kept by Core across restarts; needs the operate role).",
                    run=AL + "alert_add",
                    options=(
                        Opt(
                            ("--when",),
                            "when",
                            'The condition: "cpu > 90", "disk:/var >= 80", "net_rx > 10M", '
                            "offline, job_failed.",
                            metavar="CONDITION",
                        ),
                        Opt(
                            ("--for",),
                            "hold",
                            "How long it must hold before firing (30s, 5m).",
                            metavar="DURATION",
                            default="0",
                        ),
                        Opt(
                            ("--nodes",),
                            "nodes",
                            "Which nodes: a target as for exec (docs/targeting.md).",
                            metavar="TARGET",
                            default="*",
                            complete="target",
                        ),
                        Opt(
                            ("--notify",),
                            "notify",
                            "Receivers, a comma list (default: all).",
                            metavar="R1,R2",
                        ),
                        Opt(
                            ("--renotify",),
                            "renotify",
                            "While firing, notify again this often (1h).",
                            metavar="DURATION",
                        ),
                        JSON,
                    ),
                    args=(Arg("NAME", "name", "The rule's name (a-z, 0-9, . - _)."),),
                ),
                Cmd(
                    "remove",
                    "Remove an alert rule added with `ctl alert add` (config rules: edit the "
                    "file).",
                    run=AL + "alert_remove",
                    args=(Arg("NAME", "name", "The rule's name."),),
                ),
                Cmd(
                    "silence",
                    "Hold back the notifications of a node's or a rule's alerts for a while.",
                    run=AL + "alert_silence",
                    options=(
                        Opt(
                            ("--for",),
                            "hold",
                            "How long (30m, 2h, 1d).",
                            metavar="DURATION",
                            default="1h",
                        ),
                        JSON,
                    ),
                    args=(
                        Arg(
                            "NODE|RULE",
                            "target",
                            "A node or a rule (node:NAME / rule:NAME if both exist).",
                            complete="node",
                        ),
                    ),
                ),
                Cmd(
                    "silences",
                    "The silences in force.",
                    run=AL + "alert_silences",
                    options=(JSON,),
                ),
                Cmd(
                    "unsilence",
                    "End a silence now.",
                    run=AL + "alert_unsilence",
                    args=(Arg("ID", "silence_id", "The silence's id."),),
                ),
            ),
        ),
        Cmd(
            "audit",
            "The audit log: who ran what, where, when, and how it ended.",
            run=C + "audit",
            options=(
                Opt(
                    ("--since",),
                    "since",
                    "Only since: a duration ago (1h, 7d), an ISO 8601 date or time, "
                    "or unix seconds.",
                    metavar="TIME",
                    check=_time,
                ),
                Opt(
                    ("--action",),
                    "action",
                    "Only this kind of action.",
                    metavar="ACTION",
                    choices=AUDIT_ACTIONS,
                ),
                Opt(
                    ("--limit",),
                    "limit",
                    "How many rows (newest first).",
                    "N",
                    default=50,
                    check=_CountUpTo(1, limits.AUDIT_ROWS),
                ),
                JSON,
            ),
        ),
    ),
)

ROOT = Cmd(
    "servermgr",
    "A lightweight manager for a fleet of Linux servers.",
    options=(Opt(("--version",), "version", "Print the version and exit."),),
    children=(
        Cmd(
            "core",
            "Run Core: registration, node gateway, REST API, history.",
            children=(
                Cmd(
                    "serve",
                    "Run Core on [server] listen until SIGINT/SIGTERM.",
                    run=A + "core_serve",
                    options=(CONFIG,),
                ),
                Cmd(
                    "backup",
                    "Copy Core's database to FILE: consistent while Core runs, mode 0600.",
                    run=A + "core_backup",
                    options=(CONFIG, FORCE),
                    args=(Arg("FILE", "file", "Where to write the copy.", complete="file"),),
                ),
                Cmd(
                    "agent-publish",
                    "Make FILE the agent Core hands out to `ctl node upgrade` (checked: it "
                    "must start).",
                    run=A + "core_agent_publish",
                    options=(CONFIG,),
                    args=(
                        Arg(
                            "FILE", "file", "A servermgr zipapp (build_zipapp.sh).", complete="file"
                        ),
                    ),
                ),
            ),
        ),
        Cmd(
            "node",
            "Run the node agent.",
            children=(
                Cmd(
                    "run",
                    "Run the node agent: register, send heartbeats, reconnect forever.",
                    run=A + "node_run",
                    options=(CONFIG,),
                ),
                Cmd(
                    "upgrade-watch",
                    "Started by an agent that upgrades itself: rolls back unless the new one "
                    "is welcomed.",
                    run=A + "node_upgrade_watch",
                    hidden=True,
                    args=(
                        Arg(
                            "MARKER",
                            "marker",
                            "The upgrade marker (data_dir/upgrade.json).",
                            complete="file",
                        ),
                    ),
                ),
            ),
        ),
        Cmd(
            "up",
            "Run Core plus a local node in one process: the quickest way to look around.",
            run=A + "up",
            options=(
                CONFIG,
                Opt(
                    ("--listen",),
                    "listen",
                    "Listen here instead of [server] listen, e.g. 0.0.0.0:9999.",
                    metavar="ADDR",
                    check=_listen,
                ),
                DATA_DIR,
            ),
        ),
        KEY,
        CTL,
        Cmd(
            "completion",
            "Print the shell completion script for bash, zsh or fish.\n\n"
            'bash: eval "$(servermgr completion bash)" in ~/.bashrc; zsh: the same with zsh '
            "in ~/.zshrc; fish: servermgr completion fish > "
            "~/.config/fish/completions/servermgr.fish. Completes commands, options and "
            "node names and labels from Core when it answers within half a second.",
            run="servermgr.cli.completion:script",
            args=(Arg("SHELL", "shell", "bash, zsh or fish.", complete="shell"),),
        ),
    ),
)
