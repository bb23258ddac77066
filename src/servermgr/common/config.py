"""TOML config for every role, turned into typed, validated objects.

One file format serves Core (``[server]``, ``[storage]``) and Node
(``[node]``); either role accepts the other's sections, and every other
section or key is an error. Errors name the file, the key and the reason, and
are raised before anything starts. Relative paths are resolved from the
config file's directory (or the working directory when there is no file).

Pure logic apart from reading the file: ``parse_config`` takes text.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servermgr.common import config_fields as cf
from servermgr.common.alertconfig import AlertsConfig, parse_alerts
from servermgr.common.errors import ConfigError
from servermgr.common.tls import Trust

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
                f"unknown section{cf.did_you_mean(name, sections)} "
                f"(known sections: {', '.join(sorted(sections))})",
            )

    def path_value(sec: cf.Section) -> cf.Check:
        def check(key: str, value: Any) -> Path:
            if not isinstance(value, str) or not value:
                raise sec.fail(key, f"must be a non-empty path string, not {cf.type_name(value)}")
            p = Path(value).expanduser()
            return p if p.is_absolute() else base_dir / p

        return check

    server = cf.Section(src, "server", doc.get("server", {}))
    server.check_keys(
        {"listen", "heartbeat_interval", "tls", "tls_cert", "tls_key", "metrics_loopback"}
    )
    host, port = server.get("listen", lambda k, v: cf.listen(server, k, v), ("127.0.0.1", 9999))
    interval = server.get(
        "heartbeat_interval", lambda k, v: cf.number(server, k, v, 0.05, 3600.0), 5.0
    )
    tls_mode, tls_cert, tls_key = cf.server_tls(server, path_value(server))
    metrics_loopback = server.get("metrics_loopback", lambda k, v: cf.boolean(server, k, v), False)

    storage = cf.Section(src, "storage", doc.get("storage", {}))
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
    redis_url = storage.get("redis_url", lambda k, v: cf.redis_url(storage, k, v), None)
    keep: dict[str, float] = {}
    for key, default, finer in (
        ("retention_raw", StorageConfig.retention_raw, None),
        ("retention_1m", StorageConfig.retention_1m, "retention_raw"),
        ("retention_1h", StorageConfig.retention_1h, "retention_1m"),
    ):
        keep[key] = storage.get(key, lambda k, v: cf.retention(storage, k, v), default)
        if finer is not None and keep[key] < keep[finer]:
            given = cf.span(keep[key]) + ("" if key in storage.table else " by default")
            raise storage.fail(
                key, f"is {given}, shorter than storage.{finer} ({cf.span(keep[finer])})"
            )
    max_db_size = storage.get("max_db_size", lambda k, v: cf.size(storage, k, v), None)

    node = cf.Section(src, "node", doc.get("node", {}))
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
    core_addr = node.get("core_addr", lambda k, v: cf.core_addrs(node, k, v), ())
    token = node.get("register_token", lambda k, v: cf.string(node, k, v), None)
    hostname = node.get("hostname", lambda k, v: cf.hostname(node, k, v), None)
    node_dir = node.get("data_dir", path_value(node), base_dir / "node-data")
    labels = node.get("labels", lambda k, v: cf.labels(node, k, v), {})
    pin = node.get("tls_fingerprint", lambda k, v: cf.fingerprint(node, k, v), None)
    ca_file = node.get("ca_file", path_value(node), None)
    cf.check_node_tls(node, core_addr, pin, ca_file)

    ex = cf.Section(src, "exec", doc.get("exec", {}))
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
        enabled=ex.get("enabled", lambda k, v: cf.boolean(ex, k, v), True),
        allow=ex.get("allow", lambda k, v: cf.string_list(ex, k, v), ()),
        allow_env=ex.get("allow_env", lambda k, v: cf.string_list(ex, k, v), ()),
        allow_cwd=ex.get("allow_cwd", lambda k, v: cf.absolute_list(ex, k, v), ()),
        run_as=ex.get("run_as", lambda k, v: cf.string(ex, k, v), None),
        max_timeout=ex.get("max_timeout", lambda k, v: cf.number(ex, k, v, 0.1, 7 * 86400.0), None),
        max_concurrent=int(ex.get("max_concurrent", lambda k, v: cf.integer(ex, k, v, 1, 1024), 8)),
        shell=ex.get("shell", lambda k, v: cf.boolean(ex, k, v), False),
        shell_transcript=ex.get("shell_transcript", lambda k, v: cf.boolean(ex, k, v), False),
        shell_command=ex.get("shell_command", lambda k, v: cf.absolute(ex, k, v), None),
        allow_upgrade=ex.get("allow_upgrade", lambda k, v: cf.boolean(ex, k, v), None),
    )
    fs = cf.Section(src, "files", doc.get("files", {}))
    fs.check_keys({"read", "write", "max_size"})
    files_cfg = FilesConfig(
        read=fs.get("read", lambda k, v: cf.absolute_list(fs, k, v), None),
        write=fs.get("write", lambda k, v: cf.absolute_list(fs, k, v), None),
        max_size=fs.get("max_size", lambda k, v: cf.size(fs, k, v), FilesConfig.max_size),
    )

    limits = _parse_limits(cf.Section(src, "limits", doc.get("limits", {})))

    log = cf.Section(src, "log", doc.get("log", {}))
    log.check_keys({"level"})
    level = log.get("level", lambda k, v: cf.choice(log, k, v, LOG_LEVELS), "info")
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


def _parse_limits(sec: cf.Section) -> LimitsConfig:
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
            "auth_failures", lambda k, v: cf.integer(sec, k, v, 1, 1_000_000), d.auth_failures
        ),
        auth_window=sec.get(
            "auth_window", lambda k, v: cf.number(sec, k, v, 1, 86400), d.auth_window
        ),
        unauthenticated_connections=sec.get(
            "unauthenticated_connections",
            lambda k, v: cf.integer(sec, k, v, 1, 1_000_000),
            d.unauthenticated_connections,
        ),
        handshake_timeout=sec.get(
            "handshake_timeout", lambda k, v: cf.number(sec, k, v, 0.1, 300), d.handshake_timeout
        ),
        send_timeout=sec.get(
            "send_timeout", lambda k, v: cf.number(sec, k, v, 1, 3600), d.send_timeout
        ),
    )
