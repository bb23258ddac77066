"""Core key: created once, atomically, 0600; never overwritten; bad files are errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from servermgr.common.errors import KeyFileError
from servermgr.common.keyfile import load_or_create_key, read_key


def test_created_once_then_loaded(tmp_path: Path) -> None:
    path = tmp_path / "data" / "core.key"
    first = load_or_create_key(path)
    assert first.created
    assert len(first.value) == 64
    assert int(first.value, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_key(path)
    assert not second.created
    assert second.value == first.value
    assert first.value not in repr(first)
    assert [p.name for p in path.parent.iterdir()] == ["core.key"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"\n", "empty"), (b"not-a-key\n", "corrupt"), (b"ab" * 40, "corrupt")],
)
def test_bad_key_file_is_an_error_and_left_untouched(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "core.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=reason):
        load_or_create_key(path)
    assert path.read_bytes() == content


def test_unreadable_key_file(tmp_path: Path) -> None:
    path = tmp_path / "core.key"
    path.mkdir()
    with pytest.raises(KeyFileError, match="not a regular file|cannot"):
        load_or_create_key(path)


def test_open_permissions_warn_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "core.key"
    load_or_create_key(path)
    path.chmod(0o644)
    key = load_or_create_key(path)
    assert key.warning is not None
    assert str(path) in key.warning
    assert "chmod 600" in key.warning


def test_read_key_does_not_create(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no key file"):
        read_key(tmp_path / "core.key")
    assert not (tmp_path / "core.key").exists()


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "core.key"
    code = (
        "import sys; from pathlib import Path; "
        "from servermgr.common.keyfile import load_or_create_key; "
        f"print(load_or_create_key(Path({str(path)!r})).value)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    keys = {p.communicate(timeout=30)[0].strip() for p in procs}
    assert len(keys) == 1
    assert keys == {path.read_text().strip()}
    assert sorted(os.listdir(tmp_path)) == ["core.key"]


def test_rotate_replaces_the_key_atomically_at_0600(tmp_path: Path) -> None:
    from servermgr.common.keyfile import rotate_key

    path = tmp_path / "core.key"
    first = load_or_create_key(path)
    second = rotate_key(path)
    assert second.value != first.value
    assert load_or_create_key(path).value == second.value
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["core.key"]


def test_rotate_needs_an_existing_key(tmp_path: Path) -> None:
    from servermgr.common.keyfile import rotate_key

    with pytest.raises(KeyFileError):
        rotate_key(tmp_path / "core.key")
    assert not (tmp_path / "core.key").exists()
