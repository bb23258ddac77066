"""A job request from what the operator typed: target, command or service, options.

Used by the exec and service handlers (ctl/commands.py); durations arrive
parsed (cli/commands.py checks them). Bad input raises UsageError (one line, exit 2).
"""

from __future__ import annotations

from servermgr.common.errors import UsageError
from servermgr.common.selector import parse_target

TYPE_CHECKING = False  # not typing's: it costs ctl's start-up ~4 ms
if TYPE_CHECKING:
    from typing import Any

SERVICE_ACTIONS = ("status", "start", "stop", "restart", "reload", "enable", "disable")


def target_of(args: list[str], all_nodes: bool, label: str | None) -> tuple[str, list[str], bool]:
    """(target spec, remaining words, single node?) from ``[TARGET] WORDS...``."""
    if all_nodes and label:
        raise UsageError("give --all or --label, not both")
    if all_nodes:
        return "*", args, False
    if label:
        try:
            parse_target(label)
        except ValueError as exc:
            raise UsageError(f"--label: {exc}") from None
        if "=" not in label:
            raise UsageError(f"--label {label!r}: use key=value or key!=value terms")
        return label, args, False
    if not args:
        raise UsageError(
            "missing TARGET: a node name, a glob, a comma list, key=value labels, all, "
            "--all or --label"
        )
    target = args[0]
    try:
        single = parse_target(target).single
    except ValueError as exc:
        raise UsageError(f"{exc} (targets: docs/targeting.md)") from None
    return target, args[1:], single


def service_spec(words: list[str]) -> dict[str, str]:
    if len(words) != 2:
        raise UsageError("expected ACTION UNIT, e.g. restart nginx")
    action, unit = words
    if action not in SERVICE_ACTIONS:
        raise UsageError(f"unknown action {action!r}: use one of {', '.join(SERVICE_ACTIONS)}")
    return {"action": action, "unit": unit}


def job_body(
    target: str,
    command: str | None,
    service: dict[str, str] | None,
    *,
    timeout: float,
    output_cap: int,
    wait: float,
    env: list[str],
    cwd: str | None,
) -> dict[str, Any]:
    """The body of ``POST /api/v1/jobs``."""
    env_map: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r}: use NAME=VALUE")
        env_map[key] = value
    if output_cap < 0:
        raise UsageError("--output-cap must not be negative")
    body: dict[str, Any] = {
        "target": target,
        "timeout": timeout,
        "output_cap": output_cap,
        "wait": wait,
        "env": env_map,
        "cwd": cwd,
    }
    body["command" if command is not None else "service"] = command or service
    return body
