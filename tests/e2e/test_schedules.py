"""Schedules tried as a new user would: ``ctl schedule add --every`` against a real
Core and a real node; its runs show in ``ctl jobs``; list, pause, remove."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.fleet import Fleet, cap, one_line_error, start_core
from tests.support import free_port

pytestmark = pytest.mark.e2e


def items(doc: Any, key: str) -> list[dict[str, Any]]:
    """A listing's entries, whichever --json shape it has (a list, or an object with them)."""
    if doc is None:
        return []
    if isinstance(doc, list):
        return doc
    found: list[dict[str, Any]] = doc.get("items", doc.get(key, []))
    return found


@cap(60)
def test_an_every_schedule_makes_jobs_seen_in_ctl_jobs(fleet: Fleet) -> None:
    port = free_port()
    _, key = start_core(fleet, port)
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}
    fleet.spawn("node-01", "node", "run", "--config", str(fleet.node_config("node-01", port, key)))

    def online() -> bool:
        nodes = items(fleet.ctl_json("nodes", env=env), "nodes")
        return bool(nodes) and nodes[0]["status"] == "online"

    fleet.poll("node-01 online", online, 15)
    made = fleet.run(
        "ctl", "schedule", "add", "tick", "--every", "2s", "node-01", "echo", "tick", env=env
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("schedule tick made: every 2s on node-01; next run ")

    def two_runs_done() -> list[dict[str, Any]] | None:
        jobs = items(fleet.ctl_json("jobs", env=env), "jobs")
        runs = [
            j for j in jobs if j["principal"] == "schedule:tick" and j["states"] == {"succeeded": 1}
        ]
        return runs if len(runs) >= 2 else None

    runs = fleet.poll("two runs of the schedule, succeeded", two_runs_done, 30)
    job = fleet.ctl_json("job", runs[0]["id"], env=env)
    assert job["nodes"][0]["stdout"] == "tick\n"

    paused = fleet.run("ctl", "schedule", "pause", "tick", env=env)
    assert paused.returncode == 0, paused.stderr
    (listed,) = items(fleet.ctl_json("schedule", "list", env=env), "schedules")
    assert (listed["name"], listed["paused"], listed["every"]) == ("tick", True, 2.0)
    assert listed["runs"] >= 2
    table = fleet.run("ctl", "schedule", "list", env=env)
    assert table.stdout.split()[:3] == ["NAME", "WHEN", "TARGET"]
    assert "paused" in table.stdout

    bad = fleet.run(
        "ctl", "schedule", "add", "x", "--cron", "61 * * * *", "node-01", "true", env=env
    )
    assert "bad cron expression" in one_line_error(bad)
    assert fleet.run("ctl", "schedule", "remove", "tick", env=env).returncode == 0
    assert items(fleet.ctl_json("schedule", "list", env=env), "schedules") == []
