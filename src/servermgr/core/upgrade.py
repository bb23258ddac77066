"""``ctl node upgrade``: move one node's agent to the zipapp Core holds.

``POST /api/v1/nodes/{ref}/upgrade`` (the core key: a new agent runs any
code on the node) sends ``agent.upgrade`` and then the published zipapp
(``core/agentfile.py``) over the node's own connection, within the credit
the node grants, as a push. The node checks the file (size, SHA-256, that
it starts and names its version), switches to it and restarts
(``node/upgrade.py``). Core then waits for the node to come back speaking
the new version; a node that does not within ``timeout`` rolls itself back,
and Core reports which version it came back with. The answer says how it
went (``outcome``: ``upgraded``, ``current``, ``failed``, ``rolled_back``
or ``lost``); every attempt is an audit row (``agent.upgrade``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servermgr.common import flow, proto
from servermgr.common.errors import StorageUnavailableError
from servermgr.core import agentfile
from servermgr.core.api import Handler
from servermgr.core.auth import Access, ApiFailure, principal_of, read_json
from servermgr.core.openapi import Doc, Param
from servermgr.core.storage import NodeRow
from servermgr.core.stream_relay import StreamDeps, agent_too_old
from servermgr.core.streams import NodeStream, StreamFailed

log = logging.getLogger("servermgr.core.upgrade")

STAGE_TIMEOUT = 120.0  # for the node to check the new build after the last byte
ROLLBACK_GRACE = 30.0  # after the timeout: for the node to come back as it was
POLL = 0.2


class UpgradeBody(msgspec.Struct, forbid_unknown_fields=True):
    timeout: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0


class UpgradeApi:
    def __init__(self, deps: StreamDeps, data_dir: Path) -> None:
        self.deps = deps
        self.data_dir = data_dir

    def routes(self) -> list[tuple[str, str, Handler, Doc]]:
        return [
            (
                "POST",
                "/api/v1/nodes/{ref}/upgrade",
                self.upgrade,
                Doc(
                    "Move a node's agent to the published zipapp (core agent-publish); "
                    "answers once it is back with the new version, or rolled back",
                    auth=Access.ADMIN,
                    params=(Param("ref", "path", "node name or id"),),
                    body=msgspec.json.schema(UpgradeBody),
                ),
            )
        ]

    async def upgrade(self, request: Request) -> Response:
        body = await read_json(request, UpgradeBody, "upgrade")
        ref = request.path_params["ref"]
        node = self.deps.registry.by_ref(ref)
        if node is None:
            raise ApiFailure(404, "not_found", f"no node named {ref!r} (see: servermgr ctl nodes)")
        agent = await trio.to_thread.run_sync(agentfile.load, self.data_dir)
        if agent is None:
            raise ApiFailure(
                409,
                "no_agent",
                "Core holds no agent to hand out: publish one with "
                "servermgr core agent-publish FILE (a servermgr zipapp)",
            )
        if not self.deps.sessions.is_online(node.id):
            raise ApiFailure(409, "node_offline", f"node {node.name} is offline")
        too_old = agent_too_old(self.deps.sessions, node)
        if too_old is not None:
            raise ApiFailure(409, "too_old", too_old)
        before = node.agent_version
        doc: dict[str, Any] = {"node": node.name, "from": before, "to": agent.version}
        if before == agent.version:
            return JSONResponse({**doc, "outcome": "current", "error": None, "seconds": 0.0})
        started = self.deps.clock()
        outcome, error = await self._run(node, agent, body.timeout)
        doc |= {
            "outcome": outcome,
            "error": error,
            "seconds": round(self.deps.clock() - started, 1),
            "now": self._version(node),
        }
        log.info("upgrade of %s from %s to %s: %s", node.name, before, agent.version, outcome)
        detail = f"{before} -> {agent.version} (sha256 {agent.sha256})"
        if error:
            detail += f": {error[:500]}"
        try:
            await self.deps.db.write(
                self.deps.store.record_audit,
                started,
                principal_of(request).name,
                "agent.upgrade",
                node.name,
                detail,
                "succeeded" if outcome == "upgraded" else outcome,
            )
        except StorageUnavailableError:  # the answer matters more than its audit row
            log.warning("audit row of the upgrade of %s not stored", node.name)
        return JSONResponse(doc)

    def _version(self, node: NodeRow) -> str | None:
        row = self.deps.registry.by_id(node.id)
        return row.agent_version if row is not None else None

    def _back_as(self, node: NodeRow, version: str | None) -> bool:
        return self.deps.sessions.is_online(node.id) and self._version(node) == version

    async def _run(
        self, node: NodeRow, agent: agentfile.AgentFile, rollback_after: float
    ) -> tuple[str, str | None]:
        stream = self.deps.router.open(node.id)
        try:
            await self._send_file(stream, node, agent, rollback_after)
        except StreamFailed as exc:
            with trio.move_on_after(5):
                await self.deps.sessions.deliver(
                    node.id, proto.FileCancel(transfer_id=stream.id, reason=exc.message[:1000])
                )
            return "failed", exc.message
        finally:
            self.deps.router.close(stream)
        # The node switched and restarts: wait for the new version's hello.
        with trio.move_on_after(rollback_after + 5):
            while not self._back_as(node, agent.version):  # noqa: ASYNC110 - no event for it
                await trio.sleep(POLL)
            return "upgraded", None
        before = node.agent_version
        with trio.move_on_after(ROLLBACK_GRACE):
            while not self._back_as(node, before):  # noqa: ASYNC110
                await trio.sleep(POLL)
            return (
                "rolled_back",
                f"not back as {agent.version} within {rollback_after:g} s: rolled back to {before}",
            )
        return (
            "lost",
            f"not back as {agent.version} within {rollback_after:g} s, nor as {before} since",
        )

    async def _send_file(
        self, stream: NodeStream, node: NodeRow, agent: agentfile.AgentFile, rollback_after: float
    ) -> None:
        tid = stream.id
        await self._deliver(
            node,
            proto.AgentUpgrade(
                transfer_id=tid,
                version=agent.version,
                size=agent.size,
                sha256=agent.sha256,
                timeout=rollback_after,
            ),
        )
        answer = await stream.receive(30.0)
        if isinstance(answer, proto.FileResult):
            raise StreamFailed("refused", answer.error or "refused by the node")
        fd = await trio.to_thread.run_sync(os.open, agent.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            credit = flow.Credit()
            offset = 0
            while offset < agent.size:
                while credit.available == 0:
                    msg = await stream.receive()
                    if isinstance(msg, proto.StreamCredit):
                        credit.grant(msg.bytes)
                    elif isinstance(msg, proto.FileResult):
                        raise StreamFailed("failed", msg.error or "the node stopped the transfer")
                n = await credit.take(flow.CHUNK)
                chunk = await trio.to_thread.run_sync(os.pread, fd, n, offset)
                if not chunk:
                    raise StreamFailed("failed", f"{agent.path} changed while it was sent")
                await self._deliver(
                    node, proto.FileData(transfer_id=tid, offset=offset, chunk=chunk)
                )
                offset += len(chunk)
        finally:
            os.close(fd)
        await self._deliver(
            node, proto.FileEnd(transfer_id=tid, size=agent.size, sha256=agent.sha256)
        )
        while True:
            msg = await stream.receive(STAGE_TIMEOUT)
            if isinstance(msg, proto.FileResult):
                if msg.error is not None:
                    raise StreamFailed("failed", msg.error)
                return

    async def _deliver(self, node: NodeRow, msg: proto.CoreMessage) -> None:
        outcome = await self.deps.sessions.deliver(node.id, msg)
        if outcome != "sent":
            raise StreamFailed("node_offline", f"node {node.name} is {outcome}")
