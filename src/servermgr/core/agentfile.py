"""The agent zipapp Core hands out for upgrades: ``<data_dir>/agent/``.

``servermgr core agent-publish FILE`` runs ``FILE --version`` (a build that
does not start is refused before any node sees it), copies it in atomically
as ``servermgr.pyz`` and writes ``agent.json`` beside it with its version,
size and SHA-256. Core reads both when an upgrade starts, so a new publish
needs no restart of Core.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from servermgr.common.errors import UsageError
from servermgr.common.files import fsync_dir, write_atomic

FOLDER = "agent"
FILE = "servermgr.pyz"
META = "agent.json"
VERSION_TIMEOUT = 60.0
_VERSION = re.compile(r"^servermgr ([A-Za-z0-9_.+-]{1,64})\s*$")


@dataclass(frozen=True)
class AgentFile:
    path: Path
    version: str
    size: int
    sha256: str


def version_of(path: Path, python: str = sys.executable) -> str:
    """What ``python FILE --version`` says its version is; UsageError if it does not run."""
    try:
        done = subprocess.run(
            [python, str(path), "--version"],
            capture_output=True,
            timeout=VERSION_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{path} does not run: {exc}") from None
    text = done.stdout.decode(errors="replace").strip()
    match = _VERSION.match(text)
    if done.returncode != 0 or match is None:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        why = err[-1] if err else text or f"exit {done.returncode}"
        raise UsageError(f"{path} is not a servermgr build that starts: {why[:300]}")
    return match.group(1)


def sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def publish(data_dir: Path, source: Path) -> AgentFile:
    """Check ``source`` and make it the agent Core hands out."""
    if not source.is_file():
        raise UsageError(f"{source} is not a file")
    version = version_of(source)
    folder = data_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FILE
    tmp = folder / f".{FILE}.tmp"
    shutil.copyfile(source, tmp)
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    tmp.chmod(0o644)
    sha256, size = sha256_of(tmp)
    os.replace(tmp, target)
    fsync_dir(folder)
    meta = {"version": version, "size": size, "sha256": sha256}
    write_atomic(folder / META, json.dumps(meta).encode(), replace=True, mode=0o644)
    return AgentFile(target, version, size, sha256)


def load(data_dir: Path) -> AgentFile | None:
    """The published agent, or None when there is none (or it was changed by hand)."""
    folder = data_dir / FOLDER
    try:
        meta = json.loads((folder / META).read_text())
        size = (folder / FILE).stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("size") != size:
        return None
    return AgentFile(folder / FILE, str(meta["version"]), size, str(meta["sha256"]))
