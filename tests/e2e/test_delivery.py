"""The issue's "done when" for trusted execution, with real processes and kill -9."""

from __future__ import annotations

import base64
import os
import signal
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.fleet import Fleet, cap, start_core
from tests.support import free_port

pytestmark = pytest.mark.e2e


def live(marker: str) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or [])
    ]


def submit(port: int, key: str, command: str) -> str:
    resp = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/jobs",
        json={"target": "node-01", "command": command, "timeout": 30},
        headers={"Authorization": f"Bearer {key}"},
        trust_env=False,
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    job_id: str = resp.json()["id"]
    return job_id


def node_result(fleet: Fleet, env: dict[str, str], job_id: str) -> dict[str, Any] | None:
    doc = fleet.ctl_json("job", job_id, env=env)
    if doc is None or doc["state"] != "done":
        return None
    result: dict[str, Any] = doc["nodes"][0]
    return result


@cap(40)
def test_kill_9_of_core_mid_job_still_records_the_result_once(fleet: Fleet) -> None:
    port = free_port()
    core, key = start_core(fleet, port)
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}
    fleet.spawn("node-01", "node", "run", "--config", str(fleet.node_config("node-01", port, key)))
    fleet.poll(
        "node-01 online",
        lambda: (n := fleet.ctl_items("nodes", env=env)) and n[0]["status"] == "online",
        10,
    )
    job_id = submit(port, key, "echo start; sleep 2.75; echo done")
    fleet.poll("the job running", lambda: live("sleep 2.75"), 5)
    os.kill(core.pid, signal.SIGKILL)
    core.popen.wait(5)
    fleet.poll("the job finished on the node", lambda: not live("sleep 2.75"), 10)
    start_core(fleet, port)
    n = fleet.poll("the job's result", lambda: node_result(fleet, env, job_id), 15)
    assert n["state"] == "succeeded"
    assert base64.b64decode(n["stdout_b64"]) == b"start\ndone\n"
    audit = fleet.ctl_items("audit", env=env)
    assert [r["outcome"] for r in audit if r["job_id"] == job_id] == ["1 succeeded"]


@cap(40)
def test_kill_9_of_the_agent_mid_job_is_reported_and_leaves_nothing(fleet: Fleet) -> None:
    port = free_port()
    _, key = start_core(fleet, port)
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}
    cfg = str(fleet.node_config("node-01", port, key))
    agent = fleet.spawn("node-01", "node", "run", "--config", cfg)
    fleet.poll(
        "node-01 online",
        lambda: (n := fleet.ctl_items("nodes", env=env)) and n[0]["status"] == "online",
        10,
    )
    job_id = submit(port, key, "sleep 4.75; echo done")
    fleet.poll("the job running", lambda: live("sleep 4.75"), 5)
    os.kill(agent.pid, signal.SIGKILL)
    agent.popen.wait(5)
    assert live("sleep 4.75")  # the job outlived its agent...
    fleet.spawn("node-01-again", "node", "run", "--config", cfg)
    n = fleet.poll("the job's result", lambda: node_result(fleet, env, job_id), 15)
    assert n["state"] == "failed"
    assert "agent stopped while the job ran" in n["error"]
    assert not live("sleep 4.75")  # ...until the next agent stopped it
