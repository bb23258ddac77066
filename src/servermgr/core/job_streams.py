"""A job's live output for clients: NDJSON, WebSocket, and byte ranges.

The live output of a job is one event sequence served two ways: NDJSON over
HTTP (``/stream``, what ctl and curl read) and WebSocket text frames
(``/ws``, for browsers). Each starts with the job so far, then live events,
and ends with ``{"type": "job.done"}`` once every node is final. Output events
carry byte offsets so a reader can drop what it already has.

Memory per reader is bounded whatever the output size: the output so far is
sent in chunks of at most ``CHUNK`` bytes read one at a time (from the open
entry, or by range from SQLite), and live events wait in a bounded queue. A
reader that lets more than ``MAX_EVENTS`` events or ``MAX_BYTES`` of output
wait is disconnected: the NDJSON stream ends with an ``error`` line
(``too_slow``), the WebSocket closes with code 1008. ``/output`` serves any
byte range of one node's stdout or stderr, so a reader cut short completes
what it missed without loading the whole job.

With several Core processes a job's events from another Core come through
Redis pub/sub, which keeps nothing while Redis is down: a stream that hears
nothing for ``RECHECK`` seconds reads the job from SQLite, and once it is
done sends the output and final states it missed, then ``job.done``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
import trio
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from servermgr.common.events import EventType
from servermgr.core.api import Api, Handler
from servermgr.core.auth import Access, ApiFailure, error_body, read_query
from servermgr.core.bus import SubscriberTooSlow
from servermgr.core.jobs_api import job_or_404
from servermgr.core.jobstore import FINAL_STATES
from servermgr.core.openapi import Doc, Param
from servermgr.core.scheduler import Scheduler
from servermgr.core.sessions import CLOSE_POLICY

log = logging.getLogger("servermgr.core.jobs")

CHUNK = 64 * 1024  # output bytes per catch-up event (base64 in the event)
MAX_RANGE = 4 * 1024 * 1024  # most bytes one /output request answers
MAX_EVENTS = 10_000  # what may wait for one reader before it is disconnected
MAX_BYTES = 8 * 1024 * 1024
STREAMS = ("stdout", "stderr")
# With several Cores: a stream silent this long looks in SQLite for what it missed.
RECHECK = 5.0
FOLLOW_MAX = 10.0  # seconds a /stream request waits for the next event at most
KEEPALIVE = 5.0  # a keepalive line after this long without another


class StreamQuery(msgspec.Struct):
    """``GET /api/v1/jobs/{job_id}/stream``."""

    follow: Annotated[
        float,
        Meta(
            ge=0,
            le=FOLLOW_MAX,
            description="seconds to wait for the next event; if none comes and the job "
            "is still open, a last job.open line (open the stream again to go on)",
        ),
    ] = FOLLOW_MAX


class OutputQuery(msgspec.Struct):
    """``GET /api/v1/jobs/{job_id}/output/{node}/{stream}``."""

    offset: Annotated[int, Meta(ge=0, le=2**53, description="first byte")] = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_RANGE, description="at most this many bytes")] = (
        MAX_RANGE
    )


class JobStreams:
    def __init__(self, api: Api, scheduler: Scheduler) -> None:
        self.api = api
        self.jobs = scheduler

    async def stream(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        follow = read_query(request, StreamQuery).follow
        await job_or_404(self.jobs, job_id, output=False)  # 404 before the stream starts
        label = f"job stream {job_id} of {_peer(request)}"

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for event in self.events(job_id, label, follow=follow):
                    yield json.dumps(event).encode() + b"\n"
            except SubscriberTooSlow as exc:
                yield json.dumps(
                    {"type": EventType.ERROR, **error_body("too_slow", exc.reason)}
                ).encode()
                yield b"\n"

        return NdjsonStream(lines())

    async def websocket(self, ws: WebSocket) -> None:
        job_id = ws.path_params["job_id"]
        if await self.jobs.job_doc(job_id, output=False) is None:
            await ws.send_denial_response(
                JSONResponse(error_body("not_found", f"no job {job_id!r}"), 404)
            )
            return
        await ws.accept()
        try:
            try:
                async for event in self.events(job_id, f"job websocket {job_id} of {_peer(ws)}"):
                    await ws.send_text(json.dumps(event))
            except SubscriberTooSlow as exc:
                await ws.close(CLOSE_POLICY, exc.reason)
                return
            await ws.close(1000)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def events(
        self, job_id: str, label: str = "job stream", *, follow: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The job so far, then live events until every node is final.

        With ``follow``: when no event comes for that many seconds, a last
        ``job.open`` (the job is still open), and a ``keepalive`` after
        ``KEEPALIVE`` s without another line. Raises SubscriberTooSlow when the
        reader let too much wait.
        """
        async with self.jobs.bus.subscribe(
            max_events=MAX_EVENTS,
            max_bytes=MAX_BYTES,
            match=lambda e: e.get("job_id") == job_id,
            label=label,
        ) as live:
            doc = await self.jobs.job_doc(job_id, output=False)
            if doc is None:
                return
            nodes = doc.pop("nodes")
            yield {
                "type": EventType.JOB,
                "job": doc
                | {
                    "nodes": [
                        {k: v for k, v in n.items() if not k.startswith(STREAMS)} for n in nodes
                    ]
                },
            }
            have: dict[tuple[str, str], int] = {}  # (node id, stream) -> bytes sent
            final: set[str] = set()  # nodes whose final state was sent
            async for event in self._catch_up(job_id, nodes, have, final):
                yield event
            if doc["state"] == "done":
                yield {"type": EventType.JOB_DONE, "job_id": job_id}
                return
            deadline = math.inf if follow is None else trio.current_time() + follow
            while True:
                # Shared by several Cores: an event published while Redis was
                # down never comes (pub/sub keeps nothing); SQLite has it all.
                wake = min(
                    deadline,
                    trio.current_time() + (KEEPALIVE if follow is not None else math.inf),
                    trio.current_time() + (RECHECK if self.jobs.shared else math.inf),
                )
                got: dict[str, Any] | None = None
                with trio.move_on_at(wake):
                    try:
                        got = await live.receive()
                    except trio.EndOfChannel:
                        return
                if got is not None:
                    if got["type"] == EventType.JOB_OUTPUT:
                        key = (got["node_id"], got["stream"])
                        end = got["offset"] + _b64_len(got["data"])
                        if end <= have.get(key, 0):
                            continue  # sent by a catch-up already
                        have[key] = end
                    elif got["type"] == EventType.JOB_STATE and got["state"] in FINAL_STATES:
                        final.add(got["node_id"])
                    yield got
                    if got["type"] == EventType.JOB_DONE:
                        return
                    if follow is not None:
                        deadline = trio.current_time() + follow
                    continue
                if self.jobs.shared:
                    doc = await self.jobs.job_doc(job_id, output=False)
                    if doc is not None and doc["state"] == "done":
                        async for event in self._catch_up(job_id, doc["nodes"], have, final):
                            yield event
                        yield {"type": EventType.JOB_DONE, "job_id": job_id}
                        return
                if follow is not None:
                    if trio.current_time() >= deadline:
                        yield {"type": EventType.JOB_OPEN, "job_id": job_id}
                        return
                    yield {"type": EventType.KEEPALIVE, "ts": self.api.clock()}

    async def _catch_up(
        self,
        job_id: str,
        nodes: list[dict[str, Any]],
        have: dict[tuple[str, str], int],
        final: set[str],
    ) -> AsyncIterator[dict[str, Any]]:
        """From SQLite: the output past ``have`` and the final states not in ``final``."""
        for n in nodes:
            for stream in STREAMS:
                key = (n["node_id"], stream)
                offset, size = have.get(key, 0), n[f"{stream}_bytes"]
                while offset < size:
                    data = await self.output_range(
                        job_id, n["node_id"], stream, offset, min(CHUNK, size - offset)
                    )
                    if not data:
                        break
                    yield {
                        "type": EventType.JOB_OUTPUT,
                        "job_id": job_id,
                        "node_id": n["node_id"],
                        "node": n["node"],
                        "stream": stream,
                        "offset": offset,
                        "data": base64.b64encode(data).decode(),
                    }
                    offset += len(data)
                    have[key] = offset
            if n["state"] in FINAL_STATES and n["node_id"] not in final:
                final.add(n["node_id"])
                yield {
                    "type": EventType.JOB_STATE,
                    "job_id": job_id,
                    "node_id": n["node_id"],
                    "node": n["node"],
                    "state": n["state"],
                    "exit_code": n["exit_code"],
                    "signal": n["signal"],
                    "error": n["error"],
                    "duration": n["duration"],
                }

    async def output_range(
        self, job_id: str, node_id: str, stream: str, offset: int, limit: int
    ) -> bytes:
        """Up to ``limit`` bytes of one node's output from ``offset``: live or stored."""
        entry = self.jobs.live.get(job_id, node_id)
        if entry is not None:
            return bytes(entry.out[stream][offset : offset + limit])
        return await self.api.db.read(
            self.jobs.store.output_range, job_id, node_id, stream, offset, limit
        )

    async def output(self, request: Request) -> Response:
        """Raw bytes of one node's stdout or stderr, from ``offset``, at most ``limit``."""
        job_id = request.path_params["job_id"]
        stream = request.path_params["stream"]
        if stream not in STREAMS:
            raise ApiFailure(400, "bad_request", "stream must be stdout or stderr")
        q = read_query(request, OutputQuery)
        offset, limit = q.offset, q.limit
        doc = await job_or_404(self.jobs, job_id, output=False)
        ref = request.path_params["node"]
        node = next((n for n in doc["nodes"] if ref in (n["node_id"], n["node"])), None)
        if node is None:
            raise ApiFailure(404, "not_found", f"job {job_id} did not run on {ref!r}")
        data = await self.output_range(job_id, node["node_id"], stream, offset, limit)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"X-Total-Bytes": str(node[f"{stream}_bytes"])},
        )

    def routes(self) -> list[tuple[str, str, Handler, Doc]]:
        jid = Param("job_id", "path", "job id")
        return [
            (
                "GET",
                "/api/v1/jobs/{job_id}/stream",
                self.stream,
                Doc(
                    "Live events as NDJSON: job, job.output, job.state, keepalive, then "
                    "job.done; or job.open when no event came for follow seconds (open it "
                    "again: output events carry offsets), or an error line when the reader "
                    "was too slow",
                    auth=Access.READ,
                    params=(jid,),
                    query=StreamQuery,
                    media_type="application/x-ndjson",
                    result={"type": "string", "description": "one JSON object per line"},
                ),
            ),
            (
                "GET",
                "/api/v1/jobs/{job_id}/output/{node}/{stream}",
                self.output,
                Doc(
                    "Raw bytes of one node's stdout or stderr (X-Total-Bytes: its size so far)",
                    auth=Access.READ,
                    params=(
                        jid,
                        Param("node", "path", "node name or id"),
                        Param(
                            "stream",
                            "path",
                            "stdout or stderr",
                            {"type": "string", "enum": list(STREAMS)},
                        ),
                    ),
                    query=OutputQuery,
                    media_type="application/octet-stream",
                    result={"type": "string", "format": "binary"},
                ),
            ),
        ]

    def ws_routes(self) -> list[tuple[str, Any, Doc]]:
        return [
            (
                "/api/v1/jobs/{job_id}/ws",
                self.websocket,
                Doc(
                    "Live events of a job over WebSocket",
                    auth=Access.READ,
                    websocket=True,
                    params=(Param("job_id", "path", "job id"),),
                    messages="the same JSON objects as GET /api/v1/jobs/{job_id}/stream, one per "
                    "text frame (job, output, state, done); closes 1008 when the reader is too "
                    "slow. The client sends nothing.",
                ),
            )
        ]


def _peer(conn: Request | WebSocket) -> str:
    client = conn.client
    return f"{client.host}:{client.port}" if client else "unknown client"


class NdjsonStream(Response):
    """A streamed answer whose end always completes (unlike StreamingResponse here).

    Starlette's StreamingResponse cancels its task when Hypercorn reports
    the client gone, and Hypercorn reports that from inside the send that
    ends the response: the cancellation lands in Hypercorn's bookkeeping
    and the connection is never closed nor reused (it lingers until the
    client hangs up). Here a client that goes away only stops the wait for
    the next line; every send completes, the last one outside any scope
    that can be cancelled.
    """

    def __init__(self, lines: AsyncIterator[bytes]) -> None:  # no body, no content-length
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"application/x-ndjson"),
            (b"cache-control", b"no-store"),
        ]
        self.lines = lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_disconnected, receive, nursery.cancel_scope)
            async for line in self.lines:
                with trio.CancelScope(shield=True):
                    await send({"type": "http.response.body", "body": line, "more_body": True})
            nursery.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _b64_len(data: str) -> int:
    """The number of bytes ``data`` (base64) decodes to."""
    return len(data) // 4 * 3 - (2 if data.endswith("==") else 1 if data.endswith("=") else 0)


async def _until_disconnected(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
