"""Logging to stderr in one format for every role. Secrets are never logged."""

from __future__ import annotations

import logging
import sys
from typing import TextIO


def setup(level: str = "info", *, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Hypercorn's own error log is noisy about routine client disconnects.
    logging.getLogger("servermgr.core.http").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("trio-websocket").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
