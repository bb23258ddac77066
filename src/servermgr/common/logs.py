"""Logging to stderr in one format for every role. Secrets are never logged.

One log record is one line: the message (with its arguments, which may be
strings a node or a client chose) goes through ``text.printable``, so an ESC,
CR or newline in a hostname or an error text can neither drive the reader's
terminal nor forge a log line. A traceback, which our own code produces,
follows on its own lines as usual.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from servermgr.common.text import printable


class SafeFormatter(logging.Formatter):
    """A formatter that escapes control characters in the message."""

    def format(self, record: logging.LogRecord) -> str:
        msg, args = record.msg, record.args
        record.msg, record.args = printable(record.getMessage()), None
        try:
            return super().format(record)
        finally:
            record.msg, record.args = msg, args


def setup(level: str = "info", *, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Hypercorn's own error log is noisy about routine client disconnects.
    logging.getLogger("servermgr.core.http").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("trio-websocket").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
