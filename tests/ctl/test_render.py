"""What ctl prints around a hostile node's strings holds no control character.

Core refuses such strings from nodes now, but ctl does not rely on it (a
node registered before, or a Core of another version): every table, prefix
and error line is escaped on output. The command's own output is not.
"""

from __future__ import annotations

import io
import json
import sys
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console, RenderableType

from servermgr.ctl import exec as ctl_exec
from servermgr.ctl import plain, render
from servermgr.ctl.dashboard_state import State, apply
from servermgr.ctl.dashboard_view import screen

NOW = 1_800_000_000.0
EVIL = "web\x1b]0;pwned\x07\x1b[2J\r\nfake\u202e\x9b"


def _unsafe(text: str) -> list[str]:
    return [
        c for c in text if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"} and c != "\n"
    ]


def _draw(renderable: RenderableType, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(renderable)
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    return out


def _node() -> dict[str, Any]:
    return {
        "id": "n0123456789abcdef",
        "name": EVIL,
        "status": "online",
        "labels": {"role": EVIL},
        "last_seen": NOW - 1,
        "agent_version": EVIL,
        "cpu_percent": 5.0,
        "info": {"os": EVIL, "kernel": EVIL, "arch": EVIL, "cpu_model": EVIL, "hostname": EVIL},
        "latest": {
            "disks": [{"mount": EVIL, "fstype": EVIL, "total": 10, "used": 1, "percent": 10}],
            "nets": [{"name": EVIL, "rx_bps": 1.0, "tx_bps": 2.0}],
        },
    }


def _job() -> dict[str, Any]:
    return {
        "id": "j1",
        "created": NOW - 5,
        "target": EVIL,
        "state": "done",
        "states": {"failed": 1},
        "principal": EVIL,
        "timeout": 60.0,
        "command": "echo " + EVIL,
        "nodes": [
            {
                "node": EVIL,
                "state": "error",
                "exit_code": None,
                "signal": None,
                "duration": 0.1,
                "error": EVIL,
                "stdout_truncated": False,
                "stderr_truncated": False,
            }
        ],
    }


@pytest.mark.parametrize(
    "renderable",
    [
        lambda: "\n".join(plain.nodes_lines([_node()], now=NOW)),
        lambda: render.node_detail(_node(), now=NOW),
        lambda: render.job_summary(_job()),
        lambda: render.jobs_table([_job()], now=NOW),
        lambda: render.metrics_table({"name": EVIL, "samples": []}),
    ],
    ids=["nodes", "node", "job summary", "jobs", "metrics"],
)
def test_tables_show_hostile_strings_escaped(renderable: Any) -> None:
    out = _draw(renderable())
    assert _unsafe(out) == []
    assert "\\x1b" in out


def test_node_detail_says_the_reported_hostname_is_not_the_name() -> None:
    node = {**_node(), "name": "web-01"}
    node["info"] = {**node["info"], "hostname": "web-02"}
    out = _draw(render.node_detail(node, now=NOW))
    assert "web-02 (reported by the node; not its name)" in out


def test_the_audit_table_is_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    render.print_audit(
        [
            {
                "ts": NOW,
                "principal": EVIL,
                "action": "exec",
                "target": EVIL,
                "outcome": EVIL,
                "job_id": "j1",
                "detail": EVIL,
            }
        ]
    )
    assert _unsafe(capsys.readouterr().out) == []


def test_exec_prefixes_and_errors_are_escaped_the_output_is_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, err = io.BytesIO(), io.BytesIO()
    printer = ctl_exec.Printer(prefix=True, out=out, err=err, width=len(EVIL))
    printer.output(EVIL, "stdout", 0, b"\x1b[1mbold\x1b[0m\nrest")
    printer.output("db-1", "stderr", 0, b"oops\n")
    printer.flush()
    lines = out.getvalue().split(b"\n")
    label = lines[0].split(b" | ")[0]
    assert _unsafe(label.decode()) == []
    assert label.startswith(b"web\\x1b]0;pwned\\x07")
    # The command's own bytes, as they were (like ssh).
    assert lines[0].endswith(b" | \x1b[1mbold\x1b[0m")
    assert lines[1].endswith(b" | rest")
    assert err.getvalue().startswith(b"db-1")


class _FakeClient:
    """Core's answers for one job on one hostile node: an error, no output."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.doc = job

    def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.doc

    def create_job(self, body: dict[str, Any], *, key: str) -> Any:
        return self.doc

    def job(self, job_id: str, *, output: bool = True) -> dict[str, Any]:
        return self.doc

    def job_output(self, job_id: str, node: str, stream: str, offset: int, limit: int) -> bytes:
        return b""

    def job_stream(self, job_id: str, *, read_timeout: float, follow: float) -> Iterator[bytes]:
        yield json.dumps({"type": "job.done"}).encode()


@pytest.mark.parametrize("single", [True, False])
def test_exec_error_lines_and_summary_are_escaped(
    capsys: pytest.CaptureFixture[str], single: bool
) -> None:
    job = _job()
    for n in job["nodes"]:
        n.update(node_id="n1", stdout_bytes=0, stderr_bytes=0, stdout_b64="", stderr_b64="")
    code = ctl_exec.run(_FakeClient(job), {"command": "x"}, single=single)  # type: ignore[arg-type]
    assert code != 0
    err = capsys.readouterr().err
    assert "\\x1b" in err
    assert _unsafe(err) == []


def test_job_summary_on_stderr_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from servermgr.ctl import plain

    plain.print_job_summary(_job(), sys.stderr)
    assert _unsafe(capsys.readouterr().err) == []


def test_the_dashboard_escapes_what_enters_its_state() -> None:
    state = State(core="http://127.0.0.1:9999")
    node = {k: v for k, v in _node().items() if k not in ("info", "latest")}
    apply(state, {"type": "snapshot", "nodes": [node], "history": {}, "jobs_open": []})
    apply(state, {"type": "node.online", "node": {**node, "name": "x\x1b[31m"}})
    state.connected = True
    console = Console(file=io.StringIO(), width=120, height=20, color_system=None)
    console.print(screen(state, width=120, height=20, now=NOW))
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    assert _unsafe(out) == []
    assert "x\\x1b[31m" in out


def test_audit_rows_without_a_job_are_not_shown_as_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    row = {"ts": NOW, "principal": "ops", "target": "all", "detail": "df: every 1h: df -h"}
    render.print_audit(
        [
            {**row, "action": "schedule.add", "outcome": None, "job_id": None},
            {**row, "action": "exec", "outcome": None, "job_id": "j1"},
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert "running" not in lines[1]
    assert "running" in lines[2]


def test_piped_alert_and_schedule_tables_have_one_word_a_cell(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from servermgr.ctl import alerts

    monkeypatch.delenv("COLUMNS", raising=False)
    rule = {"name": "hot", "when": "cpu > 90", "for": 300.0, "nodes": "role=web"}
    rule |= {"notify": None, "renotify": 3600.0, "source": "config"}
    alerts.show([rule], alerts.rules_table([rule]), "no rules")
    schedule = {"name": "df", "describe": "every 1h", "target": "all", "paused": True}
    schedule |= {"last_job": None, "runs": 0, "job": {"command": "df -h /"}}
    render.print_schedules([schedule])
    lines = capsys.readouterr().out.splitlines()
    assert [len(line.split()) for line in lines[:2]] == [7, 7]
    assert lines[1].split() == ["hot", "cpu>90", "5m0s", "role=web", "all", "1h0m", "config"]
    assert lines[2].split() == ["NAME", "WHEN", "TARGET", "NEXT_RUN", "LAST_JOB", "RUNS", "COMMAND"]
    assert lines[3].split() == ["df", "every1h", "all", "paused", "-", "0", "df", "-h", "/"]
