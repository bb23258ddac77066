"""The zipapp's lock file pins every runtime dependency servermgr declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[ <>=!~;\[]", requirement, maxsplit=1)[0]).lower()


def test_every_runtime_dependency_is_pinned_in_the_zipapp_lock() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {}
    for line in (ROOT / "zipapp.lock.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pinned[_name(name)] = version
    missing = {_name(r) for r in declared} - set(pinned)
    assert not missing, f"add to zipapp.lock.txt: {sorted(missing)}"
    assert "zipapp.lock.txt" in (ROOT / "build_zipapp.sh").read_text()
