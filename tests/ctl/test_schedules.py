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
        "timeout": "60s",
        "wait": "0s",
        "output_cap": 1024,
        "env": [],
        "cwd": None,
        "paused": False,
    }
    options.update(over)
    return schedule_body("nightly", args, **options)


def test_every_with_a_target_and_the_command_words() -> None:
    doc = body(["role=web", "df", "-h", "/"], every="1h", timeout="5m")
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
        (["n1", "true"], {"every": "1h", "cron": "* * * * *"}, "give --every"),
        (["n1", "true"], {"every": "1h", "tz": "UTC"}, "--tz goes with --cron"),
        (["n1"], {"every": "1h"}, "missing the command"),
        (["n1", "true"], {"every": "soon"}, "--every: bad duration"),
    ],
)
def test_mistakes_are_usage_errors(args: list[str], over: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        body(args, **over)


def test_the_line_printed_names_when_and_where() -> None:
    doc = {"name": "a", "paused": True, "describe": "every 1h", "target": "role=web"}
    assert said(doc, "paused") == "schedule a paused: every 1h on role=web; paused"
