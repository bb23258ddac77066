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
