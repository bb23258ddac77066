"""``servermgr up``: Core plus a local node in one process, for a first look."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable

import trio

from servermgr.common import addr
from servermgr.common.config import Config, NodeConfig
from servermgr.common.run import stop_on_signals
from servermgr.core import app as core_app
from servermgr.node.agent import Agent

log = logging.getLogger("servermgr.up")


def node_config(config: Config, core_url: str, token: str) -> Config:
    """The local node's config: reaches this Core, keeps its identity in data_dir."""
    node = config.node
    return dataclasses.replace(
        config,
        node=NodeConfig(
            core_addr=node.core_addr or core_url.replace("http://", "ws://", 1),
            register_token=token,
            hostname=node.hostname,
            data_dir=config.storage.data_dir / "local-node",
            labels=dict(node.labels) or {"role": "core"},
        ),
    )


async def run(config: Config, *, announce: Callable[[str], None]) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signals, stop)
        core = await nursery.start(core_app.serve, config, stop)
        url = addr.listen_to_url(config.server.listen_host, core.port)
        agent = Agent(node_config(config, url, core.key.value))
        node_scope = trio.CancelScope()

        async def run_node() -> None:
            with node_scope:
                await agent.run()

        nursery.start_soon(run_node)
        announce(_banner(url, core.key.value, core.key.path, agent.hostname))
        await stop.wait()
        node_scope.cancel()


def _banner(url: str, key: str, key_path: object, hostname: str) -> str:
    env = f"export SERVERMGR_CORE={url} SERVERMGR_KEY=$(servermgr key show | head -1)"
    return (
        f"\nservermgr is up: Core on {url}, a local node named {hostname!r}.\n"
        f"core key: {key}  (in {key_path})\n\n"
        "Try, in another terminal in this directory:\n"
        "  servermgr ctl nodes\n"
        f"  servermgr ctl node {hostname}\n"
        f"  servermgr ctl metrics {hostname} --since 10m\n\n"
        "Add a node on another host: copy dist/servermgr.pyz there and run\n"
        f"  servermgr node run --config node.toml   (core_addr = \"{url.replace('http', 'ws', 1)}\","
        " register_token = the core key)\n"
        f"From elsewhere: {env}\n"
        "Stop with Ctrl-C.\n"
    )


def main(config: Config) -> None:
    trio.run(lambda: run(config, announce=lambda text: print(text, file=sys.stderr, flush=True)))
