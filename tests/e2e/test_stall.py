"""A stopped node delays nobody: the issue's "done when" with real agents and SIGSTOP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import Any

import pytest

from tests.e2e.fleet import Fleet, cap, start_core
from tests.support import SERVERMGR, free_port

pytestmark = pytest.mark.e2e


def online(fleet: Fleet, env: dict[str, str], count: int) -> bool:
    nodes = fleet.ctl_items("nodes", env=env)
    return bool(nodes) and sum(n["status"] == "online" for n in nodes) == count


def node_state(fleet: Fleet, env: dict[str, str], job_id: str, name: str) -> dict[str, Any] | None:
    doc = fleet.ctl_json("job", job_id, env=env)
    if doc is None:
        return None
    node: dict[str, Any] = next(n for n in doc["nodes"] if n["node"] == name)
    return node


@cap(60)
def test_a_stopped_node_is_reported_stalled_and_the_others_answer(fleet: Fleet) -> None:
    port = free_port()
    _, key = start_core(fleet, port)
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}
    agents = {
        name: fleet.spawn(name, "node", "run", "--config", str(fleet.node_config(name, port, key)))
        for name in ("node-01", "node-02", "node-03")
    }
    fleet.poll("three nodes online", lambda: online(fleet, env, 3), 15)
    os.kill(agents["node-02"].pid, signal.SIGSTOP)
    try:
        res = subprocess.run(
            [*SERVERMGR, "ctl", "exec", "--all", "hostname"],
            cwd=fleet.tmp,
            env={**fleet.env, **env},
            capture_output=True,
            timeout=min(fleet.left(), 30),
        )
    finally:
        os.kill(agents["node-02"].pid, signal.SIGCONT)
    host = socket.gethostname()
    assert res.returncode == 1, res
    assert sorted(res.stdout.decode().splitlines()) == [f"node-01 | {host}", f"node-03 | {host}"]
    err = res.stderr.decode()
    rows = {line.split()[0]: line.split()[1:] for line in err.splitlines() if line.strip()}
    assert rows["node-01"][:2] == ["succeeded", "0"]
    assert rows["node-03"][:2] == ["succeeded", "0"]
    assert rows["node-02"][:2] == ["stalled", "-"]
    assert "disconnected" in err
    assert "2/3 succeeded" in err
    job_id = err.rsplit("job ", 1)[1].split()[0]

    # Resumed, the node comes back; whether it read the job.run waiting in its
    # socket before noticing Core had closed the connection decides whether the
    # job ran there: either way the entry is final and says so, never open.
    fleet.poll("node-02 back online", lambda: online(fleet, env, 3), 15)
    n = node_state(fleet, env, job_id, "node-02")
    assert n is not None
    assert n["state"] in ("stalled", "succeeded")
