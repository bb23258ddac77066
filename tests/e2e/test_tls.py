"""End to end over TLS: Core with ``tls = "auto"``, a pinned node, ctl over https."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.fleet import INTERVAL, Fleet, cap, one_line_error
from tests.support import free_port

pytestmark = pytest.mark.e2e

WRONG_PIN = "sha256:" + "ab" * 32


def tls_core_config(fleet: Fleet, port: int) -> Path:
    path = fleet.tmp / "core.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nheartbeat_interval = {INTERVAL}\ntls = "auto"\n'
        '[storage]\ndata_dir = "core-data"\n'
    )
    return path


def pinned_node_config(fleet: Fleet, name: str, port: int, token: str, pin: str) -> Path:
    path = fleet.tmp / f"{name}.toml"
    path.write_text(
        f"[server]\nheartbeat_interval = {INTERVAL}\n"
        f'[node]\ncore_addr = "wss://127.0.0.1:{port}"\ntls_fingerprint = "{pin}"\n'
        f'register_token = "{token}"\nhostname = "{name}"\ndata_dir = "{name}-data"\n'
    )
    return path


@cap(60)
def test_pinned_node_and_ctl_over_https(fleet: Fleet) -> None:
    port = free_port()
    cfg = tls_core_config(fleet, port)
    shown = fleet.run("key", "show", "--config", str(cfg))
    assert shown.returncode == 0, shown.stderr
    key, pin = shown.stdout.splitlines()
    assert len(key) == 64
    assert pin.startswith("sha256:")
    assert len(pin) == len("sha256:") + 64
    assert "line 2: the fingerprint of" in shown.stderr
    core = fleet.spawn("core", "core", "serve", "--config", str(cfg))
    # On the Core host ctl finds the address, the key and the pin by itself.
    fleet.poll("Core over https", lambda: fleet.ctl_items("-c", str(cfg), "nodes") == [], 15)
    assert f"Core listening on https://127.0.0.1:{port}" in core.text()
    assert pin in core.text()

    good = fleet.spawn(
        "node-01",
        "node",
        "run",
        "--config",
        str(pinned_node_config(fleet, "node-01", port, key, pin)),
    )
    bad = fleet.spawn(
        "node-02",
        "node",
        "run",
        "--config",
        str(pinned_node_config(fleet, "node-02", port, key, WRONG_PIN)),
    )

    # Elsewhere (no config here): the address, the key and the pin from the environment.
    away = fleet.tmp / "elsewhere"
    away.mkdir()
    env = {
        "SERVERMGR_CORE": f"https://127.0.0.1:{port}",
        "SERVERMGR_KEY": key,
        "SERVERMGR_FINGERPRINT": pin,
    }

    def listed() -> list[str] | None:
        res = fleet.run("ctl", "nodes", "--json", env=env, cwd=away)
        if res.returncode != 0:
            return None
        return [n["name"] for n in json.loads(res.stdout)["items"] if n["status"] == "online"]

    assert fleet.poll("node-01 online", listed, 20) == ["node-01"]
    res = fleet.run("ctl", "exec", "node-01", "echo over-https", env=env, cwd=away)
    assert (res.returncode, res.stdout) == (0, "over-https\n"), res.stderr

    # The pin in another spelling (colons, capitals), and Core's certificate as a CA file.
    colons = ":".join(pin[7:][i : i + 2].upper() for i in range(0, 64, 2))
    res = fleet.run(
        "ctl", "--fingerprint", colons, "nodes", env={**env, "SERVERMGR_FINGERPRINT": ""}, cwd=away
    )
    assert res.returncode == 0, res.stderr
    ca = str(fleet.tmp / "core-data" / "tls.crt")
    no_pin = {**env, "SERVERMGR_FINGERPRINT": ""}
    res = fleet.run("ctl", "--ca-file", ca, "exec", "node-01", "true", env=no_pin, cwd=away)
    assert res.returncode == 0, res.stderr

    # The node pinned to another fingerprint said so, and never registered.
    fleet.poll("node-02's refusal", lambda: "does not match the pinned" in bad.text(), 10)
    assert bad.alive()
    assert f"does not match the pinned {WRONG_PIN}" in bad.text()
    assert listed() == ["node-01"]
    assert good.alive()

    # Each failure is one line.
    wrong = one_line_error(
        fleet.run("ctl", "nodes", env={**env, "SERVERMGR_FINGERPRINT": WRONG_PIN}, cwd=away)
    )
    assert f"certificate fingerprint {pin} does not match the pinned {WRONG_PIN}" in wrong
    wrong_exec = one_line_error(
        fleet.run(
            "ctl",
            "exec",
            "node-01",
            "true",
            env={**env, "SERVERMGR_FINGERPRINT": WRONG_PIN},
            cwd=away,
        ),
        255,
    )
    assert "does not match the pinned" in wrong_exec
    untrusted = one_line_error(fleet.run("ctl", "nodes", env=no_pin, cwd=away))
    assert "is not trusted by the system's CAs" in untrusted
    plain = {**no_pin, "SERVERMGR_CORE": f"http://127.0.0.1:{port}"}
    line = one_line_error(fleet.run("ctl", "nodes", env=plain, cwd=away))
    assert f"speaks TLS: use https://127.0.0.1:{port}" in line
    line = one_line_error(fleet.run("ctl", "exec", "node-01", "true", env=plain, cwd=away), 255)
    assert "speaks TLS" in line
