"""Core's alerting config: ``[[alert]]`` rules, ``[[receiver]]`` tables, ``[alerts]``.

::

    [alerts]
    quiet_hours = ["22:00-07:00"]   # notifications wait until the end (times in ``timezone``)
    timezone = "Europe/Berlin"      # default UTC
    retries = 5                     # delivery attempts per notification, with backoff
    queue = 1000                    # notifications waiting per receiver, then dropped (recorded)

    [[receiver]]
    name = "ops"
    type = "webhook"                # webhook, command or email
    url = "https://hooks.example/abc"
    template = "slack"              # json (default), slack, discord or mattermost
    headers = { Authorization = "Bearer ..." }

    [[alert]]
    name = "offline"
    when = "offline"
    for = "30s"

Secrets (webhook URLs and headers, SMTP passwords) are kept out of every
``repr`` and never logged: receivers are named by their ``name``.
Pure logic apart from checking that a time zone exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from servermgr.common.alertrule import MAX_RULES, Rule, RuleDoc, check_rule
from servermgr.common.config_fields import Section
from servermgr.common.errors import ConfigError
from servermgr.common.timespec import parse_duration

TEMPLATES = ("json", "slack", "discord", "mattermost")
RECEIVER_TYPES = ("webhook", "command", "email")
MAX_RECEIVERS = 64
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")


@dataclass(frozen=True)
class WebhookReceiver:
    name: str
    url: str = field(repr=False)
    template: str = "json"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 10.0


@dataclass(frozen=True)
class CommandReceiver:
    """Runs ``argv`` (no shell) with the alert in its environment and on stdin."""

    name: str
    argv: tuple[str, ...]
    timeout: float = 30.0


@dataclass(frozen=True)
class EmailReceiver:
    name: str
    host: str
    to: tuple[str, ...]
    sender: str
    port: int = 587
    security: str = "starttls"  # starttls, tls (implicit, port 465) or none
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    ca_file: str | None = None  # trust this CA for the server's certificate (else the system's)


Receiver = WebhookReceiver | CommandReceiver | EmailReceiver


@dataclass(frozen=True)
class AlertsConfig:
    rules: tuple[Rule, ...] = ()
    receivers: tuple[Receiver, ...] = ()
    quiet_hours: tuple[tuple[int, int], ...] = ()  # minutes of the day: [start, end)
    timezone: str = "UTC"
    retries: int = 5
    queue: int = 1000


def parse_alerts(source: str, settings: Any, rules: Any, receivers: Any) -> AlertsConfig:
    """Check the three parts; ConfigError naming the key and the reason."""
    if not isinstance(settings, dict):
        raise ConfigError(source, "alerts", "must be a table")
    known = {"quiet_hours", "timezone", "retries", "queue"}
    for key in settings:
        if key not in known:
            raise ConfigError(
                source, f"alerts.{key}", f"unknown key (known keys: {', '.join(sorted(known))})"
            )
    quiet = tuple(_quiet_hours(source, settings.get("quiet_hours", [])))
    timezone = settings.get("timezone", "UTC")
    if not isinstance(timezone, str) or not _zone_exists(timezone):
        raise ConfigError(source, "alerts.timezone", f"unknown time zone {timezone!r}")
    retries = _int(source, "alerts.retries", settings.get("retries", 5), 1, 20)
    queue = _int(source, "alerts.queue", settings.get("queue", 1000), 1, 100_000)

    parsed_receivers = tuple(_receivers(source, receivers))
    names = {r.name for r in parsed_receivers}
    parsed_rules = tuple(_rules(source, rules, names))
    return AlertsConfig(parsed_rules, parsed_receivers, quiet, timezone, retries, queue)


def _int(source: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(source, key, f"must be a whole number from {low} to {high}")
    return value


def _zone_exists(name: str) -> bool:
    if name == "UTC":
        return True
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _quiet_hours(source: str, value: Any) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise ConfigError(source, "alerts.quiet_hours", 'must be an array like ["22:00-07:00"]')
    out = []
    for item in value:
        m = _CLOCK.match(item) if isinstance(item, str) else None
        if m is None:
            raise ConfigError(
                source,
                "alerts.quiet_hours",
                f'bad range {item!r}: use "HH:MM-HH:MM", e.g. "22:00-07:00"',
            )
        start = int(m.group(1)) * 60 + int(m.group(2))
        end = int(m.group(3)) * 60 + int(m.group(4))
        if start == end:
            raise ConfigError(source, "alerts.quiet_hours", f"range {item!r} is empty")
        out.append((start, end))
    return out


RULE_KEYS = frozenset({"name", "when", "for", "nodes", "notify", "renotify"})
RECEIVER_KEYS = frozenset(
    {"name", "type", "url", "template", "headers", "command", "timeout"}
    | {"host", "port", "security", "username", "password", "from", "to", "ca_file"}
)


def _tables(source: str, key: str, value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):  # [alert] instead of [[alert]]: its keys are checked first
        known = RULE_KEYS if key == "alert" else RECEIVER_KEYS
        for k in value:
            if k not in known:
                raise ConfigError(
                    source, f"{key}.{k}", f"unknown key (known keys: {', '.join(sorted(known))})"
                )
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(source, key, f"write it as [[{key}]] tables")
    return value


def _rules(source: str, value: Any, receivers: set[str]) -> list[Rule]:
    tables = _tables(source, "alert", value)
    if len(tables) > MAX_RULES:
        raise ConfigError(source, "alert", f"at most {MAX_RULES} rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        where = (
            f"alert[{i}]" if not isinstance(table.get("name"), str) else f"alert.{table['name']}"
        )
        try:
            doc = msgspec.convert(table, RuleDoc)
            rule = check_rule(doc, source="config")
        except (msgspec.ValidationError, ValueError) as exc:
            raise ConfigError(source, where, str(exc)) from None
        if rule.name in seen:
            raise ConfigError(source, where, "a rule of this name is defined twice")
        for name in rule.notify or ():
            if name not in receivers:
                raise ConfigError(source, f"{where}.notify", f"no [[receiver]] named {name!r}")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def _receivers(source: str, value: Any) -> list[Receiver]:
    tables = _tables(source, "receiver", value)
    if len(tables) > MAX_RECEIVERS:
        raise ConfigError(source, "receiver", f"at most {MAX_RECEIVERS} receivers")
    out: list[Receiver] = []
    for i, table in enumerate(tables):
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                source,
                f"receiver[{i}].name",
                "required: 1-64 lower-case letters, digits, '.', '-', '_'",
            )
        if any(r.name == name for r in out):
            raise ConfigError(
                source, f"receiver.{name}", "a receiver of this name is defined twice"
            )
        out.append(_receiver(_Table(source, f"receiver.{name}", table), name))
    return out


class _Table(Section):
    """A receiver's table: the shared checks plus its text and duration fields."""

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(
                key,
                "required: a non-empty string" if value is None else "must be a non-empty string",
            )
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        try:
            seconds = parse_duration(value) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise self.fail(key, 'must be a duration like "10s"') from None
        if not 0.1 <= seconds <= 600:
            raise self.fail(key, "must be from 0.1 s to 10 minutes")
        return seconds


def _receiver(t: _Table, name: str) -> Receiver:
    kind = t.table.get("type")
    if kind not in RECEIVER_TYPES:
        raise t.fail("type", f"required: one of {', '.join(RECEIVER_TYPES)}")
    if kind == "webhook":
        t.check_keys({"name", "type", "url", "template", "headers", "timeout"})
        url = t.text("url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise t.fail("url", "must be an http:// or https:// URL")
        template = t.text("template", "json")
        if template not in TEMPLATES:
            raise t.fail("template", f"must be one of {', '.join(TEMPLATES)}")
        headers = t.table.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v and "\r" not in k + v
            for k, v in headers.items()
        ):
            raise t.fail("headers", "must be a table of strings (one line each)")
        return WebhookReceiver(name, url, template, dict(headers), t.seconds("timeout", 10.0))
    if kind == "command":
        t.check_keys({"name", "type", "command", "timeout"})
        argv = t.table.get("command")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and a for a in argv)
        ):
            raise t.fail(
                "command",
                'required: an array of words, e.g. ["/usr/local/bin/page", "--team", "ops"]',
            )
        return CommandReceiver(name, tuple(argv), t.seconds("timeout", 30.0))
    t.check_keys(
        {
            "name",
            "type",
            "host",
            "port",
            "security",
            "username",
            "password",
            "from",
            "to",
            "timeout",
            "ca_file",
        }
    )
    to = t.table.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and "@" in a for a in to):
        raise t.fail("to", "required: an address or an array of addresses")
    security = t.text("security", "starttls")
    if security not in ("starttls", "tls", "none"):
        raise t.fail("security", "must be starttls, tls or none")
    port = t.table.get("port", 465 if security == "tls" else 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise t.fail("port", "must be a port number")
    username = t.table.get("username")
    password = t.table.get("password")
    if (username is None) != (password is None):
        raise t.fail(
            "password" if password is None else "username", "give username and password together"
        )
    if username is not None:
        t.text("username")
        t.text("password")
    sender = t.text("from")
    if "@" not in sender:
        raise t.fail("from", "must be an e-mail address")
    return EmailReceiver(
        name,
        t.text("host"),
        tuple(to),
        sender,
        port,
        security,
        username,
        password,
        t.seconds("timeout", 30.0),
        t.text("ca_file") if "ca_file" in t.table else None,
    )
