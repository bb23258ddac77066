"""The OpenAPI document of Core's REST API, built from the route table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from servermgr import __version__

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Doc:
    """What the OpenAPI document says of one route."""

    summary: str
    auth: str = "core_key"  # "core_key", "node_credential" or "none"
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    ok: int = 200
    result: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    websocket: bool = False


def build(routes: list[tuple[str, str, Doc]]) -> dict[str, Any]:
    """OpenAPI 3.1 for ``(method, path, doc)`` triples."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, doc in routes:
        op: dict[str, Any] = {
            "summary": doc.summary,
            "responses": {
                str(doc.ok): {
                    "description": "OK",
                    "content": {"application/json": {"schema": doc.result}},
                },
                "default": {
                    "description": "Error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
        if doc.websocket:
            op["description"] = "WebSocket upgrade; messages are described in docs/protocol.md."
        if doc.auth == "none":
            op["security"] = []
        elif doc.auth == "node_credential":
            op["security"] = [{"nodeCredential": []}]
        if doc.params:
            op["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in doc.params
            ]
        if doc.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": doc.body}},
            }
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "servermgr Core API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "coreKey": {"type": "http", "scheme": "bearer", "description": "the core key"},
                "nodeCredential": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a node's own credential",
                },
            },
        },
        "security": [{"coreKey": []}],
    }
