"""Alert tables in Core's database: rules, silences, live alerts, history, deliveries.

The functions take a ``Storage`` and run synchronously; Core calls them
through its ``Database`` (writes serialized with every other write).
History (transitions, deliveries) is kept for ``KEEP`` and pruned hourly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from servermgr.common import limits
from servermgr.common.alertrule import Rule, RuleDoc, check_rule
from servermgr.core.alertstate import Alert, Key, State, Transition
from servermgr.core.storage import Storage

KEEP = 90 * 86400.0
MAX_LISTED = limits.ALERT_ROWS


@dataclass(frozen=True)
class Silence:
    id: int
    scope: str  # "node" (ref: node id) or "rule" (ref: rule name)
    ref: str
    label: str  # what the operator typed: a node's name or a rule's name
    until: float
    created: float
    created_by: str

    def doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "target": self.label,
            "until": self.until,
            "created": self.created,
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class Delivery:
    """One attempt to tell a receiver, and how it went."""

    ts: float
    receiver: str
    kind: str  # firing, resolved, repeat
    key: Key
    node: str
    attempt: int
    outcome: str  # sent, failed (will retry), gave_up, dropped (queue full)
    detail: str


# --- rules -------------------------------------------------------------------


def load_rules(storage: Storage) -> list[Rule]:
    with storage.reader() as conn:
        rows = conn.execute("SELECT doc FROM alert_rules ORDER BY name").fetchall()
    return [check_rule(msgspec.json.decode(doc, type=RuleDoc)) for (doc,) in rows]


def add_rule(storage: Storage, doc: RuleDoc, now: float, by: str) -> bool:
    """False when a rule of that name is stored already."""
    with storage.transaction() as conn:
        cur = conn.execute(
            "INSERT OR IGNORE INTO alert_rules (name, doc, created, created_by) "
            "VALUES (?, ?, ?, ?)",
            (doc.name, msgspec.json.encode(doc).decode(), now, by),
        )
        return cur.rowcount == 1


def remove_rule(storage: Storage, name: str) -> bool:
    with storage.transaction() as conn:
        removed = conn.execute("DELETE FROM alert_rules WHERE name = ?", (name,)).rowcount == 1
        conn.execute("DELETE FROM alert_active WHERE rule = ?", (name,))
        return removed


# --- silences ----------------------------------------------------------------


def add_silence(
    storage: Storage, scope: str, ref: str, label: str, until: float, now: float, by: str
) -> Silence:
    with storage.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO alert_silences (scope, ref, label, until, created, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (scope, ref, label, until, now, by),
        )
        assert cur.lastrowid is not None
        return Silence(cur.lastrowid, scope, ref, label, until, now, by)


def remove_silence(storage: Storage, silence_id: int) -> bool:
    with storage.transaction() as conn:
        return conn.execute("DELETE FROM alert_silences WHERE id = ?", (silence_id,)).rowcount == 1


def load_silences(storage: Storage, now: float) -> list[Silence]:
    with storage.reader() as conn:
        rows = conn.execute(
            "SELECT id, scope, ref, label, until, created, created_by FROM alert_silences "
            "WHERE until > ? ORDER BY id",
            (now,),
        ).fetchall()
    return [Silence(*row) for row in rows]


# --- live alerts and history -------------------------------------------------


def load_active(storage: Storage) -> list[Alert]:
    with storage.reader() as conn:
        rows = conn.execute(
            "SELECT rule, node_id, subject, state, since, started, value, notified, notified_at "
            "FROM alert_active"
        ).fetchall()
    return [
        Alert(
            Key(rule, node_id, subject),
            State(state),
            since,
            started,
            value,
            State(notified) if notified else None,
            notified_at,
        )
        for rule, node_id, subject, state, since, started, value, notified, notified_at in rows
    ]


def record(
    storage: Storage,
    transitions: Sequence[tuple[Transition, str]],
    changed: Iterable[tuple[Key, Alert | None]],
    deliveries: Sequence[Delivery],
) -> None:
    """One transaction: transitions (with node names), the alerts as they are now
    (None: gone), delivery attempts."""
    with storage.transaction() as conn:
        conn.executemany(
            "INSERT INTO alert_events (ts, rule, node_id, node, subject, old, new, value) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (t.at, t.key.rule, t.key.node_id, node, t.key.subject, t.old, t.new, t.value)
                for t, node in transitions
            ],
        )
        for key, alert in changed:
            if alert is None:
                conn.execute(
                    "DELETE FROM alert_active WHERE rule = ? AND node_id = ? AND subject = ?",
                    (key.rule, key.node_id, key.subject),
                )
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO alert_active (rule, node_id, subject, state, since, "
                    "started, value, notified, notified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key.rule,
                        key.node_id,
                        key.subject,
                        alert.state,
                        alert.since,
                        alert.started,
                        alert.value,
                        alert.notified,
                        alert.notified_at,
                    ),
                )
        conn.executemany(
            "INSERT INTO alert_deliveries (ts, receiver, kind, rule, node_id, node, subject, "
            "attempt, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    d.ts,
                    d.receiver,
                    d.kind,
                    d.key.rule,
                    d.key.node_id,
                    d.node,
                    d.key.subject,
                    d.attempt,
                    d.outcome,
                    d.detail,
                )
                for d in deliveries
            ],
        )


def history(storage: Storage, since: float, limit: int) -> list[dict[str, Any]]:
    """Transitions from ``since``, newest last (at most ``limit``, the newest kept)."""
    with storage.reader() as conn:
        rows = conn.execute(
            "SELECT ts, rule, node_id, node, subject, old, new, value FROM alert_events "
            "WHERE ts >= ? ORDER BY id DESC LIMIT ?",
            (since, limit),
        ).fetchall()
    keys = ("ts", "rule", "node_id", "node", "subject", "from", "to", "value")
    return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]


def deliveries(storage: Storage, since: float, limit: int) -> list[dict[str, Any]]:
    with storage.reader() as conn:
        rows = conn.execute(
            "SELECT ts, receiver, kind, rule, node_id, node, subject, attempt, outcome, detail "
            "FROM alert_deliveries WHERE ts >= ? ORDER BY id DESC LIMIT ?",
            (since, limit),
        ).fetchall()
    keys = (
        "ts",
        "receiver",
        "kind",
        "rule",
        "node_id",
        "node",
        "subject",
        "attempt",
        "outcome",
        "detail",
    )
    return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]


def prune(storage: Storage, before: float) -> None:
    with storage.transaction() as conn:
        conn.execute("DELETE FROM alert_events WHERE ts < ?", (before,))
        conn.execute("DELETE FROM alert_deliveries WHERE ts < ?", (before,))
        conn.execute("DELETE FROM alert_silences WHERE until < ?", (before,))
