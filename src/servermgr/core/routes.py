"""Core's route table: every module's routes, each behind its access check.

Each part of Core offers its routes (``routes()`` for HTTP, ``ws_routes()``
for WebSockets, as ``(method, path, handler, doc)`` and ``(path, endpoint,
doc)``); ``RouteTable`` is built once from all of them, guards each with
``core/auth.py`` for the access its doc names, and serves the OpenAPI
document of the whole table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from servermgr.core import openapi
from servermgr.core.api import Handler, HttpRoute, WsEndpoint, WsRoute
from servermgr.core.auth import Access, ApiFailure, Authenticator, error_response
from servermgr.core.openapi import Doc


class RouteTable:
    def __init__(
        self, auth: Authenticator, http: Sequence[HttpRoute], ws: Sequence[WsRoute]
    ) -> None:
        self.auth = auth
        self.http: list[HttpRoute] = [
            ("GET", "/openapi.json", self.openapi_doc, Doc("This document", auth=Access.PUBLIC)),
            *http,
        ]
        self.ws = list(ws)

    async def openapi_doc(self, request: Request) -> Response:
        return JSONResponse(openapi.build(self.docs()))

    def docs(self) -> list[tuple[str, str, Doc]]:
        docs = [(m, p, d) for m, p, _, d in self.http]
        docs += [("GET", path, doc) for path, _, doc in self.ws]
        return docs

    def ws_endpoint(self, path: str) -> WsEndpoint:
        """The WebSocket route at ``path``, behind its access check."""
        for p, endpoint, doc in self.ws:
            if p == path:
                return self.auth.guard_ws(doc.auth, f"WebSocket {path}", endpoint)
        raise KeyError(path)

    def routes(self) -> list[BaseRoute]:
        # One Route per path, so a 405 names every method the path allows.
        by_path: dict[str, dict[str, Handler]] = {}
        for method, path, handler, doc in self.http:
            guarded = self.auth.guard(doc.auth, f"{method} {path}", handler)
            by_path.setdefault(path, {})[method] = guarded
        out: list[BaseRoute] = [
            Route(path, _dispatch(handlers), methods=list(handlers))
            for path, handlers in by_path.items()
        ]
        for path, _, doc in self.ws:
            out.append(WebSocketRoute(path, self.ws_endpoint(path)))
            # A plain GET (no Upgrade) is told what the route is, in the error shape.
            plain = self.auth.guard(doc.auth, f"WebSocket {path}", _upgrade_required)
            out.append(Route(path, _dispatch({"GET": plain}), methods=["GET"]))
        return out


async def _upgrade_required(request: Request) -> Response:
    response = error_response(
        426,
        "upgrade_required",
        f"{request.url.path} is a WebSocket: connect with Upgrade: websocket "
        "(see /openapi.json, x-websocket)",
    )
    response.headers["Upgrade"] = "websocket"
    return response


def _dispatch(handlers: dict[str, Handler]) -> Handler:
    """One endpoint for the methods of one path (HEAD answered by GET)."""
    wrapped = {method: _wrap(handler) for method, handler in handlers.items()}
    if "GET" in wrapped:
        wrapped.setdefault("HEAD", wrapped["GET"])

    async def endpoint(request: Request) -> Response:
        return await wrapped[request.method](request)

    endpoint.__name__ = "_".join(h.__name__ for h in handlers.values())
    return endpoint


def _wrap(handler: Callable[[Request], Awaitable[Response]]) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiFailure as exc:
            return error_response(exc.status, exc.code, exc.message)

    endpoint.__name__ = handler.__name__
    return endpoint
