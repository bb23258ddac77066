"""End to end: the real ``servermgr`` CLI as subprocesses, Core and nodes from config files."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import servermgr
from tests.e2e.fleet import (
    Fleet,
    cap,
    not_core,
    one_line_error,
    start_core,
)
from tests.support import SERVERMGR, free_port

pytestmark = pytest.mark.e2e


# --- no Core needed --------------------------------------------------------------


@cap(120)
def test_version_and_help_on_every_command(fleet: Fleet) -> None:
    from servermgr.cli import spec
    from servermgr.cli.commands import ROOT

    commands = [list(path[1:]) for path, _ in spec.walk(ROOT)]
    assert ["ctl", "node", "remove"] in commands
    assert ["ctl", "metrics"] in commands
    # Two at a time: as many processes at once as there are commands would
    # only measure how the machine copes, and time out on a busy one.
    for i in range(0, len(commands), 2):
        procs = [
            (path, subprocess.Popen([*SERVERMGR, *path, "--help"], **_pipes(fleet)))
            for path in commands[i : i + 2]
        ]
        for path, proc in procs:
            out, err = proc.communicate(timeout=fleet.left())
            assert proc.returncode == 0, (path, err)
            assert "Usage:" in out, path
            assert err == ""
    version = subprocess.Popen([*SERVERMGR, "--version"], **_pipes(fleet))
    out, _ = version.communicate(timeout=fleet.left())
    assert version.returncode == 0
    assert out.strip() == f"servermgr {servermgr.__version__}"


def _pipes(
    fleet: Fleet, env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """Popen arguments for a short CLI call whose output the test reads."""
    return {
        "cwd": cwd or fleet.tmp,
        "env": {**fleet.env, **(env or {})},
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
    }


def test_key_show_prints_the_same_private_key_twice(fleet: Fleet) -> None:
    cfg = fleet.core_config(free_port())
    data = cfg.parent / "core-data"
    first = fleet.run("key", "show", "--config", str(cfg))
    second = fleet.run("key", "show", "--data-dir", str(data))
    for res in (first, second):
        assert res.returncode == 0, res.stderr
        assert re.fullmatch(r"[0-9a-f]{64}\n", res.stdout), res.stdout
    assert first.stdout == second.stdout
    assert "created" in first.stderr
    assert "created" not in second.stderr
    key_file = data / "core.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == first.stdout.strip()


def test_key_show_where_no_core_ran_says_where_to_look_and_makes_no_key(fleet: Fleet) -> None:
    elsewhere = fleet.tmp / "elsewhere"
    elsewhere.mkdir()
    for args in ((), ("--data-dir", str(elsewhere / "nothing"))):
        res = fleet.run("key", "show", *args, cwd=elsewhere)
        assert res.returncode != 0
        assert res.stdout == ""
        assert "no key here" in res.stderr, res.stderr
        assert "--data-dir DIR" in res.stderr
    assert not any(elsewhere.rglob("core.key"))


def test_config_errors_exit_2_naming_file_key_and_reason(fleet: Fleet) -> None:
    bad = fleet.tmp / "bad.toml"
    bad.write_text("[server]\nlisten = 42\n")
    nodeless = fleet.tmp / "nodeless.toml"
    nodeless.write_text('[node]\nregister_token = "abc"\n')
    typo = fleet.tmp / "typo.toml"
    typo.write_text('[server]\nlisten = "127.0.0.1:1"\nheartbeat = 5\n')
    cases = [
        (["core", "serve", "--config", str(bad)], bad, "server.listen", "must be a string"),
        (["node", "run", "--config", str(bad)], bad, "server.listen", "must be a string"),
        (["ctl", "--config", str(bad), "nodes"], bad, "server.listen", "must be a string"),
        (["node", "run", "--config", str(nodeless)], nodeless, "node.core_addr", "required"),
        (["core", "serve", "--config", str(typo)], typo, "server.heartbeat", "unknown key"),
        (["core", "serve", "--config", "missing.toml"], "missing.toml", "", "not found"),
    ]
    procs = [subprocess.Popen([*SERVERMGR, *args], **_pipes(fleet)) for args, *_ in cases]
    for proc, (args, path, key, reason) in zip(procs, cases, strict=True):
        out, err = proc.communicate(timeout=fleet.left())
        assert proc.returncode == 2, (args, out, err)
        lines = err.splitlines()
        assert len(lines) == 1, (args, err)
        assert str(path) in lines[0]
        assert key in lines[0]
        assert reason in lines[0]
    env = {"SERVERMGR_CONFIG": str(bad)}
    one_line_error(fleet.run("core", "serve", env=env), code=2)


# --- against a running Core ------------------------------------------------------


@cap(25)
def test_bad_key_unknown_node_and_unreachable_core_are_one_line_errors(fleet: Fleet) -> None:
    port = free_port()
    _, key = start_core(fleet, port)
    url = f"http://127.0.0.1:{port}"

    bad_node = fleet.spawn(
        "bad-node", "node", "run", "--config", str(fleet.node_config("node-01", port, "0" * 64))
    )
    good_env = {"SERVERMGR_CORE": url, "SERVERMGR_KEY": key}

    down = f"http://127.0.0.1:{free_port()}"
    empty = fleet.tmp / "elsewhere"  # no config, no key file to fall back on
    empty.mkdir()
    with not_core() as other:
        # (args, env, what the one line must say); independent, so run at once.
        cases: list[tuple[list[str], dict[str, str], list[str]]] = [
            (["--core", url, "--key", "0" * 64, "nodes"], {}, ["refused the key"]),
            (["nodes"], {**good_env, "SERVERMGR_KEY": "nope"}, ["refused the key"]),
            (["node", "nope"], good_env, ["'nope'"]),
            (["node", "remove", "nope"], good_env, ["'nope'"]),
            (["metrics", "nope", "--since", "10m"], good_env, ["'nope'"]),
            (["--core", other, "--key", key, "nodes"], {}, ["not Core's JSON"]),
            (["--core", down, "--key", key, "nodes"], {}, ["cannot reach Core", down]),
            (["--core", url, "nodes"], {}, ["SERVERMGR_KEY"]),
        ]
        procs = [
            subprocess.Popen(
                [*SERVERMGR, "ctl", *args],
                **_pipes(fleet, env, cwd=empty if args == ["--core", url, "nodes"] else None),
            )
            for args, env, _ in cases
        ]
        for proc, (args, _, needles) in zip(procs, cases, strict=True):
            out, err = proc.communicate(timeout=fleet.left())
            res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            line = one_line_error(res)
            for needle in needles:
                assert needle in line, (args, line)

    code = bad_node.popen.wait(timeout=min(fleet.left(), 10))
    assert code != 0
    last = bad_node.text().strip().splitlines()[-1]
    assert "register token" in last
    assert "Traceback" not in bad_node.text()
    # ctl node remove frees a name; the node list is then empty.
    resp = httpx.post(
        f"{url}/api/v1/register",
        json={"hostname": "spare"},
        headers={"Authorization": f"Bearer {key}"},
        trust_env=False,
    )
    assert resp.status_code == 201
    removed = fleet.run("ctl", "node", "remove", "spare", env=good_env)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(f"removed spare ({resp.json()['node_id']})")
    assert fleet.ctl_items("nodes", env=good_env) == []


@cap(65)
def test_three_nodes_survive_a_kill_9_of_core(fleet: Fleet) -> None:
    port = free_port()
    core, key = start_core(fleet, port)
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}
    # A long FQDN, as fleets have: piped tables must not squeeze it or the numbers out.
    names = ["node-01", "node-02", "node-03.rack-7.eu-west-1.example.internal"]
    nodes = [
        fleet.spawn(n, "node", "run", "--config", str(fleet.node_config(n, port, key)))
        for n in names
    ]

    def all_online(after: float = 0.0) -> list[dict[str, Any]] | None:
        listed = fleet.ctl_items("nodes", env=env)
        ok = (
            listed is not None
            and [n["name"] for n in listed] == names
            and all(
                n["status"] == "online"
                and n["cpu_percent"] is not None
                and n["mem_percent"] is not None
                and (n["sample_ts"] or 0) > after
                for n in listed
            )
        )
        return listed if ok else None

    listed = fleet.poll("three online nodes with metrics", all_online, 10)
    ids = {n["name"]: n["id"] for n in listed}
    for n in listed:
        assert {"id", "name", "status", "last_seen", "cpu_percent", "mem_percent"} <= set(n)
        assert 0 <= n["cpu_percent"] <= 100
        assert 0 < n["mem_percent"] <= 100
        assert n["last_seen"] > time.time() - 10

    table = fleet.run("ctl", "nodes", env=env)
    assert table.returncode == 0
    assert "3/3 online" in table.stdout
    assert table.stdout.split()[:4] == ["NAME", "STATUS", "CPU", "MEM"]
    for name in names:
        (row,) = [line for line in table.stdout.splitlines() if line.startswith(name + " ")]
        assert "online" in row
        assert len(re.findall(r"\d+%", row)) >= 3, row
    assert "…" not in table.stdout
    detail = fleet.run("ctl", "node", "node-02", env=env)
    assert detail.returncode == 0
    assert ids["node-02"] in detail.stdout
    assert "online" in detail.stdout

    samples = fleet.poll(
        "a few samples of node-01",
        lambda: (
            (s := fleet.ctl_items("metrics", "node-01", "--since", "10m", env=env))
            and len(s) >= 3
            and s
        ),
        10,
    )
    for s in samples:
        assert {"ts", "cpu_percent", "mem_percent", "load1", "net_rx_bps"} <= set(s)
    assert [s["ts"] for s in samples] == sorted(s["ts"] for s in samples)
    sparks = fleet.run("ctl", "metrics", "node-01", "--since", "10m", env=env)
    assert sparks.returncode == 0
    assert "node-01" in sparks.stdout
    assert re.search("[▁▂▃▄▅▆▇█]{3}", sparks.stdout), sparks.stdout
    stored_before = samples[-1]["ts"]

    # kill -9: no goodbye to the nodes, no final flush.
    os.kill(core.pid, signal.SIGKILL)
    core.popen.wait(timeout=5)
    killed_at = time.time()

    # A fresh Core the nodes cannot reach (another port, same data): all three
    # are known from SQLite and offline, whatever the nodes are doing.
    alt_port = free_port()
    alt, _ = start_core(fleet, alt_port, config="core-alt.toml")
    alt_env = {**env, "SERVERMGR_CORE": f"http://127.0.0.1:{alt_port}"}
    listed = fleet.ctl_items("nodes", env=alt_env)
    assert [(n["name"], n["id"], n["status"]) for n in listed] == [
        (n, ids[n], "offline") for n in names
    ]
    assert fleet.stop(alt, signal.SIGTERM) == 0

    # Core again on its own port: the nodes come back by themselves.
    restarted_at = time.time()
    core, _ = start_core(fleet, port)
    first = fleet.ctl_items("nodes", env=env)
    for n in first:
        # Online only if it really connected to this Core.
        assert n["status"] == "offline" or n["connected_at"] >= restarted_at, n
    # Backoff after a ~10 s outage may sleep 8-16 s more: the issue allows 35 s.
    listed = fleet.poll("all three back online", lambda: all_online(after=restarted_at), 35)
    assert {n["name"]: n["id"] for n in listed} == ids
    assert all(node.alive() for node in nodes)

    history = fleet.ctl_items("metrics", "node-01", "--since", "10m", env=env)
    stamps = [s["ts"] for s in history]
    assert stored_before in stamps
    assert any(ts > killed_at for ts in stamps)

    code = fleet.stop(core, signal.SIGTERM)
    assert code == 0, core.text()
    m = re.search(r"stored (\d+) samples", core.text())
    assert m, core.text()
    assert int(m.group(1)) >= 3
    for node in nodes:
        assert node.alive(), node.text()
        assert fleet.stop(node, signal.SIGTERM) == 0, node.text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_backgrounded_core_stops_gracefully(fleet: Fleet, sig: signal.Signals) -> None:
    port = free_port()
    cfg = fleet.core_config(port)
    key = fleet.run("key", "show", "--config", str(cfg)).stdout.split()[0]
    core = fleet.spawn_background("core", "core", "serve", "--config", str(cfg))
    node = fleet.spawn("node", "node", "run", "--config", str(fleet.node_config("n1", port, key)))
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}
    fleet.poll(
        "stored samples",
        lambda: len(fleet.ctl_items("metrics", "n1", "--since", "5m", env=env) or []) >= 2,
        10,
    )
    assert fleet.stop(core, sig) == 0, core.text()
    log = core.text()
    assert f"received {sig.name}" in log
    m = re.search(r"stored (\d+) samples", log)
    assert m, log
    assert int(m.group(1)) >= 2
    assert "Traceback" not in log
    assert node.alive()


@cap(60)
def test_up_with_listen_and_data_dir_tells_ctl_where_core_is(fleet: Fleet) -> None:
    port = free_port()
    up = fleet.spawn("up", "up", "--listen", f"127.0.0.1:{port}", "--data-dir", "elsewhere")
    line = fleet.poll(
        "the banner's export line",
        lambda: next((ln for ln in up.text().splitlines() if "export SERVERMGR_CORE" in ln), None),
        30,
    )
    assert (fleet.tmp / "elsewhere" / "core.key").is_file()
    command = line.split("first ", 1)[1]
    assert f"SERVERMGR_CORE=http://127.0.0.1:{port}" in command
    bin_dir = Path(SERVERMGR[0]).parent

    def nodes() -> list[str] | None:
        res = subprocess.run(
            ["bash", "-c", f"{command}; servermgr ctl nodes --json"],
            cwd=fleet.tmp,
            env={**fleet.env, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=min(fleet.left(), 20),
        )
        items = json.loads(res.stdout)["items"] if res.returncode == 0 else []
        return [n["name"] for n in items if n["status"] == "online"] or None

    assert len(fleet.poll("the local node online, seen by ctl", nodes, 20)) == 1
