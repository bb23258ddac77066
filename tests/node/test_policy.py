"""The node's execution policy: pure decisions, no processes."""

from __future__ import annotations

from typing import Any

import pytest

from servermgr.common import proto
from servermgr.common.config import ExecConfig
from servermgr.node.policy import DISABLED, check, validate_unit


def shell(command: str, *, timeout: float = 10.0) -> proto.JobRun:
    return proto.JobRun("j1", command, None, timeout, 1024)


def service(action: Any, unit: str) -> proto.JobRun:
    return proto.JobRun("j1", None, proto.ServiceAction(action, unit), 10.0, 1024)


def test_default_policy_allows_any_command() -> None:
    assert check(shell("echo hi; uptime"), ExecConfig()) is None
    assert check(service("restart", "nginx"), ExecConfig()) is None


def test_disabled_refuses_everything() -> None:
    policy = ExecConfig(enabled=False)
    assert check(shell("echo hi"), policy) == DISABLED
    assert check(service("status", "nginx"), policy) == DISABLED
    assert "[exec] enabled = false" in DISABLED


def test_exactly_one_of_command_and_service() -> None:
    both = proto.JobRun("j1", "echo", proto.ServiceAction("status", "nginx"), 1.0, 0)
    neither = proto.JobRun("j1", None, None, 1.0, 0)
    assert "not both" in (check(both, ExecConfig()) or "")
    assert "not neither" in (check(neither, ExecConfig()) or "")


def test_timeout_over_limit_is_refused_naming_both_numbers() -> None:
    policy = ExecConfig(max_timeout=60)
    reason = check(shell("echo", timeout=90), policy)
    assert reason is not None
    assert "90" in reason
    assert "60" in reason
    assert "max_timeout" in reason
    assert check(shell("echo", timeout=60), policy) is None


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        ("uptime", True),
        ("df -h", True),
        ("df -h /var", True),
        ("systemctl status nginx", True),
        ("rm -rf /", False),
        ("uptime ", False),  # the whole string must match
        ("df -h; rm -rf /", False),  # a wildcard never stands for shell syntax
        ("df -h && reboot", False),
        ("df -h | mail x", False),
        ("df -h `reboot`", False),
        ("df -h $(reboot)", False),
        ("df -h > /etc/passwd", False),
        ("df -h\nreboot", False),
        ("UPTIME", False),  # case-sensitive
        ("tail -n 50 /var/log/syslog | grep error", True),  # syntax spelled out
        ("tail -n 50 /var/log/syslog | grep x; reboot", False),
    ],
)
def test_allow_list(command: str, allowed: bool) -> None:
    policy = ExecConfig(allow=("uptime", "df -h*", "systemctl status *", "tail -n * | grep *"))
    reason = check(shell(command), policy)
    assert (reason is None) == allowed, reason


def test_allow_refusal_says_which_rule() -> None:
    reason = check(shell("rm -rf /"), ExecConfig(allow=("uptime", "df *")))
    assert reason is not None
    assert "[exec] allow" in reason
    assert "'rm -rf /'" in reason
    assert "'uptime'" in reason
    reason = check(shell("df; reboot"), ExecConfig(allow=("df*",)))
    assert reason is not None
    assert "'df*'" in reason
    assert "shell syntax" in reason


def test_allow_list_applies_to_service_actions() -> None:
    policy = ExecConfig(allow=("systemctl restart nginx", "systemctl status *"))
    assert check(service("restart", "nginx"), policy) is None
    assert check(service("status", "postgresql@15-main.service"), policy) is None
    reason = check(service("stop", "nginx"), policy)
    assert reason is not None
    assert "systemctl stop nginx" in reason


def test_service_unit_is_validated_by_check() -> None:
    reason = check(service("restart", "nginx; rm -rf /"), ExecConfig())
    assert reason is not None
    assert "nginx; rm -rf /" in reason


@pytest.mark.parametrize(
    "unit",
    [
        "nginx",
        "nginx.service",
        "sshd.socket",
        "multi-user.target",
        "logrotate.timer",
        "home.mount",
        "getty@tty1.service",
        "getty@.service",
        "container@web",
        "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
        "php8.2-fpm",
        "user-1000.slice",
        "dev-sda1.device",
        "a:b_c",
        "x" * 247,  # + ".service" is 255
    ],
)
def test_valid_units(unit: str) -> None:
    assert validate_unit(unit) is None


@pytest.mark.parametrize(
    ("unit", "why"),
    [
        ("nginx; rm -rf /", "characters"),
        ("nginx rm", "characters"),
        ("$(reboot)", "characters"),
        ("ng*nx", "characters"),
        ("nginx/../x", "characters"),
        ("ünit", "characters"),
        ("", "empty"),
        ("-H.service", "start with '-'"),
        ("--help", "start with '-'"),
        (".service", "start with '.'"),
        ("nginx.", "end with '.'"),
        ("x" * 248, "longer than 255"),
        ("x" * 250 + ".timer", "longer than 255"),
        ("a@b@c.service", "more than one '@'"),
        ("@foo.service", "template name"),
    ],
)
def test_invalid_units(unit: str, why: str) -> None:
    reason = validate_unit(unit)
    assert reason is not None
    assert why in reason


def test_long_commands_are_shortened_in_reasons() -> None:
    reason = check(shell("x" * 10_000), ExecConfig(allow=("uptime",)))
    assert reason is not None
    assert len(reason) < 400
    assert "10000 characters" in reason
