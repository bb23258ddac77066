"""Core's base URL read without urllib.parse reads the same as urllib.parse."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servermgr.common import addr

FORMS = [
    "http://127.0.0.1:8080",
    "https://core.example.com:8443",
    "ws://10.0.0.1:9999",
    "wss://Core.Example.COM",
    "127.0.0.1:8080",
    "core:80",
    "http://core",
    "http://core:0",
    "http://core:0080",
    "http://core:65536",
    "http://core:",
    "http://core:x",
    "http://[::1]:8080",
    "http://user@core:1",
    "http://core:1/",
    "http://core:1/path?q#f",
    "HTTP://core:1",
    " http://core:1",
    "http://",
    "http://:80",
    "http://::1",
    "ftp://core:21",
    "http://kör.example:1",
]


def reference_base(text: str) -> str:
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", "")).rstrip("/")


def reference_split(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def outcome(fn, text):  # type: ignore[no-untyped-def]
    try:
        return fn(text)
    except ValueError as exc:
        return ("ValueError", str(exc))


@pytest.mark.parametrize("text", FORMS)
def test_forms_read_as_urllib_reads_them(text: str) -> None:
    assert outcome(addr.http_base, text) == outcome(reference_base, text)
    assert outcome(addr.split_url, text) == outcome(reference_split, text)


@given(
    st.sampled_from(["http://", "https://", "ws://", "wss://", ""]),
    st.text(alphabet="abcXYZ019.:-_[]@/?# \t%", max_size=24),
)
def test_any_address_reads_as_urllib_reads_it(scheme: str, rest: str) -> None:
    text = scheme + rest
    assert outcome(addr.http_base, text) == outcome(reference_base, text)
    assert outcome(addr.split_url, text) == outcome(reference_split, text)
