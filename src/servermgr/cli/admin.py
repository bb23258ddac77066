"""Handlers of ``servermgr core``, ``node``, ``up`` and ``key`` (spec: cli/commands.py).

Each takes the parsed command line and returns its exit code (None: 0).
Heavy modules (trio, hypercorn, the Core) are imported inside the handler.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from servermgr.cli.spec import Parsed
from servermgr.common.errors import KeyFileError, UsageError

if TYPE_CHECKING:
    from servermgr.common.config import Config


def config_of(path: str | None) -> Config:
    """The config ``--config`` names, else $SERVERMGR_CONFIG / ./servermgr.toml / defaults."""
    from servermgr.common.config import find_config, load_config

    cwd = Path.cwd()
    return load_config(find_config(Path(path) if path else None, os.environ, cwd), cwd=cwd)


# --- core / node / up ------------------------------------------------------------


def core_serve(a: Parsed) -> None:
    cfg = config_of(a.config)
    import trio

    from servermgr.common import logs
    from servermgr.common.run import stop_on_signals
    from servermgr.core.app import serve

    logs.setup(cfg.log_level)

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_on_signals, stop)
            await serve(cfg, stop)
            nursery.cancel_scope.cancel()

    trio.run(main)


def core_backup(a: Parsed) -> None:
    cfg = config_of(a.config)
    from servermgr.core.dbfile import backup

    report = backup(cfg.storage.sqlite_path, Path(a.file), overwrite=a.force)
    print(
        f"backed up {cfg.storage.sqlite_path} to {report.path}: {report.bytes} bytes, "
        f"{report.nodes} nodes, {report.jobs} jobs, {report.samples} raw samples"
    )


def core_agent_publish(a: Parsed) -> None:
    cfg = config_of(a.config)
    from servermgr.core.agentfile import publish

    agent = publish(cfg.storage.data_dir, Path(a.file))
    print(
        f"published agent {agent.version} ({agent.size} bytes, sha256 {agent.sha256}) "
        f"as {agent.path}; move nodes to it with: servermgr ctl node upgrade --all"
    )


def node_upgrade_watch(a: Parsed) -> None:
    from servermgr.node.upgrade import watch

    watch(Path(a.marker))


def node_run(a: Parsed) -> None:
    from servermgr.node.run import run_agent

    run_agent(Path(a.config) if a.config else None)


def up(a: Parsed) -> None:
    cfg = with_overrides(config_of(a.config), listen=a.listen, data_dir=a.data_dir)
    from servermgr import up as up_mod
    from servermgr.common import logs

    logs.setup(cfg.log_level)
    up_mod.main(cfg, overridden=a.listen is not None or a.data_dir is not None)


def with_overrides(cfg: Config, *, listen: str | None, data_dir: str | None) -> Config:
    """The config with ``--listen`` / ``--data-dir`` applied (the database moves along
    with the data directory unless the config placed it elsewhere)."""
    from dataclasses import replace

    from servermgr.common.config_fields import parse_listen

    if listen is not None:
        host, port = parse_listen(listen)
        cfg = replace(cfg, server=replace(cfg.server, listen_host=host, listen_port=port))
    if data_dir is not None:
        new = Path(data_dir).absolute()
        storage = cfg.storage
        db = storage.sqlite_path
        if db == storage.data_dir / "server_manager.db":
            db = new / "server_manager.db"
        cfg = replace(cfg, storage=replace(storage, data_dir=new, sqlite_path=db))
    return cfg


# --- key -------------------------------------------------------------------------


def key_show(a: Parsed) -> None:
    """Print the core key. Created (as Core would) only for a config file that names
    the Core: with defaults or a bare ``--data-dir`` a missing key is an error that
    says where Core keeps its key, not a new key no Core uses."""
    from servermgr.common.config import find_config
    from servermgr.common.keyfile import load_or_create_key, read_key

    if a.config is not None and a.data_dir is not None:
        raise UsageError("give --config or --data-dir, not both")
    data_dir = Path(a.data_dir) if a.data_dir else None
    cfg = config_of(a.config) if data_dir is None else None
    path = cfg.storage.key_path if cfg is not None else data_dir / "core.key"  # type: ignore[operator]
    named = data_dir is None and find_config(
        Path(a.config) if a.config else None, os.environ, Path.cwd()
    )
    if not named and not path.exists():
        raise KeyFileError(str(path.absolute()), _NO_KEY)
    key = load_or_create_key(path) if named else read_key(path)
    print(key.value)
    if key.warning:
        sys.stderr.write(f"warning: {key.warning}\n")
    note = "created" if key.created else "stored"
    sys.stderr.write(
        f"({note} in {key.path}; the admin credential: use it as SERVERMGR_KEY; for nodes "
        "make an enroll token: servermgr key create --role enroll --name NAME)\n"
    )
    _show_fingerprint(cfg, data_dir)


_NO_KEY = (
    "no key here: no Core has started with this data directory. Give Core's own: "
    "--data-dir DIR (the directory `servermgr up` and `core serve` name when they start; "
    "the key is DIR/core.key) or --config FILE (its [storage] data_dir)"
)


def _show_fingerprint(cfg: Config | None, data_dir: Path | None) -> None:
    """Line 2 of ``key show`` when Core serves TLS: its certificate's fingerprint."""
    from servermgr.core import tls

    files = tls.fingerprint_for(cfg, data_dir)
    if files is None:
        return
    print(files.fingerprint)
    sys.stderr.write(
        f"(line 2: the fingerprint of {files.cert}; use it as node.tls_fingerprint "
        "and SERVERMGR_FINGERPRINT)\n"
    )


def _core_paths(a: Parsed) -> tuple[Path, Path]:
    """(core key file, database) of the Core whose credentials a key command manages."""
    if a.config is not None and a.data_dir is not None:
        raise UsageError("give --config or --data-dir, not both")
    if a.data_dir is not None:
        return Path(a.data_dir) / "core.key", Path(a.data_dir) / "server_manager.db"
    cfg = config_of(a.config)
    return cfg.storage.key_path, cfg.storage.sqlite_path


def key_create(a: Parsed) -> None:
    from servermgr.core import keyadmin

    if a.role is None or a.name is None:
        raise UsageError("give --role (read, operate or enroll) and --name")
    _, db = _core_paths(a)
    doc, secret = keyadmin.create(db, a.name, a.role, a.expires)
    print(secret)
    until = "never expires" if doc["expires"] is None else "expires " + _when(doc["expires"])
    sys.stderr.write(
        f"(token {doc['name']!r}, role {doc['role']}, {until}; shown only now: Core keeps a "
        "hash. A running Core takes it within a second)\n"
    )


def key_list(a: Parsed) -> None:
    from servermgr.core import keyadmin

    _, db = _core_paths(a)
    rows = keyadmin.listing(db)
    if a.json:
        from servermgr.ctl.output import print_items

        print_items(rows)
        return
    if not rows:
        print("no tokens (make one: servermgr key create --role read --name NAME)")
        return
    from servermgr.ctl import plain

    table = [
        [
            (plain.word(r["name"]), None),
            (r["role"], None),
            (_when(r["created"]), None),
            (_when(r["expires"]) if r["expires"] is not None else "never", None),
            (_when(r["last_used"]) if r["last_used"] is not None else "never", None),
        ]
        for r in rows
    ]
    # One word a cell, as every piped table (docs/reference/cli.md, Tables).
    print("\n".join(plain.table(("NAME", "ROLE", "CREATED", "EXPIRES", "LAST_USED"), table)))


def key_revoke(a: Parsed) -> None:
    from servermgr.core import keyadmin

    _, db = _core_paths(a)
    keyadmin.revoke(db, a.name)
    print(f"revoked token {a.name!r}")


def key_rotate(a: Parsed) -> None:
    from servermgr.core import keyadmin

    path, _ = _core_paths(a)
    key = keyadmin.rotate(path)
    print(key.value)
    sys.stderr.write(
        f"(new core key in {path}; the old one stops working, on a running Core within a "
        "second; registered nodes keep working: update SERVERMGR_KEY where it was used)\n"
    )


def _when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M", time.localtime(ts))
