"""What ``ctl schedule add`` sends, from what the operator typed (no Core needed)."""

from __future__ import annotations

from typing import Any

import pytest

from servermgr.common.errors import UsageError
from servermgr.ctl.schedules import said, schedule_body


def body(args: list[str], **over: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "all_nodes": False,
        "label": None,
        "every": None,
        "cron": None,
        "tz": None,
        "timeout": 60.0,
        "wait": 0.0,
        "output_cap": 1024,
        "env": [],
        "cwd": None,
        "paused": False,
    }
    options.update(over)
    return schedule_body("nightly", args, **options)


def test_every_with_a_target_and_the_command_words() -> None:
    doc = body(["role=web", "df", "-h", "/"], every=3600.0, timeout=300.0)
    assert doc["name"] == "nightly"
    assert doc["every"] == 3600.0
    assert "cron" not in doc
    assert doc["job"]["target"] == "role=web"
    assert doc["job"]["command"] == "df -h /"
    assert doc["job"]["timeout"] == 300.0


def test_cron_with_a_zone_on_every_node() -> None:
    doc = body(["uptime"], cron="0 3 * * *", tz="Europe/Berlin", all_nodes=True, paused=True)
    assert (doc["cron"], doc["tz"], doc["paused"]) == ("0 3 * * *", "Europe/Berlin", True)
    assert doc["job"]["target"] == "*"
    assert doc["job"]["command"] == "uptime"


@pytest.mark.parametrize(
    ("args", "over", "message"),
    [
        (["n1", "true"], {}, "give --every"),
        (["n1", "true"], {"every": 3600.0, "cron": "* * * * *"}, "give --every"),
        (["n1", "true"], {"every": 3600.0, "tz": "UTC"}, "--tz goes with --cron"),
        (["n1"], {"every": 3600.0}, "missing the command"),
    ],
)
def test_mistakes_are_usage_errors(args: list[str], over: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        body(args, **over)


def test_the_line_printed_names_when_and_where() -> None:
    doc = {"name": "a", "paused": True, "describe": "every 1h", "target": "role=web"}
    assert said(doc, "paused") == "schedule a paused: every 1h on role=web; paused"


def test_the_command_line_of_schedule_add() -> None:
    from servermgr.cli import spec
    from servermgr.cli.commands import ROOT

    p = spec.parse(
        ROOT, ["ctl", "schedule", "add", "tick", "--every", "2s", "n1", "-t", "5s", "ls", "-l"], {}
    )
    assert (p.name, p.every, p.timeout, p.words) == ("tick", 2.0, 5.0, ["n1", "ls", "-l"])
    p = spec.parse(
        ROOT, ["ctl", "schedule", "add", "t", "--all", "--cron", "0 3 * * *", "df", "-h"], {}
    )
    assert (p.all, p.cron, p.words) == (True, "0 3 * * *", ["df", "-h"])
    with pytest.raises(UsageError, match="--every: bad duration"):
        spec.parse(ROOT, ["ctl", "schedule", "add", "t", "--every", "soon", "n1", "true"], {})
