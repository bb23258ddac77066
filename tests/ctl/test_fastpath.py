"""The typer-free parser of `ctl exec` / `ctl service` (what users time)."""

from __future__ import annotations

import pytest

from servermgr.common.errors import UsageError
from servermgr.ctl.fastpath import parse


def test_options_after_the_command_are_ours_only_when_long_and_known() -> None:
    p = parse(["ctl", "exec", "node-01", "sleep 30", "--timeout", "1"])
    assert p is not None
    assert p.words == ["node-01", "sleep 30"]
    assert p.values == {"timeout": "1"}


def test_the_remote_command_keeps_its_own_flags() -> None:
    p = parse(["ctl", "exec", "node-01", "ls", "-la", "/", "-h"])
    assert p is not None
    assert p.words == ["node-01", "ls", "-la", "/", "-h"]
    assert p.flags == set()


def test_double_dash_ends_options() -> None:
    p = parse(["ctl", "exec", "-t", "5s", "node-01", "--", "grep", "--timeout", "x"])
    assert p is not None
    assert p.words == ["node-01", "grep", "--timeout", "x"]
    assert p.values == {"timeout": "5s"}


def test_ctl_options_flags_and_repeated_env() -> None:
    p = parse(
        [
            "ctl",
            "--core=http://h:1",
            "--key",
            "k",
            "exec",
            "-a",
            "--json",
            "-e",
            "A=1",
            "--env=B=2",
            "--label",
            "role=web",
            "uptime",
        ]
    )
    assert p is not None
    assert p.ctl == {"core": "http://h:1", "key": "k"}
    assert p.flags == {"all", "json"}
    assert p.env == ["A=1", "B=2"]
    assert p.values == {"label": "role=web"}
    assert p.words == ["uptime"]


@pytest.mark.parametrize(
    "argv",
    [
        ["ctl", "nodes"],
        ["ctl", "exec", "--help"],
        ["ctl", "--help"],
        ["ctl", "-h", "exec"],
        ["key", "show"],
        [],
    ],
)
def test_everything_else_goes_to_typer(argv: list[str]) -> None:
    assert parse(argv) is None


def test_unknown_option_and_missing_value_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="no such option: --bogus"):
        parse(["ctl", "exec", "--bogus", "n", "true"])
    with pytest.raises(UsageError, match="needs a value"):
        parse(["ctl", "exec", "n", "true", "--timeout"])


def test_service_takes_its_own_options() -> None:
    p = parse(["ctl", "service", "--wait", "10m", "node-01", "restart", "nginx"])
    assert p is not None
    assert (p.command, p.words, p.values) == (
        "service",
        ["node-01", "restart", "nginx"],
        {"wait": "10m"},
    )
    with pytest.raises(UsageError, match="no such option: --env"):
        parse(["ctl", "service", "--env", "A=1", "node-01", "status", "x"])
