"""Roles, revocation and secrets, tried as a user would: real Core, agents and ctl.

One fleet, one story: nodes enrol with an enroll token; that token cannot run
anything, a read token can list but not run, an operate token runs; a token
revoked and a key rotated stop working on the running Core; a removed node
stops and says so. Then every log line and every output the test saw is
searched for every secret it used (debug logging on everywhere).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.e2e.fleet import Fleet, cap, healthy, one_line_error
from tests.support import free_port

DEBUG = '[log]\nlevel = "debug"\n'


def node_config(fleet: Fleet, name: str, port: int, token: str) -> Path:
    path = fleet.tmp / f"{name}.toml"
    path.write_text(
        "[server]\nheartbeat_interval = 0.5\n"
        f'[node]\ncore_addr = "ws://127.0.0.1:{port}"\nregister_token = "{token}"\n'
        f'hostname = "{name}"\ndata_dir = "{name}-data"\n' + DEBUG
    )
    path.chmod(0o600)
    return path


@cap(90)
def test_roles_revocation_and_no_secret_in_any_log(fleet: Fleet) -> None:
    seen: list[str] = []  # every stderr, and every stdout not meant to show a secret

    def run(
        *args: str, key: str | None = None, shows_secret: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}"}
        if key is not None:
            env["SERVERMGR_KEY"] = key
        res = fleet.run(*args, env=env)
        seen.append(res.stderr)
        if not shows_secret:
            seen.append(res.stdout)
        return res

    def made(*args: str) -> str:
        res = run(*args, "--config", str(cfg), shows_secret=True)
        assert res.returncode == 0, res.stderr
        (line, *_) = res.stdout.splitlines()
        return line

    port = free_port()
    cfg = fleet.core_config(port)
    cfg.write_text(cfg.read_text() + DEBUG)
    admin = made("key", "show")
    core = fleet.spawn("core", "core", "serve", "--config", str(cfg))
    fleet.poll("Core listening", lambda: healthy(port) or not core.alive(), 10)
    enroll = made("key", "create", "--role", "enroll", "--name", "installer")
    operate = made("key", "create", "--role", "operate", "--name", "ci")
    read = made("key", "create", "--role", "read", "--name", "viewer", "--expires", "1d")
    listing = json.loads(run("key", "list", "--json", "--config", str(cfg)).stdout)["items"]
    assert [(t["name"], t["role"]) for t in listing] == [
        ("ci", "operate"),
        ("installer", "enroll"),
        ("viewer", "read"),
    ]

    agents = {
        name: fleet.spawn(
            name, "node", "run", "--config", str(node_config(fleet, name, port, enroll))
        )
        for name in ("node-01", "node-02")
    }

    def online() -> list[str]:
        res = run("ctl", "nodes", "--json", key=read)
        if res.returncode:
            return []
        return sorted(n["name"] for n in json.loads(res.stdout)["items"] if n["status"] == "online")

    fleet.poll("both nodes online", lambda: online() == ["node-01", "node-02"], 15)

    # The enroll token registered them, but runs nothing and lists nothing.
    line = one_line_error(run("ctl", "exec", "node-01", "echo", "hi", key=enroll), 255)
    assert "token 'installer' (role enroll)" in line
    assert "needs role operate" in line
    one_line_error(run("ctl", "nodes", key=enroll), 1)
    # A read token lists but cannot run anything.
    line = one_line_error(run("ctl", "exec", "--all", "echo", "hi", key=read), 255)
    assert "needs role operate" in line
    # An operate token runs; the audit names it.
    res = run("ctl", "exec", "--all", "echo", "hi", key=operate)
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.splitlines()) == ["node-01 | hi", "node-02 | hi"]
    audit = json.loads(run("ctl", "audit", "--json", key=read).stdout)["items"]
    assert [r["principal"] for r in audit] == ["ci"]
    # ... but cannot remove a node: that is the core key's.
    line = one_line_error(run("ctl", "node", "remove", "node-02", "--force", key=operate), 1)
    assert "needs the core key" in line

    # Revoked on the running Core: refused within a few seconds.
    assert run("key", "revoke", "viewer", "--config", str(cfg)).returncode == 0
    fleet.poll("viewer refused", lambda: run("ctl", "nodes", key=read).returncode == 1, 10)

    # A removed node is disconnected and its agent stops, saying so in one line.
    assert run("ctl", "node", "remove", "node-02", "--force", key=admin).returncode == 0
    assert agents["node-02"].popen.wait(timeout=fleet.left()) == 1
    last = agents["node-02"].text().strip().splitlines()[-1]
    assert last.startswith("servermgr: Core removed this node (node-02)")
    assert "identity.json" in last
    # Started again with the enroll token still in its config: it does not come back.
    res = run("node", "run", "--config", str(fleet.tmp / "node-02.toml"))
    assert res.returncode == 1
    assert "Core removed this node (node-02)" in res.stderr

    # A rotated key: the old one is refused, the new one works, nodes stay.
    rotated = made("key", "rotate")
    fleet.poll("old key refused", lambda: run("ctl", "nodes", key=admin).returncode == 1, 10)
    fleet.poll("new key works", lambda: run("ctl", "nodes", key=rotated).returncode == 0, 10)
    # (the read token is revoked: look with the operate one)
    nodes = json.loads(run("ctl", "nodes", "--json", key=operate).stdout)["items"]
    assert [(n["name"], n["status"]) for n in nodes] == [("node-01", "online")]

    credentials = [
        json.loads((fleet.tmp / f"{name}-data" / "identity.json").read_text())["credential"]
        for name in agents
    ]
    for proc in (agents["node-01"], core):
        assert fleet.stop(proc, signal.SIGTERM) == 0
    secrets = [admin, rotated, enroll, operate, read, *credentials]
    texts = [*seen, *(p.text() for p in fleet.procs)]
    assert sum(len(t) for t in texts) > 1000  # the logs were captured at debug level
    for secret in secrets:
        # The whole secret, and the part after the id: neither may appear anywhere.
        for part in {secret, secret.rsplit(".", 1)[-1]}:
            leaks = [t for t in texts if part in t]
            assert not leaks, f"a secret ({secret[:4]}...) appears in: {leaks[0][:300]}"
