"""Jobs: dispatch to nodes, fan-out, offline queue, timeouts, results.

A job targets nodes; each (job, node) pair is an entry whose state moves as
``core/jobstate.py`` says (that module holds every transition; this one
carries out their effects: sends, writes, events).

Dispatch never waits on a node inside a request: ``submit`` stores the job
and returns its id; each node's ``job.run`` is sent by a task of its own,
bounded by the gateway's send timeout, so a node that does not read its
socket delays nobody else. A node must answer a ``job.run`` (``job.accepted``,
output or a result) within ``accept_after`` seconds, else it is
stalled: disconnected, and its entry retried when it is back (the job may
still wait) or marked ``stalled``.

Entries not final yet live in memory (with the output received so far, at
most the job's ``output_cap`` per stream whatever the node sends) and in
SQLite, indexed by job and by node; final results are written once,
idempotently, then acked to the node. Every change is published on the
event bus for live streams. Entries, the job request and the documents
the API answers with are in ``core/entries.py``.

A job for a node not connected here goes into the job queue
(``core/jobqueue.py``): it waits there for the node (until the job's
deadline), or reaches the Core process the node is connected to. Whichever
Core holds the node runs its entry; results go to SQLite and events to the
bus, so the submitter's streams see them.

    serve()
    ├── tick every TICK s       expire queued, mark silent lost, unanswered stalled
    ├── take_routed             jobs the queue routes to nodes connected here
    └── short tasks             one send per (job, node): job.run / job.cancel
"""

from __future__ import annotations

import base64
import hmac
import logging
import secrets
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import msgspec
import trio

from servermgr.common import proto
from servermgr.common.errors import StorageUnavailableError
from servermgr.common.events import CORE_STOPPED, EventType
from servermgr.common.selector import select
from servermgr.core import jobstate
from servermgr.core.bus import EventBus, SubscriberTooSlow
from servermgr.core.entries import (
    Entry,
    JobError,
    JobSpec,
    OpenEntries,
    Sessions,
    job_doc,
    node_doc,
    outcome,
)
from servermgr.core.jobqueue import JobQueue
from servermgr.core.jobstate import Effect, State, Status
from servermgr.core.jobstore import JobRecord, JobStore, NodeResult
from servermgr.core.registry import NodeRegistry
from servermgr.core.status import StatusStore
from servermgr.core.writer import Database, GroupCommit, spawn_past_outages

log = logging.getLogger("servermgr.core.jobs")
ORPHAN_EVENTS = 100_000  # a dead Core's nodes going offline here at once

LOST_GRACE = 30.0
ACCEPT_AFTER = 5.0  # a node must answer a job.run within this, or it is stalled
TICK = 0.5
FEW = 32  # nodes looked up one by one in the status store; more: one read of all


class Scheduler:
    def __init__(
        self,
        db: Database,
        registry: NodeRegistry,
        sessions: Sessions,
        bus: EventBus,
        queue: JobQueue,
        status: StatusStore,
        *,
        core_id: str,
        shared: bool = False,
        peers_reachable: Callable[[], bool] = lambda: True,
        clock: Callable[[], float],
        accept_after: float = ACCEPT_AFTER,
        lost_grace: float = LOST_GRACE,
    ) -> None:
        self.db = db
        self.store = JobStore(db.storage)
        self.registry = registry
        self.sessions = sessions
        self.bus = bus
        self.queue = queue
        self.status = status
        self.core_id = core_id
        self.shared = shared  # other Core processes may hold nodes of this fleet
        self.peers_reachable = peers_reachable  # False while Redis is down
        self.clock = clock
        self.accept_after = accept_after
        self.lost_grace = lost_grace
        self.live = OpenEntries()
        # Entries that reached each final state since start (a late result after
        # "lost" counts again: it is a second outcome the operator hears of).
        self.finished: Counter[str] = Counter()
        self._store_result = GroupCommit(db, self.store.store_results)
        self._store_sent = GroupCommit(db, self.store.mark_sent)
        self._nursery: trio.Nursery | None = None
        self._key_locks: dict[str, trio.Lock] = {}
        # Jobs with entries that went through the queue: whether one is done
        # is for SQLite to say (some of its entries may run on another Core).
        self._routed: set[str] = set()
        # Jobs made here whose stdin comes on a stream (in memory only, as the
        # flag is): an entry read back from SQLite when its node comes back has it.
        self._stdin_streams: set[str] = set()

    # --- lifecycle ------------------------------------------------------

    async def load(self, node_id: str | None = None) -> None:
        """Reload entries that were not final when Core last stopped (or those of
        one node, that were another Core's)."""
        for job, node in await self.db.read(self.store.open_entries, node_id):
            if self.live.get(job.id, node.node_id) is not None:
                continue
            if node_id is not None:
                self._routed.add(job.id)  # its other entries may be open elsewhere
            # heard: whether it arrived is for the node's hello to say, not a stall.
            status = Status(State(node.state), sent_at=node.sent_at, heard=True)
            self.live.add(Entry(job, node.node_id, node.name, status))
        if self.live and node_id is None:
            log.info("%d job entries still open from before the restart", len(self.live))

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deadline checks every TICK s; the nursery of the per-node sends."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                nursery.start_soon(self._take_routed)
                if self.shared:
                    await nursery.start(self._follow_cancels)
                    await nursery.start(self._follow_dead_cores)
                task_status.started()
                while True:
                    await trio.sleep(TICK)
                    await self.tick()
            finally:
                self._nursery = None

    async def tick(self) -> None:
        """One pass of the deadline checks."""
        now = self.clock()
        due_now = []
        for entry in self.live.values():
            due = jobstate.due(entry.status, self._limits(entry.job))
            if due is not None and now > due:
                due_now.append(entry)
        elsewhere = await self._online_elsewhere([e.node_id for e in due_now])
        for entry in due_now:
            if entry.node_id in elsewhere:
                self.live.discard(entry)  # its node's Core carries it now
                continue
            await self._event(entry, jobstate.Tick(now, self.sessions.is_online(entry.node_id)))
        for node_id, job_id in await self.queue.expired(now):
            waited = await self._entry(job_id, node_id)
            if waited is not None:
                await self._event(waited, jobstate.Tick(now, False))

    async def _online_elsewhere(self, node_ids: list[str]) -> set[str]:
        """Of ``node_ids`` not connected here, those connected to another Core."""
        missing = [n for n in node_ids if not self.sessions.is_online(n)]
        if not missing or not self.shared:
            return set()
        if len(missing) <= FEW:
            found = [await self.status.get(n) for n in missing]
        else:
            found = list(await self.status.all())
        return {
            st.node_id
            for st in found
            if st is not None and st.online and st.core is not None and st.core != self.core_id
        }

    def _offline_reason(self) -> str:
        """Why a node not connected here does not run a job that may not wait."""
        if self.shared and not self.peers_reachable():
            return (
                "node is not connected to this Core, and Redis, through which the other "
                "Cores are reached, is down (use --wait to queue the job until it is back)"
            )
        return "node is offline (use --wait to queue the job)"

    async def _follow_dead_cores(self, task_status: trio.TaskStatus[None]) -> None:
        """Carry the open entries of a dead Core's nodes that connected nowhere else:
        nobody else would, so their jobs would stay open for ever. They end as
        any entry whose node went silent (lost after the job's timeout and the
        grace, expired past the deadline), unless the node comes back first."""
        # A dead Core's whole fleet comes at once (thousands of events, each a
        # read of SQLite here): room for it, and an overflow costs those nodes'
        # entries (log line), never Core (it stopped with 3,768 nodes at 1,024).
        started = False
        while True:
            try:
                async with self.bus.subscribe(
                    max_events=ORPHAN_EVENTS,
                    max_bytes=ORPHAN_EVENTS * 512,
                    match=lambda e: (
                        e["type"] == EventType.NODE_OFFLINE and e.get("reason") == CORE_STOPPED
                    ),
                    label="nodes of Cores that died",
                ) as orphans:
                    if not started:
                        started = True
                        task_status.started()
                    async for event in orphans:
                        if not self.sessions.is_online(event["node_id"]):
                            await self.load(event["node_id"])
            except SubscriberTooSlow as exc:
                log.warning("open jobs of a dead Core's nodes not all taken over: %s", exc)

    async def _follow_cancels(self, task_status: trio.TaskStatus[None]) -> None:
        """Cancel here what another Core process was asked to cancel."""
        async with self.bus.subscribe(
            match=lambda e: e["type"] == EventType.JOB_CANCEL and e.get("core") != self.core_id,
            label="job cancels from other Cores",
        ) as cancels:
            task_status.started()
            async for event in cancels:
                await self._cancel_here(event["job_id"])

    async def _take_routed(self) -> None:
        """Run the jobs the queue routes to nodes connected here."""
        while True:
            node_id, job_id = await self.queue.receive()
            await self._take(node_id, [job_id], known=None)

    async def _entry(self, job_id: str, node_id: str) -> Entry | None:
        """A queued entry for a job that came through the queue, from SQLite."""
        self._routed.add(job_id)
        stored = await self.db.read(self.store.get, job_id)
        if stored is None:
            return None
        job, nodes = stored
        if job_id in self._stdin_streams:
            job = replace(job, stdin_stream=True)
        for n in nodes:
            if n.node_id == node_id and n.state == State.QUEUED:
                return Entry(job, node_id, n.name, Status(State.QUEUED))
        return None  # final meanwhile (cancelled)

    async def _take(self, node_id: str, job_ids: list[str], known: set[str] | None) -> None:
        """Open the entries of ``job_ids`` for a node connected here, and send them."""
        now = self.clock()
        for job_id in job_ids:
            if self.live.get(job_id, node_id) is not None:
                continue
            entry = await self._entry(job_id, node_id)
            if entry is None:
                continue
            self.live.add(entry)
            has_job = None if known is None else job_id in known
            await self._event(entry, jobstate.NodeBack(now, has_job))

    # --- requests -------------------------------------------------------

    async def submit_once(
        self, spec: JobSpec, *, principal: str, key: str, digest: str
    ) -> tuple[str, bool]:
        """Submit unless ``key`` was used before: (job id, whether it was a replay).

        The same key with the same request (``digest``) is the job made the
        first time (a client's retry runs nothing twice); with another
        request it is refused (409). Submissions with one key go one at a time.
        """
        lock = self._key_locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                found = await self.db.read(self.store.by_idempotency_key, key)
                if found is not None:
                    job_id, was = found
                    if not hmac.compare_digest(was or "", digest):
                        raise JobError(
                            409,
                            "idempotency_conflict",
                            f"the idempotency key was used for another request (job {job_id}); "
                            "use a new key for a new job",
                        )
                    return job_id, True
                job_id = await self.submit(spec, principal=principal, idempotency=(key, digest))
                return job_id, False
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._key_locks.pop(key, None)

    async def submit(
        self, spec: JobSpec, *, principal: str, idempotency: tuple[str, str] | None = None
    ) -> str:
        if self._nursery is None:
            raise JobError(503, "shutting_down", "Core is not running jobs (shutting down)")
        nodes, unknown = select(spec.target, self.registry.all())
        if unknown:
            raise JobError(
                404,
                "not_found",
                f"unknown node(s): {', '.join(unknown)} (see: servermgr ctl nodes)",
            )
        if not nodes:
            raise JobError(404, "no_nodes", f"no node matches {spec.target.describe()!r}")
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
            stdin=spec.stdin,
            stdin_stream=spec.stdin_stream,
            deadline=now + spec.wait,
            principal=principal,
        )
        if spec.stdin_stream:
            self._stdin_streams.add(job.id)
        if spec.stdin_stream:
            for node in nodes:
                self._check_stdin(node.id, node.name)
                if self.shared and not self.sessions.is_online(node.id):
                    raise JobError(
                        409,
                        "not_here",
                        f"node {node.name} is not connected to this Core: its stdin cannot be "
                        "streamed through another (give -n, or ctl to the Core it is on)",
                    )
        entries, rows, routed = [], [], []
        elsewhere = await self._online_elsewhere([n.id for n in nodes])
        for node in nodes:
            if self.sessions.is_online(node.id):
                entries.append(Entry(job, node.id, node.name, Status(State.QUEUED)))
                rows.append(NodeResult(node.id, node.name, State.QUEUED))
            elif spec.wait > 0 or (node.id in elsewhere and self.peers_reachable()):
                routed.append(node.id)
                rows.append(NodeResult(node.id, node.name, State.QUEUED))
            else:
                rows.append(
                    NodeResult(
                        node.id,
                        node.name,
                        State.EXPIRED,
                        error=self._offline_reason(),
                        finished_at=now,
                    )
                )
        try:
            await self.db.write(self.store.create, job, rows, job.describe(), idempotency)
        except StorageUnavailableError:
            raise  # 503 storage_unavailable; Database logs it, once a minute
        except sqlite3.Error as exc:
            log.error("job not stored, so not run: %s", exc)
            raise JobError(
                503, "storage_error", f"Core could not store the job, so nothing was run ({exc})"
            ) from None
        log.info("job %s: %r on %d node(s) by %s", job.id, job.describe(), len(rows), principal)
        for entry in entries:
            self.live.add(entry)
        if routed:
            self._routed.add(job.id)
        for row in rows:
            self._publish_state(job.id, row.node_id, row.name, row.state, error=row.error)
        # A node connected to another Core gets a moment to be handed the job
        # even without --wait: its Core takes it from the queue at once.
        handover = max(job.deadline, now + self.accept_after)
        for node_id in routed:
            await self.queue.put(node_id, job.id, deadline=handover)
        for entry in entries:
            if self.sessions.is_online(entry.node_id):
                self._spawn(self._send_run, entry)
        await self._maybe_done(job.id)
        return job.id

    async def cancel(self, job_id: str) -> bool:
        """Cancel what has not finished; False if the job is unknown.

        Entries running on other Core processes are cancelled there: they
        hear it on the bus (``job.cancel``).
        """
        if self.shared:
            self.bus.publish({"type": EventType.JOB_CANCEL, "job_id": job_id, "core": self.core_id})
        return await self._cancel_here(job_id)

    async def _cancel_here(self, job_id: str) -> bool:
        for node_id in await self.queue.withdraw(job_id):
            entry = await self._entry(job_id, node_id)
            if entry is not None:
                await self._event(entry, jobstate.Cancel())
        entries = self.live.of_job(job_id)
        if not entries:
            return await self.db.read(self.store.get, job_id) is not None
        for entry in entries:
            await self._event(entry, jobstate.Cancel())
        return True

    # --- node events ----------------------------------------------------

    async def node_online(self, node_id: str, known: set[str] | None = None) -> None:
        """Send what waited for this node; repeat cancels it missed.

        ``known`` are the jobs the node says it has (its spool survives
        restarts): a job sent to it that it does not have never arrived, so
        it is sent again; one it has will have its result re-sent by the node.
        """
        now = self.clock()
        if self.shared:  # it may have been another Core's, with jobs open there
            await self.load(node_id)
        for entry in self.live.of_node(node_id):
            has_job = None if known is None else entry.job.id in known
            if has_job is False and entry.state is not State.QUEUED:
                log.info("job %s: %s does not have it; sending it again", entry.job.id, entry.name)
            await self._event(entry, jobstate.NodeBack(now, has_job))
        await self._take(node_id, await self.queue.claim(node_id), known)

    async def node_offline(self, node_id: str) -> None:
        """The node left this Core: jobs for it wait in the queue from now on."""
        await self.queue.release(node_id)

    async def on_accepted(self, node_id: str, msg: proto.JobAccepted) -> None:
        """The node took a job.run: it is alive and reads its socket."""
        entry = self.live.get(msg.job_id, node_id)
        if entry is not None:
            await self._event(entry, jobstate.Heard(self.clock(), started=False))

    async def on_output(self, node_id: str, msg: proto.JobOutput) -> None:
        entry = self.live.get(msg.job_id, node_id)
        if entry is None:
            return
        await self._event(entry, jobstate.Heard(self.clock()))
        buf = entry.out[msg.stream]
        have = len(buf)
        end = msg.offset + len(msg.chunk)
        if msg.offset > have or end <= have:
            return  # a gap (never sent in order) or bytes we already have
        new = msg.chunk[have - msg.offset :]
        room = entry.job.output_cap - have
        if len(new) > room:  # Core's own cap, whatever the node was told
            new = new[: max(0, room)]
            entry.cut[msg.stream] = True
            if not new:
                return
        buf += new
        self.bus.publish(
            {
                "type": EventType.JOB_OUTPUT,
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
        """Store the node's result once; ack it only when stored."""
        entry = self.live.get(msg.job_id, node_id)
        new = None
        if entry is not None:
            new, effects = jobstate.step(
                entry.status, jobstate.Result(msg.outcome), self._limits(entry.job)
            )
            if Effect.STORE_RESULT not in effects:
                entry = None
        if entry is not None and new is not None:
            result = NodeResult(
                node_id,
                entry.name,
                new.state,
                **outcome(msg),
                stdout=bytes(entry.out["stdout"]),
                stderr=bytes(entry.out["stderr"]),
                stdout_truncated=msg.stdout_truncated or entry.cut["stdout"],
                stderr_truncated=msg.stderr_truncated or entry.cut["stderr"],
            )
        else:
            # Not open here: re-sent, or late for an entry marked lost or
            # stalled (the store keeps the output it has and the first result).
            result = NodeResult(node_id, "", jobstate.OUTCOME[msg.outcome], **outcome(msg))
        try:
            # Coalesced with the results arriving meanwhile: one transaction
            # for many nodes of a fan-out; acked only once committed. The
            # entry stays open meanwhile (a second copy is stored once: the
            # store's own guard).
            stored = await self._store_result((msg.job_id, result, self.clock()))
        except StorageUnavailableError:
            # Not acked: the gateway closes the connection (1013), so the node sends
            # it again on the next one. Database logs the outage, once a minute.
            raise
        except sqlite3.Error as exc:
            log.error("job %s: could not store a result (%s); not acked", msg.job_id, exc)
            return  # the node keeps it and sends it again
        if entry is not None and new is not None and self.live.discard(entry):
            entry.status = new
        if stored:  # not when the same result came twice
            name = entry.name if entry is not None else self._name(node_id)
            self._publish_state(msg.job_id, node_id, name, result.state, **outcome(msg))
            await self._maybe_done(msg.job_id)
        await ack()

    # --- internals ------------------------------------------------------

    def _limits(self, job: JobRecord) -> jobstate.Limits:
        return jobstate.Limits(job.timeout, job.deadline, self.lost_grace, self.accept_after)

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        spawn_past_outages(self._nursery, fn, *args)

    def _name(self, node_id: str) -> str:
        row = self.registry.by_ref(node_id)
        return row.name if row is not None else node_id

    async def _event(self, entry: Entry, event: jobstate.Event) -> None:
        """Apply ``event`` to ``entry`` and carry out what the state machine says."""
        before = entry.status
        entry.status, effects = jobstate.step(before, event, self._limits(entry.job))
        if not effects:
            return
        if entry.state.final and not before.state.final:
            self.live.discard(entry)
        await self._carry_out(entry, effects)

    async def _carry_out(self, entry: Entry, effects: tuple[Effect, ...]) -> None:
        job_id, node_id = entry.key
        status = entry.status
        for effect in effects:
            if effect is Effect.SEND_RUN:
                self._spawn(self._send_run, entry)
            elif effect is Effect.SEND_CANCEL:
                self._spawn(self.sessions.deliver, node_id, proto.JobCancel(job_id=job_id))
            elif effect is Effect.DISCONNECT:
                if not self.sessions.is_online(node_id):
                    continue  # gone already (its other jobs stalled with it): said once
                log.warning("job %s: node %s stalled; disconnecting it", job_id, entry.name)
                self.sessions.disconnect_stalled(
                    node_id, f"stalled: job {job_id} not taken within {self.accept_after:g} s"
                )
            elif effect is Effect.STORE_SENT:
                await self._record_sent(entry)
            elif effect is Effect.STORE_FINAL:
                await self._store_final(entry)
            elif effect is Effect.PUBLISH:
                self._publish_state(job_id, node_id, entry.name, status.state, error=status.error)
        if Effect.STORE_FINAL in effects:
            await self._maybe_done(job_id)

    async def _send_run(self, entry: Entry) -> None:
        """Hand one entry's job.run to its node's connection (a task of its own)."""
        if self.live.get(*entry.key) is not entry:
            return  # finished meanwhile (cancelled, expired)
        before = entry.status
        entry.status, effects = jobstate.step(
            before, jobstate.Send(self.clock()), self._limits(entry.job)
        )
        if Effect.SEND_RUN not in effects:
            return
        # Published before the send: a node's answer can only come after it.
        self._publish_state(entry.job.id, entry.node_id, entry.name, State.SENT)
        sent_at = entry.status.sent_at
        job = entry.job
        service = proto.ServiceAction(**job.service) if job.service else None  # type: ignore[arg-type]
        if job.stdin_stream:
            try:
                self._check_stdin(entry.node_id, entry.name)
            except JobError as exc:  # came back (--wait) with an older agent
                await self._refuse(entry, exc.message)
                return
        delivery = await self.sessions.deliver(
            entry.node_id,
            proto.JobRun(
                job_id=job.id,
                command=job.command,
                service=service,
                timeout=job.timeout,
                output_cap=job.output_cap,
                env=job.env,
                cwd=job.cwd,
                stdin=job.stdin,
                stdin_stream=True if job.stdin_stream else msgspec.UNSET,
            ),
        )
        if entry.status.sent_at != sent_at or self.live.get(*entry.key) is not entry:
            return  # moved on meanwhile (a result came, a new send)
        if delivery == "stalled":
            await self._event(entry, jobstate.SendFailed(self.clock()))
        elif delivery == "sent":
            await self._record_sent(entry)
        # offline: it went away during the send; its hello will say whether it has it

    def _check_stdin(self, node_id: str, name: str) -> None:
        """A JobError if the node is online with an agent too old to stream stdin."""
        protocol = self.sessions.protocol_of(node_id)
        if protocol is not None and protocol < proto.STDIN_SINCE:
            raise JobError(
                409,
                "too_old",
                f"node {name} runs an agent too old to stream standard input (protocol "
                f"{protocol}, needs {proto.STDIN_SINCE}): give -n / --no-stdin, or upgrade it",
            )

    async def _refuse(self, entry: Entry, why: str) -> None:
        """End ``entry`` as refused without sending it, as if its node had said so."""
        result = proto.no_run(entry.job.id, "refused", why)
        await self.on_result(entry.node_id, result, _nothing)

    def stdin_entry(self, job_id: str, node_id: str) -> Entry | None:
        """The job's open entry on the node if that job takes its stdin as a stream."""
        entry = self.live.get(job_id, node_id)
        return entry if entry is not None and entry.job.stdin_stream else None

    async def _record_sent(self, entry: Entry) -> None:
        sent_at = entry.status.sent_at or self.clock()
        try:
            # Coalesced: a fan-out to 1,000 nodes is a few transactions, not 1,000.
            await self._store_sent((entry.job.id, entry.node_id, sent_at))
        except sqlite3.Error as exc:
            # It is on its way: memory says sent; after a restart the node's
            # hello says it has the job, so it is never sent twice.
            log.error(
                "job %s: sent to %s but not recorded as sent: %s", entry.job.id, entry.name, exc
            )

    async def _store_final(self, entry: Entry) -> None:
        """A final state reached without a result; the output received is kept."""
        status = entry.status
        try:
            await self.db.write(
                self.store.finish,
                NodeResult(
                    entry.node_id,
                    entry.name,
                    status.state,
                    error=status.error,
                    stdout=bytes(entry.out["stdout"]),
                    stderr=bytes(entry.out["stderr"]),
                    stdout_truncated=entry.cut["stdout"],
                    stderr_truncated=entry.cut["stderr"],
                ),
                entry.job.id,
                now=self.clock(),
            )
        except sqlite3.Error as exc:
            log.error(
                "job %s: %s is %s, but that was not stored: %s",
                entry.job.id,
                entry.name,
                status.state,
                exc,
            )

    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(open entries by state now, entries that reached each final state since start)."""
        open_now = Counter(str(e.state) for e in self.live.values())
        return {s.value: open_now[s.value] for s in jobstate.OPEN}, dict(self.finished)

    def _publish_state(
        self, job_id: str, node_id: str, name: str, state: str, **fields: Any
    ) -> None:
        if state not in jobstate.OPEN:
            self.finished[str(state)] += 1
        self.bus.publish(
            {
                "type": EventType.JOB_STATE,
                "job_id": job_id,
                "node_id": node_id,
                "node": name,
                "state": str(state),
                **fields,
            }
        )

    async def _maybe_done(self, job_id: str) -> None:
        """Publish ``job.done`` once no entry of the job is open (here, or anywhere
        for a job that went through the queue)."""
        if self.live.has_job(job_id):
            return
        if job_id in self._routed:
            if await self.db.read(self.store.is_open, job_id) or self.live.has_job(job_id):
                return
            self._routed.discard(job_id)
        self._stdin_streams.discard(job_id)
        self.bus.publish({"type": EventType.JOB_DONE, "job_id": job_id})

    async def job_doc(self, job_id: str, *, output: bool = True) -> dict[str, Any] | None:
        """The job as the API shows it: stored rows overlaid with live state and output."""
        stored = await self.db.read(self.store.get, job_id)
        if stored is None:
            return None
        job, nodes = stored
        docs = []
        for n in nodes:
            entry = self.live.get(job_id, n.node_id)
            if entry is None:
                docs.append(node_doc(n, output=output))
                continue
            out = entry.out
            n = replace(
                n,
                state=entry.state,
                error=entry.status.error,
                sent_at=entry.status.sent_at,
                # Copied only when shown: a live entry may hold 2 x 16 MiB.
                stdout=bytes(out["stdout"]) if output else b"",
                stderr=bytes(out["stderr"]) if output else b"",
                stdout_truncated=entry.cut["stdout"],
                stderr_truncated=entry.cut["stderr"],
            )
            doc = node_doc(n, output=output)
            doc["stdout_bytes"], doc["stderr_bytes"] = len(out["stdout"]), len(out["stderr"])
            docs.append(doc)
        return job_doc(job, docs)


async def _nothing() -> None:
    """The ack of a result no node sent."""
