"""``servermgr node run``: the agent as a process, until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import trio

from servermgr.common import logs, tls
from servermgr.common.config import find_config, load_config
from servermgr.common.errors import ConfigError, TlsError
from servermgr.common.run import stop_on_signals
from servermgr.node.agent import Agent


def run_agent(config: Path | None) -> None:
    """Validate the config (ConfigError, exit 2), then run the agent.

    Raises RegistrationError when Core refuses this node (wrong register
    token, name taken, removed by an operator, no register token to enrol
    with): the caller reports it in one line and exits 1.
    """
    cwd = Path.cwd()
    cfg = load_config(find_config(config, os.environ, cwd), cwd=cwd)
    cfg.require_node()
    if cfg.node.ca_file is not None:  # unusable: say so now, not at every reconnect
        try:
            tls.client_context(cfg.node.trust)
        except TlsError as exc:
            raise ConfigError(cfg.source, "node.ca_file", exc.message) from None
    logs.setup(cfg.log_level)
    warning = cfg.token_file_warning()
    if warning:
        logging.getLogger("servermgr.node").warning("%s", warning)
    from servermgr.node.upgrade import running_zipapp

    agent = Agent(cfg, zipapp=running_zipapp(sys.argv[0]))

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_on_signals, stop)

            async def agent_then_stop() -> None:
                await agent.run()
                stop.set()

            nursery.start_soon(agent_then_stop)
            await stop.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)
    if agent.restart_argv is not None:  # upgraded: the same process, the new agent
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(agent.restart_argv[0], agent.restart_argv)
