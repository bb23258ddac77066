"""``servermgr up --listen/--data-dir``: the overrides a quick look-around needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from servermgr.cli import spec
from servermgr.cli.admin import with_overrides
from servermgr.cli.commands import ROOT
from servermgr.common.config import parse_config
from servermgr.common.errors import UsageError


def test_listen_and_data_dir_replace_the_configs(tmp_path: Path) -> None:
    cfg = parse_config('[server]\nlisten = "127.0.0.1:9999"\n', source=None, base_dir=tmp_path)
    out = with_overrides(cfg, listen="0.0.0.0:7000", data_dir=str(tmp_path / "d"))
    assert (out.server.listen_host, out.server.listen_port) == ("0.0.0.0", 7000)
    assert out.storage.data_dir == tmp_path / "d"
    assert out.storage.sqlite_path == tmp_path / "d" / "server_manager.db"
    assert out.storage.key_path == tmp_path / "d" / "core.key"


def test_a_database_placed_elsewhere_stays_there(tmp_path: Path) -> None:
    text = f'[storage]\nsqlite_path = "{tmp_path / "db.sqlite"}"\n'
    cfg = parse_config(text, source=None, base_dir=tmp_path)
    out = with_overrides(cfg, listen=None, data_dir=str(tmp_path / "d"))
    assert out.storage.sqlite_path == tmp_path / "db.sqlite"


def test_a_bad_listen_address_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--listen: expected host:port"):
        spec.parse(ROOT, ["up", "--listen", "9999"], {})
