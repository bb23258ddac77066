"""The entry point: one line (or one JSON line) per error, and the exit codes scripts use."""

from __future__ import annotations

import json

import pytest

from servermgr.main import run
from tests.support import free_port


def test_an_error_under_json_is_one_json_line_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVERMGR_CORE", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SERVERMGR_KEY", "k")
    assert run(["ctl", "nodes", "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    doc = json.loads(err)
    assert doc["error"]["code"] == "unreachable"
    assert "cannot reach Core" in doc["error"]["message"]
    assert run(["ctl", "nodes"]) == 1
    assert capsys.readouterr().err.startswith("servermgr: cannot reach Core")


def test_usage_errors_exit_2_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ctl", "metrics", "n", "--since", "1y", "--json"]) == 2
    assert json.loads(capsys.readouterr().err)["error"]["code"] == "usage"
    assert run(["ctl", "metrics", "--help"]) == 0
    assert capsys.readouterr().out.startswith("Usage: servermgr ctl metrics")
    assert run(["--version"]) == 0
