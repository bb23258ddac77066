"""Alert rules and receivers as written in the config and the API (pure parsing)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servermgr.common.alertrule import (
    CONDITION_PATTERN,
    HOLD_PATTERN,
    JOB_FAILED_PATTERN,
    MAX_FOR,
    RENOTIFY_PATTERN,
    RuleDoc,
    RuleRequest,
    check_rule,
    parse_condition,
    selects,
)
from servermgr.common.config import parse_config
from servermgr.common.errors import ConfigError
from servermgr.common.selector import TARGET_PATTERN


def test_conditions() -> None:
    cpu = parse_condition("cpu > 90")
    assert (cpu.kind, cpu.field, cpu.op, cpu.threshold) == ("metric", "cpu_percent", ">", 90.0)
    assert cpu.breached(90.5)
    assert not cpu.breached(90.0)
    disk = parse_condition("disk:/var >= 80%")
    assert (disk.mount, disk.threshold) == ("/var", 80.0)
    assert disk.breached(80.0)
    assert parse_condition("disk < 5").mount is None
    assert parse_condition("net_rx > 10M").threshold == 10e6
    assert parse_condition("load1<0.5").breached(0.1)
    assert parse_condition("offline").kind == "offline"
    assert parse_condition("job_failed").kind == "job_failed"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("cpu", "use METRIC > NUMBER"),
        ("temperature > 5", "unknown metric 'temperature'"),
        ("cpu > 120", "at most 100"),
        ("memory > 5G", "is a percentage"),
        ("net_tx > 50%", "is not a percentage"),
        ("disk:var > 5", "takes a mount path"),
    ],
)
def test_bad_conditions_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_condition(text)


def test_rule_durations_and_targets() -> None:
    rule = check_rule(
        RuleDoc(name="web-cpu", when="cpu > 90", hold="1m", nodes="role=web", renotify="2h")
    )
    assert (rule.hold, rule.renotify) == (60.0, 7200.0)
    assert selects(rule, "id1", "web-1", {"role": "web"})
    assert not selects(rule, "id2", "db-1", {"role": "db"})
    listed = check_rule(RuleDoc(name="two", when="offline", hold=0.5, nodes="a,b"))
    assert listed.hold == 0.5  # sub-minute durations are fine (tests use them)
    assert selects(listed, "x", "b", {})
    assert not selects(listed, "x", "c", {})
    globbed = check_rule(RuleDoc(name="g", when="offline", nodes="web-*"))
    assert selects(globbed, "x", "web-7", {})
    assert not selects(globbed, "x", "db-1", {})
    negated = check_rule(RuleDoc(name="n", when="offline", nodes="role=web,env!=staging"))
    assert selects(negated, "x", "a", {"role": "web", "env": "prod"})
    assert not selects(negated, "x", "b", {"role": "web", "env": "staging"})
    with pytest.raises(ValueError, match="fires at once"):
        check_rule(RuleDoc(name="j", when="job_failed", hold="1m"))
    with pytest.raises(ValueError, match="bad duration"):
        check_rule(RuleDoc(name="j", when="cpu > 1", hold="soon"))


CONFIG = """
[alerts]
quiet_hours = ["22:00-07:00"]
timezone = "Europe/Berlin"

[[receiver]]
name = "ops"
type = "webhook"
url = "https://hooks.example/services/SECRET"
template = "slack"
headers = { Authorization = "Bearer SECRET" }

[[receiver]]
name = "mail"
type = "email"
host = "smtp.example"
from = "servermgr@example.org"
to = "oncall@example.org"
username = "u"
password = "SECRET"

[[receiver]]
name = "page"
type = "command"
command = ["/usr/local/bin/page", "--team", "ops"]

[[alert]]
name = "cpu-high"
when = "cpu > 90"
for = "1m"

[[alert]]
name = "offline"
when = "offline"
for = "30s"
notify = ["ops", "mail"]
"""


def test_config_rules_and_receivers_keep_secrets_out_of_repr() -> None:
    cfg = parse_config(CONFIG, source=Path("core.toml"), base_dir=Path("/tmp"))
    alerts = cfg.alerts
    assert [r.name for r in alerts.rules] == ["cpu-high", "offline"]
    assert alerts.rules[1].notify == ("ops", "mail")
    assert [r.name for r in alerts.receivers] == ["ops", "mail", "page"]
    assert alerts.quiet_hours == ((22 * 60, 7 * 60),)
    assert "SECRET" not in repr(cfg)


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('[[alert]]\nname = "x"\nwhen = "cpu >"', "core.toml: alert.x: bad condition"),
        (
            '[[alert]]\nname = "x"\nwhen = "offline"\nnotify = ["nobody"]',
            "alert.x.notify: no [[receiver]] named 'nobody'",
        ),
        (
            '[[alert]]\nname = "x"\nwhen = "offline"\n[[alert]]\nname = "x"\nwhen = "offline"',
            "defined twice",
        ),
        ('[[alert]]\nname = "x"\nwhen = "offline"\nnodes = ""', "alert.x"),
        ('[[alert]]\nname = "x"\nwhen = "offline"\nfor = "1 fortnight"', "bad duration"),
        (
            '[[receiver]]\nname = "w"\ntype = "webhook"\nurl = "ftp://x"',
            "receiver.w.url: must be an http",
        ),
        ('[[receiver]]\nname = "c"\ntype = "command"\ncommand = "page me"', "receiver.c.command"),
        (
            '[[receiver]]\nname = "m"\ntype = "email"\nhost = "h"\nfrom = "a@b"\nto = "c@d"\n'
            'username = "u"',
            "give username and password together",
        ),
        ('[[receiver]]\nname = "p"\ntype = "pager"', "receiver.p.type"),
        ('[alerts]\nquiet_hours = ["late"]', "alerts.quiet_hours: bad range"),
        ('[alerts]\ntimezone = "Mars/Olympus"', "unknown time zone"),
        ('[alert]\nname = "x"', "write it as [[alert]] tables"),
    ],
)
def test_config_errors_are_one_clear_line(snippet: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(snippet, source=Path("core.toml"), base_dir=Path("/tmp"))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    when=st.from_regex(CONDITION_PATTERN),
    hold=st.one_of(st.floats(0, MAX_FOR), st.from_regex(HOLD_PATTERN)),
    renotify=st.one_of(st.none(), st.floats(1, MAX_FOR), st.from_regex(RENOTIFY_PATTERN)),
    nodes=st.from_regex(TARGET_PATTERN).filter(lambda t: len(t) < 200),
)
def test_every_rule_the_api_schema_allows_is_a_rule(
    when: str, hold: float | str, renotify: float | str | None, nodes: str
) -> None:
    """POST /api/v1/alerts/rules states the grammar (RuleRequest): a body it allows
    is one check_rule accepts, but for labels given two values (404 no_nodes)."""
    if re.fullmatch(JOB_FAILED_PATTERN, when):
        hold = 0.0  # the schema's if/then: a job_failed rule holds for 0
    body = {"name": "r1", "when": when, "for": hold, "nodes": nodes, "renotify": renotify}
    doc = msgspec.json.decode(msgspec.json.encode(body), type=RuleRequest)
    if re.search(r"(?:^|,)([^,!=]+)=.*,\1=", nodes):  # a label twice: maybe two values
        return
    rule = check_rule(doc)
    assert rule.condition.kind in ("metric", "offline", "job_failed")


def test_the_rule_schema_refuses_what_check_rule_would() -> None:
    for body in (
        {"name": "r", "when": "cpu > 101"},
        {"name": "r", "when": "cpu > 5K"},
        {"name": "r", "when": "net_rx > 5%"},
        {"name": "r", "when": "disk:var > 5"},
        {"name": "r", "when": "cpu > ٩٠"},
        {"name": "r", "when": "cpu > 90", "for": "8d"},
        {"name": "r", "when": "cpu > 90", "renotify": "0.5s"},
        {"name": "r\n", "when": "offline"},
        {"name": "r", "when": "offline", "nodes": "a, b"},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(body), type=RuleRequest)
