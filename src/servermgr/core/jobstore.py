"""SQL for jobs, per-node results and the audit log (synchronous; run in threads).

A job row says what was asked; a job_nodes row per targeted node says what
happened there. Results are stored idempotently by (job id, node id): a
result for a node already in a final state changes nothing, so a re-sent
result is recorded once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from servermgr.core.jobstate import LATE, OPEN, State
from servermgr.core.storage import Storage

FINAL_STATES = frozenset(str(s) for s in State if s.final)
OPEN_STATES = frozenset(str(s) for s in OPEN)


def _sql_set(states: frozenset[State]) -> str:
    return "(" + ", ".join(f"'{s}'" for s in sorted(states)) + ")"


_OPEN = _sql_set(OPEN)
# A result may still land on a node marked lost or stalled: it came back after all.
_ACCEPTS_RESULT = _sql_set(OPEN | LATE)


@dataclass(frozen=True)
class JobRecord:
    id: str
    created: float
    command: str | None
    service: dict[str, str] | None
    target: str
    timeout: float
    output_cap: int
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    deadline: float = 0.0
    principal: str = "core-key"
    # Held in memory only (a job with stdin runs at once: it is never queued).
    stdin: bytes | None = None
    stdin_stream: bool = False  # in memory only too: a job.run re-sent after a restart has none

    def describe(self) -> str:
        if self.service:
            return f"systemctl {self.service['action']} {self.service['unit']}"
        return self.command or ""


@dataclass
class NodeResult:
    node_id: str
    name: str
    state: str
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    sent_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False


_JOB_COLS = (
    "id, created, command, service, target, timeout, output_cap, env, cwd, deadline, principal"
)
_NODE_COLS = (
    "node_id, node_name, state, exit_code, signal, error, sent_at, finished_at, duration, "
    "stdout, stderr, stdout_truncated, stderr_truncated"
)


def _job(row: tuple[Any, ...]) -> JobRecord:
    id_, created, command, service, target, timeout, cap, env, cwd, deadline, principal = row
    return JobRecord(
        id=id_,
        created=created,
        command=command,
        service=json.loads(service) if service else None,
        target=target,
        timeout=timeout,
        output_cap=cap,
        env=json.loads(env),
        cwd=cwd,
        deadline=deadline,
        principal=principal,
    )


def _node(row: tuple[Any, ...]) -> NodeResult:
    return NodeResult(
        node_id=row[0],
        name=row[1],
        state=row[2],
        exit_code=row[3],
        signal=row[4],
        error=row[5],
        sent_at=row[6],
        finished_at=row[7],
        duration=row[8],
        stdout=bytes(row[9]),
        stderr=bytes(row[10]),
        stdout_truncated=bool(row[11]),
        stderr_truncated=bool(row[12]),
    )


def _filters(*conditions: tuple[str, Any]) -> tuple[list[str], list[Any]]:
    """The SQL conditions (and their arguments) whose value is given (not None)."""
    given = [(sql, value) for sql, value in conditions if value is not None]
    return [sql for sql, _ in given], [value for _, value in given]


class JobStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def create(
        self,
        job: JobRecord,
        nodes: list[NodeResult],
        audit_detail: str,
        idempotency: tuple[str, str] | None = None,
    ) -> None:
        """Store a new job; ``idempotency`` is its (key, request digest), if given."""
        with self.storage.transaction() as conn:
            conn.execute(
                f"INSERT INTO jobs ({_JOB_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.id,
                    job.created,
                    job.command,
                    json.dumps(job.service) if job.service else None,
                    job.target,
                    job.timeout,
                    job.output_cap,
                    json.dumps(job.env),
                    job.cwd,
                    job.deadline,
                    job.principal,
                ),
            )
            if idempotency is not None:
                conn.execute(
                    "UPDATE jobs SET idempotency_key = ?, request_digest = ? WHERE id = ?",
                    (*idempotency, job.id),
                )
            conn.executemany(
                "INSERT INTO job_nodes (job_id, node_id, node_name, state, error, finished_at) "
                "VALUES (?,?,?,?,?,?)",
                [(job.id, n.node_id, n.name, n.state, n.error, n.finished_at) for n in nodes],
            )
            conn.execute(
                "INSERT INTO audit (ts, principal, action, target, detail, job_id) "
                "VALUES (?,?,?,?,?,?)",
                (
                    job.created,
                    job.principal,
                    "service" if job.service else "exec",
                    job.target,
                    audit_detail,
                    job.id,
                ),
            )
            self._audit_outcome(conn, job.id)  # every node may be final already (offline)

    def mark_sent(self, items: Sequence[tuple[str, str, float]]) -> list[None]:
        """Many ``(job id, node id, sent at)`` entries recorded as sent, one transaction."""
        with self.storage.transaction() as conn:
            conn.executemany(
                f"UPDATE job_nodes SET state = 'sent', sent_at = ?3 "
                f"WHERE job_id = ?1 AND node_id = ?2 AND state IN {_OPEN}",
                items,
            )
        return [None] * len(items)

    def finish(self, result: NodeResult, job_id: str, *, now: float) -> bool:
        """An open entry final without a node's result (expired, lost, stalled,
        cancelled), with the output received so far; False if it was final already."""
        with self.storage.transaction() as conn:
            cur = conn.execute(
                "UPDATE job_nodes SET state = ?, error = coalesce(?, error), finished_at = ?, "
                "stdout = ?, stderr = ?, stdout_truncated = ?, stderr_truncated = ? "
                f"WHERE job_id = ? AND node_id = ? AND state IN {_OPEN}",
                (
                    result.state,
                    result.error,
                    now,
                    result.stdout,
                    result.stderr,
                    result.stdout_truncated,
                    result.stderr_truncated,
                    job_id,
                    result.node_id,
                ),
            )
            changed = cur.rowcount > 0
            if changed:
                self._audit_outcome(conn, job_id)
        return changed

    def store_results(self, items: Sequence[tuple[str, NodeResult, float]]) -> list[bool]:
        """Record final results ``(job id, result, now)`` once each, in one transaction.

        Each is True if stored, False if that entry had a final result
        already. The audit outcome is recomputed once per job, not per result.
        """
        changed = []
        jobs: set[str] = set()
        with self.storage.transaction() as conn:
            for job_id, result, now in items:
                # A late result (after lost/stalled) comes without the output
                # Core kept: never replace output with less of it.
                cur = conn.execute(
                    "UPDATE job_nodes SET state = :state, exit_code = :exit_code, "
                    "signal = :signal, error = :error, finished_at = :now, duration = :duration, "
                    "stdout = CASE WHEN length(:stdout) >= length(stdout) "
                    "THEN :stdout ELSE stdout END, "
                    "stderr = CASE WHEN length(:stderr) >= length(stderr) "
                    "THEN :stderr ELSE stderr END, "
                    "stdout_truncated = max(stdout_truncated, :stdout_truncated), "
                    "stderr_truncated = max(stderr_truncated, :stderr_truncated) "
                    "WHERE job_id = :job_id AND node_id = :node_id "
                    f"AND state IN {_ACCEPTS_RESULT}",
                    {
                        "state": result.state,
                        "exit_code": result.exit_code,
                        "signal": result.signal,
                        "error": result.error,
                        "now": now,
                        "duration": result.duration,
                        "stdout": result.stdout,
                        "stderr": result.stderr,
                        "stdout_truncated": result.stdout_truncated,
                        "stderr_truncated": result.stderr_truncated,
                        "job_id": job_id,
                        "node_id": result.node_id,
                    },
                )
                changed.append(cur.rowcount > 0)
                if cur.rowcount > 0:
                    jobs.add(job_id)
            for job_id in jobs:
                self._audit_outcome(conn, job_id)
        return changed

    def _audit_outcome(self, conn: Any, job_id: str) -> None:
        """When every node of a job is final, write its outcome into the audit row."""
        rows = conn.execute(
            "SELECT state, count(*) FROM job_nodes WHERE job_id = ? GROUP BY state", (job_id,)
        ).fetchall()
        counts = dict(rows)
        if any(s in OPEN_STATES for s in counts):
            return
        outcome = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        conn.execute("UPDATE audit SET outcome = ? WHERE job_id = ?", (outcome, job_id))

    def get(self, job_id: str) -> tuple[JobRecord, list[NodeResult]] | None:
        with self.storage.reader() as conn:
            row = conn.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            nodes = conn.execute(
                f"SELECT {_NODE_COLS} FROM job_nodes WHERE job_id = ? ORDER BY node_name",
                (job_id,),
            ).fetchall()
        return _job(row), [_node(n) for n in nodes]

    def by_idempotency_key(self, key: str) -> tuple[str, str] | None:
        """The (job id, request digest) submitted with ``key``, if any."""
        with self.storage.reader() as conn:
            row = conn.execute(
                "SELECT id, request_digest FROM jobs WHERE idempotency_key = ?", (key,)
            ).fetchone()
        return (row[0], row[1]) if row is not None else None

    def output_range(
        self, job_id: str, node_id: str, stream: str, offset: int, limit: int
    ) -> bytes:
        """Up to ``limit`` bytes of one node's stored ``stream`` from byte ``offset``."""
        column = {"stdout": "stdout", "stderr": "stderr"}[stream]
        with self.storage.reader() as conn:
            row = conn.execute(
                f"SELECT substr({column}, ?, ?) FROM job_nodes WHERE job_id = ? AND node_id = ?",
                (offset + 1, limit, job_id, node_id),
            ).fetchone()
        return bytes(row[0]) if row is not None and row[0] is not None else b""

    def list_jobs(
        self,
        *,
        node_id: str | None = None,
        state: str | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[tuple[JobRecord, dict[str, int]]]:
        """Jobs newest first, each with its count of nodes per state."""
        where, args = _filters(("j.created < ?", before))
        sub, sub_args = _filters(("n.node_id = ?", node_id), ("n.state = ?", state))
        if sub:
            where.append(
                f"EXISTS (SELECT 1 FROM job_nodes n WHERE n.job_id = j.id AND {' AND '.join(sub)})"
            )
            args += sub_args
        sql = f"SELECT {', '.join('j.' + c.strip() for c in _JOB_COLS.split(','))} FROM jobs j"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY j.created DESC LIMIT ?"
        with self.storage.reader() as conn:
            jobs = [_job(r) for r in conn.execute(sql, (*args, limit)).fetchall()]
            out = []
            for job in jobs:
                counts = dict(
                    conn.execute(
                        "SELECT state, count(*) FROM job_nodes WHERE job_id = ? GROUP BY state",
                        (job.id,),
                    ).fetchall()
                )
                out.append((job, counts))
        return out

    def is_open(self, job_id: str) -> bool:
        """Whether some node of the job is not final yet (on whichever Core)."""
        with self.storage.reader() as conn:
            row = conn.execute(
                f"SELECT 1 FROM job_nodes WHERE job_id = ? AND state IN {_OPEN} LIMIT 1",
                (job_id,),
            ).fetchone()
        return row is not None

    def open_jobs(self) -> list[tuple[str, str, str]]:
        """(job id, node id, node name) of every entry not final yet."""
        with self.storage.reader() as conn:
            rows = conn.execute(
                f"SELECT job_id, node_id, node_name FROM job_nodes WHERE state IN {_OPEN}"
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def open_entries(self, node_id: str | None = None) -> list[tuple[JobRecord, NodeResult]]:
        """Every (job, node) not final yet (of one node): Core reloads these after a
        restart, and when a node that was connected to another Core connects."""
        where = f"n.state IN {_OPEN}"
        args: tuple[str, ...] = ()
        if node_id is not None:
            where, args = f"n.node_id = ? AND {where}", (node_id,)
        with self.storage.reader() as conn:
            rows = conn.execute(
                f"SELECT {', '.join('j.' + c.strip() for c in _JOB_COLS.split(','))}, "
                f"{', '.join('n.' + c.strip() for c in _NODE_COLS.split(','))} "
                "FROM job_nodes n JOIN jobs j ON j.id = n.job_id "
                f"WHERE {where} ORDER BY j.created",
                args,
            ).fetchall()
        return [(_job(r[:11]), _node(r[11:])) for r in rows]

    def record_audit(
        self, ts: float, principal: str, action: str, target: str, detail: str, outcome: str
    ) -> None:
        """One audit row for what is not a job (file transfers, shell sessions)."""
        with self.storage.transaction() as conn:
            conn.execute(
                "INSERT INTO audit (ts, principal, action, target, detail, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (ts, principal, action, target, detail, outcome),
            )

    def audit(
        self,
        *,
        limit: int = 100,
        since: float | None = None,
        principal: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[dict[str, Any]]:
        where, args = _filters(
            ("ts >= ?", since),
            ("principal = ?", principal),
            ("action = ?", action),
            ("target = ?", target),
        )
        sql = "SELECT ts, principal, action, target, detail, job_id, outcome FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        with self.storage.reader() as conn:
            rows = conn.execute(sql, (*args, limit)).fetchall()
        keys = ("ts", "principal", "action", "target", "detail", "job_id", "outcome")
        return [dict(zip(keys, r, strict=True)) for r in rows]
