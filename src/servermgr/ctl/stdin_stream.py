"""The trio side of ``ctl exec``'s stdin forwarder (ctl/stdin.py runs it on its thread).

One stdin WebSocket (``/api/v1/stdin/ws``, core/stdin_api.py): ``open``
naming the job and node, then one chunk read at a time within the credit
the node grants, then ``eof``; ``done`` ends it with the bytes the process
took. Imported on the forwarder's thread, so that trio and the WebSocket
client load while the main thread makes the job.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed

from servermgr.common import relay
from servermgr.common.errors import ClientError
from servermgr.ctl import streamclient

if TYPE_CHECKING:
    from servermgr.common.tls import Trust

FAILURES = (ClientError, ConnectionClosed, OSError, BaseExceptionGroup)


async def stream(
    base_url: str, key: str, trust: Trust | None, job_id: str, node: str, fd: int
) -> int:
    """Send ``fd`` to the stdin of ``job_id`` on ``node``; the bytes its process took."""
    async with streamclient.open_stream(base_url, key, trust, relay.STDIN_PATH) as ws:
        await streamclient.send(ws, relay.StdinRequest(job=job_id, node=node))
        ready = await streamclient.receive(ws)
        if not isinstance(ready, relay.Ready):
            raise ClientError("Core answered the open with something else than ready")

        async def read(n: int) -> bytes:
            # A pipe may never end: leave its read behind when the stream is done.
            return await trio.to_thread.run_sync(os.read, fd, n, abandon_on_cancel=True)

        done = await streamclient.push(ws, read, relay.Eof, relay.Done)
        return done.size


def message(exc: BaseException) -> str:
    """One line for a failure of the stream."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, ConnectionClosed):
        return "the connection to Core was lost"
    return str(exc) or type(exc).__name__
