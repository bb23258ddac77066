"""Checks for the values of one TOML table: each error names the file, the key and the reason.

``Section`` wraps a table (unknown keys are refused with the closest known
one suggested); the functions below check one value each and return it
typed. ``common/config.py`` and ``common/alertconfig.py`` build on them.
Pure logic: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from servermgr.common import names
from servermgr.common.errors import ConfigError
from servermgr.common.timespec import parse_duration
from servermgr.common.tls import parse_fingerprint

Check = Callable[[str, Any], Any]


class Section:
    def __init__(self, source: str, name: str, table: Any) -> None:
        self.source = source
        self.name = name
        if not isinstance(table, dict):
            raise ConfigError(source, name, f"must be a table, not {type_name(table)}")
        self.table: dict[str, Any] = table

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.table:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise ConfigError(
                    self.source,
                    f"{self.name}.{key}",
                    f"unknown key{did_you_mean(key, allowed)} (known keys: {known})",
                )

    def get(self, key: str, check: Check, default: Any) -> Any:
        if key not in self.table:
            return default
        reason_or_value = check(key, self.table[key])
        return reason_or_value

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.source, f"{self.name}.{key}", reason)


def did_you_mean(word: str, known: set[str]) -> str:
    """``; did you mean 'listen'?`` for a near miss, else nothing."""
    from difflib import get_close_matches

    close = get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        dict: "a table",
        list: "an array",
    }.get(type(value), type(value).__name__)


def string(sec: Section, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise sec.fail(key, f"must be a non-empty string, not {type_name(value)}")
    return value


def boolean(sec: Section, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise sec.fail(key, f"must be true or false, not {type_name(value)}")
    return value


def integer(sec: Section, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise sec.fail(key, f"must be a whole number, not {type_name(value)}")
    if not low <= value <= high:
        raise sec.fail(key, f"must be between {low} and {high}, not {value}")
    return value


def string_list(sec: Section, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise sec.fail(key, "must be an array of non-empty strings")
    return tuple(value)


def absolute(sec: Section, key: str, value: Any) -> str:
    text = string(sec, key, value)
    if not text.startswith("/"):
        raise sec.fail(key, f"must be an absolute path, not {text!r}")
    return text


def absolute_list(sec: Section, key: str, value: Any) -> tuple[str, ...]:
    paths = string_list(sec, key, value)
    for path in paths:
        if not path.startswith("/"):
            raise sec.fail(key, f"must hold absolute path patterns, not {path!r}")
    return paths


def number(sec: Section, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise sec.fail(key, f"must be a number, not {type_name(value)}")
    if not low <= value <= high:
        raise sec.fail(key, f"must be between {low:g} and {high:g}, not {value:g}")
    return float(value)


def choice(sec: Section, key: str, value: Any, choices: tuple[str, ...]) -> str:
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


def retention(sec: Section, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise sec.fail(key, f'must be a duration like "24h" or "30d", not {type_name(value)}')
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except ValueError as exc:
        raise sec.fail(key, str(exc)) from None
    if not 600 <= seconds <= 100 * 365 * 86400:
        raise sec.fail(key, f"must be between 10m and 100 years, not {value!r}")
    return seconds


def span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def size(sec: Section, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise sec.fail(key, f'must be a size like "1GiB" or "500MB", not {type_name(value)}')
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


def listen(sec: Section, key: str, value: Any) -> tuple[str, int]:
    if not isinstance(value, str):
        raise sec.fail(key, f'must be a string like "127.0.0.1:9999", not {type_name(value)}')
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise sec.fail(key, f"bad address {value!r}: {exc}") from None


def url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
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


def server_tls(sec: Section, path: Check) -> tuple[str, Path | None, Path | None]:
    """``tls`` ("off" or "auto") and ``tls_cert``/``tls_key`` (both or neither; mode "files")."""
    mode = sec.get("tls", lambda k, v: choice(sec, k, v, ("off", "auto")), "off")
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


def fingerprint(sec: Section, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise sec.fail(key, f'must be a string like "sha256:ab12...", not {type_name(value)}')
    try:
        return parse_fingerprint(value)
    except ValueError as exc:
        raise sec.fail(key, str(exc)) from None


def check_node_tls(
    sec: Section, core_addr: tuple[str, ...], pin: str | None, ca_file: Path | None
) -> None:
    if pin is not None and ca_file is not None:
        raise sec.fail("ca_file", "give tls_fingerprint or ca_file, not both")
    secure = bool(core_addr) and all(a.startswith(("wss://", "https://")) for a in core_addr)
    if (pin is not None or ca_file is not None) and not secure:
        which = "tls_fingerprint" if pin is not None else "ca_file"
        raise sec.fail(which, "is only used with a wss:// core_addr (every address wss://)")


MAX_CORE_ADDRS = 16


def core_addrs(sec: Section, key: str, value: Any) -> tuple[str, ...]:
    """One address, or a list of them (several Core processes, tried in order)."""
    if isinstance(value, list):
        if not 1 <= len(value) <= MAX_CORE_ADDRS:
            raise sec.fail(key, f"give 1 to {MAX_CORE_ADDRS} addresses, not {len(value)}")
        addrs = tuple(core_addr(sec, key, v) for v in value)
        if len(set(addrs)) != len(addrs):
            raise sec.fail(key, "lists an address twice")
        return addrs
    return (core_addr(sec, key, value),)


def core_addr(sec: Section, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise sec.fail(
            key,
            f'must be a URL string like "ws://127.0.0.1:9999" (or a list of them), '
            f"not {type_name(value)}",
        )
    reason = url_problem(value, ("ws", "wss", "http", "https"))
    if reason is None and urlsplit(value).path.strip("/"):
        reason = "give Core's base address without a path, e.g. ws://core.example:9999"
    if reason:
        raise sec.fail(key, f"bad URL {value!r}: {reason}")
    return value.rstrip("/")


def redis_url(sec: Section, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise sec.fail(
            key, f'must be a URL string like "redis://127.0.0.1:6379", not {type_name(value)}'
        )
    reason = url_problem(value, ("redis", "rediss", "unix"))
    if reason and not (value.startswith("unix://") and len(value) > len("unix://")):
        raise sec.fail(key, f"bad URL {value!r}: {reason}")
    db = urlsplit(value).path.strip("/")
    if not value.startswith("unix://") and db and not db.isdigit():
        raise sec.fail(key, f"bad URL {value!r}: the path is the database number, like /0")
    return value


def hostname(sec: Section, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise sec.fail(key, f"must be a node name (a string), not {type_name(value)}")
    problem = names.name_problem(value)
    if problem is not None:
        raise sec.fail(key, f"bad node name {value!r}: {problem}")
    return value


def labels(sec: Section, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise sec.fail(key, f"must be a table of strings, not {type_name(value)}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not names.is_label_key(k):
            raise sec.fail(f"{key}.{k}", "label names use letters, digits, '.', '-', '_'")
        if not isinstance(v, str) or not names.is_label_value(v):
            raise sec.fail(
                f"{key}.{k}",
                f"label values are strings of letters, digits, '.', '-', '_', '/', not {v!r}",
            )
        out[k] = v
    return out
