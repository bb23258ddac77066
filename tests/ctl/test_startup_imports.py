"""ctl's fast paths stay fast: what `--help` and `ctl exec` import before they talk to Core."""

from __future__ import annotations

import subprocess
import sys

# Each is a measured cost on these paths (docs/decisions.md, "ctl's start-up
# path imports neither typing nor socket"); instructions from valgrind.
NOT_ON_THE_FAST_PATH = (
    "typing",  # ~16 M instructions (~4 ms)
    "socket",  # ~14 M: an enum of every constant; common/rest.py uses _socket
    "urllib.parse",  # ~11 M with ipaddress; common/addr.py reads plain URLs itself
    "encodings.idna",  # ~6 M: a str host given to getaddrinfo
    "dataclasses",  # ~10 M with inspect
    "base64",  # ~2 M; binascii does it
    "http.client",
    "httpx",
    "typer",
    "rich",
    "msgspec",
    "trio",
)


def test_help_and_exec_up_to_the_request_import_none_of_the_slow_modules() -> None:
    code = (
        "import io, os, sys, contextlib\n"
        "from servermgr.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert run(['--help']) == 0\n"
        "    assert run(['ctl', 'exec', '--help']) == 0\n"
        "from servermgr.cli import spec, commands\n"
        "a = spec.parse(commands.ROOT, ['ctl', 'exec', '-t', '5s', 'node-01', '/bin/true'],"
        " {'SERVERMGR_CORE': 'http://127.0.0.1:9', 'SERVERMGR_KEY': 'k'})\n"
        "import servermgr.ctl.commands as c, servermgr.ctl.exec, servermgr.ctl.plain\n"
        "from servermgr.ctl.jobspec import target_of\n"
        "target_of(a.words, a.all, a.label)\n"
        "c.client(a)\n"
        "from servermgr.ctl.client import query, segment\n"
        "query({'output': 'false'}), segment('1a2b-3c')\n"
        "from servermgr.common.rest import connect\n"
        "connect(a.core, 1.0)\n"
        f"print(' '.join(m for m in {NOT_ON_THE_FAST_PATH!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert out.stdout.split() == []
