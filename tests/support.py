"""Helpers shared by the end-to-end test modules (real CLI processes)."""

from __future__ import annotations

import os
import shutil
import socket
import sys

_exe = shutil.which("servermgr", path=os.path.dirname(sys.executable))
# The installed console script when there is one, else the module.
SERVERMGR = [_exe] if _exe else [sys.executable, "-m", "servermgr"]


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a Core that must restart on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
