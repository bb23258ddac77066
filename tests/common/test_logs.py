"""Log lines: one record is one line, whatever a node put in its strings."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from servermgr.common import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    logs.setup("info", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_control_characters_in_arguments_cannot_forge_lines_or_drive_a_terminal(
    captured: io.StringIO,
) -> None:
    hostile = "web\r\n2026-11-30 04:00:00 INFO    servermgr.core: key is abc\x1b]0;x\x07\u202e"
    logging.getLogger("servermgr.core.gateway").warning("node %s reports %s", hostile, "\x9b2J")
    out = captured.getvalue()
    assert out.count("\n") == 1
    assert not any(c in out for c in "\r\x1b\x07\x9b\u202e")
    assert "web\\r\\n2026-11-30" in out
    assert "\\x1b]0;x\\x07\\u202e" in out
    assert out.rstrip("\n").endswith("reports \\x9b2J")


def test_a_traceback_still_follows_on_its_own_lines(captured: io.StringIO) -> None:
    log = logging.getLogger("servermgr.test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("task %s died", "x\x1b")
    out = captured.getvalue()
    first, *rest = out.splitlines()
    assert first.endswith("task x\\x1b died")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: boom"


def test_the_record_is_left_as_it_was_for_other_handlers(captured: io.StringIO) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        logging.getLogger("servermgr.test").warning("a %s", "\x1b")
    finally:
        logging.getLogger().removeHandler(keep)
    assert seen[0].getMessage() == "a \x1b"
