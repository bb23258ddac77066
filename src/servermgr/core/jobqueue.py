"""The job queue: jobs addressed to nodes, for the Core process that holds each node.

A job for a node that is not connected to the submitting Core goes into the
queue: to the Core the node is connected to (its ``receive``), or, while
the node is connected nowhere, waiting until a Core claims the node when it
connects, or until the job's deadline. The job itself (command, state,
results) lives in SQLite; the queue carries only (node id, job id).

``JobQueue`` is the interface; ``MemoryJobQueue`` serves one Core process
(every node is claimed by it or by none), a Redis implementation (chosen in
``core/backends.py``) several, with acknowledgement so nothing in flight is
lost if a Core dies. Methods are ``async``: a queue elsewhere is a network
call away.
"""

from __future__ import annotations

import math
from typing import Protocol

import trio

Routed = tuple[str, str]  # (node id, job id)


class JobQueue(Protocol):
    async def put(self, node_id: str, job_id: str, *, deadline: float) -> None:
        """Route a job to a node: to the Core that holds it, else it waits until
        ``deadline`` for the next Core that claims the node."""
        ...

    async def claim(self, node_id: str) -> list[str]:
        """This Core holds ``node_id`` now: the jobs waiting for it, taken out of the queue."""
        ...

    async def release(self, node_id: str) -> None:
        """This Core does not hold ``node_id`` any more."""
        ...

    async def withdraw(self, job_id: str) -> list[str]:
        """Take a job out of every node's wait (it was cancelled): the nodes it waited for."""
        ...

    async def expired(self, now: float) -> list[Routed]:
        """Take out what waited past its deadline without a Core claiming its node."""
        ...

    async def receive(self) -> Routed:
        """The next job put for a node this Core holds."""
        ...


class MemoryJobQueue:
    """The queue within one Core process."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._waiting: dict[str, dict[str, float]] = {}  # node id -> job id -> deadline
        # Unbounded: only jobs put while their node was claimed pass here (a race).
        self._send, self._receive = trio.open_memory_channel[Routed](math.inf)

    def waiting(self, node_id: str) -> list[str]:
        """The jobs waiting for ``node_id`` (to show, not to take)."""
        return list(self._waiting.get(node_id, {}))

    async def put(self, node_id: str, job_id: str, *, deadline: float) -> None:
        if node_id in self._held:
            self._send.send_nowait((node_id, job_id))
        else:
            self._waiting.setdefault(node_id, {})[job_id] = deadline

    async def claim(self, node_id: str) -> list[str]:
        self._held.add(node_id)
        return list(self._waiting.pop(node_id, {}))

    async def release(self, node_id: str) -> None:
        self._held.discard(node_id)

    async def withdraw(self, job_id: str) -> list[str]:
        nodes = []
        for node_id, jobs in list(self._waiting.items()):
            if jobs.pop(job_id, None) is not None:
                nodes.append(node_id)
                if not jobs:
                    del self._waiting[node_id]
        return nodes

    async def expired(self, now: float) -> list[Routed]:
        out = []
        for node_id, jobs in list(self._waiting.items()):
            for job_id, deadline in list(jobs.items()):
                if deadline < now:
                    del jobs[job_id]
                    out.append((node_id, job_id))
            if not jobs:
                del self._waiting[node_id]
        return out

    async def receive(self) -> Routed:
        return await self._receive.receive()
