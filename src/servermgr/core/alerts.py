"""Alert rules evaluated on the live status, as it changes.

The gateway's status updates reach the engine through ``AlertingStatus``
(a ``StatusStore`` that tells the engine, then the real store): each sample
is checked against the rules of its node only (kept per node, recomputed
when rules or the node's labels change), and a node that goes offline
starts its offline rules' timers. Nothing scans the fleet: the serve loop
wakes for the next due time (a pending alert's 'for', a repeat) and, while
notices wait behind a silence or quiet hours, once a second for those.
Job results come from the event bus.

Transitions go to the event bus (``alert.pending``, ``alert.firing``,
``alert.resolved``, ``alert.cleared``), to the database (``AlertLog``) and,
when receivers are owed a notice (``alertstate.owed``), to the ``Notifier``.
The life cycle itself is ``core/alertstate.py``.
"""

from __future__ import annotations

import heapq
import logging
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import trio

from servermgr.common import proto
from servermgr.common.alertconfig import AlertsConfig
from servermgr.common.alertrule import Rule, selects
from servermgr.common.events import EventType
from servermgr.core import alertstate
from servermgr.core.alertlog import AlertLog
from servermgr.core.alertstate import Alert, Key, State, Transition
from servermgr.core.alertstore import Silence
from servermgr.core.bus import EventBus, SubscriberTooSlow
from servermgr.core.notify import Notifier
from servermgr.core.registry import NodeRegistry
from servermgr.core.status import LiveStatus, StatusStore
from servermgr.core.storage import NodeRow

log = logging.getLogger("servermgr.core.alerts")

EVENT_PREFIX = "alert."
MUTED_CHECK = 1.0
JOB_FAILED = frozenset({"failed", "timed_out"})
JOB_OK = frozenset({"succeeded"})


def _node_rules(rules: Iterable[Rule], node_id: str, row: NodeRow) -> tuple[Rule, ...]:
    return tuple(r for r in rules if selects(r, node_id, row.name, row.labels))


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True, slots=True)
class _NodeChecks:
    """One node's rules as of rules ``version`` and its labels and name; metric rules
    as (rule, Sample field or mount, comparison, threshold): a sample costs a few
    lookups and one comparison per rule."""

    version: int
    labels: Mapping[str, str]
    name: str
    rules: tuple[Rule, ...]
    fields: tuple[tuple[Rule, str, Callable[[float, float], bool], float], ...]
    disks: tuple[tuple[Rule, str | None, Callable[[float, float], bool], float], ...]

    @classmethod
    def of(
        cls, version: int, labels: Mapping[str, str], name: str, rules: tuple[Rule, ...]
    ) -> _NodeChecks:
        fields = []
        disks = []
        for r in rules:
            c = r.condition
            if c.kind != "metric":
                continue
            if c.field is not None:
                fields.append((r, c.field, _OPS[c.op], c.threshold))
            else:
                disks.append((r, c.mount, _OPS[c.op], c.threshold))
        return cls(version, labels, name, rules, tuple(fields), tuple(disks))


_NO_CHECKS = _NodeChecks(-1, {}, "", (), (), ())


def _due(alert: Alert, rule: Rule) -> float | None:
    """When time alone changes ``alert``: a pending offline alert fires, a firing one
    repeats. A metric alert fires only on a reading that still breaches."""
    if alert.state == State.PENDING and rule.condition.kind == "metric":
        return None
    return alertstate.next_due(alert, rule.hold, rule.renotify)


class AlertEngine:
    def __init__(
        self,
        config: AlertsConfig,
        registry: NodeRegistry,
        bus: EventBus,
        notifier: Notifier,
        alert_log: AlertLog,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.registry = registry
        self.bus = bus
        self.notifier = notifier
        self.log = alert_log
        self.clock = clock
        self.rules: dict[str, Rule] = {r.name: r for r in config.rules}
        self.silences: list[Silence] = []
        self._version = 0
        self._cache: dict[str, _NodeChecks] = {}  # per node, recomputed when stale
        self._alerts: dict[str, dict[tuple[str, str], Alert]] = {}  # node id -> (rule, subject)
        self._due: list[tuple[float, int, Key]] = []
        self._seq = 0
        self._muted: set[Key] = set()
        self._wake = trio.Event()
        self._stopping = False
        self._rules_changed = trio.Event()
        self._jobs_scope: trio.CancelScope | None = None
        self._zone: tzinfo = UTC
        if config.timezone != "UTC":
            import zoneinfo

            self._zone = zoneinfo.ZoneInfo(config.timezone)

    # --- set-up -----------------------------------------------------------

    def load(
        self, api_rules: Iterable[Rule], silences: Iterable[Silence], active: Iterable[Alert]
    ) -> None:
        """What the database holds, at start (before any sample)."""
        for rule in api_rules:
            self.rules.setdefault(rule.name, rule)
        self.silences = list(silences)
        for alert in active:
            if alert.key.rule in self.rules and self.registry.by_id(alert.key.node_id) is not None:
                self._put(alert)
        self._changed_rules()

    def stop(self) -> None:
        """Core is stopping: its nodes disconnecting now are not offline alerts."""
        self._stopping = True

    def start_offline(self, node_ids: Iterable[str]) -> None:
        """Nodes not connected when Core starts are offline from now (their rules' 'for' runs)."""
        for node_id in node_ids:
            self.node_offline(node_id)

    def _changed_rules(self) -> None:
        self._version += 1
        self._rules_changed.set()
        self._rules_changed = trio.Event()
        if self._jobs_scope is not None and not self._wants_jobs():
            self._jobs_scope.cancel()  # no rule needs job results any more

    def add_rule(self, rule: Rule) -> None:
        self.rules[rule.name] = rule
        self._changed_rules()

    def remove_rule(self, name: str) -> None:
        self.rules.pop(name, None)
        self._changed_rules()
        for node_id, alerts in list(self._alerts.items()):
            for slot in [s for s in alerts if s[0] == name]:
                del alerts[slot]
                self.log.alert(Key(name, node_id, slot[1]), None)

    def set_silences(self, silences: list[Silence]) -> None:
        self.silences = silences
        self._wake.set()

    # --- queries ----------------------------------------------------------

    def active(self) -> list[Alert]:
        return [a for alerts in self._alerts.values() for a in alerts.values()]

    def by_state(self) -> dict[str, int]:
        """How many alerts are pending and firing (resolved ones still owed a notice
        are counted as resolved), for /metrics."""
        out = {State.PENDING.value: 0, State.FIRING.value: 0}
        for alerts in self._alerts.values():
            for a in alerts.values():
                out[a.state.value] = out.get(a.state.value, 0) + 1
        return out

    def firing_count(self, node_id: str) -> int:
        alerts = self._alerts.get(node_id)
        return sum(1 for a in alerts.values() if a.state == State.FIRING) if alerts else 0

    def muted(self, rule: str, node_id: str, now: float) -> bool:
        for s in self.silences:
            if s.until > now and s.ref == (node_id if s.scope == "node" else rule):
                return True
        if self.config.quiet_hours:
            t = datetime.fromtimestamp(now, self._zone)
            return alertstate.in_quiet_hours(t.hour * 60 + t.minute, self.config.quiet_hours)
        return False

    # --- inputs (sync, cheap: called on the heartbeat path) ---------------

    def _rules_of(self, node_id: str) -> tuple[Rule, ...]:
        return self._checks_of(node_id).rules

    def _checks_of(self, node_id: str) -> _NodeChecks:
        """The node's rules, and its metric checks laid out for ``sample``."""
        row = self.registry.by_id(node_id)
        if row is None:
            return _NO_CHECKS
        cached = self._cache.get(node_id)
        if (
            cached is not None
            and cached.version == self._version
            and cached.labels is row.labels
            and cached.name == row.name
        ):
            return cached
        checks = _NodeChecks.of(
            self._version, row.labels, row.name, _node_rules(self.rules.values(), node_id, row)
        )
        self._cache[node_id] = checks
        return checks

    def sample(self, node_id: str, sample: proto.Sample, now: float) -> None:
        if not self.rules:  # the common case, per heartbeat: nothing to look up
            return
        checks = self._checks_of(node_id)
        alerts = self._alerts.get(node_id)
        for rule, field, compare, threshold in checks.fields:
            value = getattr(sample, field)
            if value is None:
                continue
            breaching = compare(value, threshold)
            if breaching or (alerts and (rule.name, "") in alerts):
                self._observe(rule, node_id, "", breaching, value, now)
                alerts = self._alerts.get(node_id)
        for rule, mount, compare, threshold in checks.disks:
            for disk in sample.disks:
                if mount is not None and disk.mount != mount:
                    continue
                breaching = compare(disk.percent, threshold)
                if breaching or (alerts and (rule.name, disk.mount) in alerts):
                    self._observe(rule, node_id, disk.mount, breaching, disk.percent, now)
                    alerts = self._alerts.get(node_id)

    def node_online(self, node_id: str) -> None:
        now = self.clock()
        for rule in self._rules_of(node_id):
            if rule.condition.kind == "offline":
                self._observe(rule, node_id, "", False, None, now)

    def node_offline(self, node_id: str) -> None:
        if self._stopping:
            return
        now = self.clock()
        for rule in self._rules_of(node_id):
            if rule.condition.kind == "offline":
                self._observe(rule, node_id, "", True, None, now)
        # A pending metric alert has no readings now: cleared (a firing one stays
        # firing until the node reports again; the offline rule covers the outage).
        for (rule_name, subject), alert in list(self._alerts.get(node_id, {}).items()):
            metric = self.rules.get(rule_name)
            if metric is not None and metric.condition.kind == "metric":
                if alert.state == State.PENDING:
                    self._observe(metric, node_id, subject, False, alert.value, now)

    def node_removed(self, node_id: str) -> None:
        """Its alerts resolve (receivers told so); nothing more is kept for it."""
        now = self.clock()
        for (rule_name, subject), _ in list(self._alerts.get(node_id, {}).items()):
            rule = self.rules.get(rule_name)
            if rule is not None:
                self._observe(rule, node_id, subject, False, None, now)
        self._cache.pop(node_id, None)

    def job_state(self, node_id: str, state: str) -> None:
        if state not in JOB_FAILED and state not in JOB_OK:
            return
        now = self.clock()
        for rule in self._rules_of(node_id):
            if rule.condition.kind == "job_failed":
                self._observe(rule, node_id, "", state in JOB_FAILED, None, now)

    # --- the life cycle ---------------------------------------------------

    def _put(self, alert: Alert, before: Alert | None = None) -> None:
        self._alerts.setdefault(alert.key.node_id, {})[(alert.key.rule, alert.key.subject)] = alert
        rule = self.rules[alert.key.rule]
        due = _due(alert, rule)
        if due is not None and (before is None or due != _due(before, rule)):
            self._seq += 1
            heapq.heappush(self._due, (due, self._seq, alert.key))
            self._wake.set()

    def _drop(self, key: Key) -> None:
        alerts = self._alerts.get(key.node_id)
        if alerts is not None:
            alerts.pop((key.rule, key.subject), None)
            if not alerts:
                del self._alerts[key.node_id]
        self._muted.discard(key)

    def _get(self, key: Key) -> Alert | None:
        alerts = self._alerts.get(key.node_id)
        return alerts.get((key.rule, key.subject)) if alerts else None

    def _observe(
        self,
        rule: Rule,
        node_id: str,
        subject: str,
        breaching: bool,
        value: float | None,
        now: float,
    ) -> None:
        key = Key(rule.name, node_id, subject)
        before = self._get(key)
        after, transition = alertstate.observe(before, key, breaching, value, now, rule.hold)
        self._settle(rule, key, before, after, transition, now)

    def _settle(
        self,
        rule: Rule,
        key: Key,
        before: Alert | None,
        after: Alert | None,
        transition: Transition | None,
        now: float,
    ) -> None:
        if transition is not None:
            self._transition(transition, after)
        if after is not None:
            kind = alertstate.owed(
                after, now, rule.renotify, self.muted(rule.name, key.node_id, now)
            )
            if kind is not None:
                self.notifier.send(self._notice(rule, after, kind, now), rule.notify)
                after = alertstate.told(after, kind, now)
                self._muted.discard(key)
            elif alertstate.owed(after, now, rule.renotify, False) is not None:
                self._muted.add(key)
                self._wake.set()
            elif alertstate.settled(after):
                after = None
        if after is None:
            if before is not None:
                self._drop(key)
                self.log.alert(key, None)
        elif after is not before:
            self._put(after, before)
            if transition is not None or after.notified_at != (
                before.notified_at if before else None
            ):
                self.log.alert(key, after)

    def _transition(self, t: Transition, alert: Alert | None) -> None:
        row = self.registry.by_id(t.key.node_id)
        name = row.name if row is not None else t.key.node_id
        self.log.transition(t, name)
        self.bus.publish(
            {
                "type": EVENT_PREFIX + t.new,
                "rule": t.key.rule,
                "node_id": t.key.node_id,
                "name": name,
                "subject": t.key.subject,
                "from": t.old,
                "value": t.value,
                "ts": t.at,
            }
        )
        if t.new == State.FIRING:
            log.info(
                "alert %s firing on %s%s",
                t.key.rule,
                name,
                f" ({t.key.subject})" if t.key.subject else "",
            )
        elif t.new == State.RESOLVED:
            log.info("alert %s resolved on %s", t.key.rule, name)

    def _notice(self, rule: Rule, alert: Alert, kind: str, now: float) -> dict[str, Any]:
        row = self.registry.by_id(alert.key.node_id)
        name = row.name if row is not None else alert.key.node_id
        subject = f" {alert.key.subject}" if alert.key.subject else ""
        shown = "" if alert.value is None else f" (now {round(alert.value, 1):g})"
        status = "resolved" if alert.state == State.RESOLVED else "firing"
        return {
            "version": 1,
            "kind": kind,
            "status": status,
            "rule": rule.name,
            "when": rule.when,
            "for": rule.hold,
            "node": name,
            "node_id": alert.key.node_id,
            "labels": dict(row.labels) if row is not None else {},
            "subject": alert.key.subject,
            "value": alert.value,
            "started": alert.started,
            "since": alert.since,
            "ts": now,
            "summary": f"[{status.upper()}] {name}{subject}: {rule.when}{shown} ({rule.name})",
        }

    # --- the timer loop ---------------------------------------------------

    def run_due(self, now: float) -> None:
        """What time alone changes now: pending alerts that fire, repeats, muted notices."""
        while self._due and self._due[0][0] <= now:
            _, _, key = heapq.heappop(self._due)
            alert = self._get(key)
            rule = self.rules.get(key.rule)
            if alert is None or rule is None:
                continue
            due = _due(alert, rule)
            if due is None or due > now:
                continue  # changed since it was scheduled; its new time is in the heap
            after, transition = alertstate.tick(alert, now, rule.hold)
            self._settle(rule, key, alert, after, transition, now)
        for key in list(self._muted):
            alert = self._get(key)
            rule = self.rules.get(key.rule)
            if alert is None or rule is None:
                self._muted.discard(key)
            else:
                self._settle(rule, key, alert, alert, None, now)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_jobs)
            task_status.started()
            while True:
                now = self.clock()
                self.run_due(now)
                wait = self._due[0][0] - now if self._due else 3600.0
                if self._muted:
                    wait = min(wait, MUTED_CHECK)
                self._wake = trio.Event()
                with trio.move_on_after(max(wait, 0.01)):
                    await self._wake.wait()

    def _wants_jobs(self) -> bool:
        return any(r.condition.kind == "job_failed" for r in self.rules.values())

    async def _watch_jobs(self) -> None:
        """Job results from the bus, while some rule is about failed jobs."""

        def match(event: dict[str, Any]) -> bool:
            return (
                event.get("type") == EventType.JOB_STATE
                and event.get("state") in JOB_FAILED | JOB_OK
            )

        while True:
            while not self._wants_jobs():
                await self._rules_changed.wait()
            async with self.bus.subscribe(match=match, label="alert rules (job results)") as sub:
                with trio.CancelScope() as scope:
                    self._jobs_scope = scope
                    try:
                        async for event in sub:
                            self.job_state(str(event["node_id"]), str(event["state"]))
                    except SubscriberTooSlow:
                        log.warning("alert rules missed job results (too many at once)")


class AlertingStatus:
    """A ``StatusStore`` that tells the alert engine what changes, then the real store."""

    def __init__(self, inner: StatusStore, engine: AlertEngine) -> None:
        self._inner = inner
        self._engine = engine

    async def get(self, node_id: str) -> LiveStatus | None:
        return await self._inner.get(node_id)

    async def all(self) -> list[LiveStatus]:
        return await self._inner.all()

    async def set_online(self, node_id: str, *, now: float, peer: str | None) -> None:
        await self._inner.set_online(node_id, now=now, peer=peer)
        self._engine.node_online(node_id)

    async def set_offline(self, node_id: str) -> None:
        await self._inner.set_offline(node_id)
        self._engine.node_offline(node_id)

    async def record_samples(
        self, node_id: str, samples: Sequence[proto.Sample], *, now: float
    ) -> None:
        await self._inner.record_samples(node_id, samples, now=now)
        for sample in samples:
            self._engine.sample(node_id, sample, now)

    async def forget(self, node_id: str) -> None:
        await self._inner.forget(node_id)
        self._engine.node_removed(node_id)
