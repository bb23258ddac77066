"""The one command spec and its parser: what users type, what handlers get."""

from __future__ import annotations

from typing import Any

import pytest

from servermgr.cli import spec
from servermgr.cli.commands import JOB_STATES, ROOT
from servermgr.common.errors import UsageError


def parse(*argv: str, environ: dict[str, str] | None = None) -> spec.Parsed:
    return spec.parse(ROOT, list(argv), environ or {})


def given(p: spec.Parsed) -> dict[str, Any]:
    return {k: v for k, v in p.values.items() if v not in (None, False, [])}


def test_options_before_or_after_the_target_the_command_word_ends_them() -> None:
    p = parse("ctl", "exec", "node-01", "-t", "1s", "sleep 3")
    assert p.path == ("servermgr", "ctl", "exec")
    assert p.timeout == 1.0
    assert p.words == ["node-01", "sleep 3"]
    p = parse("ctl", "exec", "--timeout=2s", "node-01", "ls", "-la", "--timeout", "5")
    assert p.timeout == 2.0
    assert p.words == ["node-01", "ls", "-la", "--timeout", "5"]


def test_with_all_or_label_the_first_word_is_the_command() -> None:
    p = parse("ctl", "exec", "--all", "uptime", "-a")
    assert p.all
    assert p.words == ["uptime", "-a"]
    p = parse("ctl", "exec", "uptime", "-l", "role=web")
    assert p.label == "role=web"
    assert p.words == ["uptime"]


def test_double_dash_ends_options_and_short_values_may_be_attached() -> None:
    p = parse("ctl", "exec", "-t5s", "node-01", "--", "grep", "--timeout", "x")
    assert p.timeout == 5.0
    assert p.words == ["node-01", "grep", "--timeout", "x"]


def test_group_options_work_before_or_after_the_command_and_from_the_environment() -> None:
    p = parse("ctl", "--core=http://h:1", "exec", "--key", "k", "-e", "A=1", "--env=B=2", "n", "x")
    assert given(p) | {"output_cap": 0} == {
        "core": "http://h:1",
        "key": "k",
        "env": ["A=1", "B=2"],
        "timeout": 60.0,
        "output_cap": 0,
        "words": ["n", "x"],
    }
    p = parse("ctl", "nodes", environ={"SERVERMGR_CORE": "http://e:2", "SERVERMGR_KEY": "s"})
    assert (p.core, p.key) == ("http://e:2", "s")
    assert parse("ctl", "nodes", "--core", "http://f:3", environ={"SERVERMGR_CORE": "x"}).core == (
        "http://f:3"
    )


def test_defaults_are_written_once_and_converted() -> None:
    p = parse("ctl", "exec", "n", "true")
    assert (p.timeout, p.wait, p.output_cap, p.json) == (60.0, 0.0, 1 << 20, False)
    assert parse("ctl", "jobs").limit == 20
    assert parse("ctl", "jobs", "--before", "2026-11-30T08:00Z").before == 1796025600.0
    assert parse("ctl", "jobs", "--before", "1796025600.5").before == 1796025600.5
    assert parse("ctl", "metrics", "n").since == "1h"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ctl", "metrics", "n", "--since", "1y"], "--since: bad time '1y': use"),
        (["ctl", "metrics", "n", "--step", "5m"], "--step '5m': use one of auto, raw, 1m, 1h"),
        (["ctl", "jobs", "--state", "bogus"], "use one of queued, sent, running"),
        (["ctl", "audit", "--action", "bogus"], "use one of exec, service, file.push"),
        (["ctl", "jobs", "--limit", "x"], "--limit: 'x' is not a whole number"),
        # What Core would refuse is refused here, with the range Core takes.
        (["ctl", "jobs", "--limit", "0"], "--limit: '0' is out of range: give 1 to 1000"),
        (["ctl", "audit", "--limit", "10001"], "give 1 to 10000"),
        (["ctl", "exec", "-t", "0", "n", "x"], "-t: '0' is out of range: give 0.1s to 7d"),
        (["ctl", "exec", "--wait", "8d", "n", "x"], "--wait: '8d' is out of range"),
        (["ctl", "exec", "--output-cap", "16777217", "n", "x"], "give 0 to 16777216 bytes"),
        (["ctl", "jobs", "--before", "soon"], "--before: bad time 'soon'"),
        (["ctl", "exec", "--bogus", "n", "true"], "no such option: --bogus"),
        (["ctl", "exec", "n", "true", "--timeout"], None),
        (["ctl", "exec", "--timeout"], "option --timeout needs a value"),
        (["ctl", "nodse"], "no such command: nodse; did you mean node"),
        (["ctl", "exec", "-t", "soon", "n", "x"], "-t: bad duration 'soon'"),
        (["ctl", "job"], "missing JOB_ID"),
        (["ctl", "job", "a", "b"], "unexpected argument 'b'"),
    ],
)
def test_bad_input_is_a_usage_error_naming_what_is_accepted(
    argv: list[str], message: str | None
) -> None:
    if message is None:  # after the command started, --timeout belongs to it
        assert parse(*argv).words == ["n", "true", "--timeout"]
        return
    with pytest.raises(UsageError, match=message.replace("(", r"\(")) as err:
        parse(*argv)
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    ("argv", "first"),
    [
        ([], "Usage: servermgr [OPTIONS] COMMAND [ARGS]..."),
        (["ctl"], "Usage: servermgr ctl [OPTIONS] COMMAND [ARGS]..."),
        (["ctl", "-h"], "Usage: servermgr ctl [OPTIONS] COMMAND [ARGS]..."),
        (["ctl", "exec", "--help"], "Usage: servermgr ctl exec [OPTIONS] TARGET COMMAND..."),
        (["ctl", "node", "--help"], "Usage: servermgr ctl node [OPTIONS] COMMAND [ARGS]..."),
    ],
)
def test_help(argv: list[str], first: str) -> None:
    with pytest.raises(spec.HelpRequested) as shown:
        parse(*argv)
    assert shown.value.text.splitlines()[0] == first
    assert "list[" not in shown.value.text
    assert "<" not in shown.value.text


def test_a_remote_commands_own_help_flag_is_its_own() -> None:
    assert parse("ctl", "exec", "n", "grep", "-h", "x").words == ["n", "grep", "-h", "x"]


def test_ctl_node_name_means_show() -> None:
    assert parse("ctl", "node", "web-1").path[-1] == "show"
    shown = parse("ctl", "node", "--json", "web-1")
    assert shown.path[-1] == "show"
    assert shown.json
    assert parse("ctl", "node", "--core=http://h:1", "web-1").core == "http://h:1"
    assert parse("ctl", "node", "remove", "web-1", "--force").force


def test_every_command_has_a_handler_and_every_group_children() -> None:
    import importlib

    for path, cmd in spec.walk(ROOT):
        assert bool(cmd.run) != bool(cmd.children), path
        if cmd.run:
            module, _, name = cmd.run.partition(":")
            assert callable(getattr(importlib.import_module(module), name)), path


def test_job_states_are_cores() -> None:
    from servermgr.core.jobstate import State

    assert set(JOB_STATES) == {s.value for s in State}
