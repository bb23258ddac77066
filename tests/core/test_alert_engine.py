"""The alert engine between samples and receivers: node selection, quiet hours, removal.

No sockets: the engine is fed samples and status changes directly, with a
clock the test sets, and its notices are collected.
"""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

from servermgr.common.config import parse_config
from servermgr.core.alertlog import AlertLog
from servermgr.core.alerts import AlertEngine
from servermgr.core.alertstate import State
from servermgr.core.bus import MemoryBus
from servermgr.core.storage import Storage
from servermgr.core.writer import Database
from tests.support import make_sample, node_row

RULES = """
[alerts]
quiet_hours = ["01:00-02:00"]

[[alert]]
name = "cpu-high"
when = "cpu > 90"
nodes = "role=web"

[[alert]]
name = "disk-full"
when = "disk > 95"
"""


class Registry:
    def __init__(self, *rows: Any) -> None:
        self.rows = {r.id: r for r in rows}

    def by_id(self, node_id: str) -> Any:
        return self.rows.get(node_id)


class Notices:
    receivers: dict[str, Any] = {}

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, notice: dict[str, Any], receivers: tuple[str, ...] | None) -> None:
        self.sent.append(notice)


def utc(hour: int, minute: int = 0) -> float:
    return float(calendar.timegm((2026, 11, 30, hour, minute, 0)))


def engine(storage: Storage, registry: Registry, now: list[float]) -> tuple[AlertEngine, Notices]:
    config = parse_config(RULES, source=None, base_dir=Path("/tmp")).alerts
    notices = Notices()
    log = AlertLog(Database(storage), clock=lambda: now[0])
    eng = AlertEngine(config, registry, MemoryBus(), notices, log, clock=lambda: now[0])  # type: ignore[arg-type]
    return eng, notices


async def test_rules_pick_their_nodes_and_each_disk_is_its_own_alert(storage: Storage) -> None:
    from servermgr.common import proto

    web, db = node_row("web-1", "n1", role="web"), node_row("db-1", "n2", role="db")
    now = [utc(12)]
    eng, notices = engine(storage, Registry(web, db), now)
    disks = [
        proto.DiskUsage(mount="/", fstype="ext4", total=100, used=99, percent=99.0),
        proto.DiskUsage(mount="/data", fstype="xfs", total=100, used=97, percent=97.0),
    ]
    for node in (web, db):
        eng.sample(node.id, make_sample(now[0], cpu_percent=99.0, disks=disks), now[0])
    firing = sorted((a.key.rule, a.key.node_id, a.key.subject) for a in eng.active())
    assert firing == [
        ("cpu-high", "n1", ""),  # role=web only
        ("disk-full", "n1", "/"),
        ("disk-full", "n1", "/data"),
        ("disk-full", "n2", "/"),
        ("disk-full", "n2", "/data"),
    ]
    assert eng.firing_count("n1") == 3
    assert eng.by_state() == {"pending": 0, "firing": 5}
    assert len(notices.sent) == 5
    eng.node_removed("n2")  # its alerts resolve, receivers told
    assert [n["status"] for n in notices.sent[5:]] == ["resolved", "resolved"]
    assert eng.firing_count("n2") == 0


async def test_quiet_hours_hold_notices_until_they_end(storage: Storage) -> None:
    web = node_row("web-1", "n1", role="web")
    now = [utc(1, 30)]
    eng, notices = engine(storage, Registry(web), now)
    eng.sample("n1", make_sample(now[0], cpu_percent=99.0), now[0])
    assert [a.state for a in eng.active()] == [State.FIRING]
    assert notices.sent == []  # fired at night: held
    now[0] = utc(1, 59)
    eng.run_due(now[0])  # the serve loop's step, without its sleeps
    assert notices.sent == []
    now[0] = utc(2, 0)
    eng.run_due(now[0])
    assert [(n["rule"], n["status"]) for n in notices.sent] == [("cpu-high", "firing")]
    eng.sample("n1", make_sample(now[0], cpu_percent=10.0), now[0])
    assert [n["status"] for n in notices.sent] == ["firing", "resolved"]


async def test_a_metric_alert_fires_only_on_a_reading_and_clears_when_its_node_goes(
    storage: Storage,
) -> None:
    web = node_row("web-1", "n1", role="web")
    now = [utc(12)]
    config = parse_config(
        '[[alert]]\nname = "cpu-high"\nwhen = "cpu > 90"\nfor = "1m"\n',
        source=None,
        base_dir=Path("/tmp"),
    ).alerts
    notices = Notices()
    log = AlertLog(Database(storage), clock=lambda: now[0])
    eng = AlertEngine(config, Registry(web), MemoryBus(), notices, log, clock=lambda: now[0])  # type: ignore[arg-type]
    eng.sample("n1", make_sample(now[0], cpu_percent=99.0), now[0])
    now[0] += 120
    eng.run_due(now[0])  # no reading for two minutes: no proof it still holds
    assert [a.state for a in eng.active()] == [State.PENDING]
    eng.node_offline("n1")
    assert eng.active() == []  # cleared, nobody told
    eng.sample("n1", make_sample(now[0], cpu_percent=99.0), now[0])
    now[0] += 60
    eng.sample("n1", make_sample(now[0], cpu_percent=99.0), now[0])
    assert [a.state for a in eng.active()] == [State.FIRING]
    assert [n["status"] for n in notices.sent] == ["firing"]
