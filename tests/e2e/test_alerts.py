"""Alerts end to end: a real Core and node (CLI subprocesses), a real local webhook receiver."""

from __future__ import annotations

import signal
from typing import Any

from tests.e2e.fleet import Fleet, cap, healthy
from tests.support import WebhookServer, free_port


@cap(120)
def test_a_stopped_node_fires_once_and_resolves_once_and_ctl_shows_it(fleet: Fleet) -> None:
    webhook = WebhookServer()
    try:
        run(fleet, webhook)
    finally:
        webhook.close()


def run(fleet: Fleet, webhook: WebhookServer) -> None:
    port = free_port()
    cfg = fleet.core_config(port)
    with cfg.open("a") as f:
        f.write(
            f'[[receiver]]\nname = "local"\ntype = "webhook"\nurl = "{webhook.url}"\n'
            # This machine's CPU may well be above 90 % (a busy test run): 1h never fires here.
            '[[alert]]\nname = "cpu-high"\nwhen = "cpu > 90"\nfor = "1h"\n'
            '[[alert]]\nname = "offline"\nwhen = "offline"\nfor = "3s"\n'
        )
    key = fleet.run("key", "show", "--config", str(cfg))
    assert key.returncode == 0, key.stderr
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key.stdout.split()[0]}
    core = fleet.spawn("core", "core", "serve", "--config", str(cfg))
    fleet.poll("Core listening", lambda: healthy(port) or not core.alive(), 15)
    assert core.alive(), core.text()
    node_cfg = str(fleet.node_config("web-1", port, env["SERVERMGR_KEY"]))

    def web1(status: str) -> bool:
        nodes = fleet.ctl_items("nodes", env=env)
        return bool(nodes) and nodes[0]["status"] == status

    node = fleet.spawn("web-1", "node", "run", "--config", node_cfg)
    fleet.poll("web-1 online", lambda: web1("online"), 15)
    rules = fleet.ctl_items("alert", "list", env=env)
    assert [r["name"] for r in rules] == ["cpu-high", "offline"]

    fleet.stop(node, signal.SIGTERM)
    fleet.poll("the firing notice", lambda: webhook.of("firing"), 30)
    now: list[dict[str, Any]] = fleet.ctl_items("alerts", env=env)
    offline = [(a["rule"], a["node"], a["state"]) for a in now if a["rule"] == "offline"]
    assert offline == [("offline", "web-1", "firing")]
    table = fleet.run("ctl", "alerts", env=env)
    assert table.returncode == 0
    assert "firing" in table.stdout
    assert "web-1" in table.stdout

    fleet.spawn("web-1-again", "node", "run", "--config", node_cfg)
    fleet.poll("the resolved notice", lambda: webhook.of("resolved"), 30)
    assert [a for a in fleet.ctl_items("alerts", env=env) if a["rule"] == "offline"] == []
    history = fleet.ctl_items("alerts", "--history", env=env)
    assert [(h["from"], h["to"]) for h in history if h["rule"] == "offline"][-3:] == [
        (None, "pending"),
        ("pending", "firing"),
        ("firing", "resolved"),
    ]
    shown = fleet.run("ctl", "alerts", "--history", env=env)
    assert shown.returncode == 0
    assert "resolved" in shown.stdout
    # Each notified exactly once: a notice more would have come by now.
    delivered = fleet.poll(
        "both deliveries recorded",
        lambda: (d := fleet.ctl_items("alerts", "--deliveries", env=env)) and len(d) >= 2 and d,
        10,
    )
    assert [(d["kind"], d["outcome"]) for d in delivered] == [
        ("firing", "sent"),
        ("resolved", "sent"),
    ]
    assert [b["status"] for b in webhook.bodies] == ["firing", "resolved"]
    assert {b["node"] for b in webhook.bodies} == {"web-1"}


@cap(60)
def test_rules_and_silences_from_the_command_line(fleet: Fleet) -> None:
    port = free_port()
    cfg = fleet.core_config(port)
    key = fleet.run("key", "show", "--config", str(cfg)).stdout.split()[0]
    env = {"SERVERMGR_CORE": f"http://127.0.0.1:{port}", "SERVERMGR_KEY": key}
    core = fleet.spawn("core", "core", "serve", "--config", str(cfg))
    fleet.poll("Core listening", lambda: healthy(port) or not core.alive(), 15)
    added = fleet.run(
        "ctl",
        "alert",
        "add",
        "web-cpu",
        "--when",
        "cpu > 90",
        "--for",
        "5m",
        "--nodes",
        "role=web",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    assert "web-cpu" in added.stdout
    bad = fleet.run("ctl", "alert", "add", "oops", "--when", "cpu >> 9", env=env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("servermgr: bad rule: bad condition")
    assert len(bad.stderr.splitlines()) == 1
    silence = fleet.ctl_json("alert", "silence", "web-cpu", "--for", "2h", env=env)
    assert (silence["scope"], silence["target"]) == ("rule", "web-cpu")
    assert [s["id"] for s in fleet.ctl_items("alert", "silences", env=env)] == [silence["id"]]
    ended = fleet.run("ctl", "alert", "unsilence", str(silence["id"]), env=env)
    assert ended.returncode == 0
    assert fleet.ctl_items("alert", "silences", env=env) == []
    assert fleet.run("ctl", "alert", "remove", "web-cpu", env=env).returncode == 0
    gone = fleet.run("ctl", "alert", "remove", "web-cpu", env=env)
    assert gone.returncode == 1
    assert "no rule named 'web-cpu'" in gone.stderr
