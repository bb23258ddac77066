"""``ctl cp``: a file pushed to or pulled from one node, relayed through Core.

ctl opens the files WebSocket (operate role) and sends ``open``; Core sends
``file.open`` to the node, whose policy decides. Data then flows within
credit end to end (``common/flow.py``): in a push the node grants, Core
passes each grant on to ctl and each chunk from ctl on to the node; in a pull
ctl grants and the node sends. Core holds one chunk at a time, hashes what
passes (SHA-256) and checks it against both ends: the audit row has the
checksum Core saw. A dropped connection on either side ends the transfer:
the other side is told (``file.cancel`` to the node, which removes its
temporary file; an error to ctl).
"""

from __future__ import annotations

import hashlib
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

log = logging.getLogger("servermgr.core.transfer")


class FilesApi:
    def __init__(self, deps: StreamDeps) -> None:
        self.deps = deps

    def ws_routes(self) -> list[tuple[str, Callable[[WebSocket], Awaitable[None]], Doc]]:
        doc = Doc(
            "Copy a file to or from a node (ctl cp): open, then data within credit",
            auth=Access.OPERATE,
            websocket=True,
            messages="JSON text frames tagged by type, relayed to the node (docs/reference/"
            "protocol.md, File transfers and shells): file.open, then file.ready, credit, "
            "file.data within credit, file.end, file.result (or its error); file.cancel stops.",
        )
        return [(relay.FILES_PATH, self.websocket, doc)]

    async def websocket(self, ws: WebSocket) -> None:
        opened = await accept(self.deps, ws, relay.decode_file_client)
        if opened is None:
            return
        request, link = opened
        assert isinstance(request, relay.FileRequest)
        node, stream = link.node, link.stream
        started = self.deps.clock()
        action = f"file.{request.direction}"
        detail = request.path
        try:
            digest, size = await (self._push if request.direction == "push" else self._pull)(
                link, request
            )
        except StreamFailed as exc:
            if exc.code not in ("node_offline", "failed", "refused"):
                await _cancel(link, exc.message)
            log.info("%s %s:%s failed: %s", action, node.name, request.path, exc.message)
            await link.audit(started, action, f"{detail} ({exc.message[:500]})", "failed")
            await refuse(ws, exc.code, exc.message)
            return
        finally:
            self.deps.router.close(stream)
        log.info("%s %s:%s: %d bytes, sha256 %s", action, node.name, request.path, size, digest)
        await link.audit(started, action, f"{detail} size={size} sha256={digest}", "succeeded")
        await end(ws)

    async def _opened(self, link: Relay, msg: proto.FileOpen) -> proto.FileReady:
        await link.to_node(msg)
        answer = await link.stream.receive(ANSWER_TIMEOUT)
        if isinstance(answer, proto.FileResult):
            raise StreamFailed("refused", answer.error or "refused by the node")
        if not isinstance(answer, proto.FileReady):
            raise StreamFailed("node_misbehaved", f"the node answered {type(answer).__name__}")
        return answer

    async def _push(self, link: Relay, req: relay.FileRequest) -> tuple[str, int]:
        tid = link.stream.id
        open_msg = proto.FileOpen(
            transfer_id=tid,
            direction="push",
            path=req.path,
            size=req.size or 0,
            mode=req.mode,
            owner=req.owner,
            group=req.group,
        )
        size = req.size or 0
        await self._opened(link, open_msg)
        await link.to_ctl(relay.Ready(id=tid, node=link.node.name))
        digest = hashlib.sha256()
        offset = 0

        async def forward(chunk: bytes) -> None:
            nonlocal offset
            if offset + len(chunk) > size:
                raise StreamFailed("bad_request", "data past the size")
            digest.update(chunk)
            await link.to_node(proto.FileData(transfer_id=tid, offset=offset, chunk=chunk))
            offset += len(chunk)

        async def finish(control: str) -> None:
            try:
                end = relay.decode_file_client(control)
            except ProtocolError as exc:
                raise StreamFailed("bad_request", exc.reason) from None
            if not isinstance(end, relay.End):
                raise StreamFailed("bad_request", "expected data or end")
            if end.size != offset or end.sha256 != digest.hexdigest():
                raise StreamFailed(
                    "checksum_mismatch",
                    f"the client says {end.size} bytes, sha256 {end.sha256}; Core received "
                    f"{offset} bytes, sha256 {digest.hexdigest()}",
                )
            await link.to_node(proto.FileEnd(transfer_id=tid, size=offset, sha256=end.sha256))

        # The node's answer may come after the end (fsync and rename take a moment).
        result = await link.push(proto.FileResult, forward, finish)
        if result.error is not None:
            raise StreamFailed("failed", result.error)
        if result.sha256 != digest.hexdigest() or result.size != offset:
            raise StreamFailed("checksum_mismatch", "the node placed other bytes than were sent")
        await link.to_ctl(relay.Result(sha256=digest.hexdigest(), size=offset))
        return digest.hexdigest(), offset

    async def _pull(self, link: Relay, req: relay.FileRequest) -> tuple[str, int]:
        tid = link.stream.id
        ready = await self._opened(
            link, proto.FileOpen(transfer_id=tid, direction="pull", path=req.path)
        )
        await link.to_ctl(
            relay.Ready(id=tid, node=link.node.name, size=ready.size, mode=ready.mode)
        )
        budget = flow.Budget()  # what ctl granted and the node has not sent
        digest = hashlib.sha256()
        offset = 0

        async def ctl_side() -> None:
            while True:
                frame = await link.from_ctl()
                try:
                    msg = relay.decode_file_client(frame) if isinstance(frame, str) else None
                except ProtocolError as exc:
                    raise StreamFailed("bad_request", exc.reason) from None
                if not isinstance(msg, relay.Credit):
                    raise StreamFailed("bad_request", "a pull takes only credit from the client")
                budget.granted(msg.bytes)
                await link.to_node(proto.StreamCredit(stream_id=tid, bytes=msg.bytes))

        with unwrap_failure():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ctl_side)
                while True:
                    msg = await link.stream.receive()
                    if isinstance(msg, proto.FileData):
                        if msg.offset != offset or not budget.spend(len(msg.chunk)):
                            raise StreamFailed(
                                "node_misbehaved", "data out of order or past credit"
                            )
                        digest.update(msg.chunk)
                        offset += len(msg.chunk)
                        await link.data_to_ctl(msg.chunk)
                    elif isinstance(msg, proto.FileResult):
                        if msg.error is not None:
                            raise StreamFailed("failed", msg.error)
                        if msg.sha256 != digest.hexdigest() or msg.size != offset:
                            raise StreamFailed("checksum_mismatch", "the node's checksum differs")
                        await link.to_ctl(relay.Result(sha256=digest.hexdigest(), size=offset))
                        nursery.cancel_scope.cancel()
                        break
        return digest.hexdigest(), offset


async def _cancel(link: Relay, reason: str) -> None:
    """Tell the node the transfer is off (it removes what it wrote); never raises."""
    with trio.move_on_after(5):
        await link.deps.sessions.deliver(
            link.node.id, proto.FileCancel(transfer_id=link.stream.id, reason=reason[:1000])
        )
