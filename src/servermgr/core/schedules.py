"""Schedules: jobs Core submits by itself, every N seconds or at cron times.

A schedule holds a job exactly as ``POST /api/v1/jobs`` takes it; each run
is submitted through the scheduler as an ordinary job (principal
``schedule:<name>``), so its output, history, audit row and alerts on
failure are those of any job. When it runs and what happens to missed runs
is ``core/schedule_rules.py``; this module stores schedules (SQLite, table
``schedules``) and runs them.

    ScheduleRunner.serve
    └── every TICK s: due schedules -> claim each (conditional UPDATE) -> submit

The claim is what makes several Core processes sharing one database run a
schedule once: ``UPDATE ... SET next_run = <next> WHERE name = ? AND
next_run = <the due time read>`` changes one row for the first Core and none
for the others. A run is at most once: a Core that dies between its claim
and the submission loses that run (logged by nobody; the next one comes).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from servermgr.common.errors import StorageError
from servermgr.core import schedule_rules
from servermgr.core.entries import JobError
from servermgr.core.jobs_api import JobBody, job_spec
from servermgr.core.schedule_rules import Claim, When
from servermgr.core.scheduler import Scheduler
from servermgr.core.storage import Storage
from servermgr.core.writer import Database

log = logging.getLogger("servermgr.core.schedules")

TICK = 1.0  # seconds between looks for due schedules
PRINCIPAL_PREFIX = "schedule:"


class ScheduleExistsError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a schedule named {name!r} exists already (see: ctl schedule list)")
        self.name = name


@dataclass(frozen=True)
class Schedule:
    name: str
    when: When
    job: JobBody
    paused: bool
    created: float
    principal: str  # who made it
    next_run: float
    last_run: float | None = None  # due time of the last run taken
    last_job: str | None = None
    runs: int = 0
    missed: int = 0  # due times skipped because Core was down or the schedule paused

    def doc(self) -> dict[str, Any]:
        """The API document."""
        return {
            "name": self.name,
            "every": self.when.every,
            "cron": self.when.cron,
            "tz": self.when.tz if self.when.cron is not None else None,
            "describe": self.when.describe(),
            "target": self.job.target,
            "job": msgspec.to_builtins(self.job),
            "paused": self.paused,
            "created": self.created,
            "created_by": self.principal,
            "next_run": None if self.paused else self.next_run,
            "last_run": self.last_run,
            "last_job": self.last_job,
            "runs": self.runs,
            "missed": self.missed,
        }


_COLS = (
    "name, every, cron, tz, anchor, job, target, paused, created, principal, "
    "next_run, last_run, last_job, runs, missed"
)


def _row(r: tuple[Any, ...]) -> Schedule:
    (name, every, cron, tz, anchor, job, _target, paused, created, principal) = r[:10]
    next_run, last_run, last_job, runs, missed = r[10:]
    return Schedule(
        name=name,
        when=When(every=every, cron=cron, tz=tz, anchor=anchor),
        job=msgspec.json.decode(job, type=JobBody),
        paused=bool(paused),
        created=created,
        principal=principal,
        next_run=next_run,
        last_run=last_run,
        last_job=last_job,
        runs=runs,
        missed=missed,
    )


class ScheduleStore:
    """SQL for schedules (synchronous: called through ``Database`` in threads)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def add(self, s: Schedule) -> None:
        with self.storage.transaction() as conn:
            try:
                conn.execute(
                    f"INSERT INTO schedules ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        s.name,
                        s.when.every,
                        s.when.cron,
                        s.when.tz,
                        s.when.anchor,
                        msgspec.json.encode(s.job).decode(),
                        s.job.target,
                        int(s.paused),
                        s.created,
                        s.principal,
                        s.next_run,
                        s.last_run,
                        s.last_job,
                        s.runs,
                        s.missed,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ScheduleExistsError(s.name) from None
            _audit(conn, s.created, s.principal, "schedule.add", s, s.when.describe())

    def get(self, name: str) -> Schedule | None:
        with self.storage.reader() as conn:
            r = conn.execute(f"SELECT {_COLS} FROM schedules WHERE name = ?", (name,)).fetchone()
        return _row(r) if r else None

    def all(self) -> list[Schedule]:
        with self.storage.reader() as conn:
            rows = conn.execute(f"SELECT {_COLS} FROM schedules ORDER BY name").fetchall()
        return [_row(r) for r in rows]

    def due(self, now: float) -> list[Schedule]:
        with self.storage.reader() as conn:
            rows = conn.execute(
                f"SELECT {_COLS} FROM schedules WHERE paused = 0 AND next_run <= ? "
                "ORDER BY next_run LIMIT 1000",
                (now,),
            ).fetchall()
        return [_row(r) for r in rows]

    def remove(self, name: str, *, now: float, principal: str) -> Schedule | None:
        with self.storage.transaction() as conn:
            r = conn.execute(f"SELECT {_COLS} FROM schedules WHERE name = ?", (name,)).fetchone()
            if r is None:
                return None
            conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
            s = _row(r)
            _audit(conn, now, principal, "schedule.remove", s, s.when.describe())
            return s

    def set_paused(self, name: str, paused: bool, *, now: float, principal: str) -> Schedule | None:
        """Pause or resume; resuming sets the next due time from now (missed ones skipped)."""
        with self.storage.transaction() as conn:
            r = conn.execute(f"SELECT {_COLS} FROM schedules WHERE name = ?", (name,)).fetchone()
            if r is None:
                return None
            s = _row(r)
            if s.paused == paused:
                return s
            next_run = s.next_run
            if not paused:
                next_run = schedule_rules.next_due(s.when, now)
            conn.execute(
                "UPDATE schedules SET paused = ?, next_run = ? WHERE name = ?",
                (int(paused), next_run, name),
            )
            action = "schedule.pause" if paused else "schedule.resume"
            _audit(conn, now, principal, action, s, s.when.describe())
            return Schedule(**{**s.__dict__, "paused": paused, "next_run": next_run})

    def claim(self, name: str, claim: Claim) -> bool:
        """Take the run due at ``claim.due``; False when another Core took it first
        (or the schedule was paused, removed or changed meanwhile)."""
        with self.storage.transaction() as conn:
            cur = conn.execute(
                "UPDATE schedules SET next_run = ?, last_run = ?, last_job = NULL, "
                "runs = runs + 1, missed = missed + ? "
                "WHERE name = ? AND paused = 0 AND next_run = ?",
                (claim.next, claim.due, claim.missed, name, claim.due),
            )
            return cur.rowcount == 1

    def ran(self, name: str, due: float, job_id: str) -> None:
        """Record the job of the run due at ``due``."""
        with self.storage.transaction() as conn:
            conn.execute(
                "UPDATE schedules SET last_job = ? WHERE name = ? AND last_run = ?",
                (job_id, name, due),
            )


def _audit(
    conn: sqlite3.Connection, ts: float, principal: str, action: str, s: Schedule, detail: str
) -> None:
    command = s.job.command if s.job.command is not None else "(service action)"
    conn.execute(
        "INSERT INTO audit (ts, principal, action, target, detail) VALUES (?,?,?,?,?)",
        (ts, principal, action, s.job.target, f"{s.name}: {detail}: {command}"),
    )


class ScheduleRunner:
    """Finds due schedules and submits their runs as jobs."""

    def __init__(
        self, db: Database, jobs: Scheduler, *, clock: Callable[[], float], tick: float = TICK
    ) -> None:
        self.db = db
        self.store = ScheduleStore(db.storage)
        self.jobs = jobs
        self.clock = clock
        self.tick = tick

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        trouble = ""
        while True:
            try:
                await self.run_due()
            except (StorageError, sqlite3.Error) as exc:
                if str(exc) != trouble:  # disk full and the like: say it once, keep trying
                    log.warning("cannot run schedules now: %s", exc)
                trouble = str(exc)
            else:
                trouble = ""
            await trio.sleep(self.tick)

    async def run_due(self) -> int:
        """Submit every run due now that this Core wins; how many it submitted."""
        now = self.clock()
        submitted = 0
        for s in await self.db.read(self.store.due, now):
            claim = schedule_rules.plan_run(s.when, s.next_run, now)
            if claim is None:
                continue
            if not await self.db.write(self.store.claim, s.name, claim):
                continue  # another Core took it
            if claim.missed:
                log.warning(
                    "schedule %s: %d run(s) missed while Core was down or busy; ran once now",
                    s.name,
                    claim.missed,
                )
            if await self._submit(s, claim):
                submitted += 1
        return submitted

    async def _submit(self, s: Schedule, claim: Claim) -> bool:
        try:
            spec = job_spec(s.job)
            job_id = await self.jobs.submit(spec, principal=PRINCIPAL_PREFIX + s.name)
        except (JobError, ValueError) as exc:
            message = getattr(exc, "message", str(exc))
            log.warning("schedule %s: run not started: %s", s.name, message)
            return False
        await self.db.write(self.store.ran, s.name, claim.due, job_id)
        log.info("schedule %s: started job %s", s.name, job_id)
        return True
