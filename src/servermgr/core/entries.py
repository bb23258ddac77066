"""A job's entries in memory, the request that makes one, and the documents the API answers with.

An entry is one (job, node) pair not final yet: its state (``core/jobstate.py``)
and the output received so far. ``OpenEntries`` indexes them by job and by
node, so a cancel touches its job's entries and a reconnect its node's.
``node_doc`` and ``job_doc`` are what the REST API, the job streams and the
event bus answer with, whether the entry is open (from memory) or final (from
SQLite).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

from servermgr.common import proto
from servermgr.common.selector import Target
from servermgr.core import jobstate
from servermgr.core.jobstate import State, Status
from servermgr.core.jobstore import JobRecord, NodeResult

Delivery = Literal["sent", "offline", "stalled"]


class Sessions(Protocol):
    """What the scheduler needs of the gateway: reach a node now, bounded."""

    def is_online(self, node_id: str) -> bool: ...

    async def deliver(self, node_id: str, msg: proto.CoreMessage) -> Delivery:
        """Send ``msg``; "stalled" when the node's connection did not take it in time
        (the gateway has closed that connection then)."""
        ...

    def disconnect_stalled(self, node_id: str, reason: str) -> None: ...

    def protocol_of(self, node_id: str) -> int | None:
        """The protocol version a connected node speaks (None: offline)."""
        ...


class JobError(Exception):
    """A job request that cannot be accepted; ``status`` is the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(eq=False)
class Entry:
    job: JobRecord
    node_id: str
    name: str
    status: Status
    out: dict[str, bytearray] = field(
        default_factory=lambda: {"stdout": bytearray(), "stderr": bytearray()}
    )
    # Output beyond the job's cap that Core dropped (whatever the node says).
    cut: dict[str, bool] = field(default_factory=lambda: {"stdout": False, "stderr": False})

    @property
    def state(self) -> State:
        return self.status.state

    @property
    def key(self) -> tuple[str, str]:
        return (self.job.id, self.node_id)


class OpenEntries:
    """Entries not final yet, indexed by job and by node.

    A cancel touches its job's entries and a reconnect its node's, never
    every open entry; "is this job still open?" is one dict lookup.
    """

    def __init__(self) -> None:
        self._by_job: dict[str, dict[str, Entry]] = {}
        self._by_node: dict[str, dict[str, Entry]] = {}
        self._count = 0

    def add(self, entry: Entry) -> None:
        job_id, node_id = entry.key
        per_job = self._by_job.setdefault(job_id, {})
        if node_id not in per_job:
            self._count += 1
        per_job[node_id] = entry
        self._by_node.setdefault(node_id, {})[job_id] = entry

    def discard(self, entry: Entry) -> bool:
        """Remove ``entry``; False if it was not (or no longer) the open one."""
        job_id, node_id = entry.key
        per_job = self._by_job.get(job_id)
        if per_job is None or per_job.get(node_id) is not entry:
            return False
        del per_job[node_id]
        if not per_job:
            del self._by_job[job_id]
        per_node = self._by_node[node_id]
        del per_node[job_id]
        if not per_node:
            del self._by_node[node_id]
        self._count -= 1
        return True

    def get(self, job_id: str, node_id: str) -> Entry | None:
        return self._by_job.get(job_id, {}).get(node_id)

    def of_job(self, job_id: str) -> list[Entry]:
        return list(self._by_job.get(job_id, {}).values())

    def of_node(self, node_id: str) -> list[Entry]:
        return list(self._by_node.get(node_id, {}).values())

    def values(self) -> Iterator[Entry]:
        return iter([e for per_job in self._by_job.values() for e in per_job.values()])

    def has_job(self, job_id: str) -> bool:
        return job_id in self._by_job

    def __len__(self) -> int:
        return self._count


@dataclass(frozen=True)
class JobSpec:
    target: Target
    command: str | None
    service: proto.ServiceAction | None
    timeout: float
    output_cap: int
    env: dict[str, str]
    cwd: str | None
    wait: float
    stdin: bytes | None = None
    stdin_stream: bool = False  # stdin comes on a stream (core/stdin_api.py)


class Outcome(TypedDict):
    exit_code: int | None
    signal: int | None
    error: str | None
    duration: float | None


def outcome(msg: proto.JobResult) -> Outcome:
    """How a node's run ended, as stored and as published."""
    return {
        "exit_code": msg.exit_code,
        "signal": msg.signal,
        "error": msg.error,
        "duration": msg.duration,
    }


def node_doc(n: NodeResult, *, output: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "node_id": n.node_id,
        "node": n.name,
        "state": n.state,
        "exit_code": n.exit_code,
        "signal": n.signal,
        "error": n.error,
        "duration": n.duration,
        "sent_at": n.sent_at,
        "finished_at": n.finished_at,
        "stdout_truncated": n.stdout_truncated,
        "stderr_truncated": n.stderr_truncated,
        "stdout_bytes": len(n.stdout),
        "stderr_bytes": len(n.stderr),
    }
    if output:
        doc["stdout"] = n.stdout.decode("utf-8", "replace")
        doc["stderr"] = n.stderr.decode("utf-8", "replace")
        doc["stdout_b64"] = base64.b64encode(n.stdout).decode()
        doc["stderr_b64"] = base64.b64encode(n.stderr).decode()
    return doc


def job_doc(job: JobRecord, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    open_ = any(State(n["state"]) in jobstate.OPEN for n in nodes)
    return {
        "id": job.id,
        "created": job.created,
        "command": job.command,
        "service": job.service,
        "target": job.target,
        "timeout": job.timeout,
        "output_cap": job.output_cap,
        "deadline": job.deadline,
        "principal": job.principal,
        "state": "running" if open_ else "done",
        "nodes": nodes,
    }
