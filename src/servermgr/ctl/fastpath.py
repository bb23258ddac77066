"""``servermgr ctl exec`` and ``ctl service`` without typer: the path users time.

Importing typer (and the CLI it builds) costs ~100 ms here, more than the
whole exec round trip; ``main`` runs these two commands straight from argv
and leaves everything else (and ``--help``) to typer. The options are the
ones ``servermgr ctl exec --help`` lists.

Parsing is ssh-like: options may stand anywhere before the command; after
it starts, only this command's long options (``--timeout 1``) are taken, so
``ls -la`` reaches the node intact; ``--`` ends options for good.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from servermgr.common.errors import UsageError

CTL_OPTS = {
    "--core": "core",
    "--key": "key",
    "--config": "config",
    "-c": "config",
    "--fingerprint": "fingerprint",
    "--ca-file": "ca_file",
}
EXEC_FLAGS = {"--all": "all", "-a": "all", "--json": "json", "--no-stream": "no_stream"}
EXEC_VALUES = {
    "--label": "label",
    "-l": "label",
    "--timeout": "timeout",
    "-t": "timeout",
    "--output-cap": "output_cap",
    "--wait": "wait",
    "--env": "env",
    "-e": "env",
    "--cwd": "cwd",
}
SERVICE_FLAGS = {"--all": "all", "-a": "all", "--json": "json"}
SERVICE_VALUES = {
    "--label": "label",
    "-l": "label",
    "--timeout": "timeout",
    "-t": "timeout",
    "--wait": "wait",
}


Usage = UsageError


@dataclass
class Parsed:
    command: str  # "exec" or "service"
    ctl: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    values: dict[str, str] = field(default_factory=dict)
    env: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)


def parse(argv: list[str]) -> Parsed | None:
    """``argv`` after the program name; None when typer should handle it (help, others)."""
    if not argv or argv[0] != "ctl":
        return None
    i = 1
    ctl: dict[str, str] = {}
    while i < len(argv) and argv[i].startswith("-"):
        name, value, i = _option(argv, i, CTL_OPTS)
        if name is None:
            return None  # --help and friends: typer
        ctl[name] = value
    if i >= len(argv) or argv[i] not in ("exec", "service"):
        return None
    command = argv[i]
    flags_spec, values_spec = (
        (EXEC_FLAGS, EXEC_VALUES) if command == "exec" else (SERVICE_FLAGS, SERVICE_VALUES)
    )
    out = Parsed(command, ctl)
    i += 1
    options_done = False
    while i < len(argv):
        arg = argv[i]
        if options_done or not arg.startswith("-") or arg == "-":
            out.words.append(arg)
            i += 1
            continue
        if arg == "--":
            options_done = True
            i += 1
            continue
        if arg in ("-h", "--help"):
            if out.words:  # part of the remote command
                out.words.append(arg)
                i += 1
                continue
            return None
        key = arg.split("=", 1)[0]
        started = bool(out.words)
        known_long = key.startswith("--") and (key in flags_spec or key in values_spec)
        if started and not known_long:
            out.words.append(arg)  # e.g. the -la of `ls -la`
            i += 1
            continue
        if key in flags_spec and "=" not in arg:
            out.flags.add(flags_spec[key])
            i += 1
        elif key in values_spec:
            name, value, i = _option(argv, i, values_spec)
            assert name is not None
            if name == "env":
                out.env.append(value)
            else:
                out.values[name] = value
        else:
            raise Usage(f"no such option: {arg} (see: servermgr ctl {command} --help)")
    return out


def _option(argv: list[str], i: int, spec: dict[str, str]) -> tuple[str | None, str, int]:
    arg = argv[i]
    key, eq, inline = arg.partition("=")
    if key not in spec:
        return None, "", i
    if eq:
        return spec[key], inline, i + 1
    if i + 1 >= len(argv):
        raise Usage(f"option {key} needs a value")
    return spec[key], argv[i + 1], i + 2


def run(parsed: Parsed) -> int:
    """Resolve Core and the key, build the job, follow it; the exit code."""
    from servermgr.common.errors import ClientError
    from servermgr.ctl import exec as exec_mod
    from servermgr.ctl.client import Client, resolve
    from servermgr.ctl.jobspec import job_body, service_spec, target_of

    core = parsed.ctl.get("core") or os.environ.get("SERVERMGR_CORE") or None
    key = parsed.ctl.get("key") or os.environ.get("SERVERMGR_KEY") or None
    config = parsed.ctl.get("config")
    fingerprint = parsed.ctl.get("fingerprint") or os.environ.get("SERVERMGR_FINGERPRINT") or None
    ca_file = parsed.ctl.get("ca_file") or os.environ.get("SERVERMGR_CA_FILE") or None

    def load() -> object:  # only when --core or --key is missing
        from servermgr.common.config import find_config, load_config

        cwd = Path.cwd()
        return load_config(find_config(Path(config) if config else None, os.environ, cwd), cwd=cwd)

    target, words, single = target_of(
        parsed.words, "all" in parsed.flags, parsed.values.get("label")
    )
    v = parsed.values
    if parsed.command == "exec":
        if not words:
            raise Usage("missing the command to run")
        try:
            cap = int(v.get("output_cap", str(1 << 20)))
        except ValueError:
            raise Usage("--output-cap takes a number of bytes") from None
        body = job_body(
            target,
            " ".join(words),
            None,
            timeout=v.get("timeout", "60s"),
            output_cap=cap,
            wait=v.get("wait", "0s"),
            env=parsed.env,
            cwd=v.get("cwd"),
        )
    else:
        body = job_body(
            target,
            None,
            service_spec(words),
            timeout=v.get("timeout", "60s"),
            output_cap=1 << 20,
            wait=v.get("wait", "0s"),
            env=[],
            cwd=None,
        )
    try:
        base, secret, trust = resolve(
            core,
            key,
            load,  # type: ignore[arg-type]
            fingerprint=fingerprint,
            ca_file=ca_file,
        )
    except ClientError as exc:
        exc.exit_code = 255
        raise
    return exec_mod.run(
        Client(base, secret, trust=trust),
        body,
        single=single,
        stream="no_stream" not in parsed.flags,
        as_json="json" in parsed.flags,
    )


def main(argv: list[str]) -> int | None:
    """Run ``ctl exec``/``ctl service`` if ``argv`` is one; None to let typer handle it.

    Errors are typed (ServermgrError) and reported by the caller, servermgr.main.
    """
    parsed = parse(argv)
    return None if parsed is None else run(parsed)
