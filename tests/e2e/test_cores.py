"""End to end: two Core processes share one Redis, one data directory and one fleet."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.fleet import INTERVAL, Fleet, Proc, cap, healthy
from tests.support import RedisServer, free_port

pytestmark = pytest.mark.e2e

IN_FLIGHT = "sleep 30; echo in-flight"


def core_config(fleet: Fleet, port: int, redis_url: str) -> Path:
    path = fleet.tmp / f"core-{port}.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nheartbeat_interval = {INTERVAL}\n'
        f'[storage]\ndata_dir = "core-data"\nredis_url = "{redis_url}"\n'
    )
    return path


def node_config(fleet: Fleet, name: str, ports: list[int], token: str) -> Path:
    path = fleet.tmp / f"{name}.toml"
    addrs = ", ".join(f'"ws://127.0.0.1:{p}"' for p in ports)
    path.write_text(
        f"[server]\nheartbeat_interval = {INTERVAL}\n"
        f'[node]\ncore_addr = [{addrs}]\nregister_token = "{token}"\n'
        f'hostname = "{name}"\ndata_dir = "{name}-data"\n'
    )
    return path


def start(fleet: Fleet, port: int, config: Path) -> Proc:
    core = fleet.spawn(f"core-{port}", "core", "serve", "--config", str(config))
    fleet.poll(f"Core listening on {port}", lambda: healthy(port) or not core.alive(), 15)
    assert core.alive(), core.text()
    return core


def env_of(port: int, key: str) -> dict[str, str]:
    return {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}


@cap(120)
def test_two_cores_one_fleet_and_a_killed_core_s_nodes_move(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    a_port, b_port = free_port(), free_port()
    a_cfg = core_config(fleet, a_port, redis_server.url)
    b_cfg = core_config(fleet, b_port, redis_server.url)
    key = fleet.run("key", "show", "--config", str(a_cfg)).stdout.split()[0]
    core_a = start(fleet, a_port, a_cfg)
    core_b = start(fleet, b_port, b_cfg)  # the same data directory and key file
    env_a, env_b = env_of(a_port, key), env_of(b_port, key)
    # n1 prefers Core A, n2 Core B.
    for name, ports in (("n1", [a_port, b_port]), ("n2", [b_port, a_port])):
        fleet.spawn(name, "node", "run", "--config", str(node_config(fleet, name, ports, key)))

    def fleet_online(env: dict[str, str], after: float = 0.0) -> list[dict[str, Any]] | None:
        listed = (fleet.ctl_json("nodes", env=env) or {}).get("items")
        ok = (
            listed is not None
            and sorted(n["name"] for n in listed) == ["n1", "n2"]
            and all(
                n["status"] == "online"
                and n["cpu_percent"] is not None
                and (n["connected_at"] or 0) > after
                for n in listed
            )
        )
        return listed if ok else None

    # Either Core lists the whole fleet, live.
    fleet.poll("both nodes online through Core A", lambda: fleet_online(env_a), 20)
    fleet.poll("both nodes online through Core B", lambda: fleet_online(env_b), 20)

    def exec_all(env: dict[str, str]) -> dict[str, dict[str, Any]]:
        res = fleet.run("ctl", "exec", "--all", "--json", "echo hello", env=env)
        assert res.returncode == 0, (res.stdout, res.stderr)
        job = json.loads(res.stdout)
        return {n["node"]: n for n in job["nodes"]}

    # A fan-out through A reaches the node connected to B, and the other way.
    for env in (env_a, env_b):
        results = exec_all(env)
        assert {name: n["state"] for name, n in results.items()} == {
            "n1": "succeeded",
            "n2": "succeeded",
        }
        assert all(n["stdout"] == "hello\n" for n in results.values())

    # kill -9 Core A: n1 moves to B within 10 s, keeping its identity.
    ids = {n["name"]: n["id"] for n in fleet_online(env_b) or []}
    killed = time.time()  # before the kill: n1 may be back at B before wait() returns
    os.kill(core_a.pid, signal.SIGKILL)
    core_a.popen.wait(timeout=5)

    def n1_back() -> dict[str, Any] | None:
        listed = (fleet.ctl_json("nodes", env=env_b) or {}).get("items") or []
        n1 = next((n for n in listed if n["name"] == "n1"), None)
        ok = n1 is not None and n1["status"] == "online" and (n1["connected_at"] or 0) > killed
        return n1 if ok else None

    # Listing it may take a loaded machine longer; the move itself is Core B's clock.
    moved = fleet.poll("n1 connected to Core B", n1_back, 30)
    assert moved["connected_at"] - killed < 10
    assert moved["id"] == ids["n1"]
    results = exec_all(env_b)
    assert {name: n["state"] for name, n in results.items()} == {
        "n1": "succeeded",
        "n2": "succeeded",
    }
    assert fleet.stop(core_b, signal.SIGTERM) == 0, core_b.text()


@cap(120)
def test_a_killed_core_s_jobs_in_flight_and_queued_all_end_recorded(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    """kill -9 of a Core with jobs running on its nodes and one queued for an
    offline node: each ends recorded (a result, or lost with its reason, then
    the late result); a node that cannot move is listed offline, not online."""
    a_port, b_port = free_port(), free_port()
    a_cfg = core_config(fleet, a_port, redis_server.url)
    b_cfg = core_config(fleet, b_port, redis_server.url)
    key = fleet.run("key", "show", "--config", str(a_cfg)).stdout.split()[0]
    core_a = start(fleet, a_port, a_cfg)
    start(fleet, b_port, b_cfg)
    env_b = env_of(b_port, key)
    # mover: A then B; on-b: B; late: offline, a job waits for it; stuck: A only.
    plans = {"mover": [a_port, b_port], "on-b": [b_port, a_port], "late": [a_port, b_port]}
    plans["stuck"] = [a_port]
    agents = {
        name: fleet.spawn(
            name, "node", "run", "--config", str(node_config(fleet, name, ports, key))
        )
        for name, ports in plans.items()
    }

    def states(env: dict[str, str]) -> dict[str, str]:
        listed = (fleet.ctl_json("nodes", env=env) or {}).get("items") or []
        return {n["name"]: n["status"] for n in listed}

    fleet.poll("4 nodes online", lambda: list(states(env_b).values()) == ["online"] * 4, 20)
    fleet.stop(agents["late"], signal.SIGTERM)
    fleet.poll("late offline", lambda: states(env_b).get("late") == "offline", 10)
    a_url = f"http://127.0.0.1:{a_port}"
    ctl_a = ("ctl", "--core", a_url, "--key", key)
    fleet.spawn("queued", *ctl_a, "exec", "--wait", "2m", "late", "echo queued")
    fleet.spawn("in-flight", *ctl_a, "exec", "-t", "5s", "mover,on-b,stuck", IN_FLIGHT)

    def job_id(command: str) -> str | None:
        for job in (fleet.ctl_json("jobs", env=env_b) or {}).get("items") or []:
            if job["command"] == command:
                return str(job["id"])
        return None

    def nodes_of(job: str) -> dict[str, dict[str, Any]]:
        doc = fleet.ctl_json("job", job, env=env_b) or {}
        return {n["node"]: n for n in doc.get("nodes") or []}

    running = fleet.poll("the job stored", lambda: job_id(IN_FLIGHT), 10)
    queued = fleet.poll("the queued job stored", lambda: job_id("echo queued"), 10)

    def all_sent() -> bool:
        got = nodes_of(running)
        return len(got) == 3 and all(n["state"] in ("sent", "running") for n in got.values())

    fleet.poll("the job sent to its 3 nodes", all_sent, 10)
    os.kill(core_a.pid, signal.SIGKILL)  # within the job's 5 s: in flight
    core_a.popen.wait(timeout=5)

    # mover runs it on, and its result (timed out at 5 s) reaches B when it moves.
    def ended() -> dict[str, dict[str, Any]] | None:
        got = nodes_of(running)
        ok = got["mover"]["state"] == "timed_out" and got["on-b"]["state"] == "timed_out"
        return got if ok else None

    fleet.poll("mover's and on-b's results recorded", ended, 20)
    # stuck cannot move: B lists it offline once A's liveness key expires (10 s).
    fleet.poll("stuck listed offline through B", lambda: states(env_b)["stuck"] == "offline", 20)

    # ... and takes its entry over: lost after the job's timeout + 30 s.
    def stuck_lost() -> dict[str, Any] | None:
        stuck = nodes_of(running)["stuck"]
        return stuck if stuck["state"] == "lost" else None

    lost = fleet.poll("stuck's entry lost", stuck_lost, 45)
    assert "no result from the node" in lost["error"]
    # The queued job runs when its node comes back (to B), as does stuck's late result.
    fleet.stop(agents["stuck"], signal.SIGTERM)
    fleet.spawn("late-2", "node", "run", "--config", str(fleet.tmp / "late.toml"))
    fleet.spawn(
        "stuck-2", "node", "run", "--config", str(node_config(fleet, "stuck", [b_port], key))
    )

    def queued_ran() -> dict[str, Any] | None:
        late = nodes_of(queued).get("late")
        return late if late and late["state"] == "succeeded" else None

    assert fleet.poll("the queued job ran", queued_ran, 20)["stdout"] == "queued\n"
    fleet.poll(
        "stuck's late result recorded",
        lambda: nodes_of(running)["stuck"]["state"] == "timed_out",
        20,
    )
