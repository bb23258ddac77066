"""Typed client of Core's REST API, used by ``servermgr ctl``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from servermgr.common import addr
from servermgr.common.errors import (
    ApiError,
    AuthError,
    ClientError,
    CoreUnreachableError,
    KeyFileError,
    NotFoundError,
)

if TYPE_CHECKING:
    from servermgr.common.config import Config

TIMEOUT = 10.0


def resolve(core: str | None, key: str | None, config: Callable[[], Config]) -> tuple[str, str]:
    """Core's base URL and the key: flags/env first, else the local Core's config and key file."""
    cfg = None
    if core is None or key is None:
        cfg = config()
    if core is None:
        assert cfg is not None
        core = addr.listen_to_url(cfg.server.listen_host, cfg.server.listen_port)
    if key is None:
        assert cfg is not None
        from servermgr.common.keyfile import read_key

        try:
            key = read_key(cfg.storage.key_path).value
        except KeyFileError as exc:
            raise ClientError(
                f"no core key given: pass --key or set SERVERMGR_KEY ({exc.message})"
            ) from None
    return addr.http_base(core), key.strip()


class Client:
    def __init__(
        self, base_url: str, key: str, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = base_url
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=TIMEOUT,
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CoreUnreachableError(
                f"cannot reach Core at {self.base_url} ({exc.__class__.__name__}: {exc}); "
                "is it running? (--core / SERVERMGR_CORE)"
            ) from None
        if resp.status_code >= 400:
            self.raise_for(resp)
        try:
            return resp.json()
        except ValueError:
            raise ApiError(
                resp.status_code, "bad_response", _not_core(resp, self.base_url)
            ) from None

    def raise_for(self, resp: httpx.Response) -> None:
        """The typed error for an error response."""
        code, message = _error(resp)
        if resp.status_code == 401:
            raise AuthError(f"Core refused the key: {message} (--key / SERVERMGR_KEY)")
        if resp.status_code == 404:
            raise NotFoundError(404, code, message)
        raise ApiError(resp.status_code, code, message)

    def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/nodes")
        return result

    def node(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/nodes/{_seg(ref)}")
        return result

    def remove_node(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/api/v1/nodes/{_seg(ref)}")
        return result

    def metrics(
        self, ref: str, *, since: str, until: str | None = None, step: str | None = None
    ) -> dict[str, Any]:
        params = {"since": since}
        if until is not None:
            params["until"] = until
        if step is not None:
            params["step"] = step
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/nodes/{_seg(ref)}/metrics", params=params
        )
        return result


def _seg(ref: str) -> str:
    from urllib.parse import quote

    return quote(ref, safe="")


def _error(resp: httpx.Response) -> tuple[str, str]:
    try:
        err = resp.json()["error"]
        return str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        return "http_error", _not_core(resp, f"{resp.url.scheme}://{resp.url.netloc.decode()}")


def _not_core(resp: httpx.Response, where: str) -> str:
    """One line for an answer that is not Core's JSON (some other server at --core)."""
    snippet = " ".join(resp.text.split())[:80]
    return (
        f"{where.rstrip('/')} answered HTTP {resp.status_code} with something that is not "
        f"Core's JSON ({snippet or 'empty body'}); is --core / SERVERMGR_CORE right?"
    )
