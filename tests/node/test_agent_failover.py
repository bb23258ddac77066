"""A node that lists several Core addresses moves to the next when its Core goes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio

from servermgr.core.app import Core
from tests.support import StartCore, StartNode, node_config, online, stored_stamps, wait_for


def ws(core: Core) -> str:
    return core.url.replace("http://", "ws://")


async def test_a_node_moves_to_the_next_core_and_loses_no_sample(
    start_core: StartCore, start_node: StartNode, tmp_path: Path
) -> None:
    a = await start_core()
    b = await start_core()  # the same data directory: one fleet, two Core processes
    base = node_config(a.core, tmp_path, "node-01")
    config = dataclasses.replace(
        base, node=dataclasses.replace(base.node, core_addr=(ws(a.core), ws(b.core)))
    )
    node = await start_node(a.core, "node-01", config=config)
    await wait_for(lambda: online(a.core, "node-01"))
    # b learns of a node registered through a (the registry is shared through SQLite).
    await wait_for(lambda: b.core.registry.by_ref("node-01") is not None)

    a.stop.set()
    await a.done.wait()
    with trio.fail_after(10):  # the bound; it moves at once
        await wait_for(lambda: online(b.core, "node-01"))
    assert node.agent.core_addr == ws(b.core)

    # Every sample the node made is stored, before and after the move.
    row = b.core.registry.by_ref("node-01")
    assert row is not None
    made = len(node.collector.made)
    await wait_for(lambda: len(node.collector.made) >= made + 2)
    path = b.core.config.storage.sqlite_path
    want = node.collector.made[: made + 2]
    await wait_for(lambda: set(want) <= set(stored_stamps(path, row.seq)))
