"""The web client: the page Core serves at ``/``, its files, and ``whoami``.

The files are package data (``servermgr/web/static``), read once when Core
is built, so they come from the wheel or the zipapp alike and nothing is
built or fetched at run time. ``/`` is the page; every other file is served
by its base name at ``/web/<name>``. The page and its files are public: they
hold no data. Everything the page shows comes from the authenticated API,
with the token the user signs in with (docs/web.md).

Every answer carries a strict Content-Security-Policy (scripts and styles
from Core only, no inline script, no framing), ``nosniff`` and no referrer,
so a node string that slipped through escaping still could not run.
"""

from __future__ import annotations

import functools
import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servermgr.core.api import Handler
from servermgr.core.auth import Access, ApiFailure, principal_of
from servermgr.core.openapi import Doc, Param

PAGE = "index.html"
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidate each time (a 304 when unchanged): an upgraded Core's page is
    # never mixed with files an older one left in the browser's cache.
    "Cache-Control": "no-cache",
}
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets(root: Traversable | None = None) -> dict[str, Asset]:
    """Every file under ``root`` (default: the package's static files) by base name."""
    top = root if root is not None else resources.files("servermgr.web") / "static"
    out: dict[str, Asset] = {}
    stack = [top]
    while stack:
        folder = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                stack.append(entry)
                continue
            if entry.name in out:
                raise RuntimeError(f"two web files named {entry.name!r}: names must be unique")
            body = entry.read_bytes()
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            media = TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0]
            out[entry.name] = Asset(
                body,
                media or "application/octet-stream",
                '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            )
    if PAGE not in out:
        raise RuntimeError(f"the web client's {PAGE} is missing from the package")
    return out


@functools.cache
def package_assets() -> dict[str, Asset]:
    """The package's files, read once per process (a few hundred KiB)."""
    return load_assets()


class WebPage:
    """The page's routes: ``/``, ``/web/<name>`` and ``/api/v1/whoami``."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    async def page(self, request: Request) -> Response:
        return self._send(request, self.assets[PAGE])

    async def file(self, request: Request) -> Response:
        asset = self.assets.get(request.path_params["name"])
        if asset is None or request.path_params["name"] == PAGE:
            raise ApiFailure(404, "not_found", "no such file of the web client")
        return self._send(request, asset)

    def _send(self, request: Request, asset: Asset) -> Response:
        headers = {**HEADERS, "ETag": asset.etag}
        seen = {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}
        if asset.etag in seen:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    async def whoami(self, request: Request) -> Response:
        """Who the credential is and what its role may do, so the page offers only that."""
        principal = principal_of(request)
        return JSONResponse(
            {
                "name": principal.name,
                "role": principal.role,
                "may": {
                    access.value: principal.may(access)
                    for access in (Access.READ, Access.OPERATE, Access.ADMIN)
                },
            }
        )

    def routes(self) -> list[tuple[str, str, Handler, Doc]]:
        html = {"type": "string", "description": "text/html"}
        return [
            (
                "GET",
                "/",
                self.page,
                Doc(
                    "The web client's page",
                    auth=Access.PUBLIC,
                    result=html,
                    media_type="text/html",
                ),
            ),
            (
                "GET",
                "/web/{name}",
                self.file,
                Doc(
                    "A file of the web client (script, style sheet, vendored library)",
                    auth=Access.PUBLIC,
                    params=(Param("name", "path", "file name, e.g. app.js"),),
                    result={"type": "string"},
                    media_type="*/*",  # by the file: JavaScript, CSS, text
                ),
            ),
            (
                "GET",
                "/api/v1/whoami",
                self.whoami,
                Doc(
                    "The credential's name and role, and which access it has (read, operate, "
                    "admin): what the web page offers",
                    auth=Access.READ,
                    result={
                        "type": "object",
                        "required": ["name", "role", "may"],
                        "properties": {
                            "name": {"type": "string"},
                            "role": {"type": "string"},
                            "may": {
                                "type": "object",
                                "additionalProperties": {"type": "boolean"},
                            },
                        },
                    },
                ),
            ),
        ]
