"""``servermgr ctl top``: the live dashboard, i.e. the I/O around the pure parts.

    main()                      terminal in raw mode, restored on every way out
    └── Dashboard.run           rich Live on the alternate screen
        ├── _events             Core's event stream -> State; reconnects with backoff
        ├── _keys               stdin keys -> State (wait_readable + os.read: a trio
        │                       FdStream would make the shared terminal non-blocking)
        ├── _details            REST fetches for the open detail panel
        ├── _signals            SIGTERM/SIGHUP/SIGINT quit, SIGWINCH redraws
        └── _draw               paints on a key at once, on data at most once a second

What the screen shows is built in ``dashboard_view`` from ``dashboard_state``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio
from rich.console import Console
from rich.live import Live
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from servermgr.common.errors import AuthError, ClientError
from servermgr.common.events import EventType
from servermgr.common.text import printable, printable_doc
from servermgr.common.tls import Trust
from servermgr.ctl import dashboard_view as view
from servermgr.ctl.client import Client, events_path
from servermgr.ctl.dashboard_state import State, apply, handle_key, parse_keys
from servermgr.ctl.wsclient import Backoff, connect

EVENTS_PATH = events_path(history=60, interval=1)
MIN_PAINT_INTERVAL = 1.0  # data-driven repaints, at most this often
IDLE_PAINT = 5.0  # repaint anyway (ages, clock)
SILENCE = 45.0  # no message (Core sends keepalives every 15 s): reconnect
ESC_DELAY = 0.05  # a lone ESC followed by nothing this long is the Esc key
DETAIL_REFRESH = 3.0
HTTP_TIMEOUT = 5.0


def main(
    base_url: str,
    key: str,
    *,
    trust: Trust | None = None,
    console: Console | None = None,
    fd: int | None = None,
) -> int:
    """Run the dashboard on this terminal; the exit code (0 on ``q``)."""
    console = console or Console(highlight=False)
    fd = sys.stdin.fileno() if fd is None else fd
    if not os.isatty(fd) or not console.is_terminal:
        raise ClientError("ctl top needs a terminal; in scripts use `servermgr ctl nodes --json`")
    with _raw_terminal(fd):
        return trio.run(Dashboard(base_url, key, console, fd, trust=trust).run)


@contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    """Keys one at a time, unechoed, Ctrl-C/Ctrl-Z as bytes; output processing kept.

    Restored on every exit path. SIGTERM/SIGHUP before trio takes them over
    raise SystemExit here so the ``finally`` still runs.
    """
    saved = termios.tcgetattr(fd)
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        mode = termios.tcgetattr(fd)
        mode[0] &= ~(termios.IXON | termios.ISTRIP)
        mode[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSAFLUSH, mode)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


class Dashboard:
    def __init__(
        self,
        base_url: str,
        key: str,
        console: Console,
        fd: int,
        *,
        trust: Trust | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url
        self.trust = trust
        self.key = key
        self.console = console
        self.fd = fd
        self.clock = clock
        self.state = State(core=base_url)
        self.exit_code = 0
        self.quit = trio.Event()
        self.dirty = trio.Event()  # something changed: paint within a second
        self.urgent = trio.Event()  # a key or a resize: paint now
        self.detail_changed = trio.Event()

    async def run(self) -> int:
        with Live(
            console=self.console,
            screen=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._events)
                nursery.start_soon(self._keys)
                nursery.start_soon(self._details)
                nursery.start_soon(self._signals)
                await self._draw(live)
                nursery.cancel_scope.cancel()
        return self.exit_code

    def _poke(self, *, urgent: bool = False) -> None:
        self.dirty.set()
        if urgent:
            self.urgent.set()

    def _stop(self, code: int) -> None:
        self.exit_code = code
        self.quit.set()
        self._poke(urgent=True)

    # --- painting -------------------------------------------------------

    async def _draw(self, live: Live) -> None:
        while not self.quit.is_set():
            self.dirty, self.urgent = trio.Event(), trio.Event()
            width, height = self.console.size
            live.update(
                view.screen(self.state, width=width, height=height, now=self.clock()),
                refresh=True,
            )
            painted = trio.current_time()
            with trio.move_on_after(IDLE_PAINT):
                await self.dirty.wait()
            with trio.move_on_at(painted + MIN_PAINT_INTERVAL):
                await self.urgent.wait()

    # --- inputs ---------------------------------------------------------

    async def _events(self) -> None:
        backoff = Backoff()
        state = self.state
        while True:
            try:
                async with connect(self.base_url, EVENTS_PATH, self.key, self.trust) as ws:
                    while True:
                        with trio.fail_after(SILENCE):
                            text = await ws.get_message()
                        msg = json.loads(text)
                        apply(state, msg)
                        if msg.get("type") == EventType.SNAPSHOT:
                            state.connected, state.status = True, "live"
                            backoff.reset()
                            self._poke(urgent=True)
                        elif msg.get("type") == EventType.SHUTDOWN:
                            state.connected, state.status = False, "Core is restarting…"
                            self._poke(urgent=True)
                        else:
                            self._poke()
            except ConnectionRejected as exc:
                if exc.status_code in (401, 403):
                    raise AuthError(_refused(exc)) from None
                reason = f"HTTP {exc.status_code}"
            except ConnectionRefusedError:
                reason = "Core is down"
            except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError):
                reason = "connection lost"
            except trio.TooSlowError:
                reason = "no answer"
            except ValueError:
                reason = "bad message"
            state.connected = False
            delay = backoff.next()
            state.status = f"reconnecting… ({reason}, retry in {math.ceil(delay)}s)"
            self._poke(urgent=True)
            await trio.sleep(delay)

    async def _keys(self) -> None:
        buf = b""
        while True:
            if buf:  # an unfinished escape sequence: more bytes, or it was Esc
                with trio.move_on_after(ESC_DELAY) as waited:
                    await trio.lowlevel.wait_readable(self.fd)
                if waited.cancelled_caught:
                    keys, buf = parse_keys(buf, final=True)
                    self._on_keys(keys)
                    continue
            else:
                await trio.lowlevel.wait_readable(self.fd)
            try:
                data = os.read(self.fd, 1024)
            except BlockingIOError:
                continue
            except OSError:  # the terminal went away (hangup)
                data = b""
            if not data:
                self._stop(1)
                return
            keys, buf = parse_keys(buf + data, final=False)
            self._on_keys(keys)

    def _on_keys(self, keys: list[str]) -> None:
        page = view.body_rows(self.console.size.height)
        for key in keys:
            action = handle_key(self.state, key, page=page)
            if action == "quit":
                self._stop(130 if key == "ctrl-c" else 0)
                return
            if action == "detail":
                self.detail_changed.set()
        if keys:
            self._poke(urgent=True)

    async def _signals(self) -> None:
        watched = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGWINCH)
        with trio.open_signal_receiver(*watched) as signals:
            async for signum in signals:
                if signum == signal.SIGWINCH:
                    self._poke(urgent=True)
                else:
                    self._stop(128 + signum)

    async def _details(self) -> None:
        # The same stdlib client as the rest of ctl (it checks a pin before it
        # sends the key), called from a worker thread; only this task uses it.
        http = Client(self.base_url, self.key, timeout=HTTP_TIMEOUT, trust=self.trust)
        try:
            while True:
                detail = self.state.detail
                if detail is not None:
                    try:
                        node, jobs, schedules, transfer = await trio.to_thread.run_sync(
                            _detail_docs, http, detail.node_id
                        )
                        detail.node, detail.jobs, detail.error = node, jobs, None
                        detail.schedules, detail.transfer = schedules, transfer
                    except (ClientError, ValueError, KeyError, TypeError) as exc:
                        detail.error = printable(f"cannot load the details: {exc}")
                    self._poke(urgent=True)
                with trio.move_on_after(DETAIL_REFRESH if detail is not None else math.inf):
                    await self.detail_changed.wait()
                self.detail_changed = trio.Event()
        finally:
            http.close()


def _detail_docs(http: Client, node_id: str) -> tuple[Any, Any, Any, Any]:
    """The detail panel's node document, its latest jobs, the schedules that pick
    it and its newest ``ctl cp`` audit row (push or pull; None), escaped."""
    node = http.node(node_id)
    jobs = http.jobs(node=node_id, limit=8)["jobs"]
    schedules = http.schedules(node=node_id)
    rows = [
        *http.audit(action="file.push", target=node["name"], limit=1),
        *http.audit(action="file.pull", target=node["name"], limit=1),
    ]
    transfer = max(rows, key=lambda r: r["ts"], default=None)
    return (
        printable_doc(node),
        printable_doc(jobs),
        printable_doc(schedules),
        printable_doc(transfer),
    )


def _refused(exc: ConnectionRejected) -> str:
    """One line for a refused credential: Core's own reason when it gave one."""
    try:
        message = str(json.loads(exc.body or b"")["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {exc.status_code}"
    return f"Core refused the key: {' '.join(message.split())[:300]} (--key / SERVERMGR_KEY)"
