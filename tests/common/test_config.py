"""Config: the original's keys, defaults, and one clear error per bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from servermgr.common.config import find_config, load_config, parse_config
from servermgr.common.errors import ConfigError

ORIGINAL = """
[server]
listen = "127.0.0.1:9999"
[storage]
sqlite_path = "./data/server_manager.db"
redis_url = "redis://127.0.0.1:6379"
[node]
core_addr = "ws://127.0.0.1:9999"
register_token = "abcdef123456"
hostname = "node-01"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "servermgr.toml"
    path.write_text(text)
    return path


def test_original_keys_work_as_written(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ORIGINAL), cwd=Path("/"))
    assert (cfg.server.listen_host, cfg.server.listen_port) == ("127.0.0.1", 9999)
    assert cfg.storage.sqlite_path == tmp_path / "data" / "server_manager.db"
    assert cfg.storage.redis_url == "redis://127.0.0.1:6379"
    assert cfg.node.core_addr == ("ws://127.0.0.1:9999",)
    assert cfg.require_node() == ("ws://127.0.0.1:9999",)
    assert cfg.node.register_token == "abcdef123456"
    assert cfg.node.hostname == "node-01"


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(None, cwd=tmp_path)
    assert cfg.server.listen == "127.0.0.1:9999"
    assert cfg.server.heartbeat_interval == 5.0
    assert cfg.storage.data_dir == tmp_path / "data"
    assert cfg.storage.key_path == tmp_path / "data" / "core.key"
    assert cfg.storage.sqlite_path == tmp_path / "data" / "server_manager.db"
    assert cfg.storage.redis_url is None
    assert cfg.exec.enabled is True
    assert cfg.log_level == "info"


def test_relative_paths_resolve_from_the_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    cfg = load_config(
        write(sub, '[storage]\ndata_dir = "state"\n[node]\ndata_dir = "n"\n'), cwd=Path("/")
    )
    assert cfg.storage.data_dir == sub / "state"
    assert cfg.storage.sqlite_path == sub / "state" / "server_manager.db"
    assert cfg.node.data_dir == sub / "n"


def test_ipv6_listen() -> None:
    cfg = parse_config('[server]\nlisten = "[::1]:0"', source=None, base_dir=Path("/"))
    assert (cfg.server.listen_host, cfg.server.listen_port) == ("::1", 0)
    assert cfg.server.listen == "[::1]:0"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[server]\nlisten = 42", "server.listen", "must be a string"),
        ('[server]\nlisten = "localhost"', "server.listen", "expected host:port"),
        ('[server]\nlisten = "127.0.0.1:99999"', "server.listen", "port must be a number"),
        ('[server]\nlisten = ":9999"', "server.listen", "host part is empty"),
        ("[server]\nheartbeat_interval = 0", "server.heartbeat_interval", "between"),
        ('[server]\nheartbeat_interval = "5"', "server.heartbeat_interval", "must be a number"),
        ("[server]\nport = 1", "server.port", "unknown key"),
        ("[servre]\n", "servre", "unknown section"),
        ('[node]\ncore_addr = "ftp://x"', "node.core_addr", "scheme must be"),
        ('[node]\ncore_addr = "ws://h:9999/api"', "node.core_addr", "without a path"),
        ('[node]\ncore_addr = "ws://h:notaport"', "node.core_addr", "bad URL"),
        ('[storage]\nredis_url = "http://x"', "storage.redis_url", "scheme must be"),
        ('[storage]\nredis_url = "redis://h/x"', "storage.redis_url", "database number"),
        ('[node]\nhostname = "bad name!"', "node.hostname", "bad node name"),
        ('[node]\nhostname = "all"', "node.hostname", "reserved"),
        ('[node]\nhostname = "n0123456789abcdef"', "node.hostname", "shaped like a node id"),
        ('[node]\nhostname = "web\\n"', "node.hostname", "bad node name"),
        ("[node]\nlabels = {role = 3}", "node.labels.role", "label values"),
        ('[node]\nlabels = "web"', "node.labels", "must be a table"),
        ("[exec]\nenabled = 1", "exec.enabled", "true or false"),
        ("[exec]\nallow = 'ls'", "exec.allow", "array"),
        ("[exec]\nmax_concurrent = 0", "exec.max_concurrent", "between"),
        ('[log]\nlevel = "loud"', "log.level", "must be one of"),
        ("[limits]\nauth_failures = 0", "limits.auth_failures", "between 1 and"),
        ("[limits]\nauth_failures = 2.5", "limits.auth_failures", "whole number"),
        ('[limits]\nauth_window = "1m"', "limits.auth_window", "must be a number"),
        ("[limits]\nhandshake_timeout = 0", "limits.handshake_timeout", "between"),
        ("[limits]\nmax_auth = 3", "limits.max_auth", "unknown key"),
        ("server = 1", "server", "must be a table"),
    ],
)
def test_bad_values_name_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, cwd=tmp_path)
    err = info.value
    assert err.path == str(path)
    assert err.key == key
    assert reason in err.reason
    assert str(path) in str(err)
    assert key in str(err)
    assert err.exit_code == 2


def test_files_and_shell_policy(tmp_path: Path) -> None:
    text = (
        "[exec]\nshell = true\nshell_transcript = true\n"
        '[files]\nwrite = ["/etc/nginx/**"]\nread = []\nmax_size = "2GiB"\n'
    )
    cfg = load_config(write(tmp_path, text), cwd=tmp_path)
    assert cfg.exec.shell
    assert cfg.exec.shell_transcript
    assert cfg.files.write == ("/etc/nginx/**",)
    assert cfg.files.read == ()
    assert cfg.files.max_size == 2 * 1024**3
    defaults = load_config(None, cwd=tmp_path)
    assert not defaults.exec.shell
    assert defaults.files.read is None
    with pytest.raises(ConfigError, match="absolute path patterns"):
        load_config(write(tmp_path, '[files]\nwrite = ["etc/*"]\n'), cwd=tmp_path)


def test_invalid_toml_reports_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:9999"\nbroken = \n')
    with pytest.raises(ConfigError, match="invalid TOML.*line 3"):
        load_config(path, cwd=tmp_path)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", cwd=tmp_path)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, cwd=tmp_path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary, cwd=tmp_path)


def test_missing_required_node_keys(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[node]\nhostname = "n1"\n'), cwd=tmp_path)
    with pytest.raises(ConfigError) as info:
        cfg.require_node()
    assert info.value.key == "node.core_addr"
    assert "required" in info.value.reason


def test_find_config_order(tmp_path: Path) -> None:
    explicit = tmp_path / "x.toml"
    assert find_config(explicit, {"SERVERMGR_CONFIG": "/e.toml"}, tmp_path) == explicit
    assert find_config(None, {"SERVERMGR_CONFIG": "/e.toml"}, tmp_path) == Path("/e.toml")
    assert find_config(None, {}, tmp_path) is None
    write(tmp_path, "")
    assert find_config(None, {}, tmp_path) == tmp_path / "servermgr.toml"


def test_register_token_is_not_in_repr(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ORIGINAL), cwd=tmp_path)
    assert "abcdef123456" not in repr(cfg)


def test_a_token_in_a_file_others_can_read_gets_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\ncore_addr = "ws://127.0.0.1:1"\nregister_token = "t1.secret"\n')
    path.chmod(0o644)
    warning = load_config(path, cwd=tmp_path).token_file_warning()
    assert warning is not None
    assert "chmod 600" in warning
    assert "0644" in warning
    assert "t1.secret" not in warning
    path.chmod(0o600)
    assert load_config(path, cwd=tmp_path).token_file_warning() is None
    # No token in it: nothing to protect.
    path.write_text('[node]\ncore_addr = "ws://127.0.0.1:1"\n')
    path.chmod(0o644)
    assert load_config(path, cwd=tmp_path).token_file_warning() is None


def test_a_node_needs_only_core_addr_to_start(tmp_path: Path) -> None:
    cfg = parse_config('[node]\ncore_addr = "ws://127.0.0.1:1"\n', source=None, base_dir=tmp_path)
    assert cfg.require_node() == ("ws://127.0.0.1:1",)
    with pytest.raises(ConfigError, match="core_addr"):
        parse_config("", source=None, base_dir=tmp_path).require_node()


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ('[server]\nlisen = "127.0.0.1:1"\n', "server.lisen: unknown key; did you mean 'listen'?"),
        ("[storge]\n", "storge: unknown section; did you mean 'storage'?"),
        (
            '[[receiver]]\nname = "ops"\ntype = "webhook"\nurl = "http://h/"\ntimout = 5\n',
            "receiver.ops.timout: unknown key; did you mean 'timeout'?",
        ),
    ],
)
def test_an_unknown_key_suggests_the_closest_valid_one(text: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(hint)):
        parse_config(text, source=None, base_dir=Path("/nonexistent"))


def test_core_addr_may_list_several_cores(tmp_path: Path) -> None:
    cfg = parse_config(
        '[node]\ncore_addr = ["ws://127.0.0.1:1/", "wss://core-b:2"]\n',
        source=None,
        base_dir=tmp_path,
    )
    assert cfg.require_node() == ("ws://127.0.0.1:1", "wss://core-b:2")
    for bad, why in (
        ("[]", "give 1 to 16 addresses"),
        ('["ws://a:1", "ws://a:1"]', "twice"),
        ('["ws://a:1", 3]', "URL string"),
        ('["ws://a:1", "ftp://b:2"]', "bad URL"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse_config(f"[node]\ncore_addr = {bad}\n", source=None, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="wss://"):  # a pin needs TLS on every address
        parse_config(
            '[node]\ncore_addr = ["wss://a:1", "ws://b:2"]\ntls_fingerprint = "sha256:'
            + "ab" * 32
            + '"\n',
            source=None,
            base_dir=tmp_path,
        )
