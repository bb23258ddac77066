"""Prometheus exposition: rendered by hand, checked with prometheus_client's parser.

Pure tests first (the renderer and Core's figures, no sockets), then the
route on a real Core with a real node: the read role, the loopback setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from servermgr.core.app import Core
from servermgr.core.auth import is_loopback
from servermgr.core.metrics_export import (
    NodeRenderer,
    escape,
    exposition,
    label_name,
)
from servermgr.core.status import LiveStatus
from tests.support import (
    StartCore,
    StartNode,
    core_config,
    make_sample,
    make_token,
    metrics_figures,
    node_row,
    wait_for,
)

HOSTILE = 'we"b\\01\nx% %d %s'


def parse(text: bytes) -> dict[str, Any]:
    """name -> family, through prometheus_client's parser (it raises on bad syntax)."""
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def samples_of(families: dict[str, Any], name: str) -> list[Any]:
    return [s for f in families.values() for s in f.samples if s.name == name]


def online(sample_ts: float = 50.0, **over: Any) -> LiveStatus:
    return LiveStatus("x", online=True, last_seen=60.0, latest=make_sample(sample_ts, **over))


def test_hostile_names_labels_and_mounts_round_trip_through_the_parser() -> None:
    nodes = [
        (
            node_row(HOSTILE, "n1", role='a"b', **{"team.name": "x\\y", "team-name": "dup"}),
            online(disks=[make_disk('/mnt/"q"\\%s\n')]),
        ),
        (node_row("plain", "n2"), online()),
    ]
    families = parse(exposition(NodeRenderer(), nodes, metrics_figures()))
    cpu = {s.labels["node"]: s for s in samples_of(families, "servermgr_node_cpu_percent")}
    assert set(cpu) == {HOSTILE, "plain"}
    hostile = cpu[HOSTILE]
    assert hostile.value == 12.5
    assert hostile.labels["label_role"] == 'a"b'
    # team-name and team.name both become label_team_name: the first in key order wins.
    assert hostile.labels["label_team_name"] == "dup"
    (disk,) = [
        s
        for s in samples_of(families, "servermgr_node_filesystem_used_percent")
        if s.labels["node"] == HOSTILE
    ]
    assert disk.labels["mountpoint"] == '/mnt/"q"\\%s\n'
    assert disk.value == 40.0


def make_disk(mount: str) -> Any:
    from servermgr.common import proto

    return proto.DiskUsage(mount=mount, fstype="ext4", total=1000, used=400, percent=40.0)


def test_offline_nodes_are_down_without_figures_and_unknown_values_are_left_out() -> None:
    nodes = [
        (node_row("up", "n1"), online(swap_percent=None, load1=None)),
        (
            node_row("down", "n2"),
            LiveStatus("n2", online=False, last_seen=30.0, latest=make_sample(1)),
        ),
        (node_row("never", "n3"), None),
    ]
    families = parse(exposition(NodeRenderer(), nodes, metrics_figures()))
    up = {s.labels["node"]: s.value for s in samples_of(families, "servermgr_node_up")}
    assert up == {"up": 1, "down": 0, "never": 0}
    cpu = {s.labels["node"] for s in samples_of(families, "servermgr_node_cpu_percent")}
    assert cpu == {"up"}
    assert samples_of(families, "servermgr_node_swap_percent") == []
    assert [s.value for s in samples_of(families, "servermgr_node_load5")] == [0.4]
    seen = {
        s.labels["node"]: s.value
        for s in samples_of(families, "servermgr_node_last_seen_timestamp_seconds")
    }
    assert seen == {"up": 60.0, "down": 30.0}
    info = {s.labels["node"]: s.labels["id"] for s in samples_of(families, "servermgr_node_info")}
    assert info == {"up": "n1", "down": "n2", "never": "n3"}


def test_a_second_scrape_follows_renames_new_values_and_nodes_that_left() -> None:
    renderer = NodeRenderer()
    first = [(node_row("a", "n1"), online()), (node_row("b", "n2"), online())]
    parse(exposition(renderer, first, metrics_figures()))
    second = [(node_row("a2", "n1", role="web"), online(cpu_percent=99.0))]
    families = parse(exposition(renderer, second, metrics_figures()))
    (cpu,) = samples_of(families, "servermgr_node_cpu_percent")
    assert cpu.labels == {"node": "a2", "label_role": "web"}
    assert cpu.value == 99.0


def test_core_figures_histograms_and_states() -> None:
    families = parse(exposition(NodeRenderer(), [], metrics_figures(alerts={"firing": 2})))
    age = families["servermgr_core_heartbeat_to_queryable_seconds"]
    assert age.type == "histogram"
    buckets = [s for s in age.samples if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == 4
    assert [s.value for s in age.samples if s.name.endswith("_count")] == [4]
    gc = families["servermgr_core_gc_pause_seconds"]
    gc_buckets = {s.labels["le"]: s.value for s in gc.samples if s.name.endswith("_bucket")}
    assert gc_buckets == {"0.001": 3, "0.005": 4, "0.01": 4, "+Inf": 4}
    received = families["servermgr_core_heartbeats_received"]
    assert received.type == "counter"
    assert received.samples[0].value == 10
    jobs = {s.labels["state"]: s.value for s in families["servermgr_core_jobs_open"].samples}
    assert jobs == {"queued": 1, "sent": 0, "running": 2}
    alerts = {s.labels["state"]: s.value for s in families["servermgr_core_alerts"].samples}
    assert alerts == {"firing": 2}
    no_alerts = parse(exposition(NodeRenderer(), [], metrics_figures()))
    assert "servermgr_core_alerts" not in no_alerts


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("plain", "plain"), ('a"b', 'a\\"b'), ("a\\b", "a\\\\b"), ("a\nb", "a\\nb")],
)
def test_escape(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped


def test_label_names_are_prefixed_and_sanitized() -> None:
    assert label_name("role") == "label_role"
    assert label_name("app.kubernetes-io/x") == "label_app_kubernetes_io_x"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("not-an-address", False),
    ],
)
def test_loopback_peers(host: str, loopback: bool) -> None:
    scope = {"type": "http", "client": (host, 1234), "headers": []}
    assert is_loopback(Request(scope)) is loopback


# --- on a real Core ----------------------------------------------------------


async def scrape(core: Core, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=core.url, headers=headers, timeout=10) as client:
        return await client.get("/metrics")


async def test_metrics_need_a_read_token_and_show_every_node(
    core: Core, start_node: StartNode
) -> None:
    await start_node(core, "web-01", role="web")
    await wait_for(lambda: core.writer.stored >= 1)
    read = await make_token(core, "prometheus", "read")
    enroll = await make_token(core, "installer", "enroll")
    assert (await scrape(core, None)).status_code == 401
    denied = await scrape(core, enroll)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"

    resp = await scrape(core, read)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = parse(resp.content)
    (cpu,) = samples_of(families, "servermgr_node_cpu_percent")
    assert cpu.labels == {"node": "web-01", "label_role": "web"}
    assert 0 <= cpu.value <= 100
    assert [s.value for s in samples_of(families, "servermgr_node_up")] == [1]
    assert samples_of(families, "servermgr_core_nodes_connected")[0].value == 1
    assert samples_of(families, "servermgr_core_heartbeats_stored_total")[0].value >= 1
    assert samples_of(families, "process_resident_memory_bytes")[0].value > 0


async def test_gzip_when_the_scraper_asks(core: Core) -> None:
    async with httpx.AsyncClient(
        base_url=core.url,
        headers={"Authorization": f"Bearer {core.key.value}", "Accept-Encoding": "gzip"},
        timeout=10,
    ) as client:
        resp = await client.get("/metrics")
    assert resp.headers["content-encoding"] == "gzip"
    assert "servermgr_core_info" in parse(resp.content)  # httpx has inflated it


async def test_loopback_setting_opens_metrics_to_local_scrapers_only(
    start_core: StartCore, tmp_path: Path
) -> None:
    config = core_config(tmp_path, extra="metrics_loopback = true\n")
    core = (await start_core(config)).core
    resp = await scrape(core, None)
    assert resp.status_code == 200
    assert "servermgr_core_nodes_known" in parse(resp.content)
    # Everything else still needs its credential.
    async with httpx.AsyncClient(base_url=core.url, timeout=10) as client:
        assert (await client.get("/api/v1/nodes")).status_code == 401
