"""The rich-free summary ``ctl exec`` prints after a fan-out."""

from __future__ import annotations

from servermgr.ctl.plain import job_summary_lines


def job() -> dict[str, object]:
    node = {"stdout_truncated": False, "stderr_truncated": False}
    return {
        "id": "j-1",
        "nodes": [
            {**node, "node": "web-1", "state": "succeeded", "exit_code": 0, "duration": 0.5},
            {**node, "node": "web-22", "state": "failed", "exit_code": None, "signal": 9}
            | {"duration": 1.25, "error": "killed\nby  signal", "stdout_truncated": True},
            {**node, "node": "db\x1b[2J", "state": "expired", "exit_code": None, "duration": None}
            | {"error": "node is offline"},
        ],
    }


def test_one_word_per_cell_for_scripts_and_a_total() -> None:
    lines = job_summary_lines(job())
    assert lines[0] == ""
    assert lines[1].split() == ["NODE", "STATE", "EXIT", "DURATION", "NOTE"]
    assert lines[2].split() == ["web-1", "succeeded", "0", "0.50s"]
    assert lines[3].split()[:4] == ["web-22", "failed", "signal:9", "1.25s"]
    assert lines[3].endswith("killed by signal; output truncated")
    assert lines[4].split()[:4] == ["db\\x1b[2J", "expired", "-", "-"]
    assert lines[-1] == "1/3 succeeded · job j-1"
    assert "\x1b" not in "".join(lines)


def test_colour_only_when_asked() -> None:
    assert "\x1b[32msucceeded\x1b[0m" in "\n".join(job_summary_lines(job(), color=True))


def test_nodes_one_word_per_cell_and_no_figures_for_an_offline_node() -> None:
    from servermgr.ctl.plain import nodes_lines

    now = 1_800_000_000.0
    figures = {"cpu_percent": 12.3, "mem_percent": 40.0, "disk_percent": 71.0, "load1": 0.5}
    figures |= {"net_rx_bps": 1234.0, "net_tx_bps": 10.0, "uptime": 90061.0}
    lines = nodes_lines(
        [
            {"name": "web-1", "status": "online", "last_seen": now - 2, **figures}
            | {"agent_version": "0.2.0"},
            {"name": "db-1", "status": "offline", "last_seen": now - 3700, **figures}
            | {"agent_version": "0.2.0+build.20261130.abcdef"},
        ],
        now=now,
    )
    assert lines[0].split() == [
        "NAME", "STATUS", "CPU", "MEM", "DISK", "RX", "TX", "LOAD", "UPTIME", "SEEN", "VERSION"
    ]  # fmt: skip
    assert lines[1].split() == [
        "web-1", "online", "12%", "40%", "71%", "1.2KB/s", "10B/s", "0.50", "1d1h", "2s", "0.2.0"
    ]  # fmt: skip
    assert lines[2].split() == ["db-1", "offline", *["-"] * 7, "1h1m", "0.2.0+build…"]


def test_jobs_piped_one_word_per_cell_the_command_last() -> None:
    from servermgr.ctl.plain import jobs_lines

    now = 1_800_000_000.0
    lines = jobs_lines(
        [
            {"id": "j-2", "created": now - 75, "target": "role=web", "state": "done"}
            | {"states": {"succeeded": 2, "failed": 1}, "command": "df -h /"},
            {"id": "j-1", "created": now - 3, "target": "node-01", "state": "running"}
            | {"states": {}, "command": None, "service": {"action": "restart", "unit": "x"}},
        ],
        now=now,
    )
    assert lines[0].split() == ["JOB", "CREATED", "TARGET", "STATE", "NODES", "COMMAND"]
    assert lines[1].split() == ["j-2", "1m15s", "role=web", "done", "failed=1,succeeded=2"] + [
        "df",
        "-h",
        "/",
    ]
    assert lines[2].split()[:5] == ["j-1", "3s", "node-01", "running", "-"]


def test_audit_piped_one_word_per_cell_the_detail_last() -> None:
    from servermgr.ctl.plain import audit_lines

    row = {"ts": 1_800_000_000.0, "principal": "ops team", "target": "role=web"}
    lines = audit_lines(
        [
            row
            | {"action": "exec", "outcome": "2 succeeded, 1 expired", "job_id": "j-1"}
            | {"detail": "uptime -p"},
            row | {"action": "shell", "outcome": "failed", "job_id": None, "detail": None},
        ]
    )
    assert lines[0].split() == ["TIME", "WHO", "ACTION", "TARGET", "OUTCOME", "JOB", "WHAT"]
    first = lines[1].split()
    assert len(first[0]) == len("2027-01-15T08:00:00")
    assert first[1:] == ["opsteam", "exec", "role=web", "succeeded=2,expired=1", "j-1"] + [
        "uptime",
        "-p",
    ]
    assert lines[2].split()[1:] == ["opsteam", "shell", "role=web", "failed", "-", "-"]
