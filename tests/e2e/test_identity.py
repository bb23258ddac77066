"""End to end: Core owns node names, and a hostile node's bytes reach no terminal or log raw."""

from __future__ import annotations

import unicodedata

import httpx
import pytest
import trio

from servermgr.common import proto
from servermgr.node.transport import connect
from tests.e2e.fleet import Fleet, cap, one_line_error, start_core
from tests.support import free_port, hello_text

pytestmark = pytest.mark.e2e

ESC = "evil\x1b]0;pwned\x07\x1b[2J\r\n2026-11-30 04:00:00 INFO    servermgr.core: forged"


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in {"Cc", "Cf"} and c != "\n"]


async def _hostile_hellos(url: str, key: str, victim_id: str) -> list[proto.Message]:
    """Register "evil", then say hello with escape bytes or the victim's id."""
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        resp = await client.post(
            "/api/v1/register",
            json={"hostname": "evil"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 201, resp.text
    doc = resp.json()
    replies: list[proto.Message] = []
    with trio.fail_after(10):
        for hostname, os_name in ((ESC, "Linux"), (victim_id, "Linux" + ESC), ("evil", ESC)):
            async with connect(url.replace("http://", "ws://"), doc["credential"]) as ws:
                await ws.send_message(hello_text(doc["node_id"], hostname, os=os_name))
                replies.append(proto.decode(await ws.get_message()))
    return replies


@cap(30)
def test_hostile_names_are_refused_renames_are_the_operators_and_nothing_prints_raw(
    fleet: Fleet,
) -> None:
    port = free_port()
    core, key = start_core(fleet, port)
    url = f"http://127.0.0.1:{port}"
    env = {"SERVERMGR_CORE": url, "SERVERMGR_KEY": key}
    fleet.spawn("web-01", "node", "run", "--config", str(fleet.node_config("web-01", port, key)))
    nodes = fleet.poll(
        "web-01 online",
        lambda: [n for n in fleet.ctl_items("nodes", env=env) or [] if n["status"] == "online"],
        15,
    )
    victim_id = nodes[0]["id"]

    # Reserved names are refused at registration, with the rule in the message.
    for name in ("all", victim_id, "role=web"):
        resp = httpx.post(
            f"{url}/api/v1/register",
            json={"hostname": name},
            headers={"Authorization": f"Bearer {key}"},
            trust_env=False,
        )
        assert resp.status_code == 400, (name, resp.text)

    # A node with escape bytes in its hello, or the victim's id as hostname: refused.
    replies = trio.run(_hostile_hellos, url, key, victim_id)
    assert [type(r) for r in replies] == [proto.Error] * 3
    assert all(isinstance(r, proto.Error) and r.code == "bad_hello" for r in replies)

    # The operator renames; the agent's own hello (still web-01) does not undo it.
    renamed = fleet.run("ctl", "node", "rename", "web-01", "db-01", env=env)
    assert renamed.returncode == 0, renamed.stderr
    assert renamed.stdout.startswith(f"renamed web-01 to db-01 ({victim_id})")
    bad = fleet.run("ctl", "node", "rename", "db-01", "all", env=env)
    assert "reserved" in one_line_error(bad)
    table = fleet.run("ctl", "nodes", env={**env, "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "db-01" in table.stdout
    assert "evil" in table.stdout
    assert _raw_controls(table.stdout) == []
    ran = fleet.run("ctl", "exec", "--all", "echo hi", env=env)
    assert "db-01 | hi" in ran.stdout
    assert "evil" in ran.stderr  # offline: reported in the summary, escaped
    assert _raw_controls(ran.stderr) == []

    # Core's log names what was refused, escaped: one record, one line.
    log = core.text()
    assert "hello refused" in log
    assert "\\x1b]0;pwned" in log
    assert _raw_controls(log) == []
    forged = "2026-11-30 04:00:00 INFO    servermgr.core: forged"
    assert "\\r\\n" + forged in log
    assert not any(line.startswith(forged) for line in log.splitlines())
