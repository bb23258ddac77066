"""``ctl shell``: an interactive shell on one node, relayed through Core.

ctl opens the shell WebSocket (operate role, or the core key) and sends
``open`` with its terminal size; Core sends ``shell.open`` and the node's
policy decides (``[exec] shell``). Terminal input goes within the credit the
node grants, output within the credit ctl grants (``common/flow.py``), so a
fast printer and a slow client never fill Core. ctl closing its socket hangs
the shell up. Every session is one audit row: who, when it started, how long
it lasted and how it ended.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from starlette.websockets import WebSocket

from servermgr.common import flow, proto, relay
from servermgr.common.errors import ProtocolError
from servermgr.core.auth import Access
from servermgr.core.openapi import Doc
from servermgr.core.stream_relay import (
    ANSWER_TIMEOUT,
    Relay,
    StreamDeps,
    accept,
    end,
    refuse,
    unwrap_failure,
)
from servermgr.core.streams import StreamFailed

log = logging.getLogger("servermgr.core.shell")

IDLE = 7 * 86400.0  # a shell may sit idle: the node's silence watchdog covers a dead node


class ShellApi:
    def __init__(self, deps: StreamDeps) -> None:
        self.deps = deps

    def ws_routes(self) -> list[tuple[str, Callable[[WebSocket], Awaitable[None]], Doc]]:
        doc = Doc(
            "Interactive shell on a node (ctl shell): open, then terminal bytes within credit",
            auth=Access.OPERATE,
            websocket=True,
            messages="JSON text frames tagged by type, relayed to the node (docs/reference/"
            "protocol.md, File transfers and shells): shell.open, then shell.started and "
            "credit, shell.input / shell.resize, shell.output within credit, shell.exit.",
        )
        return [(relay.SHELL_PATH, self.websocket, doc)]

    async def websocket(self, ws: WebSocket) -> None:
        opened = await accept(self.deps, ws, relay.decode_shell_client)
        if opened is None:
            return
        request, link = opened
        assert isinstance(request, relay.ShellRequest)
        node, stream = link.node, link.stream
        started = self.deps.clock()
        log.info("shell %s on %s opened by %s", stream.id, node.name, link.who)
        try:
            finished = await self._relay(link, request)
        except StreamFailed as exc:
            with trio.move_on_after(5):
                await self.deps.sessions.deliver(node.id, proto.ShellClose(session_id=stream.id))
            took = self.deps.clock() - started
            outcome = "refused" if exc.code == "refused" else "failed"
            await link.audit(
                started, "shell", f"session {stream.id}, {took:.1f} s: {exc.message[:500]}", outcome
            )
            await refuse(ws, exc.code, exc.message)
            return
        finally:
            self.deps.router.close(stream)
        took = self.deps.clock() - started
        how = (
            f"exit {finished.exit_code}"
            if finished.exit_code is not None
            else f"signal {finished.signal}"
        )
        log.info("shell %s on %s ended after %.1f s (%s)", stream.id, node.name, took, how)
        await link.audit(started, "shell", f"session {stream.id}, {took:.1f} s, {how}", "succeeded")
        await end(ws)

    async def _relay(self, link: Relay, req: relay.ShellRequest) -> relay.Exit:
        sid = link.stream.id
        await link.to_node(
            proto.ShellOpen(session_id=sid, rows=req.rows, cols=req.cols, term=req.term)
        )
        answer = await link.stream.receive(ANSWER_TIMEOUT)
        if isinstance(answer, proto.ShellExit):
            raise StreamFailed("refused", f"node {link.node.name}: {answer.error or 'refused'}")
        if not isinstance(answer, proto.ShellStarted):
            raise StreamFailed("node_misbehaved", f"the node answered {type(answer).__name__}")
        await link.to_ctl(relay.Ready(id=sid, node=link.node.name))
        to_node = flow.Budget()  # input credit the node granted, not used by ctl yet
        to_ctl = flow.Budget()  # output credit ctl granted, not used by the node yet
        ended: list[relay.Exit] = []

        async def ctl_side() -> None:
            while True:
                frame = await link.from_ctl(IDLE)
                if isinstance(frame, bytes):
                    if not to_node.spend(len(frame)):
                        raise StreamFailed("bad_request", "input past the node's credit")
                    await link.to_node(proto.ShellInput(session_id=sid, data=frame))
                    continue
                try:
                    msg = relay.decode_shell_client(frame)
                except ProtocolError as exc:
                    raise StreamFailed("bad_request", exc.reason) from None
                if isinstance(msg, relay.Credit):
                    to_ctl.granted(msg.bytes)
                    await link.to_node(proto.StreamCredit(stream_id=sid, bytes=msg.bytes))
                elif isinstance(msg, relay.Resize):
                    await link.to_node(
                        proto.ShellResize(session_id=sid, rows=msg.rows, cols=msg.cols)
                    )
                else:
                    raise StreamFailed("bad_request", "open was sent already")

        with unwrap_failure():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ctl_side)
                while True:
                    msg = await link.stream.receive(IDLE)
                    if isinstance(msg, proto.ShellOutput):
                        if not to_ctl.spend(len(msg.data)):
                            raise StreamFailed("node_misbehaved", "output past the client's credit")
                        await link.data_to_ctl(msg.data)
                    elif isinstance(msg, proto.StreamCredit):
                        to_node.granted(msg.bytes)
                        await link.to_ctl(relay.Credit(bytes=msg.bytes))
                    elif isinstance(msg, proto.ShellExit):
                        ended.append(relay.Exit(exit_code=msg.exit_code, signal=msg.signal))
                        await link.to_ctl(ended[0])
                        nursery.cancel_scope.cancel()
                        break
        return ended[0]
