"""Jobs: dispatch to nodes, fan-out, offline queue, timeouts, results.

A job targets nodes; each (job, node) pair is an entry with its own state:

    queued -> sent -> running -> succeeded | failed | timed_out | cancelled | refused
    queued -> expired            (node offline until the job's deadline)
    sent/running -> lost         (no result by timeout + grace; a late result still counts)
    queued/sent/running -> cancelled

Entries not final yet live in memory (with the output received so far) and
in SQLite; final results are written once, idempotently, then acked to the
node. Every change is published on the event bus for live streams.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

import trio

from servermgr.common import proto
from servermgr.common.selector import Target, select
from servermgr.core.cache import EventBus
from servermgr.core.jobstore import FINAL_STATES, JobRecord, JobStore, NodeResult
from servermgr.core.registry import NodeRegistry
from servermgr.core.writer import Database, GroupCommit

log = logging.getLogger("servermgr.core.jobs")

LOST_GRACE = 30.0
TICK = 0.5
OUTCOME_STATE = {
    "succeeded": "succeeded",
    "failed": "failed",
    "timed_out": "timed_out",
    "cancelled": "cancelled",
    "refused": "refused",
    "error": "failed",
}


class Sessions(Protocol):
    """What the scheduler needs of the gateway: a way to reach a node now."""

    def sender(self, node_id: str) -> Callable[[proto.CoreMessage], Awaitable[None]] | None: ...


class JobError(Exception):
    """A job request that cannot be accepted; ``status`` is the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Entry:
    job: JobRecord
    node_id: str
    name: str
    state: str
    sent_at: float | None = None
    cancel_requested: bool = False
    out: dict[str, bytearray] = field(
        default_factory=lambda: {"stdout": bytearray(), "stderr": bytearray()}
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.job.id, self.node_id)


class OpenEntries:
    """Entries not final yet, by (job id, node id), with a count per job.

    The count makes "is this job still open?" O(1): a fan-out to 1,000
    nodes asks it once per result.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._per_job: dict[str, int] = {}

    def __setitem__(self, key: tuple[str, str], entry: Entry) -> None:
        if key not in self._entries:
            self._per_job[key[0]] = self._per_job.get(key[0], 0) + 1
        self._entries[key] = entry

    def discard(self, key: tuple[str, str]) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            left = self._per_job[key[0]] - 1
            if left:
                self._per_job[key[0]] = left
            else:
                del self._per_job[key[0]]
        return entry

    def get(self, key: tuple[str, str]) -> Entry | None:
        return self._entries.get(key)

    def values(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def has_job(self, job_id: str) -> bool:
        return job_id in self._per_job

    def __len__(self) -> int:
        return len(self._entries)


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


class Scheduler:
    def __init__(
        self,
        db: Database,
        registry: NodeRegistry,
        sessions: Sessions,
        bus: EventBus,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self.store = JobStore(db.storage)
        self.registry = registry
        self.sessions = sessions
        self.bus = bus
        self.clock = clock
        self.live = OpenEntries()
        self._store_result = GroupCommit(db, self.store.store_results)

    # --- lifecycle ------------------------------------------------------

    async def load(self) -> None:
        """Reload entries that were not final when Core last stopped."""
        for job, node in await self.db.read(self.store.open_entries):
            self.live[(job.id, node.node_id)] = Entry(
                job, node.node_id, node.name, node.state, sent_at=node.sent_at
            )
        if self.live:
            log.info("%d job entries still open from before the restart", len(self.live))

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire queued entries past their deadline; mark silent ones lost."""
        task_status.started()
        while True:
            await trio.sleep(TICK)
            await self.tick()

    async def tick(self) -> None:
        """One pass of the deadline checks."""
        now = self.clock()
        for entry in self.live.values():
            # Only an entry whose node is offline expires: one being
            # dispatched right now (a large fan-out) is not late.
            offline = self.sessions.sender(entry.node_id) is None
            if entry.state == "queued" and now > entry.job.deadline and offline:
                await self._finish_state(
                    entry, "expired", "node stayed offline past the job's deadline"
                )
            elif (
                entry.state in ("sent", "running")
                and entry.sent_at is not None
                and now > entry.sent_at + entry.job.timeout + LOST_GRACE
            ):
                await self._finish_state(
                    entry,
                    "lost",
                    "no result from the node by the job's timeout + "
                    f"{LOST_GRACE:g} s (a late result will still be recorded)",
                )

    # --- requests -------------------------------------------------------

    async def submit(self, spec: JobSpec, *, principal: str) -> str:
        nodes, unknown = select(spec.target, self.registry.all())
        if unknown:
            raise JobError(
                404,
                "not_found",
                f"unknown node(s): {', '.join(unknown)} (see: servermgr ctl nodes)",
            )
        if not nodes:
            raise JobError(400, "no_nodes", f"no node matches {spec.target.describe()!r}")
        now = self.clock()
        job = JobRecord(
            id=f"{int(now * 1000):x}-{secrets.token_hex(4)}",
            created=now,
            command=spec.command,
            service={"action": spec.service.action, "unit": spec.service.unit}
            if spec.service
            else None,
            target=spec.target.describe(),
            timeout=spec.timeout,
            output_cap=spec.output_cap,
            env=spec.env,
            cwd=spec.cwd,
            deadline=now + spec.wait,
            principal=principal,
        )
        entries, rows = [], []
        for node in nodes:
            online = self.sessions.sender(node.id) is not None
            if online or spec.wait > 0:
                entries.append(Entry(job, node.id, node.name, "queued"))
                rows.append(NodeResult(node.id, node.name, "queued"))
            else:
                rows.append(
                    NodeResult(
                        node.id,
                        node.name,
                        "expired",
                        error="node is offline (use --wait to queue the job)",
                        finished_at=now,
                    )
                )
        await self.db.write(self.store.create, job, rows, job.describe())
        log.info("job %s: %r on %d node(s) by %s", job.id, job.describe(), len(rows), principal)
        for entry in entries:
            self.live[entry.key] = entry
        for row in rows:
            self._publish_state(job.id, row.node_id, row.name, row.state, error=row.error)
        await self._dispatch(*entries)
        self._maybe_done(job.id)
        return job.id

    async def cancel(self, job_id: str) -> bool:
        """Cancel what has not finished; False if the job is unknown."""
        entries = [e for e in self.live.values() if e.job.id == job_id]
        if not entries:
            return await self.db.read(self.store.get, job_id) is not None
        for entry in entries:
            if entry.state == "queued":
                await self._finish_state(entry, "cancelled", "cancelled before it was sent")
                continue
            entry.cancel_requested = True
            send = self.sessions.sender(entry.node_id)
            if send is not None:
                await send(proto.JobCancel(job_id=job_id))
        return True

    # --- node events ----------------------------------------------------

    async def node_online(self, node_id: str, known: set[str] | None = None) -> None:
        """Send what waited for this node; repeat cancels it missed.

        ``known`` are the jobs the node says it has (its spool survives
        restarts): a job sent to it that it does not have never arrived, so
        it is sent again; one it has will have its result re-sent by the node.
        """
        for entry in [e for e in self.live.values() if e.node_id == node_id]:
            never_arrived = (
                known is not None
                and entry.state in ("sent", "running")
                and entry.job.id not in known
            )
            if never_arrived:
                log.info("job %s: %s does not have it; sending it again", entry.job.id, entry.name)
            if entry.state == "queued" or never_arrived:
                await self._dispatch(entry)  # one at a time: the node reconnects alone
            elif entry.cancel_requested:
                send = self.sessions.sender(node_id)
                if send is not None:
                    await send(proto.JobCancel(job_id=entry.job.id))

    async def on_output(self, node_id: str, msg: proto.JobOutput) -> None:
        entry = self.live.get((msg.job_id, node_id))
        if entry is None:
            return
        if entry.state == "sent":  # an empty chunk at offset 0 says the job started
            # Kept in memory only (the job document overlays it): the stored
            # row goes from sent to final with the result, one write per node.
            entry.state = "running"
            self._publish_state(entry.job.id, node_id, entry.name, "running")
        buf = entry.out[msg.stream]
        have = len(buf)
        end = msg.offset + len(msg.chunk)
        if msg.offset > have or end <= have:
            return  # a gap (never sent in order) or bytes we already have
        new = msg.chunk[have - msg.offset :]
        buf += new
        self.bus.publish(
            {
                "type": "output",
                "job_id": msg.job_id,
                "node_id": node_id,
                "node": entry.name,
                "stream": msg.stream,
                "offset": have,
                "data": base64.b64encode(new).decode(),
            }
        )

    async def on_result(
        self, node_id: str, msg: proto.JobResult, ack: Callable[[], Awaitable[None]]
    ) -> None:
        entry = self.live.get((msg.job_id, node_id))
        if entry is not None:
            state = OUTCOME_STATE[msg.outcome]
            result = NodeResult(
                node_id,
                entry.name,
                state,
                **_outcome(msg),
                stdout=bytes(entry.out["stdout"]),
                stderr=bytes(entry.out["stderr"]),
                stdout_truncated=msg.stdout_truncated,
                stderr_truncated=msg.stderr_truncated,
            )
            # Coalesced with the results arriving meanwhile: one transaction
            # for many nodes of a fan-out; acked only once committed.
            stored = await self._store_result((msg.job_id, result, self.clock()))
            self.live.discard(entry.key)
            if stored:  # not when the same result came twice at once
                self._publish_state(msg.job_id, node_id, entry.name, state, **_outcome(msg))
                self._maybe_done(msg.job_id)
        else:
            # Not open in memory: a re-sent result, or one for an entry marked lost.
            known = await self.db.read(self.store.get, msg.job_id)
            if known is not None and any(
                n.node_id == node_id and n.state == "lost" for n in known[1]
            ):
                result = NodeResult(node_id, "", OUTCOME_STATE[msg.outcome], **_outcome(msg))
                await self._store_result((msg.job_id, result, self.clock()))
        await ack()

    # --- internals ------------------------------------------------------

    async def _dispatch(self, *entries: Entry) -> None:
        """Send each entry's job.run, then record them all as sent in one transaction.

        One transaction for a whole fan-out, not one per node: a job for
        1,000 nodes is sent in well under a second.
        """
        sent: list[Entry] = []
        now = self.clock()
        for entry in entries:
            send = self.sessions.sender(entry.node_id)
            if send is None or self.live.get(entry.key) is not entry:
                continue  # offline, or finished meanwhile (cancelled, expired)
            job = entry.job
            service = proto.ServiceAction(**job.service) if job.service else None  # type: ignore[arg-type]
            await send(
                proto.JobRun(
                    job_id=job.id,
                    command=job.command,
                    service=service,
                    timeout=job.timeout,
                    output_cap=job.output_cap,
                    env=job.env,
                    cwd=job.cwd,
                )
            )
            entry.state = "sent"
            entry.sent_at = now
            sent.append(entry)
        if not sent:
            return
        await self.db.write(
            self.store.set_states, [(e.job.id, e.node_id, "sent", now) for e in sent]
        )
        for e in sent:
            self._publish_state(e.job.id, e.node_id, e.name, "sent")

    async def _finish_state(self, entry: Entry, state: str, error: str) -> None:
        assert state in FINAL_STATES
        self.live.discard(entry.key)
        await self.db.write(
            self.store.set_state, entry.job.id, entry.node_id, state, now=self.clock(), error=error
        )
        self._publish_state(entry.job.id, entry.node_id, entry.name, state, error=error)
        self._maybe_done(entry.job.id)

    def _publish_state(
        self, job_id: str, node_id: str, name: str, state: str, **fields: Any
    ) -> None:
        self.bus.publish(
            {
                "type": "state",
                "job_id": job_id,
                "node_id": node_id,
                "node": name,
                "state": state,
                **fields,
            }
        )

    def _maybe_done(self, job_id: str) -> None:
        if not self.is_open(job_id):
            self.bus.publish({"type": "done", "job_id": job_id})

    def is_open(self, job_id: str) -> bool:
        return self.live.has_job(job_id)

    async def job_doc(self, job_id: str, *, output: bool = True) -> dict[str, Any] | None:
        """The job as the API shows it: stored rows overlaid with live state and output."""
        stored = await self.db.read(self.store.get, job_id)
        if stored is None:
            return None
        job, nodes = stored
        docs = []
        for n in nodes:
            entry = self.live.get((job_id, n.node_id))
            if entry is not None:
                n.state = entry.state
                n.stdout, n.stderr = bytes(entry.out["stdout"]), bytes(entry.out["stderr"])
            docs.append(node_doc(n, output=output))
        return job_doc(job, docs)


class _Outcome(TypedDict):
    exit_code: int | None
    signal: int | None
    error: str | None
    duration: float | None


def _outcome(msg: proto.JobResult) -> _Outcome:
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
    open_ = any(n["state"] not in FINAL_STATES for n in nodes)
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
