"""Process plumbing shared by the long-running roles."""

from __future__ import annotations

import logging
import signal

import trio

log = logging.getLogger("servermgr")


async def stop_on_signals(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Set ``stop`` on SIGINT or SIGTERM (a second signal is left to the default)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()
            return
