"""TOML config for every role, turned into typed, validated objects.

One file format serves Core (``[server]``, ``[storage]``) and Node
(``[node]``); either role accepts the other's sections, and every other
section or key is an error. Errors name the file, the key and the reason, and
are raised before anything starts. Relative paths are resolved from the
config file's directory (or the working directory when there is no file).

Pure logic apart from reading the file: ``parse_config`` takes text.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from servermgr.common import names
from servermgr.common.alertconfig import AlertsConfig, parse_alerts
from servermgr.common.errors import ConfigError
from servermgr.common.timespec import parse_duration
from servermgr.common.tls import Trust, parse_fingerprint

DEFAULT_CONFIG_NAME = "servermgr.toml"
CONFIG_ENV = "SERVERMGR_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
AUTO_TLS_CERT = "tls.crt"  # in data_dir, with tls = "auto"
AUTO_TLS_KEY = "tls.key"


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 9999
    heartbeat_interval: float = 5.0
    # "off", "auto" (a self-signed certificate in data_dir) or "files" (tls_cert/tls_key).
    tls: str = "off"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Serve GET /metrics without a credential to loopback clients (default: a read token).
    metrics_loopback: bool = False

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


@dataclass(frozen=True)
class StorageConfig:
    data_dir: Path
    sqlite_path: Path
    redis_url: str | None = None
    # History kept per resolution (seconds), and an optional cap on the file.
    retention_raw: float = 86400.0
    retention_1m: float = 7 * 86400.0
    retention_1h: float = 365 * 86400.0
    max_db_size: int | None = None

    @property
    def key_path(self) -> Path:
        return self.data_dir / "core.key"


@dataclass(frozen=True)
class NodeConfig:
    # Core's addresses, tried in order: several Core processes of one fleet
    # (the agent moves to the next when its Core goes away). Empty: not set.
    core_addr: tuple[str, ...]
    register_token: str | None = field(default=None, repr=False)
    hostname: str | None = None
    data_dir: Path = Path("node-data")
    labels: Mapping[str, str] = field(default_factory=dict)
    tls_fingerprint: str | None = None
    ca_file: Path | None = None

    @property
    def trust(self) -> Trust:
        """How this node verifies Core's certificate on ``wss://``."""
        return Trust(self.tls_fingerprint, self.ca_file)


@dataclass(frozen=True)
class ExecConfig:
    """The node's own policy for remote execution; Core cannot override it."""

    enabled: bool = True
    allow: tuple[str, ...] = ()
    allow_env: tuple[str, ...] = ()
    allow_cwd: tuple[str, ...] = ()
    run_as: str | None = None
    max_timeout: float | None = None
    max_concurrent: int = 8
    shell: bool = False  # interactive shells (ctl shell): off unless the node says so
    shell_transcript: bool = False  # keep what each shell session printed, 0600
    shell_command: str | None = None  # the login shell: $SHELL of the agent, else /bin/sh
    allow_upgrade: bool | None = None  # agent upgrades from Core; None: see node/policy.py


@dataclass(frozen=True)
class FilesConfig:
    """The node's own policy for file transfers (ctl cp): absolute path globs.

    None: not said, so the default applies (see ``node/policy.py``).
    """

    read: tuple[str, ...] | None = None
    write: tuple[str, ...] | None = None
    max_size: int = 16 * 1024**3


@dataclass(frozen=True)
class LimitsConfig:
    """Core's abuse limits (docs/security.md): per client address."""

    auth_failures: int = 10  # failed authentications allowed per window, then 429
    auth_window: float = 60.0
    unauthenticated_connections: int = 32  # per address, before it authenticates
    handshake_timeout: float = 5.0  # to send a complete request head (or TLS handshake)
    send_timeout: float = 30.0  # data sent to a client unacknowledged this long: dropped


@dataclass(frozen=True)
class Config:
    """Everything a config file can say; ``path`` is None for pure defaults."""

    path: Path | None
    server: ServerConfig
    storage: StorageConfig
    node: NodeConfig
    exec: ExecConfig = field(default_factory=ExecConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    log_level: str = "info"
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "<defaults>"

    @property
    def tls_paths(self) -> tuple[Path, Path] | None:
        """Core's certificate and key: ``tls_cert``/``tls_key``, or with ``tls = "auto"``
        the self-signed pair in data_dir; None when TLS is off."""
        server = self.server
        if server.tls == "files" and server.tls_cert and server.tls_key:
            return server.tls_cert, server.tls_key
        if server.tls == "auto":
            return self.storage.data_dir / AUTO_TLS_CERT, self.storage.data_dir / AUTO_TLS_KEY
        return None

    def require_node(self) -> tuple[str, ...]:
        """The node's ``core_addr`` (one or more addresses), or a ConfigError.

        ``register_token`` is needed only to enrol (no identity in data_dir
        yet); the agent says so when it is missing then.
        """
        if not self.node.core_addr:
            raise ConfigError(self.source, "node.core_addr", "required to run a node")
        return self.node.core_addr

    def token_file_warning(self) -> str | None:
        """A warning when the config file holds a token and others can read it."""
        if self.path is None or not self.node.register_token:
            return None
        import os
        import stat

        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except OSError:
            return None
        if not mode & 0o077:
            return None
        return (
            f"{self.path} holds node.register_token and is readable by group or others "
            f"(mode {mode:04o}); fix with: chmod 600 {self.path} (or remove register_token: "
            "a registered node needs only its own credential)"
        )


def find_config(explicit: Path | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    """Which file to read: ``--config``, else $SERVERMGR_CONFIG, else ./servermgr.toml."""
    if explicit is not None:
        return explicit
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    candidate = cwd / DEFAULT_CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_config(path: Path | None, *, cwd: Path) -> Config:
    """Read and validate ``path``; ``None`` gives the defaults rooted at ``cwd``."""
    if path is None:
        return parse_config("", source=None, base_dir=cwd)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), None, "is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(str(path), None, "permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror}") from None
    base = path.resolve().parent
    return parse_config(text, source=path, base_dir=base)


# --- validation ------------------------------------------------------------

_Check = Callable[[str, Any], Any]


class _Section:
    def __init__(self, source: str, name: str, table: Any) -> None:
        self.source = source
        self.name = name
        if not isinstance(table, dict):
            raise ConfigError(source, name, f"must be a table, not {_tname(table)}")
        self.table: dict[str, Any] = table

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.table:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise ConfigError(
                    self.source,
                    f"{self.name}.{key}",
                    f"unknown key{_did_you_mean(key, allowed)} (known keys: {known})",
                )

    def get(self, key: str, check: _Check, default: Any) -> Any:
        if key not in self.table:
            return default
        reason_or_value = check(key, self.table[key])
        return reason_or_value

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.source, f"{self.name}.{key}", reason)


def _did_you_mean(word: str, known: set[str]) -> str:
    """``; did you mean 'listen'?`` for a near miss, else nothing."""
    from difflib import get_close_matches

    close = get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _tname(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        dict: "a table",
        list: "an array",
    }.get(type(value), type(value).__name__)


def parse_config(text: str, *, source: Path | None, base_dir: Path) -> Config:
    """Validate TOML ``text``; errors name ``source``, the key and the reason."""
    src = str(source) if source else "<defaults>"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(src, None, f"invalid TOML: {exc}") from None

    sections = {
        "server",
        "storage",
        "node",
        "exec",
        "files",
        "limits",
        "log",
        "alert",
        "alerts",
        "receiver",
    }
    for name in doc:
        if name not in sections:
            raise ConfigError(
                src,
                name,
                f"unknown section{_did_you_mean(name, sections)} "
                f"(known sections: {', '.join(sorted(sections))})",
            )

    def path_value(sec: _Section) -> _Check:
        def check(key: str, value: Any) -> Path:
            if not isinstance(value, str) or not value:
                raise sec.fail(key, f"must be a non-empty path string, not {_tname(value)}")
            p = Path(value).expanduser()
            return p if p.is_absolute() else base_dir / p

        return check

    server = _Section(src, "server", doc.get("server", {}))
    server.check_keys(
        {"listen", "heartbeat_interval", "tls", "tls_cert", "tls_key", "metrics_loopback"}
    )
    host, port = server.get("listen", lambda k, v: _parse_listen(server, k, v), ("127.0.0.1", 9999))
    interval = server.get(
        "heartbeat_interval", lambda k, v: _number(server, k, v, 0.05, 3600.0), 5.0
    )
    tls_mode, tls_cert, tls_key = _server_tls(server, path_value(server))
    metrics_loopback = server.get("metrics_loopback", lambda k, v: _bool(server, k, v), False)

    storage = _Section(src, "storage", doc.get("storage", {}))
    storage.check_keys(
        {
            "data_dir",
            "sqlite_path",
            "redis_url",
            "retention_raw",
            "retention_1m",
            "retention_1h",
            "max_db_size",
        }
    )
    data_dir = storage.get("data_dir", path_value(storage), base_dir / "data")
    sqlite_path = storage.get("sqlite_path", path_value(storage), data_dir / "server_manager.db")
    redis_url = storage.get("redis_url", lambda k, v: _parse_redis(storage, k, v), None)
    keep: dict[str, float] = {}
    for key, default, finer in (
        ("retention_raw", StorageConfig.retention_raw, None),
        ("retention_1m", StorageConfig.retention_1m, "retention_raw"),
        ("retention_1h", StorageConfig.retention_1h, "retention_1m"),
    ):
        keep[key] = storage.get(key, lambda k, v: _retention(storage, k, v), default)
        if finer is not None and keep[key] < keep[finer]:
            given = _span(keep[key]) + ("" if key in storage.table else " by default")
            raise storage.fail(
                key, f"is {given}, shorter than storage.{finer} ({_span(keep[finer])})"
            )
    max_db_size = storage.get("max_db_size", lambda k, v: _parse_size(storage, k, v), None)

    node = _Section(src, "node", doc.get("node", {}))
    node.check_keys(
        {
            "core_addr",
            "register_token",
            "hostname",
            "data_dir",
            "labels",
            "tls_fingerprint",
            "ca_file",
        }
    )
    core_addr = node.get("core_addr", lambda k, v: _parse_core_addrs(node, k, v), ())
    token = node.get("register_token", lambda k, v: _string(node, k, v), None)
    hostname = node.get("hostname", lambda k, v: _parse_hostname(node, k, v), None)
    node_dir = node.get("data_dir", path_value(node), base_dir / "node-data")
    labels = node.get("labels", lambda k, v: _parse_labels(node, k, v), {})
    pin = node.get("tls_fingerprint", lambda k, v: _parse_fingerprint(node, k, v), None)
    ca_file = node.get("ca_file", path_value(node), None)
    _check_node_tls(node, core_addr, pin, ca_file)

    ex = _Section(src, "exec", doc.get("exec", {}))
    ex.check_keys(
        {
            "enabled",
            "allow",
            "allow_env",
            "allow_cwd",
            "run_as",
            "max_timeout",
            "max_concurrent",
            "shell",
            "shell_transcript",
            "shell_command",
            "allow_upgrade",
        }
    )
    exec_cfg = ExecConfig(
        enabled=ex.get("enabled", lambda k, v: _bool(ex, k, v), True),
        allow=ex.get("allow", lambda k, v: _string_list(ex, k, v), ()),
        allow_env=ex.get("allow_env", lambda k, v: _string_list(ex, k, v), ()),
        allow_cwd=ex.get("allow_cwd", lambda k, v: _absolute_list(ex, k, v), ()),
        run_as=ex.get("run_as", lambda k, v: _string(ex, k, v), None),
        max_timeout=ex.get("max_timeout", lambda k, v: _number(ex, k, v, 0.1, 7 * 86400.0), None),
        max_concurrent=int(ex.get("max_concurrent", lambda k, v: _integer(ex, k, v, 1, 1024), 8)),
        shell=ex.get("shell", lambda k, v: _bool(ex, k, v), False),
        shell_transcript=ex.get("shell_transcript", lambda k, v: _bool(ex, k, v), False),
        shell_command=ex.get("shell_command", lambda k, v: _absolute(ex, k, v), None),
        allow_upgrade=ex.get("allow_upgrade", lambda k, v: _bool(ex, k, v), None),
    )
    fs = _Section(src, "files", doc.get("files", {}))
    fs.check_keys({"read", "write", "max_size"})
    files_cfg = FilesConfig(
        read=fs.get("read", lambda k, v: _absolute_list(fs, k, v), None),
        write=fs.get("write", lambda k, v: _absolute_list(fs, k, v), None),
        max_size=fs.get("max_size", lambda k, v: _parse_size(fs, k, v), FilesConfig.max_size),
    )

    limits = _parse_limits(_Section(src, "limits", doc.get("limits", {})))

    log = _Section(src, "log", doc.get("log", {}))
    log.check_keys({"level"})
    level = log.get("level", lambda k, v: _choice(log, k, v, LOG_LEVELS), "info")
    alerts = parse_alerts(src, doc.get("alerts", {}), doc.get("alert", []), doc.get("receiver", []))

    return Config(
        path=source,
        server=ServerConfig(
            listen_host=host,
            listen_port=port,
            heartbeat_interval=interval,
            tls=tls_mode,
            tls_cert=tls_cert,
            tls_key=tls_key,
            metrics_loopback=metrics_loopback,
        ),
        storage=StorageConfig(
            data_dir=data_dir,
            sqlite_path=sqlite_path,
            redis_url=redis_url,
            retention_raw=keep["retention_raw"],
            retention_1m=keep["retention_1m"],
            retention_1h=keep["retention_1h"],
            max_db_size=max_db_size,
        ),
        node=NodeConfig(
            core_addr=core_addr,
            register_token=token,
            hostname=hostname,
            data_dir=node_dir,
            labels=labels,
            tls_fingerprint=pin,
            ca_file=ca_file,
        ),
        exec=exec_cfg,
        files=files_cfg,
        limits=limits,
        log_level=level,
        alerts=alerts,
    )


def _parse_limits(sec: _Section) -> LimitsConfig:
    sec.check_keys(
        {
            "auth_failures",
            "auth_window",
            "unauthenticated_connections",
            "handshake_timeout",
            "send_timeout",
        }
    )
    d = LimitsConfig()
    return LimitsConfig(
        auth_failures=sec.get(
            "auth_failures", lambda k, v: _integer(sec, k, v, 1, 1_000_000), d.auth_failures
        ),
        auth_window=sec.get(
            "auth_window", lambda k, v: _number(sec, k, v, 1, 86400), d.auth_window
        ),
        unauthenticated_connections=sec.get(
            "unauthenticated_connections",
            lambda k, v: _integer(sec, k, v, 1, 1_000_000),
            d.unauthenticated_connections,
        ),
        handshake_timeout=sec.get(
            "handshake_timeout", lambda k, v: _number(sec, k, v, 0.1, 300), d.handshake_timeout
        ),
        send_timeout=sec.get(
            "send_timeout", lambda k, v: _number(sec, k, v, 1, 3600), d.send_timeout
        ),
    )


def _string(sec: _Section, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise sec.fail(key, f"must be a non-empty string, not {_tname(value)}")
    return value


def _bool(sec: _Section, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise sec.fail(key, f"must be true or false, not {_tname(value)}")
    return value


def _integer(sec: _Section, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise sec.fail(key, f"must be a whole number, not {_tname(value)}")
    if not low <= value <= high:
        raise sec.fail(key, f"must be between {low} and {high}, not {value}")
    return value


def _string_list(sec: _Section, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise sec.fail(key, "must be an array of non-empty strings")
    return tuple(value)


def _absolute(sec: _Section, key: str, value: Any) -> str:
    text = _string(sec, key, value)
    if not text.startswith("/"):
        raise sec.fail(key, f"must be an absolute path, not {text!r}")
    return text


def _absolute_list(sec: _Section, key: str, value: Any) -> tuple[str, ...]:
    paths = _string_list(sec, key, value)
    for path in paths:
        if not path.startswith("/"):
            raise sec.fail(key, f"must hold absolute path patterns, not {path!r}")
    return paths


def _number(sec: _Section, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise sec.fail(key, f"must be a number, not {_tname(value)}")
    if not low <= value <= high:
        raise sec.fail(key, f"must be between {low:g} and {high:g}, not {value:g}")
    return float(value)


def _choice(sec: _Section, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise sec.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
    return value.lower()


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, **{f"{p}b": 1000**i for i, p in enumerate("kmgt", 1)}}
_SIZE_UNITS |= {f"{p}ib": 1024**i for i, p in enumerate("kmgt", 1)}


def parse_size(text: str) -> int:
    """``1GiB``, ``500MB``, ``4096``: bytes. KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"bad size {text!r}: use e.g. 500MB, 1GiB or a number of bytes")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])


def _retention(sec: _Section, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise sec.fail(key, f'must be a duration like "24h" or "30d", not {_tname(value)}')
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except ValueError as exc:
        raise sec.fail(key, str(exc)) from None
    if not 600 <= seconds <= 100 * 365 * 86400:
        raise sec.fail(key, f"must be between 10m and 100 years, not {value!r}")
    return seconds


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _parse_size(sec: _Section, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise sec.fail(key, f'must be a size like "1GiB" or "500MB", not {_tname(value)}')
    try:
        size = parse_size(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise sec.fail(key, str(exc)) from None
    if size < 2**20:
        raise sec.fail(key, f"must be at least 1MiB, not {value!r}")
    return size


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError with a reason."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [IPv6]:port")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected host:port, e.g. 127.0.0.1:9999")
        if ":" in host:
            raise ValueError("write an IPv6 address in brackets, e.g. [::1]:9999")
    if not host:
        raise ValueError("the host part is empty")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, not {port_text!r}")
    return host, int(port_text)


def _parse_listen(sec: _Section, key: str, value: Any) -> tuple[str, int]:
    if not isinstance(value, str):
        raise sec.fail(key, f'must be a string like "127.0.0.1:9999", not {_tname(value)}')
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise sec.fail(key, f"bad address {value!r}: {exc}") from None


def _check_url(value: str, schemes: tuple[str, ...]) -> str | None:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in schemes:
        return f"scheme must be {' or '.join(s + '://' for s in schemes)}"
    if not parts.hostname:
        return "no host"
    del port
    return None


def _server_tls(sec: _Section, path: _Check) -> tuple[str, Path | None, Path | None]:
    """``tls`` ("off" or "auto") and ``tls_cert``/``tls_key`` (both or neither; mode "files")."""
    mode = sec.get("tls", lambda k, v: _choice(sec, k, v, ("off", "auto")), "off")
    cert = sec.get("tls_cert", path, None)
    key = sec.get("tls_key", path, None)
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise sec.fail(missing, "required too: give tls_cert and tls_key together")
    if cert is not None:
        if mode == "auto":
            raise sec.fail("tls", 'is "auto" but tls_cert/tls_key are given: use one or the other')
        mode = "files"
    return mode, cert, key


def _parse_fingerprint(sec: _Section, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise sec.fail(key, f'must be a string like "sha256:ab12...", not {_tname(value)}')
    try:
        return parse_fingerprint(value)
    except ValueError as exc:
        raise sec.fail(key, str(exc)) from None


def _check_node_tls(
    sec: _Section, core_addr: tuple[str, ...], pin: str | None, ca_file: Path | None
) -> None:
    if pin is not None and ca_file is not None:
        raise sec.fail("ca_file", "give tls_fingerprint or ca_file, not both")
    secure = bool(core_addr) and all(a.startswith(("wss://", "https://")) for a in core_addr)
    if (pin is not None or ca_file is not None) and not secure:
        which = "tls_fingerprint" if pin is not None else "ca_file"
        raise sec.fail(which, "is only used with a wss:// core_addr (every address wss://)")


MAX_CORE_ADDRS = 16


def _parse_core_addrs(sec: _Section, key: str, value: Any) -> tuple[str, ...]:
    """One address, or a list of them (several Core processes, tried in order)."""
    if isinstance(value, list):
        if not 1 <= len(value) <= MAX_CORE_ADDRS:
            raise sec.fail(key, f"give 1 to {MAX_CORE_ADDRS} addresses, not {len(value)}")
        addrs = tuple(_parse_core_addr(sec, key, v) for v in value)
        if len(set(addrs)) != len(addrs):
            raise sec.fail(key, "lists an address twice")
        return addrs
    return (_parse_core_addr(sec, key, value),)


def _parse_core_addr(sec: _Section, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise sec.fail(
            key,
            f'must be a URL string like "ws://127.0.0.1:9999" (or a list of them), '
            f"not {_tname(value)}",
        )
    reason = _check_url(value, ("ws", "wss", "http", "https"))
    if reason is None and urlsplit(value).path.strip("/"):
        reason = "give Core's base address without a path, e.g. ws://core.example:9999"
    if reason:
        raise sec.fail(key, f"bad URL {value!r}: {reason}")
    return value.rstrip("/")


def _parse_redis(sec: _Section, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise sec.fail(
            key, f'must be a URL string like "redis://127.0.0.1:6379", not {_tname(value)}'
        )
    reason = _check_url(value, ("redis", "rediss", "unix"))
    if reason and not (value.startswith("unix://") and len(value) > len("unix://")):
        raise sec.fail(key, f"bad URL {value!r}: {reason}")
    db = urlsplit(value).path.strip("/")
    if not value.startswith("unix://") and db and not db.isdigit():
        raise sec.fail(key, f"bad URL {value!r}: the path is the database number, like /0")
    return value


def _parse_hostname(sec: _Section, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise sec.fail(key, f"must be a node name (a string), not {_tname(value)}")
    problem = names.name_problem(value)
    if problem is not None:
        raise sec.fail(key, f"bad node name {value!r}: {problem}")
    return value


def _parse_labels(sec: _Section, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise sec.fail(key, f"must be a table of strings, not {_tname(value)}")
    labels: dict[str, str] = {}
    for k, v in value.items():
        if not names.is_label_key(k):
            raise sec.fail(f"{key}.{k}", "label names use letters, digits, '.', '-', '_'")
        if not isinstance(v, str) or not names.is_label_value(v):
            raise sec.fail(
                f"{key}.{k}",
                f"label values are strings of letters, digits, '.', '-', '_', '/', not {v!r}",
            )
        labels[k] = v
    return labels
