"""Alert rules as operators write them: a condition on nodes, held for a while.

One rule, in the config (``[[alert]]``), in the API's JSON and on the
command line (``ctl alert add``)::

    name = "cpu-high"
    when = "cpu > 90"        # or "offline", or "job_failed"
    for = "1m"               # how long the condition must hold (0: at once)
    nodes = "*"              # which nodes, like ``ctl exec``: names, globs, labels, *
    notify = ["ops"]         # receivers by name; absent: every receiver
    renotify = "1h"          # while firing, tell again this often; absent: once

Conditions::

    METRIC > NUMBER   METRIC < NUMBER   (also >= and <=)
    offline           the node is not connected
    job_failed        a job failed or timed out on the node (fires at once,
                      resolved by the node's next job that succeeds)

Metrics: cpu, memory, swap (percent), disk (each mounted filesystem's use,
one alert per filesystem), disk:/var (that mount only), load1, load5,
load15, net_rx, net_tx, disk_read, disk_write (bytes per second; a number
may end in K, M or G: powers of 1000).

Pure logic: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from servermgr.common.selector import (
    TARGET_MAX,
    TARGET_PATTERN,
    Named,
    Target,
    parse_target,
    select,
)
from servermgr.common.timespec import duration_pattern, parse_duration

# A percentage, a load, or a rate in bytes per second.
PERCENT_METRICS = {"cpu": "cpu_percent", "memory": "mem_percent", "swap": "swap_percent"}
PLAIN_METRICS = {
    "load1": "load1",
    "load5": "load5",
    "load15": "load15",
    "net_rx": "net_rx_bps",
    "net_tx": "net_tx_bps",
    "disk_read": "disk_read_bps",
    "disk_write": "disk_write_bps",
}
METRICS = (*PERCENT_METRICS, "disk", "disk:MOUNT", *PLAIN_METRICS)
KINDS = ("metric", "offline", "job_failed")
MAX_FOR = 7 * 86400.0
MIN_RENOTIFY = 1.0
MAX_RULES = 1000
MAX_RECEIVERS_PER_RULE = 16

RuleName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*\Z")]
ReceiverName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*\Z")]
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_CONDITION = re.compile(
    r"^\s*(?P<metric>[a-z0-9_]+(?::\S+)?)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[%KMG]?)\s*$"
)
_UNITS = {"": 1.0, "%": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}

# The conditions the API takes, as one full-string pattern its schema states:
# every string it matches is a condition ``parse_condition`` accepts (a
# percentage at most 100, a rate with K/M/G, a mount path of visible ASCII
# but '<' and '>', so that the comparison is never read as part of it).
_OPS = "(?:>=|<=|>|<)"
_PERCENT = r"(?:100(?:\.0{1,6})?|[0-9]{1,2}(?:\.[0-9]{1,6})?)"
_RATE = r"[0-9]{1,15}(?:\.[0-9]{1,6})?"
CONDITION_PATTERN = (
    r"^ *(?:offline|job_failed"
    rf"|(?:cpu|memory|swap|disk|disk:/[!-;=?-~]{{0,1023}}) *{_OPS} *{_PERCENT} *%?"
    rf"|(?:{'|'.join(PLAIN_METRICS)}) *{_OPS} *{_RATE} *[KMG]?"
    r") *\Z"
)
JOB_FAILED_PATTERN = r"^ *job_failed *\Z"
HOLD_PATTERN = duration_pattern(MAX_FOR)
RENOTIFY_PATTERN = duration_pattern(MAX_FOR, low="one")


@dataclass(frozen=True)
class Condition:
    """What a rule checks; ``field`` is the Sample attribute of a metric (None for disk)."""

    kind: Literal["metric", "offline", "job_failed"]
    metric: str = ""
    field: str | None = None
    mount: str | None = None  # disk:MOUNT; None with metric "disk" means every mount
    op: str = ">"
    threshold: float = 0.0

    def breached(self, value: float) -> bool:
        if self.op == ">":
            return value > self.threshold
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<":
            return value < self.threshold
        return value <= self.threshold


def parse_condition(text: str) -> Condition:
    """``cpu > 90``, ``disk:/var >= 80%``, ``net_rx > 10M``, ``offline``, ``job_failed``."""
    spec = text.strip()
    if spec in ("offline", "job_failed"):
        return Condition(kind=spec)  # type: ignore[arg-type]
    m = _CONDITION.match(spec)
    if m is None:
        raise ValueError(
            f"bad condition {text!r}: use METRIC > NUMBER (or <, >=, <=), offline or job_failed"
        )
    metric, unit = m.group("metric"), m.group("unit")
    threshold = float(m.group("number")) * _UNITS[unit]
    mount: str | None = None
    if metric.startswith("disk:"):
        mount = metric[len("disk:") :]
        if not mount.startswith("/") or len(mount) > 1024:
            raise ValueError(
                f"bad condition {text!r}: disk:MOUNT takes a mount path, e.g. disk:/var"
            )
        field = None
    elif metric == "disk":
        field = None
    elif metric in PERCENT_METRICS:
        field = PERCENT_METRICS[metric]
    elif metric in PLAIN_METRICS:
        field = PLAIN_METRICS[metric]
    else:
        raise ValueError(
            f"bad condition {text!r}: unknown metric {metric!r} (known: {', '.join(METRICS)})"
        )
    percent = field is None or metric in PERCENT_METRICS
    if percent and unit in ("K", "M", "G"):
        raise ValueError(f"bad condition {text!r}: {metric} is a percentage")
    if not percent and unit == "%":
        raise ValueError(f"bad condition {text!r}: {metric} is not a percentage")
    if percent and threshold > 100:
        raise ValueError(f"bad condition {text!r}: a percentage is at most 100")
    return Condition("metric", metric, field, mount, m.group("op"), threshold)


class RuleDoc(msgspec.Struct, forbid_unknown_fields=True, rename={"hold": "for"}):
    """A rule as the API takes it (``POST /api/v1/alerts/rules``) and the config writes it."""

    name: RuleName
    when: Annotated[str, Meta(min_length=1, max_length=1100)]
    hold: float | str = 0.0
    nodes: Annotated[str, Meta(min_length=1, max_length=32 * 1024)] = "*"
    notify: Annotated[list[ReceiverName], Meta(max_length=MAX_RECEIVERS_PER_RULE)] | None = None
    renotify: float | str | None = None


Hold = Annotated[float, Meta(ge=0, le=MAX_FOR)] | Annotated[str, Meta(pattern=HOLD_PATTERN)]
Renotify = (
    Annotated[float, Meta(ge=MIN_RENOTIFY, le=MAX_FOR)]
    | Annotated[str, Meta(pattern=RENOTIFY_PATTERN)]
    | None
)
_ZERO = {
    "anyOf": [
        {"type": "number", "maximum": 0},
        {"type": "string", "pattern": r"^0(?:\.0{1,6})?[smhdw]?\Z"},
    ]
}


class RuleRequest(RuleDoc, forbid_unknown_fields=True, rename={"hold": "for"}):
    """``POST /api/v1/alerts/rules``: a ``RuleDoc`` whose grammar the schema states
    whole (conditions, durations with their ranges, the target), so a body the
    document allows is a rule ``check_rule`` accepts (a ``job_failed`` rule
    holds for 0: it fires at once)."""

    when: Annotated[
        str,
        Meta(
            max_length=1100,
            pattern=CONDITION_PATTERN,
            description="METRIC > NUMBER (or <, >=, <=), offline or job_failed; "
            "metrics: cpu, memory, swap, disk, disk:/MOUNT (percent, at most 100), "
            + ", ".join(PLAIN_METRICS)
            + " (a number, may end in K, M or G)",
        ),
    ]
    hold: Annotated[
        Hold,
        Meta(description="how long the condition must hold: seconds, or 30s, 5m, 1h, 7d (at most)"),
    ] = 0.0
    nodes: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=TARGET_MAX,
            pattern=TARGET_PATTERN,
            description="which nodes, as a job's target: names, globs, key=value labels, *",
        ),
    ] = "*"
    renotify: Annotated[
        Renotify,
        Meta(description="while firing, tell again this often (at least 1 s, at most 7d)"),
    ] = None


RULE_REQUEST = Annotated[
    RuleRequest,
    Meta(
        extra_json_schema={
            "if": {"required": ["when"], "properties": {"when": {"pattern": JOB_FAILED_PATTERN}}},
            "then": {"properties": {"for": _ZERO}},
        }
    ),
]


@dataclass(frozen=True)
class Rule:
    """A checked rule: ``source`` says where it lives ("config" or "api")."""

    name: str
    when: str
    condition: Condition
    hold: float
    nodes: str
    target: Target
    notify: tuple[str, ...] | None
    renotify: float | None
    source: str = "api"

    def doc(self) -> dict[str, object]:
        """The rule as the API shows it."""
        return {
            "name": self.name,
            "when": self.when,
            "for": self.hold,
            "nodes": self.nodes,
            "notify": list(self.notify) if self.notify is not None else None,
            "renotify": self.renotify,
            "source": self.source,
        }


def _seconds(value: float | str | None, what: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f'{what} must be a duration like "30s" or "5m"')
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    if not low <= seconds <= high:
        raise ValueError(f"{what} must be from {low:g} s to {high / 86400:g} days, not {value!r}")
    return seconds


def check_rule(doc: RuleDoc, *, source: str = "api") -> Rule:
    """A rule from its document; ValueError with one line saying what is wrong."""
    if not _NAME.fullmatch(doc.name):
        raise ValueError(
            f"bad rule name {doc.name!r}: use 1-64 lower-case letters, digits, '.', '-', '_'"
        )
    condition = parse_condition(doc.when)
    hold = _seconds(doc.hold, "for", 0.0, MAX_FOR) or 0.0
    if condition.kind == "job_failed" and hold:
        raise ValueError("for: a job_failed rule fires at once (leave 'for' out)")
    renotify = _seconds(doc.renotify, "renotify", MIN_RENOTIFY, MAX_FOR)
    target = parse_target(doc.nodes)
    notify = tuple(dict.fromkeys(doc.notify)) if doc.notify is not None else None
    return Rule(
        name=doc.name,
        when=doc.when.strip(),
        condition=condition,
        hold=hold,
        nodes=doc.nodes.strip(),
        target=target,
        notify=notify,
        renotify=renotify,
        source=source,
    )


def selects(rule: Rule, node_id: str, name: str, labels: Mapping[str, str]) -> bool:
    """Whether ``rule`` applies to this node: its ``nodes`` read as ``ctl exec`` reads a
    target (common/selector.py: names, ids, globs, labels with AND and !=, all)."""
    picked, _ = select(rule.target, [Named(node_id, name, labels)])
    return bool(picked)
