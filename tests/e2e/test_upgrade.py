"""Agent upgrades tried as a new user would (issue 18's "done when"): a real Core,
a real agent running from a zipapp, ``core agent-publish`` and ``ctl node
upgrade``; then a deliberately broken build, rolled back.

The zipapps are small stdlib ``zipapp`` archives that run this checkout's
servermgr (the "new" one claims version 9.9.9), so the test needs no build.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.e2e.fleet import Fleet, Proc, cap, start_core
from tests.support import free_port, live_processes

pytestmark = pytest.mark.e2e

RUN = "from servermgr.main import main\nmain()\n"
NEW = "import servermgr\nservermgr.__version__ = '9.9.9'\n" + RUN
# Starts far enough to name its version, then fails as an agent.
BROKEN = (
    "import sys\nif sys.argv[1:] == ['--version']:\n    print('servermgr 9.9.8')\n"
    "    sys.exit(0)\nsys.exit(3)\n"
)


def zipapp(path: Path, main: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__main__.py", main)
    return path


@cap(90)
def test_upgrade_then_a_broken_build_rolls_back(fleet: Fleet) -> None:
    port = free_port()
    _, key = start_core(fleet, port)
    ctl = ["ctl", "--core", f"http://127.0.0.1:{port}", "--key", key]
    agent = zipapp(fleet.tmp / "servermgr.pyz", RUN)
    cfg = fleet.node_config("node-01", port, key)
    log = fleet.tmp / "node-01.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, str(agent), "node", "run", "--config", str(cfg)],
            cwd=fleet.tmp,
            env=fleet.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    node = Proc(popen, log, popen.pid)
    fleet.procs.append(node)

    def version() -> str | None:
        nodes = _nodes(fleet, ctl)
        if not nodes or nodes[0]["status"] != "online":
            return None
        return str(nodes[0]["agent_version"])

    first = fleet.poll("node-01 online", version, 15)

    # Nothing published yet: said in one line.
    res = fleet.run(*ctl, "node", "upgrade", "node-01")
    assert res.returncode == 1
    assert "agent-publish" in res.stderr

    published = fleet.run(
        "core", "agent-publish", str(zipapp(fleet.tmp / "new.pyz", NEW)), "--config", "core.toml"
    )
    assert published.returncode == 0, published.stderr
    assert "9.9.9" in published.stdout
    res = fleet.run(*ctl, "node", "upgrade", "--all", "--timeout", "20s")
    assert res.returncode == 0, (res.stdout, res.stderr, node.text())
    assert f"{first} -> 9.9.9  upgraded" in res.stdout
    assert fleet.poll("9.9.9 online", lambda: version() == "9.9.9", 10)
    assert node.alive()  # the same process: it re-executed itself

    # A build that names its version but cannot run as an agent: rolled back.
    broken = zipapp(fleet.tmp / "broken.pyz", BROKEN)
    assert fleet.run("core", "agent-publish", str(broken), "--config", "core.toml").returncode == 0
    res = fleet.run(*ctl, "node", "upgrade", "node-01", "--timeout", "3s", "--json")
    assert res.returncode == 1, (res.stdout, res.stderr)
    (doc,) = json.loads(res.stdout)["items"]
    assert doc["outcome"] == "rolled_back", doc
    assert doc["now"] == "9.9.9"

    # The watchdog starts the old agent again as a process of its own, when its
    # own deadline passes: Core may have called it rolled back before that.
    def relaunched() -> list[int]:
        pids = [p.pid for p in live_processes(f"{agent} node run") if p.pid != popen.pid]
        fleet.procs.extend(Proc(popen, log, pid) for pid in pids)  # killed at the end
        return pids

    assert len(fleet.poll("the old agent relaunched", relaunched, 15)) == 1
    assert fleet.poll("back as 9.9.9", lambda: version() == "9.9.9", 15)
    assert agent.read_bytes() == (fleet.tmp / "new.pyz").read_bytes()
    audit = fleet.run(*ctl, "audit", "--json", "--action", "agent.upgrade")
    rows = json.loads(audit.stdout)["items"]
    assert [r["outcome"] for r in rows] == ["rolled_back", "succeeded"]


def _nodes(fleet: Fleet, ctl: list[str]) -> list[dict[str, object]] | None:
    res = fleet.run(*ctl, "nodes", "--json")
    return json.loads(res.stdout)["items"] if res.returncode == 0 else None
