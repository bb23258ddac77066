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
- the poll: every held node's stream read once (every 2 s in Core): CPU per node.

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

from servermgr.core.redis_queue import RedisJobQueue
from servermgr.core.redis_status import RedisStatus
from servermgr.core.redisio import RedisLink


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
        nursery.cancel_scope.cancel()
    link.close()
    return doc


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
