"""The Redis status store, event bus and job queue against a real redis-server:
the keys, channels and streams docs/redis.md documents, and Redis outages."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
import trio

from servermgr.core.bus import HeartbeatWatchers, MemoryBus
from servermgr.core.redis_bus import RedisBus
from servermgr.core.redis_peers import Peers
from servermgr.core.redis_queue import RedisJobQueue
from servermgr.core.redis_status import RedisStatus
from servermgr.core.redisio import Message, RedisLink
from tests.support import RedisServer, make_sample, wait_for

pytestmark = pytest.mark.redis


def new_link(server: RedisServer) -> RedisLink:
    return RedisLink(server.url, timeout=2.0, check_every=0.2, backoff=0.05, backoff_max=0.2)


@pytest.fixture
async def links(redis_server: RedisServer) -> AsyncIterator[tuple[RedisLink, RedisLink]]:
    """Two Cores' links to one Redis, up."""
    a, b = new_link(redis_server), new_link(redis_server)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.serve)
        await nursery.start(b.serve)
        yield a, b
        # Their checks stopped first: a client closed under a running PING fails it.
        nursery.cancel_scope.cancel()
    a.close()
    b.close()


def status_keys(server: RedisServer) -> list[str]:
    return sorted(server.cli("--scan", "--pattern", "servermgr:status:*").split())


async def test_status_keys_with_ttl_and_other_cores_nodes(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisStatus("core-a", links[0], heartbeat_interval=5.0, flush_every=0.05)
    b = RedisStatus("core-b", links[1], heartbeat_interval=5.0, flush_every=0.05, refresh_every=0)
    await nursery.start(a.serve)
    await a.set_online("n1", now=100.0, peer="10.0.0.5:1")
    await a.record_samples("n1", [make_sample(101.0, cpu_percent=42.0)], now=101.0)
    await wait_for(lambda: a.writes >= 1 and "servermgr:status:n1" in status_keys(redis_server))
    doc = json.loads(redis_server.cli("get", "servermgr:status:n1"))
    assert doc["online"] is True
    assert doc["core"] == "core-a"
    ttl = int(redis_server.cli("ttl", "servermgr:status:n1"))
    assert 0 < ttl <= 30
    await wait_for(lambda: '"nodes":1' in redis_server.cli("get", "servermgr:core:core-a"))
    core_doc = json.loads(redis_server.cli("get", "servermgr:core:core-a"))
    assert core_doc["id"] == "core-a"
    # Core B lists A's node, live, with its figures.
    seen = {st.node_id: st for st in await b.all()}
    assert seen["n1"].online
    assert seen["n1"].core == "core-a"
    assert seen["n1"].latest is not None
    assert seen["n1"].latest.cpu_percent == 42.0
    got = await b.get("n1")
    assert got is not None
    assert got.core == "core-a"
    # Offline: written once, then left to expire; forgotten: deleted.
    await a.set_offline("n1")
    await wait_for(lambda: '"online":false' in redis_server.cli("get", "servermgr:status:n1"))
    await a.forget("n1")
    await wait_for(lambda: status_keys(redis_server) == [])


async def test_samples_channel_at_a_reduced_rate(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisStatus("core-a", links[0], heartbeat_interval=1.0, flush_every=0.05, sample_every=10)
    send, receive = trio.open_memory_channel[Message](100)
    await nursery.start(links[1].subscribe, ["servermgr:events:samples"], send)
    await nursery.start(a.serve)
    await a.set_online("n1", now=100.0, peer=None)
    for ts in (101.0, 102.0, 103.0, 112.0):  # 102 and 103 are within 10 s of 101
        flushes = a.flushes
        await a.record_samples("n1", [make_sample(ts)], now=ts)
        await wait_for(lambda: a.flushes > flushes + 1)  # noqa: B023
        # The key too is written at that rate, not at each heartbeat.
        key = json.loads(redis_server.cli("get", "servermgr:status:n1"))
        assert key["latest"]["ts"] == (112.0 if ts == 112.0 else 101.0)
    events = []
    with trio.move_on_after(5):
        while len(events) < 2:
            events.append(json.loads((await receive.receive())[1]))
    assert [e["type"] for e in events] == ["samples", "samples"]
    assert [e["nodes"][0]["sample"]["ts"] for e in events] == [101.0, 112.0]
    assert events[0]["core"] == "core-a"


def publishes(server: RedisServer) -> int:
    """PUBLISH commands Redis has run so far."""
    for line in server.cli("info", "commandstats").splitlines():
        if line.startswith("cmdstat_publish:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_samples_are_published_only_while_someone_subscribes(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisStatus("core-a", links[0], heartbeat_interval=1.0, flush_every=0.05, sample_every=0)
    await nursery.start(a.serve)
    await a.set_online("n1", now=100.0, peer=None)
    await a.record_samples("n1", [make_sample(101.0)], now=101.0)
    await wait_for(lambda: a.flushes >= 3)
    before = publishes(redis_server)
    for ts in range(102, 110):  # every one due (sample_every=0), nobody listening
        flushes = a.flushes
        await a.record_samples("n1", [make_sample(float(ts))], now=float(ts))
        await wait_for(lambda: a.flushes > flushes + 1)  # noqa: B023
    assert publishes(redis_server) == before
    assert json.loads(redis_server.cli("get", "servermgr:status:n1"))["latest"]["ts"] == 109.0
    send, receive = trio.open_memory_channel[Message](100)
    await nursery.start(links[1].subscribe, ["servermgr:events:samples"], send)
    for ts in range(110, 140):
        await a.record_samples("n1", [make_sample(float(ts))], now=float(ts))
        await trio.sleep(0.05)
        if publishes(redis_server) > before:
            break
    with trio.fail_after(10):
        event = json.loads((await receive.receive())[1])
    assert event["type"] == "samples"
    assert event["nodes"][0]["node_id"] == "n1"


async def test_the_liveness_key_is_renewed_while_trio_is_starved(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisStatus("core-a", links[0], heartbeat_interval=1.0)
    await nursery.start(a.serve)
    await wait_for(lambda: a.renewals >= 1)
    renewals = a.renewals
    time.sleep(3.5)  # noqa: ASYNC251 (trio's loop stopped, as in a Core starved of CPU)
    assert a.renewals > renewals
    assert 0 < int(redis_server.cli("ttl", "servermgr:core:core-a"))


async def test_status_survives_a_redis_outage_and_resyncs(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisStatus("core-a", links[0], heartbeat_interval=5.0, flush_every=0.05)
    await nursery.start(a.serve)
    await a.set_online("n1", now=1.0, peer=None)
    await wait_for(lambda: status_keys(redis_server) == ["servermgr:status:n1"])
    redis_server.kill()  # nothing persisted: the keys are gone with it
    with trio.fail_after(5):  # ingest goes on, from memory, without waiting
        for i in range(100):
            await a.record_samples("n1", [make_sample(2.0 + i)], now=2.0 + i)
            await a.set_online(f"m{i}", now=2.0, peer=None)
    await wait_for(lambda: not links[0].up)
    assert (await a.get("n1")) is not None
    redis_server.start()
    await wait_for(lambda: len(status_keys(redis_server)) == 101, limit=30)
    doc = json.loads(redis_server.cli("get", "servermgr:status:n1"))
    assert doc["latest"]["ts"] == 101.0


async def test_events_reach_the_other_core_once(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a, b = RedisBus("core-a", links[0]), RedisBus("core-b", links[1])
    await nursery.start(a.serve)
    await nursery.start(b.serve)
    outside_send, outside = trio.open_memory_channel[Message](100)
    await nursery.start(links[1].subscribe, ["servermgr:events:nodes"], outside_send)
    async with a.subscribe() as mine, b.subscribe() as theirs:
        a.publish({"type": "node.online", "node_id": "n1", "name": "web-01", "ts": 1.0})
        a.publish({"type": "node.heartbeat", "node_id": "n1", "name": "web-01", "ts": 1.0})
        a.publish({"type": "job.state", "job_id": "j1", "node_id": "n1", "state": "sent"})
        with trio.fail_after(10):
            got = [await theirs.receive(), await theirs.receive()]
            channel, data = await outside.receive()
        assert [e["type"] for e in got] == ["node.online", "job.state"]
        assert got[0]["core"] == "core-a"
        assert channel == "servermgr:events:nodes"
        assert json.loads(data)["name"] == "web-01"
        # This Core's own subscribers got each event once, heartbeats included.
        assert [(await mine.receive())["type"] for _ in range(3)] == [
            "node.online",
            "node.heartbeat",
            "job.state",
        ]
        await trio.sleep(0.3)
        assert mine.queued == 0
        assert theirs.queued == 0


async def test_jobs_routed_to_the_core_holding_the_node(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisJobQueue("core-a", links[0], poll_every=30)  # only a wake-up can be this quick
    b = RedisJobQueue("core-b", links[1], poll_every=30)
    await nursery.start(a.serve)
    await nursery.start(b.serve)
    assert await a.claim("n1") == []
    await b.put("n1", "j1", deadline=trio.current_time() + 3600)
    with trio.fail_after(10):
        assert await a.receive() == ("n1", "j1")
    assert redis_server.cli("xlen", "servermgr:jobs:n1").strip() == "0"
    # A node connected nowhere: its job waits, for the Core that claims it next.
    await a.put("n2", "j2", deadline=1e12)
    assert redis_server.cli("xlen", "servermgr:jobs:n2").strip() == "1"
    assert await b.claim("n2") == ["j2"]
    assert redis_server.cli("xlen", "servermgr:jobs:n2").strip() == "0"


async def test_a_dead_cores_pending_entry_is_taken_over(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink]
) -> None:
    a = RedisJobQueue("core-a", links[0])
    await a.put("n1", "j1", deadline=1e12)
    # A Core read it and died before it acknowledged it.
    redis_server.cli(
        "xreadgroup", "group", "servermgr", "dead-core", "streams", "servermgr:jobs:n1", ">"
    )
    pending = redis_server.cli("xpending", "servermgr:jobs:n1", "servermgr")
    assert pending.split()[0] == "1"
    b = RedisJobQueue("core-b", links[1])
    assert await b.claim("n1") == ["j1"]
    assert redis_server.cli("xpending", "servermgr:jobs:n1", "servermgr").split()[0] == "0"


async def test_expiry_and_withdraw_are_reported_once(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink]
) -> None:
    a, b = RedisJobQueue("core-a", links[0]), RedisJobQueue("core-b", links[1])
    await a.put("n1", "j1", deadline=10.0)
    await a.put("n2", "j1", deadline=10.0)
    await a.put("n3", "j2", deadline=1e12)
    found = await a.expired(11.0) + await b.expired(11.0)
    assert sorted(found) == [("n1", "j1"), ("n2", "j1")]
    assert await b.withdraw("j2") == ["n3"]
    assert await a.withdraw("j2") == []
    assert await a.claim("n3") == []


async def test_jobs_put_during_an_outage_are_not_lost(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisJobQueue("core-a", links[0], poll_every=0.1)
    b = RedisJobQueue("core-b", links[1], poll_every=0.1)
    await nursery.start(a.serve)
    await nursery.start(b.serve)
    await a.claim("n1")
    redis_server.kill()
    await wait_for(lambda: not links[1].up)
    await b.put("n1", "j1", deadline=1e12)  # kept by b until Redis is back
    redis_server.start()  # empty: nothing was persisted
    with trio.fail_after(30):
        assert await a.receive() == ("n1", "j1")


async def test_a_redis_that_comes_back_empty_gets_the_jobs_again(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisJobQueue("core-a", links[0], poll_every=0.1)
    b = RedisJobQueue("core-b", links[1], poll_every=0.1)
    await nursery.start(b.serve)
    await b.put("n1", "j1", deadline=1e12)  # for a node connected nowhere yet
    redis_server.kill()  # the stream is lost with it
    await wait_for(lambda: not links[1].up)
    redis_server.start()
    await wait_for(lambda: links[1].up and links[1].connects >= 2, limit=30)
    await wait_for(lambda: redis_server.cli("xlen", "servermgr:jobs:n1").strip() == "1", limit=30)
    await wait_for(lambda: links[0].up, limit=30)
    assert await a.claim("n1") == ["j1"]


async def test_nodes_connecting_together_are_claimed_in_a_few_calls(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink]
) -> None:
    # A fleet connecting: each node's claim used to be its own five round trips.
    a, b = RedisJobQueue("core-a", links[0]), RedisJobQueue("core-b", links[1])
    nodes = [f"n{i}" for i in range(200)]
    for n in nodes[::2]:
        await b.put(n, f"job-{n}", deadline=1e12)
    got: dict[str, list[str]] = {}

    async def claim(node_id: str) -> None:
        got[node_id] = await a.claim(node_id)

    async with trio.open_nursery() as nursery:
        for n in nodes:
            nursery.start_soon(claim, n)
    assert got == {n: [f"job-{n}"] if i % 2 == 0 else [] for i, n in enumerate(nodes)}
    assert a.claim_calls <= 3
    owners = redis_server.cli("mget", *[f"servermgr:owner:{n}" for n in nodes]).split()
    assert owners == ["core-a"] * len(nodes)
    assert redis_server.cli("xlen", "servermgr:jobs:n0").strip() == "0"
    assert redis_server.cli("zcard", "servermgr:deadlines").strip() == "0"


async def test_a_node_claimed_while_redis_is_down_gets_its_jobs_once_it_is_back(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    a = RedisJobQueue("core-a", links[0], poll_every=0.1)
    b = RedisJobQueue("core-b", links[1], poll_every=0.1)
    await nursery.start(a.serve)
    redis_server.kill()
    await wait_for(lambda: not links[0].up)
    assert await a.claim("n1") == []  # nothing claimed: the poll does it once Redis is back
    redis_server.start()
    await wait_for(lambda: links[0].up and links[1].up, limit=30)
    await wait_for(lambda: a.claim_calls >= 1, limit=30)
    assert redis_server.cli("get", "servermgr:owner:n1").strip() == "core-a"
    await b.put("n1", "j1", deadline=1e12)
    with trio.fail_after(30):
        assert await a.receive() == ("n1", "j1")


def samples_subscribers(server: RedisServer) -> int:
    return int(server.cli("pubsub", "numsub", "servermgr:events:samples").split()[-1])


async def test_another_cores_samples_are_followed_only_while_watched(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    b = RedisStatus("core-b", links[1], heartbeat_interval=1.0)
    local = MemoryBus()
    peers = Peers("core-b", links[1], b, local)
    watchers = HeartbeatWatchers()
    bus = RedisBus("core-b", links[1], local=local, samples=peers.heard, watchers=watchers)
    await nursery.start(bus.serve)
    assert samples_subscribers(redis_server) == 0  # nobody watches B: A's samples not read
    watchers.count = 1
    await wait_for(lambda: samples_subscribers(redis_server) == 1)
    watchers.count = 0
    await wait_for(lambda: samples_subscribers(redis_server) == 0)
    # The other channels stayed followed throughout.
    async with local.subscribe() as events:
        redis_server.cli(
            "publish", "servermgr:events:nodes", '{"type":"node.online","node_id":"n1","core":"a"}'
        )
        with trio.fail_after(10):
            assert (await events.receive())["node_id"] == "n1"


async def test_another_cores_samples_and_its_death_reach_this_cores_streams(
    redis_server: RedisServer, links: tuple[RedisLink, RedisLink], nursery: trio.Nursery
) -> None:
    # A TTL of 2 s for the documented 30: a killed Core's keys expire soon.
    a = RedisStatus(
        "core-a", links[0], heartbeat_interval=1.0, flush_every=0.05, sample_every=0, ttl=2
    )
    b = RedisStatus("core-b", links[1], heartbeat_interval=1.0, flush_every=0.05, refresh_every=0)
    local = MemoryBus()
    peers = Peers("core-b", links[1], b, local, check_every=0.05)
    watchers = HeartbeatWatchers()
    watchers.count = 1  # a live stream of B wants heartbeats: B follows A's samples
    bus = RedisBus("core-b", links[1], local=local, samples=peers.heard, watchers=watchers)
    await nursery.start(bus.serve)
    await nursery.start(peers.serve)
    core_a = trio.CancelScope()

    async def run_a() -> None:
        with core_a:
            await a.serve()

    nursery.start_soon(run_a)
    async with local.subscribe() as events:
        await a.set_online("n1", now=100.0, peer=None)
        await wait_for(lambda: peers.alive is not None and "core-a" in peers.alive)
        await a.record_samples("n1", [make_sample(101.0, cpu_percent=42.0)], now=101.0)
        with trio.fail_after(10):  # A's node's sample is a heartbeat on B's bus
            beat = await events.receive()
        assert (beat["type"], beat["node_id"]) == ("node.heartbeat", "n1")
        st = await b.get("n1")
        assert st is not None
        assert st.online
        assert st.core == "core-a"
        assert st.latest is not None
        assert st.latest.cpu_percent == 42.0
        # A is killed: it writes nothing more; its liveness key expires (10 s,
        # deleted here to stand for that) and B says its node is offline.
        core_a.cancel()
        await b.all()  # B's copy of the fleet, as a listing reads it
        redis_server.cli("del", "servermgr:core:core-a")
        with trio.fail_after(10):
            gone = await events.receive()
        assert (gone["type"], gone["node_id"]) == ("node.offline", "n1")
        assert gone["reason"] == "its Core stopped"
        st = await b.get("n1")  # its key is still there, but its Core is dead
        assert st is not None
        assert not st.online
        assert not any(s.online for s in await b.all())
        await wait_for(lambda: status_keys(redis_server) == [])  # the TTL did it
