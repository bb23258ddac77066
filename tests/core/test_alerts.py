"""Alert rules on a real Core with real node agents, notifying a real local webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import trio

from servermgr.common import proto
from servermgr.core.app import Core
from tests.support import (
    RecordingCollector,
    StartCore,
    StartNode,
    WebhookServer,
    api,
    core_config,
    finished,
    make_token,
    node_config,
    online,
    submit,
    wait_for,
)


def alert_config(tmp_path: Path, webhook: WebhookServer, rules: str) -> Any:
    receiver = f'[[receiver]]\nname = "hook"\ntype = "webhook"\nurl = "{webhook.url}"\n'
    return core_config(tmp_path, extra=receiver + rules)


class CpuCollector(RecordingCollector):
    """The real collector, reporting the CPU use the test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu = 5.0

    def sample(self) -> proto.Sample:
        return msgspec.structs.replace(super().sample(), cpu_percent=self.cpu)


async def transitions(core: Core, rule: str) -> list[tuple[str | None, str]]:
    async with api(core) as client:
        rows = (await client.get("/api/v1/alerts/history", params={"since": "1h"})).json()
    return [(r["from"], r["to"]) for r in rows if r["rule"] == rule]


OFFLINE = '[[alert]]\nname = "offline"\nwhen = "offline"\nfor = "0.5s"\n'


async def test_node_offline_fires_once_and_resolves_once_when_it_is_back(
    start_core: StartCore, start_node: StartNode, webhook: WebhookServer, tmp_path: Path
) -> None:
    core = (await start_core(alert_config(tmp_path, webhook, OFFLINE))).core
    node = await start_node(core, "web-1", role="web")
    await wait_for(lambda: online(core, "web-1"))
    async with core.bus.subscribe(label="test") as events:
        node.kill()
        await wait_for(lambda: len(webhook.of("firing")) == 1)
        assert core.alerts.firing_count(core.registry.by_ref("web-1").id) == 1  # type: ignore[union-attr]
        await start_node(core, "web-1", role="web")
        await wait_for(lambda: len(webhook.of("resolved")) == 1)
        seen = []
        while len(seen) < 3:
            event = await events.receive()
            if event["type"].startswith("alert."):
                seen.append(event["type"])
    assert seen == ["alert.pending", "alert.firing", "alert.resolved"]
    firing = webhook.of("firing")[0]
    assert firing["rule"] == "offline"
    assert firing["node"] == "web-1"
    assert firing["labels"] == {"role": "web"}
    assert firing["kind"] == "firing"
    assert (await transitions(core, "offline"))[-3:] == [
        (None, "pending"),
        ("pending", "firing"),
        ("firing", "resolved"),
    ]
    await wait_for(lambda: core.alerts.notifier.sent == 2)
    await trio.sleep(1.0)  # longer than the rule's 'for': nothing more comes
    assert [b["status"] for b in webhook.bodies] == ["firing", "resolved"]
    await core.alerts.log.flush()
    async with api(core) as client:
        sent = (await client.get("/api/v1/alerts/deliveries")).json()
        assert [(d["kind"], d["outcome"]) for d in sent] == [
            ("firing", "sent"),
            ("resolved", "sent"),
        ]
        assert (await client.get("/api/v1/alerts")).json() == []


async def test_cpu_above_a_threshold_for_a_while(
    start_core: StartCore, start_node: StartNode, webhook: WebhookServer, tmp_path: Path
) -> None:
    rules = '[[alert]]\nname = "cpu-high"\nwhen = "cpu > 90"\nfor = "0.5s"\nnodes = "role=web"\n'
    core = (await start_core(alert_config(tmp_path, webhook, rules))).core
    hot = CpuCollector()
    cfg = node_config(core, tmp_path, "web-1", role="web")
    await start_node(core, "web-1", config=cfg, collector=hot)
    other = CpuCollector()
    await start_node(
        core, "db-1", config=node_config(core, tmp_path, "db-1", role="db"), collector=other
    )
    await wait_for(lambda: online(core, "web-1", "db-1"))
    hot.cpu = other.cpu = 99.0
    await wait_for(lambda: len(webhook.of("firing")) == 1)
    assert webhook.of("firing")[0]["value"] == 99.0
    async with api(core) as client:
        (alert,) = (await client.get("/api/v1/alerts")).json()
        assert (alert["rule"], alert["node"], alert["state"]) == ("cpu-high", "web-1", "firing")
        (node,) = [n for n in (await client.get("/api/v1/nodes")).json() if n["name"] == "web-1"]
        assert node["alerts_firing"] == 1
    hot.cpu = 10.0
    await wait_for(lambda: len(webhook.of("resolved")) == 1)
    assert [b["node"] for b in webhook.bodies] == ["web-1", "web-1"]  # db-1 is not role=web


async def test_a_silence_holds_notifications_back_until_it_ends(
    start_core: StartCore, start_node: StartNode, webhook: WebhookServer, tmp_path: Path
) -> None:
    core = (await start_core(alert_config(tmp_path, webhook, OFFLINE))).core
    node = await start_node(core, "web-1")
    await wait_for(lambda: online(core, "web-1"))
    async with api(core) as client:
        resp = await client.post("/api/v1/alerts/silences", json={"target": "web-1", "for": "1h"})
        assert resp.status_code == 201, resp.text
        silence = resp.json()
        node.kill()
        await wait_for(lambda: core.alerts.firing_count(silence_node(core)) == 1)
        (alert,) = (await client.get("/api/v1/alerts")).json()
        assert alert["silenced"] is True
        await trio.sleep(1.0)
        assert webhook.bodies == []  # fired, but held back
        resp = await client.delete(f"/api/v1/alerts/silences/{silence['id']}")
        assert resp.status_code == 200
    await wait_for(lambda: len(webhook.of("firing")) == 1)


def silence_node(core: Core) -> str:
    row = core.registry.by_ref("web-1")
    assert row is not None
    return row.id


async def test_rules_through_the_api_roles_and_restart(
    start_core: StartCore, webhook: WebhookServer, tmp_path: Path
) -> None:
    config = alert_config(tmp_path, webhook, OFFLINE)
    running = await start_core(config)
    core = running.core
    reader = await make_token(core, "viewer", "read")
    operator = await make_token(core, "oncall", "operate")
    rule = {"name": "disk-full", "when": "disk > 95", "for": "5m", "nodes": "*", "notify": ["hook"]}
    async with api(core) as client:
        as_reader = {"Authorization": f"Bearer {reader}"}
        as_operator = {"Authorization": f"Bearer {operator}"}
        resp = await client.post("/api/v1/alerts/rules", json=rule, headers=as_reader)
        assert resp.status_code == 403
        resp = await client.post("/api/v1/alerts/rules", json=rule, headers=as_operator)
        assert resp.status_code == 201, resp.text
        assert resp.json()["for"] == 300.0
        resp = await client.post("/api/v1/alerts/rules", json=rule, headers=as_operator)
        assert resp.status_code == 409
        bad = {**rule, "name": "bad", "when": "cpu >> 5"}
        resp = await client.post("/api/v1/alerts/rules", json=bad, headers=as_operator)
        assert resp.status_code == 400
        assert resp.json()["error"]["message"].startswith("bad rule: bad condition")
        resp = await client.delete("/api/v1/alerts/rules/offline", headers=as_operator)
        assert (resp.status_code, resp.json()["error"]["code"]) == (409, "in_config")
        listed = (await client.get("/api/v1/alerts/rules", headers=as_reader)).json()
        assert [(r["name"], r["source"]) for r in listed] == [
            ("disk-full", "api"),
            ("offline", "config"),
        ]
    running.stop.set()
    await running.done.wait()
    core = (await start_core(config)).core
    assert "disk-full" in core.alerts.rules  # stored
    async with api(core) as client:
        assert (await client.delete("/api/v1/alerts/rules/disk-full")).status_code == 200
        assert (await client.delete("/api/v1/alerts/rules/disk-full")).status_code == 404


async def test_a_failed_job_fires_and_the_next_success_resolves(
    start_core: StartCore, start_node: StartNode, webhook: WebhookServer, tmp_path: Path
) -> None:
    rules = '[[alert]]\nname = "jobs"\nwhen = "job_failed"\n'
    core = (await start_core(alert_config(tmp_path, webhook, rules))).core
    await start_node(core, "web-1")
    await wait_for(lambda: online(core, "web-1"))
    job = await submit(core, target="web-1", command="exit 3")
    await finished(core, job["id"])
    await wait_for(lambda: len(webhook.of("firing")) == 1)
    job = await submit(core, target="web-1", command="true")
    await finished(core, job["id"])
    await wait_for(lambda: len(webhook.of("resolved")) == 1)
