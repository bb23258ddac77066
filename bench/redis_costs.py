"""What Redis costs Core per heartbeat and per connect, in CPU seconds (load hardly changes them).

Drives Core's own Redis parts (``RedisStatus``, ``RedisJobQueue``) against a
redis-server of its own, in one trio process, and reads this process's CPU
time (``time.process_time``: every thread, the redis-py worker threads too)
around each step:

- status write: N nodes online, one heartbeat each, then one write behind
  (what ``RedisStatus.serve`` does once a second): CPU per node written,
- claims: N nodes connecting together (their claims batched) and the same
  N one after the other (each its own call, as a lone connect): CPU and
  Redis calls per node,
- the poll: every held node's stream read once (every 2 s in Core): CPU per node,
- steady state: N nodes heartbeating for a minute of node time (one sample
  each per 5 s, a write behind per simulated second, as ``serve`` does):
  CPU per heartbeat of the status store, with nobody subscribed to
  ``servermgr:events:samples`` and with a subscriber (another Core whose
  ``ctl top`` is open); and what one sample heard on that channel costs
  the Core that follows it (decoded, made a heartbeat event).

Examples::

    python bench/redis_costs.py                 # 1,000 and 10,000 nodes
    python bench/redis_costs.py --nodes 2000 --json /tmp/redis_costs.json
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import trio
from fleet_sim import SampleGen

from servermgr.core.bus import MemoryBus
from servermgr.core.redis_peers import Peers
from servermgr.core.redis_queue import RedisJobQueue
from servermgr.core.redis_status import RedisStatus
from servermgr.core.redisio import Message, RedisLink

ROUNDS = 12  # heartbeats per node in the steady-state run (a minute at 5 s)


async def measure(url: str, nodes: int) -> dict[str, Any]:
    link = RedisLink(url)
    ids = [f"n{i:016x}" for i in range(nodes)]
    doc: dict[str, Any] = {"nodes": nodes}
    async with trio.open_nursery() as nursery:
        await nursery.start(link.serve)
        status = RedisStatus("bench-core", link, heartbeat_interval=5.0)
        for node_id in ids:
            await status.set_online(node_id, now=time.time(), peer="127.0.0.1:1")
        await status.flush()  # the online writes, not measured
        gen = SampleGen(random.Random(1))  # ~950 bytes, as the simulated nodes send
        for node_id in ids:
            await status.record_samples(node_id, [gen.sample(time.time())], now=time.time())
        t = time.process_time()
        await status.flush()
        doc["status_us_per_node"] = 1e6 * (time.process_time() - t) / nodes

        together = RedisJobQueue("bench-a", link)
        t, w = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as inner:
            for node_id in ids:
                inner.start_soon(together.claim, node_id)
        doc["claim_together_us_per_node"] = 1e6 * (time.process_time() - t) / nodes
        doc["claim_together_wall_s"] = time.perf_counter() - w
        doc["claim_together_calls"] = together.claim_calls

        alone = RedisJobQueue("bench-b", link)
        t, w = time.process_time(), time.perf_counter()
        for node_id in ids:
            await alone.claim(node_id)
        doc["claim_alone_us_per_node"] = 1e6 * (time.process_time() - t) / nodes
        doc["claim_alone_wall_s"] = time.perf_counter() - w
        doc["claim_alone_calls"] = alone.claim_calls

        t = time.process_time()
        await alone.poll_once()
        doc["poll_us_per_node"] = 1e6 * (time.process_time() - t) / nodes

        doc["steady_us_per_hb"] = await steady(link, ids, gen, "steady-a")
        send, receive = trio.open_memory_channel[Message](100_000)
        await nursery.start(link.subscribe, ["servermgr:events:samples"], send)
        doc["steady_watched_us_per_hb"] = await steady(link, ids, gen, "steady-b")
        messages = []
        while True:
            try:
                messages.append(receive.receive_nowait()[1])
            except trio.WouldBlock:
                break
        doc["heard_us_per_sample"] = heard(link, messages)
        nursery.cancel_scope.cancel()
    link.close()
    return doc


async def steady(link: RedisLink, ids: list[str], gen: SampleGen, core: str) -> float:
    """CPU per heartbeat of one Core's status store over ``ROUNDS`` heartbeats per node."""
    status = RedisStatus(core, link, heartbeat_interval=5.0)
    base = time.time()
    for node_id in ids:
        await status.set_online(node_id, now=base, peer="127.0.0.1:1")
    await status.flush()
    await status.flush()  # whether anyone listens is known from here on
    fifth = (len(ids) + 4) // 5
    # The samples made beforehand (making them is the simulator's work, not Core's).
    beats = [
        [
            [
                (node_id, [gen.sample(base + 5 * r + part)])
                for node_id in ids[part * fifth :][:fifth]
            ]
            for part in range(5)
        ]
        for r in range(ROUNDS)
    ]
    t = time.process_time()
    for r in range(ROUNDS):
        for part in range(5):  # a flush per simulated second, a fifth of the fleet each
            ts = base + 5 * r + part
            for node_id, samples in beats[r][part]:
                await status.record_samples(node_id, samples, now=ts)
            await status.flush()
    return 1e6 * (time.process_time() - t) / (len(ids) * ROUNDS)


def heard(link: RedisLink, messages: list[bytes]) -> float:
    """CPU per sample of another Core's samples messages, decoded and made heartbeats."""
    status = RedisStatus("listener", link, heartbeat_interval=5.0)
    peers = Peers("listener", link, status, MemoryBus())
    t = time.process_time()
    for data in messages:
        peers.heard(data)
    return 1e6 * (time.process_time() - t) / max(1, peers.heard_samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--quick", action="store_true", help="200 nodes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes = [200]
    benchlib.install_signal_handlers()
    benchlib.print_machine()
    docs = []
    for n in args.nodes:
        with benchlib.workdir("redis-costs-") as tmp, benchlib.Procs() as procs:
            redis = benchlib.start_redis(procs, tmp / "redis")
            docs.append(trio.run(measure, redis.url, n) | {"load": benchlib.loadavg()})
    benchlib.print_table(
        "Redis: Core CPU per node (this process, all threads)",
        [
            "nodes",
            "load",
            "status write us/node",
            "claims together us/node",
            "calls",
            "wall s",
            "claims one by one us/node",
            "calls",
            "wall s",
            "poll us/node",
            "status us/hb",
            "status us/hb, samples followed",
            "us per sample heard",
        ],
        [
            (
                d["nodes"],
                d["load"],
                f"{d['status_us_per_node']:.1f}",
                f"{d['claim_together_us_per_node']:.0f}",
                d["claim_together_calls"],
                f"{d['claim_together_wall_s']:.2f}",
                f"{d['claim_alone_us_per_node']:.0f}",
                d["claim_alone_calls"],
                f"{d['claim_alone_wall_s']:.2f}",
                f"{d['poll_us_per_node']:.1f}",
                f"{d['steady_us_per_hb']:.1f}",
                f"{d['steady_watched_us_per_hb']:.1f}",
                f"{d['heard_us_per_sample']:.1f}",
            )
            for d in docs
        ],
    )
    benchlib.write_json(args.json, {"machine": benchlib.machine(), "results": docs})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
