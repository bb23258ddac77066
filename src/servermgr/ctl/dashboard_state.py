"""What ``ctl top`` knows and how events and keys change it. Pure: no I/O, no clock.

``State`` is fed by Core's event stream (``apply``) and by the keyboard
(``parse_keys`` then ``handle_key``); ``dashboard_view`` draws it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from servermgr.common.events import EventType
from servermgr.common.text import printable_doc

HISTORY = 120
MAX_SCROLL = 500
SORTS = ("name", "cpu", "mem", "disk", "status")
FINAL_JOB_STATES = frozenset(
    {"succeeded", "failed", "timed_out", "cancelled", "refused", "expired", "lost"}
)

Action = Literal["quit", "detail"] | None


@dataclass
class Detail:
    """The node detail panel: filled by the I/O layer from the REST API."""

    node_id: str
    node: dict[str, Any] | None = None
    jobs: list[dict[str, Any]] | None = None
    # Schedules whose target picks the node; its newest file.push/file.pull audit row.
    schedules: list[dict[str, Any]] | None = None
    transfer: dict[str, Any] | None = None
    error: str | None = None
    scroll: int = 0


@dataclass
class State:
    core: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, deque[float | None]] = field(default_factory=dict)
    jobs_open: set[str] = field(default_factory=set)
    connected: bool = False
    status: str = "connecting…"
    dropped: int = 0
    sort: str = "name"
    filter: str = ""
    editing: bool = False
    selected: str | None = None
    top: int = 0
    detail: Detail | None = None

    # --- derived ------------------------------------------------------

    def online(self) -> int:
        return sum(1 for n in self.nodes.values() if n.get("status") == "online")

    def firing(self) -> int:
        """Alerts firing across the fleet (each node's ``alerts_firing``)."""
        return sum(int(n.get("alerts_firing") or 0) for n in self.nodes.values())

    def rows(self) -> list[dict[str, Any]]:
        """Nodes after the filter, in the chosen order."""
        nodes = [n for n in self.nodes.values() if matches(n, self.filter)]
        nodes.sort(key=lambda n: n["name"])
        if self.sort != "name":
            field_ = {"cpu": "cpu_percent", "mem": "mem_percent", "disk": "disk_percent"}
            if self.sort == "status":
                nodes.sort(key=lambda n: n.get("status") == "online")
            else:
                key = field_[self.sort]
                nodes.sort(key=lambda n: (n.get(key) is None, -float(n.get(key) or 0)))
        return nodes

    def selected_index(self, rows: list[dict[str, Any]]) -> int:
        for i, n in enumerate(rows):
            if n["id"] == self.selected:
                return i
        return 0

    def window(self, rows: list[dict[str, Any]], height: int) -> tuple[int, int]:
        """``(first, selected)`` row indexes: ``top`` moved so the selection shows."""
        sel = self.selected_index(rows)
        top = min(self.top, max(0, len(rows) - height))
        if sel < top:
            top = sel
        elif sel >= top + height:
            top = sel - height + 1
        return max(0, top), sel


def matches(node: dict[str, Any], text: str) -> bool:
    """Case-insensitive substring of the name or of any ``key=value`` label."""
    if not text:
        return True
    text = text.lower()
    if text in node["name"].lower():
        return True
    return any(text in f"{k}={v}".lower() for k, v in (node.get("labels") or {}).items())


# --- events ------------------------------------------------------------


def apply(state: State, msg: dict[str, Any]) -> None:
    """Fold one event-stream message (see core/events_api.py) into ``state``.

    Strings are escaped here, as they enter: a node's name, labels or error
    texts never reach the screen with a control character in them.
    """
    msg = printable_doc(msg)
    kind = msg.get("type")
    if kind == EventType.SNAPSHOT:
        state.nodes = {n["id"]: n for n in msg["nodes"]}
        state.history = {}
        for node_id, hist in (msg.get("history") or {}).items():
            state.history[node_id] = deque(hist.get("cpu_percent", []), maxlen=HISTORY)
        for node in msg["nodes"]:
            _record(state, node, None)
        state.jobs_open = set(msg.get("jobs_open") or ())
        state.dropped = 0
    elif kind == EventType.NODE_ONLINE:
        _update(state, msg["node"])
    elif kind == EventType.NODE_OFFLINE:
        node = state.nodes.get(msg["node_id"])
        if node is not None:
            node["status"] = "offline"
            node["connected_at"] = None
    elif kind == EventType.NODE_RENAMED:
        node = state.nodes.get(msg["node_id"])
        if node is not None:
            node["name"] = msg["name"]
    elif kind == EventType.NODE_REMOVED:
        state.nodes.pop(msg["node_id"], None)
        state.history.pop(msg["node_id"], None)
    elif kind == EventType.HEARTBEATS:
        for node in msg["nodes"]:
            _update(state, node)
    elif kind == EventType.JOB_STATE:
        if msg.get("state") in FINAL_JOB_STATES:
            return
        state.jobs_open.add(msg["job_id"])
    elif kind == EventType.JOB_DONE:
        state.jobs_open.discard(msg["job_id"])
    elif kind == "dropped":
        state.dropped += int(msg.get("count", 0))
    elif kind in ("alert.firing", "alert.resolved"):
        node = state.nodes.get(msg["node_id"])
        if node is not None:
            step = 1 if kind == "alert.firing" else -1
            node["alerts_firing"] = max(0, int(node.get("alerts_firing") or 0) + step)


def _update(state: State, node: dict[str, Any]) -> None:
    old = state.nodes.get(node["id"])
    state.nodes[node["id"]] = node
    _record(state, node, old)


def _record(state: State, node: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Append the CPU of a sample not seen yet to the node's history."""
    ts = node.get("sample_ts")
    if ts is None or (old is not None and old.get("sample_ts") == ts):
        return
    hist = state.history.setdefault(node["id"], deque(maxlen=HISTORY))
    if old is None and hist:
        return  # the snapshot's history already ends with this sample
    hist.append(node.get("cpu_percent"))


# --- keys ----------------------------------------------------------------

_CSI_KEYS = {
    "A": "up",
    "B": "down",
    "C": "right",
    "D": "left",
    "H": "home",
    "F": "end",
    "1~": "home",
    "7~": "home",
    "4~": "end",
    "8~": "end",
    "5~": "pgup",
    "6~": "pgdn",
}


def parse_keys(data: bytes, *, final: bool) -> tuple[list[str], bytes]:
    """Key names in ``data`` and the bytes of an unfinished escape sequence.

    ``final``: no more bytes are coming soon, so a lone ESC is the Esc key.
    """
    keys: list[str] = []
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x1B:
            if i + 1 == len(data):
                if not final:
                    return keys, data[i:]
                keys.append("esc")
                i += 1
                continue
            if data[i + 1] in b"[O":
                j = i + 2
                while j < len(data) and not 0x40 <= data[j] <= 0x7E:
                    j += 1
                if j == len(data):
                    if not final:
                        return keys, data[i:]
                    return keys, b""  # a broken sequence: drop it
                name = _CSI_KEYS.get(data[i + 2 : j + 1].decode("latin-1"))
                if name:
                    keys.append(name)
                i = j + 1
                continue
            keys.append("esc")
            i += 1
        elif b in (0x0D, 0x0A):
            keys.append("enter")
            i += 1
        elif b in (0x7F, 0x08):
            keys.append("backspace")
            i += 1
        elif b == 0x03:
            keys.append("ctrl-c")
            i += 1
        elif b < 0x20:
            i += 1
        else:
            j = i
            while j < len(data) and data[j] >= 0x20 and data[j] != 0x7F:
                j += 1
            keys.extend(data[i:j].decode("utf-8", "replace"))
            i = j
    return keys, b""


def handle_key(state: State, key: str, *, page: int) -> Action:
    """Change ``state`` for ``key``; ``page`` is how many rows the screen shows."""
    if key == "ctrl-c":
        return "quit"
    if state.editing:
        if key == "enter":
            state.editing = False
        elif key == "esc":
            state.filter, state.editing = "", False
        elif key == "backspace":
            state.filter = state.filter[:-1]
        elif len(key) == 1:
            state.filter += key
        return None
    if state.detail is not None:
        if key in ("esc", "enter"):
            state.detail = None
        elif key == "q":
            return "quit"
        else:
            delta = {"up": -1, "k": -1, "down": 1, "j": 1, "pgup": -page, "pgdn": page}
            step = delta.get(key, 0)
            state.detail.scroll = max(0, min(MAX_SCROLL, state.detail.scroll + step))
        return None
    if key == "q":
        return "quit"
    if key == "s":
        state.sort = SORTS[(SORTS.index(state.sort) + 1) % len(SORTS)]
    elif key == "/":
        state.editing = True
    elif key == "esc":
        state.filter = ""
    elif key == "enter":
        rows = state.rows()
        if rows:
            node = rows[state.selected_index(rows)]
            state.selected = node["id"]
            state.detail = Detail(node["id"])
            return "detail"
    else:
        move = {
            "up": -1,
            "k": -1,
            "down": 1,
            "j": 1,
            "pgup": -page,
            "pgdn": page,
            "home": -(10**9),
            "g": -(10**9),
            "end": 10**9,
            "G": 10**9,
        }.get(key)
        if move is not None:
            _move(state, move, page)
    return None


def _move(state: State, delta: int, page: int) -> None:
    rows = state.rows()
    if not rows:
        return
    top, sel = state.window(rows, page)
    sel = max(0, min(len(rows) - 1, sel + delta))
    state.selected = rows[sel]["id"]
    if abs(delta) >= page:  # page keys move the window with the selection
        top = max(0, min(len(rows) - page, top + delta))
    state.top = top
    state.top, _ = state.window(rows, page)
