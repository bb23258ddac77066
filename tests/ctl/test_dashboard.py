"""``ctl top`` without a terminal: state, keys and the screen rendered to a fixed-size console."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.console import Console

from servermgr.ctl.dashboard_state import Detail, State, apply, handle_key, parse_keys
from servermgr.ctl.dashboard_view import body_rows, plan_columns, rate, screen

NOW = 1_800_000_000.0


def node(
    name: str, cpu: float | None = 10.0, *, status: str = "online", **kw: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": f"id-{name}",
        "name": name,
        "status": status,
        "labels": {"role": name.split("-")[0]},
        "first_seen": NOW - 1000,
        "last_seen": NOW - 2,
        "connected_at": NOW - 500 if status == "online" else None,
        "agent_version": "0.1.0",
        "sample_ts": NOW - 2,
        "cpu_percent": cpu,
        "mem_percent": 41.0,
        "disk_percent": 77.0,
        "net_rx_bps": 1_250_000.0,
        "net_tx_bps": 3_400.0,
        "load1": 0.42,
        "uptime": 3 * 86400 + 4 * 3600,
        "procs": 120,
    }
    doc.update(kw)
    return doc


def fleet(*nodes: dict[str, Any], history: dict[str, list[float]] | None = None) -> State:
    state = State(core="http://127.0.0.1:9999")
    apply(
        state,
        {
            "type": "snapshot",
            "nodes": list(nodes),
            "history": {k: {"cpu_percent": v} for k, v in (history or {}).items()},
            "jobs_open": [],
        },
    )
    state.connected = True
    return state


def draw(state: State, width: int = 80, height: int = 24, *, color: bool = False) -> list[str]:
    console = Console(
        file=io.StringIO(),
        width=width,
        height=height,
        color_system="standard" if color else None,
        force_terminal=color,
        legacy_windows=False,
    )
    console.print(screen(state, width=width, height=height, now=NOW))
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    return out.splitlines()


def row(lines: list[str], name: str) -> str:
    found = [line for line in lines if re.search(rf"\b{re.escape(name)}\b", line)]
    assert len(found) == 1, f"{name} on {len(found)} lines:\n" + "\n".join(lines)
    return found[0]


def keys(state: State, *names: str, page: int = 21) -> list[Any]:
    return [handle_key(state, k, page=page) for k in names]


def three() -> State:
    return fleet(
        node("web-1", 12.0),
        node("web-2", 87.0, mem_percent=20.0),
        node("db-1", 55.0, status="offline", mem_percent=90.0),
        history={"id-web-1": [5.0, 50.0, 100.0]},
    )


def test_80x24_shows_every_node_with_cpu_and_fits() -> None:
    lines = draw(three())
    assert len(lines) == 24
    assert all(len(line) <= 80 for line in lines)
    assert "2/3 online" in lines[0]
    assert "0 jobs running" in lines[0]
    assert "http://127.0.0.1:9999" in lines[0]
    assert "● live" in lines[0]
    assert re.search(r"web-1\s+12%", row(lines, "web-1"))
    assert re.search(r"web-2\s+87%", row(lines, "web-2"))
    assert "▁▄█" in row(lines, "web-1")  # history first, as a sparkline
    assert "41%" in row(lines, "web-1")
    assert "1.2M" in row(lines, "web-1")
    assert "q quit" in lines[-1]


def test_offline_nodes_look_different() -> None:
    state = three()
    plain = row(draw(state), "db-1")
    assert "offline" in plain
    assert plain.startswith("○")
    assert row(draw(state), "web-1").startswith("●")
    colored = draw(state, color=True)
    offline = next(line for line in colored if "db-1" in line)
    assert "\x1b[2" in offline  # dim
    assert "31m" in offline  # red


def test_columns_drop_by_priority_at_80_and_all_show_when_wide() -> None:
    narrow = draw(three(), 80)[1]
    wide_lines = draw(three(), 200)
    wide = wide_lines[1]
    for header in ("NAME", "CPU", "MEM", "DISK", "RX/s", "TX/s", "LOAD"):
        assert header in narrow
    assert "LABELS" not in narrow
    assert "UPTIME" not in narrow
    for header in ("LABELS", "UPTIME", "SEEN", "CPU HISTORY"):
        assert header in wide
    assert "role=web" in row(wide_lines, "web-1")
    assert "3d 4h" in row(wide_lines, "web-1")
    assert all(len(line) <= 200 for line in wide_lines)
    # Very narrow: name and CPU survive.
    tiny = [c.key for c in plan_columns(30)]
    assert tiny[:3] == ["dot", "name", "cpu"]
    assert sum(c.width for c in plan_columns(30)) + len(tiny) - 1 <= 30


def test_sort_cycles_and_keeps_the_selection() -> None:
    state = three()
    names = lambda: [n["name"] for n in state.rows()]  # noqa: E731
    assert names() == ["db-1", "web-1", "web-2"]
    keys(state, "down")
    assert state.selected == "id-web-1"
    keys(state, "s")
    assert state.sort == "cpu"
    assert names() == ["web-2", "db-1", "web-1"]
    assert "sort cpu" in draw(state)[-1]
    assert state.selected == "id-web-1"
    keys(state, "s")
    assert names() == ["db-1", "web-1", "web-2"]  # memory
    keys(state, "s", "s")
    assert names()[0] == "db-1"  # status: offline first
    keys(state, "s")
    assert state.sort == "name"


def test_filter_by_name_or_label_enter_applies_esc_clears() -> None:
    state = three()
    keys(state, "/", "w", "e", "b")
    assert state.editing
    lines = draw(state)
    assert "filter: web" in lines[-1]
    assert not any("db-1" in line for line in lines)
    keys(state, "q")  # typed, not quit
    assert state.filter == "webq"
    keys(state, "backspace", "enter")
    assert not state.editing
    assert [n["name"] for n in state.rows()] == ["web-1", "web-2"]
    assert "filter web" in draw(state)[-1]
    keys(state, "esc")
    assert len(state.rows()) == 3
    keys(state, "/", *"role=db", "enter")
    assert [n["name"] for n in state.rows()] == ["db-1"]
    keys(state, "/", "backspace", *"[bold]x", "enter")  # shown as typed, not as markup
    lines = draw(state)
    assert "[bold]x" in lines[-1]
    assert "no node matches" in lines[1]


def test_detail_panel_shows_disks_interfaces_and_jobs() -> None:
    state = three()
    assert keys(state, "down", "enter") == [None, "detail"]
    assert state.detail is not None
    assert state.detail.node_id == "id-web-1"
    assert "loading" in "\n".join(draw(state))
    latest = {
        "cpu_percent": 12.0,
        "mem_percent": 41.0,
        "mem_total": 8 << 30,
        "load1": 0.42,
        "load5": 0.3,
        "load15": 0.2,
        "disks": [
            {"mount": "/", "fstype": "ext4", "total": 100 << 30, "used": 77 << 30, "percent": 77},
            {"mount": "/data", "fstype": "xfs", "total": 1 << 40, "used": 1 << 39, "percent": 50},
        ],
        "nets": [
            {"name": "eth0", "rx_bps": 1_250_000.0, "tx_bps": 3_400.0},
            {"name": "wg0", "rx_bps": 10.0, "tx_bps": 20.0},
        ],
    }
    state.detail.node = {
        **node("web-1"),
        "info": {"os": "Debian 12", "cpu_count": 4},
        "latest": latest,
    }
    state.detail.jobs = [
        {
            "id": "j1",
            "created": NOW - 60,
            "target": "web-1",
            "state": "done",
            "states": {"succeeded": 1},
            "command": "uptime",
        }
    ]
    for width in (80, 200):
        text = "\n".join(lines := draw(state, width))
        assert len(lines) == 24
        for expected in ("web-1", "Debian 12", "/data", "xfs", "eth0", "wg0", "uptime", "j1"):
            assert expected in text, f"{expected} missing at {width}:\n{text}"
    keys(state, "pgdn")
    assert state.detail.scroll > 0
    keys(state, "esc")
    assert state.detail is None
    keys(state, "enter", "enter")
    assert state.detail is None


def test_500_nodes_render_only_what_fits_and_page() -> None:
    state = fleet(*(node(f"n-{i:03d}", float(i % 100)) for i in range(500)))
    page = body_rows(24)
    lines = draw(state)
    assert len(lines) == 24
    assert "n-000" in lines[2]
    assert not any("n-100" in line for line in lines)
    assert f"1-{page}/500" in lines[-1]
    keys(state, "pgdn", page=page)
    lines = draw(state)
    assert any(f"n-{page:03d}" in line for line in lines)
    assert not any("n-000" in line for line in lines)
    keys(state, "end", page=page)
    lines = draw(state)
    assert "n-499" in "\n".join(lines)
    assert "/500" in lines[-1]
    keys(state, "home", page=page)
    assert "n-000" in draw(state)[2]


def test_live_events_update_figures_history_offline_and_jobs() -> None:
    state = three()
    apply(state, {"type": "heartbeats", "nodes": [node("web-1", 33.0, sample_ts=NOW - 1)]})
    assert list(state.history["id-web-1"]) == [5.0, 50.0, 100.0, 33.0]
    apply(state, {"type": "heartbeats", "nodes": [node("web-1", 33.0, sample_ts=NOW - 1)]})
    assert len(state.history["id-web-1"]) == 4  # the same sample twice counts once
    assert re.search(r"web-1\s+33%", row(draw(state), "web-1"))
    apply(state, {"type": "node.offline", "node_id": "id-web-2", "name": "web-2"})
    assert "offline" in row(draw(state), "web-2")
    apply(state, {"type": "node.online", "node_id": "id-db-1", "node": node("db-1", 5.0)})
    assert "offline" not in row(draw(state), "db-1")
    apply(state, {"type": "node.online", "node_id": "id-new", "node": node("new-1", 1.0)})
    assert "3/4 online" in draw(state)[0]
    apply(state, {"type": "job.state", "job_id": "j1", "state": "running"})
    assert "1 job running" in draw(state)[0]
    apply(state, {"type": "job.state", "job_id": "j1", "state": "succeeded"})
    apply(state, {"type": "job.done", "job_id": "j1"})
    assert "0 jobs running" in draw(state)[0]
    apply(state, {"type": "dropped", "count": 7})
    assert "7 events dropped" in draw(state, 120)[0]
    apply(
        state,
        {"type": "node.renamed", "node_id": "id-web-2", "name": "api-2", "old_name": "web-2"},
    )
    assert "api-2" in "\n".join(draw(state))
    assert "web-2" not in "\n".join(draw(state))


def test_reconnecting_is_shown_and_data_kept() -> None:
    state = three()
    state.connected = False
    state.status = "reconnecting… (Core is down, retry in 2s)"
    lines = draw(state)
    assert "reconnecting…" in lines[0]
    assert "web-1" in "\n".join(lines)
    assert "waiting for Core" in draw(State(core="http://x"))[1]


def test_selection_moves_with_arrows_and_jk() -> None:
    state = three()
    keys(state, "j", "j")
    assert state.selected == "id-web-2"
    keys(state, "down")
    assert state.selected == "id-web-2"  # stays on the last row
    keys(state, "k", "up", "up")
    assert state.selected == "id-db-1"
    assert keys(state, "q") == ["quit"]


@pytest.mark.parametrize(
    ("data", "final", "expected", "rest"),
    [
        (b"q", False, ["q"], b""),
        (b"\x1b[A\x1b[B\x1bOA", False, ["up", "down", "up"], b""),
        (b"\x1b[5~\x1b[6~\x1b[H\x1b[F", False, ["pgup", "pgdn", "home", "end"], b""),
        (b"\x1b", False, [], b"\x1b"),  # maybe the start of a sequence
        (b"\x1b", True, ["esc"], b""),  # nothing followed: the Esc key
        (b"j\x1b[", False, ["j"], b"\x1b["),
        (b"\r\n\x7f\x03", False, ["enter", "enter", "backspace", "ctrl-c"], b""),
        ("é/".encode(), False, ["é", "/"], b""),
        (b"\x1b[99X", False, [], b""),  # unknown sequences are ignored
    ],
)
def test_parse_keys(data: bytes, final: bool, expected: list[str], rest: bytes) -> None:
    assert parse_keys(data, final=final) == (expected, rest)


def test_rates_fit_their_column() -> None:
    for value, text in ((None, "-"), (0, "0B"), (999, "999B"), (1_250_000, "1.2M"), (5e12, "5.0T")):
        assert rate(value) == text
    assert all(len(rate(10.0**e * 9.99)) <= 6 for e in range(0, 16))


def test_detail_shows_error_when_loading_failed() -> None:
    state = three()
    state.detail = Detail("id-web-1", error="cannot load the details: boom")
    assert "cannot load the details: boom" in "\n".join(draw(state))


def test_firing_alerts_are_counted_in_the_header_and_marked_on_their_node() -> None:
    state = fleet(node("web-1", 99.0, alerts_firing=1), node("web-2"), node("db-1"))
    lines = draw(state)
    assert "1 alert firing" in lines[0]
    assert row(lines, "web-1").startswith("!")
    assert row(lines, "web-2").startswith("●")
    apply(state, {"type": "alert.firing", "node_id": "id-db-1", "rule": "offline"})
    lines = draw(state)
    assert "2 alerts firing" in lines[0]
    assert row(lines, "db-1").startswith("!")
    apply(state, {"type": "alert.resolved", "node_id": "id-web-1", "rule": "cpu"})
    apply(state, {"type": "alert.resolved", "node_id": "id-db-1", "rule": "offline"})
    lines = draw(state)
    assert "firing" not in lines[0]
    assert row(lines, "web-1").startswith("●")


def test_detail_shows_the_schedules_that_pick_the_node_and_its_last_transfer() -> None:
    state = three()
    state.detail = Detail("id-web-1", node=node("web-1"), jobs=[])
    assert "schedules loading…" in " ".join(" ".join(draw(state, 120, 40)).split())
    state.detail.schedules = [{"name": "backup"}, {"name": "df-web"}]
    state.detail.transfer = {
        "ts": NOW - 120,
        "action": "file.push",
        "detail": "/etc/motd size=6 sha256=5891b5b5",
        "outcome": "succeeded",
    }
    text = " ".join(" ".join(draw(state, 120, 40)).split())
    assert "schedules 2 (backup, df-web)" in text
    assert (
        "last transfer file.push /etc/motd size=6 sha256=5891b5b5 · succeeded · 2m 0s ago" in text
    )
    state.detail.schedules, state.detail.transfer = [], None
    text = " ".join(" ".join(draw(state, 120, 40)).split())
    assert "schedules 0" in text
    assert "last transfer none" in text
